"""Save aligned face crops of one person from the webcam or a video, into faces/<person>/.

Usage:
    python capture.py --output faces/alice                      # webcam: s saves the face, q quits
    python capture.py --output faces/alice --auto               # saves good, varied faces on its own
    python capture.py --output faces/alice --auto --no_display --video_path alice.mp4   # headless

Crops are the aligned chips the pipeline embeds, named <person>_<NNNN>.png after the
folder; an existing folder is appended to and nothing is ever overwritten.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faceid.apps.capture import CaptureOptions, capture_faces
from faceid.apps.enrol import CropOptions
from faceid.cli import (
    add_detection_options,
    add_verbosity,
    run_reporting_errors,
    script_key,
    setup_script,
    warn_if_no_window,
)
from faceid.detect.quality import DEFAULT_THRESHOLDS, QualityThresholds

CAPTURE, CROP, QUALITY = CaptureOptions(), CropOptions(), DEFAULT_THRESHOLDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True,
                        help="the person's folder, e.g. faces/alice (its name names the crops); created if missing")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--camera", type=int, default=0, help="webcam number (the default source); try 1, 2 for others")
    source.add_argument("--video_path", type=Path, help="read a video file instead of the webcam")
    parser.add_argument("--auto", action="store_true",
                        help="save on its own when exactly one face passes every quality check and is new")
    parser.add_argument("--every", type=int, default=CAPTURE.every,
                        help="--auto looks at one frame in N; lower for more candidates, higher for more variety")
    parser.add_argument("--max", dest="max_crops", type=int, default=CAPTURE.max_crops,
                        help="--auto stops after saving N crops (10-20 varied crops make a good enrolment)")
    parser.add_argument("--no_display", action="store_true",
                        help="no window (automatic when there is no display); needs --auto")
    parser.add_argument("--save_frames", action="store_true", help="also keep each full frame, in <output>/frames/")
    parser.add_argument("--max_frames", type=int, default=0, help="stop after N frames (0 = no limit)")
    parser.add_argument("--size", type=int, default=CROP.size,
                        help="crop side in px; the same aligned crop at any size (150 is dlib's, 224 ResNet50's)")
    parser.add_argument("--min_face_size", type=int, default=QUALITY.min_face_size,
                        help="--auto: smallest face width in px; smaller faces are ignored")
    parser.add_argument("--min_sharpness", type=float, default=QUALITY.min_sharpness,
                        help="--auto: variance of the Laplacian of the crop; raise (e.g. 40) for crisper crops")
    parser.add_argument("--max_yaw", type=float, default=QUALITY.max_yaw,
                        help="--auto: how turned a face may be (0 = frontal, ~0.4 = 45 degrees); lower: more frontal")
    parser.add_argument("--near_duplicate", type=float, default=QUALITY.near_duplicate,
                        help="--auto: skip a crop this close to one in the folder (1 - correlation); raise: more varied")
    add_detection_options(parser)
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    add_verbosity(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.every < 1 or args.max_crops < 1 or args.max_frames < 0 or args.size < 32:
        parser.error("--every and --max must be at least 1, --max_frames 0 or more, --size at least 32")
    aliases = {"folder": "output"}  # capture_faces(folder=...) is --output
    setup_script(args, parser, aliases)

    def body() -> int:
        from faceid.io.display import display_available
        from faceid.io.video import frame_source

        if args.auto:  # without --auto the s key needs a window: capture_faces says why there is none
            warn_if_no_window(args.no_display)

        source = frame_source(camera=args.camera, video_path=args.video_path)
        summary = capture_faces(
            source, args.output,
            options=CaptureOptions(auto=args.auto, every=args.every, max_crops=args.max_crops,
                                   save_frames=args.save_frames, max_frames=args.max_frames or None),
            crop=CropOptions(size=args.size, upsample=args.upsample, detector=args.detector),
            thresholds=QualityThresholds(min_face_size=args.min_face_size, min_sharpness=args.min_sharpness,
                                         max_yaw=args.max_yaw, near_duplicate=args.near_duplicate),
            display=not args.no_display and display_available(), progress=not args.quiet, key=script_key(args),
        )
        print(json.dumps(summary.as_dict()) if args.json else summary.report())
        return 0

    return run_reporting_errors(body, parser, aliases)


if __name__ == "__main__":
    sys.exit(main())
