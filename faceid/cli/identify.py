"""Identify enrolled people live: every face of a webcam, a video or a folder of photos.

Usage:
    python test.py --features features/ --model models/extractor --classification models/similarity
    python test.py --features features/ --model models/extractor --scorer euclidean   # no head needed
    python test.py --video_path clip.mp4 --output annotated.mp4 --jsonl faces.jsonl --no_display
    python test.py --images photos/ --output annotated/

The webcam is the default source; press q in the window, or Ctrl-C, to stop.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from faceid.apps.live import LiveOptions, run_live
from faceid.backbones import RUNTIMES, load_extractor
from faceid.cli import (
    add_detection_options,
    add_verbosity,
    run_reporting_errors,
    script_key,
    setup_script,
    warn_if_no_window,
)
from faceid.detect.faces import FaceOptions
from faceid.features.cache import FeatureCache
from faceid.features.embedding import FaceEmbedder
from faceid.io.display import display_available
from faceid.io.video import frame_source
from faceid.match.fitting import GalleryOptions, fit_gallery
from faceid.match.scoring import RULES, SCORERS
from faceid.settings import DEFAULTS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", "--features_path", dest="features", type=Path, default=Path(DEFAULTS.features_path),
                        help="feature cache of the enrolled people (extract_features.py)")
    parser.add_argument("--model", "--model_path", dest="model", type=Path, default=Path(DEFAULTS.extractor_path),
                        help="extractor directory from network.py (the one the cache and head were made with)")
    parser.add_argument("--classification", type=Path,
                        help="similarity model from train.py (trained on this extractor's features); default: the "
                             "extractor's own head/ (train_siamese.py --loss bce), else "
                             f"{DEFAULTS.similarity_path} when it exists, else the backbone alone with its metric calibration")
    parser.add_argument("--scorer", choices=SCORERS,
                        help="how faces are compared: head (the trained similarity head), euclidean or cosine (the "
                             "backbone alone, no training needed); default: the one train.py measured best, else the "
                             "backbone calibration's")
    parser.add_argument("--target_fpir", type=float, default=DEFAULTS.target_fpir,
                        help="share of strangers that may be given a name, whatever the number enrolled (the "
                             "threshold is derived for the people enrolled); lower = fewer wrong names, more unknowns")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--camera", type=int, default=0,
                        help="webcam number (the default source); try 1, 2 for other cameras")
    source.add_argument("--video_path", type=Path, help="identify the faces of a video file instead of the webcam")
    source.add_argument("--images", type=Path, help="identify the faces of every photo in a folder instead")
    parser.add_argument("--output", type=Path, help="annotated video file (e.g. out.mp4); a folder with --images")
    parser.add_argument("--jsonl", type=Path, help="write one JSON line per face per frame to this file")
    parser.add_argument("--no_display", action="store_true", help="no window (automatic when there is no display)")
    parser.add_argument("--max_frames", type=int, default=0, help="stop after N frames (0 = all); keeps trials short")
    parser.add_argument("--rule", choices=RULES,
                        help="per-person rule; default: the one the model's threshold was calibrated for")
    parser.add_argument("--top_k", type=int, help="topk rule: mean of a person's k best matches (default: the model's, "
                        f"normally {DEFAULTS.top_k}); larger is steadier, needs more photos per person")
    parser.add_argument("--threshold", type=float,
                        help="accept a person when the decision score (shown on screen and in --jsonl) reaches this; "
                        "overrides the one derived from --target_fpir")
    parser.add_argument("--vote_score", type=float, help=f"vote rule: a photo votes when it scores this much "
                        f"(default: the model's, normally {DEFAULTS.vote_score})")
    parser.add_argument("--vote_share", type=float, help=f"vote rule: share of a person's photos that must vote "
                        f"(default: the model's, normally {DEFAULTS.vote_share}); raise it for fewer wrong names")
    parser.add_argument("--normalize", type=int, choices=(0, 1),
                        help="must match how the head was trained (default: read from the model)")
    add_detection_options(parser, live=True)
    parser.add_argument("--detect_every", type=int, default=None,
                        help="full detection every N frames, faces tracked in between; 1 = every frame "
                             f"(slowest, catches new faces soonest); default {DEFAULTS.detect_every}, "
                             f"{DEFAULTS.blazeface_detect_every} with blazeface")
    parser.add_argument("--detect_width", type=int, default=DEFAULTS.detect_width,
                        help="wider frames are searched downscaled to this width (0 = full size); "
                             "lower is faster but misses small faces")
    parser.add_argument("--reid_every", type=int, default=DEFAULTS.reid_every,
                        help="re-embed a tracked face every N frames (also when its box moves)")
    parser.add_argument("--vote_window", type=int, default=DEFAULTS.vote_window,
                        help="identifications per track the name is decided over (most frequent best match, "
                             "accepted on its mean score); larger is steadier")
    parser.add_argument("--min_evidence", type=int, default=DEFAULTS.min_evidence,
                        help="identifications a new track needs before it shows a name (it shows … until then)")
    parser.add_argument("--switch_margin", type=int, default=DEFAULTS.switch_margin,
                        help="identifications in a row another name must win to replace the shown one (hysteresis)")
    parser.add_argument("--per_frame", action="store_true",
                        help="detect, embed and decide every face in every frame with no tracking or vote "
                             "(the reference behaviour; several times slower)")
    parser.add_argument("--shortlist", type=int, default=0,
                        help="two-stage search for large galleries: score only the N people nearest to each "
                             f"face (0 = every person, exact; {DEFAULTS.shortlist} agreed 200/200 at 100k vectors)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="what runs the backbone: onnx (ONNX Runtime, batched, all cores), keras, dlib (dlib's "
                             "own code; dlib backbone only), or auto (onnx when installed); same vectors")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    add_verbosity(parser)
    return parser


def live_options(args: argparse.Namespace) -> LiveOptions:
    if args.per_frame:
        return LiveOptions.per_frame(detect_width=args.detect_width or None)
    return LiveOptions(detect_every=args.detect_every, detect_width=args.detect_width or None,
                       reid_every=args.reid_every, vote_window=args.vote_window,
                       min_evidence=args.min_evidence, switch_margin=args.switch_margin)


def gallery_options(args: argparse.Namespace) -> GalleryOptions:
    """The gallery's options as the flags give them (:func:`faceid.match.fitting.fit_gallery` decides)."""
    return GalleryOptions(
        classification=args.classification, scorer=args.scorer, target_fpir=args.target_fpir, threshold=args.threshold,
        rule=args.rule, top_k=args.top_k, vote_score=args.vote_score, vote_share=args.vote_share,
        normalize=args.normalize, shortlist=args.shortlist or None,
    )


def build_gallery(args: argparse.Namespace, extractor, cache: FeatureCache):
    """The fitted gallery test.py identifies with: the model's (or the backbone's) scorer and
    calibration, the threshold derived for the people enrolled, and what the user overrode."""
    vectors, labels, names = cache.matrix(min_images=1)
    return fit_gallery(vectors, np.array(names)[labels], extractor.manifest, args.model, gallery_options(args))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_frames < 0:
        parser.error("--max_frames must be 0 (all frames) or more")
    setup_script(args, parser)

    def body() -> int:
        warn_if_no_window(args.no_display)
        key = script_key(args)
        source = frame_source(camera=args.camera, video_path=args.video_path, images=args.images, key=key)
        extractor = load_extractor(args.model, args.runtime)
        cache = FeatureCache.load(args.features, extractor.manifest, key=key)
        gallery = build_gallery(args, extractor, cache)
        if cache.not_enrolled:
            print(f"not enrolled (no usable image in their folder): {', '.join(cache.not_enrolled)}", file=sys.stderr)
        # What the threshold promises, before the first frame (stderr with --json: stdout stays one JSON line).
        print(gallery.decision_.describe(), file=sys.stderr if args.json else sys.stdout, flush=True)
        # Photos are searched as photos (BlazeFace at its photo score); video with live's settings.
        face_options = (FaceOptions(detector=args.detector, upsample=args.upsample) if args.images
                        else FaceOptions.live(args.detector, args.upsample))
        summary = run_live(
            source, FaceEmbedder(extractor, face_options), gallery,
            output_path=args.output, jsonl_path=args.jsonl, display=not args.no_display and display_available(),
            max_frames=args.max_frames or None, progress=not args.quiet, options=live_options(args),
        )
        print(json.dumps(summary.as_dict()) if args.json else summary.report())
        return 0

    return run_reporting_errors(body, parser)


if __name__ == "__main__":
    sys.exit(main())
