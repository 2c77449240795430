"""Cut the face out of every photo: <selfies>/<person>/<photo> -> <faces>/<person>/<photo>.png.

Usage:
    python selfies2face.py --face_selfies selfies/ --faces_path faces/
    python selfies2face.py --face_selfies selfies/ --faces_path faces/ --multi largest

Crops are the aligned chips the pipeline embeds; EXIF orientation is respected.
Re-running skips photos whose crop exists and retries the ones that failed.
Ends with a table per person: saved / already done / no face / several faces / unreadable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faceid.apps.enrol import CropOptions
from faceid.apps.selfies import MULTI_CHOICES, selfies_to_faces
from faceid.cli import add_detection_options, add_verbosity, run_reporting_errors, script_key, setup_script

CROP = CropOptions()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--face_selfies", "--faces_selfies", dest="face_selfies", type=Path, required=True,
                        help="folder with one sub-folder of photos per person")
    parser.add_argument("--faces_path", "--face_path", dest="faces_path", type=Path, required=True,
                        help="where the crops go, same layout (outside --face_selfies); created if missing")
    parser.add_argument("--multi", choices=MULTI_CHOICES, default="skip",
                        help="a photo with several faces: skip it (reported) or save the largest face")
    parser.add_argument("--size", type=int, default=CROP.size,
                        help="crop side in px; the same aligned crop at any size (150 is dlib's, 224 ResNet50's)")
    add_detection_options(parser)
    parser.add_argument("--max_width", type=int, default=CROP.max_width,
                        help="search photos wider than this shrunk to this width (speed); "
                        "the crop keeps full resolution; 0 = full size")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    add_verbosity(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.size < 32 or (args.upsample or 0) < 0 or args.max_width < 0:
        parser.error("--size must be at least 32, --upsample and --max_width 0 or more")
    setup_script(args, parser)

    def body() -> int:
        summary = selfies_to_faces(
            args.face_selfies, args.faces_path,
            crop=CropOptions(size=args.size, upsample=args.upsample, detector=args.detector, max_width=args.max_width),
            multi=args.multi, progress=not args.quiet, key=script_key(args),
        )
        print(json.dumps(summary.as_dict()) if args.json else summary.report())
        return 0

    return run_reporting_errors(body, parser)


if __name__ == "__main__":
    sys.exit(main())
