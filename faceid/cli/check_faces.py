"""Audit enrolment folders before extraction: what would hurt recognition, file by file.

Usage:
    python check_faces.py --faces_path faces/
    python check_faces.py --faces_path faces/ --model_path models/extractor --features features/
    python check_faces.py --faces_path faces/ --quarantine faces_flagged/ --json

Finds unreadable files, no face or several faces, faces too small or too blurry, exact and
near duplicates, people with too few usable images and, with an extractor, likely
mislabelled images. Exit code 0 when the audit ran (findings are not errors), 1 when it
could not run, 3 with --strict when anything was flagged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faceid.apps.audit import KINDS, audit_faces, quarantine
from faceid.apps.enrol import CropOptions
from faceid.cli import add_detection_options, add_verbosity, run_reporting_errors, script_key, setup_script
from faceid.detect.quality import DEFAULT_THRESHOLDS, QualityThresholds

CROP, QUALITY = CropOptions(), DEFAULT_THRESHOLDS
FLAGGED_EXIT_CODE = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces_path", type=Path, required=True,
                        help="folder with one sub-folder of images per person")
    parser.add_argument("--model_path", type=Path,
                        help="extractor directory from network.py: enables the mislabelled-image check")
    parser.add_argument("--features", "--features_path", dest="features", type=Path,
                        help="feature cache made with --model_path: its vectors are reused (read only, never changed)")
    parser.add_argument("--quarantine", type=Path,
                        help="move every flagged file to DIR/<person>/<file> (never deletes, never overwrites)")
    parser.add_argument("--ignore", action="append", default=[], choices=list(KINDS), metavar="KIND",
                        help=f"leave a kind of finding out (repeatable): {', '.join(KINDS)}")
    parser.add_argument("--min_face_size", type=int, default=QUALITY.min_face_size,
                        help="smallest face width in px; raise it for sharper crops, 0 turns the check off")
    parser.add_argument("--min_sharpness", type=float, default=QUALITY.min_sharpness,
                        help="variance of the Laplacian of the crop; raise (e.g. 25) to flag soft photos, 0 = off")
    parser.add_argument("--near_duplicate", type=float, default=QUALITY.near_duplicate,
                        help="two images this close (1 - thumbnail correlation) are the same picture; 0 = off")
    parser.add_argument("--min_images", type=int, default=QUALITY.min_images,
                        help="flag people with fewer usable images than this")
    parser.add_argument("--mislabel_ratio", type=float, default=QUALITY.mislabel_ratio,
                        help="flag an image whose nearest other person's centre is closer than this share of its own "
                        "centre's distance; lower flags fewer (more certain) images")
    add_detection_options(parser)
    parser.add_argument("--max_width", type=int, default=CROP.max_width,
                        help="search photos wider than this shrunk to this width (speed); 0 = full size")
    parser.add_argument("--strict", action="store_true", help=f"exit {FLAGGED_EXIT_CODE} when anything is flagged")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    add_verbosity(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.features is not None and args.model_path is None:
        parser.error("--features needs --model_path (the extractor that made the cache)")
    setup_script(args, parser)

    def body() -> int:
        from faceid.backbones import load_extractor

        report = audit_faces(
            args.faces_path,
            crop=CropOptions(upsample=args.upsample, detector=args.detector, max_width=args.max_width),
            thresholds=QualityThresholds(min_face_size=args.min_face_size, min_sharpness=args.min_sharpness,
                                         near_duplicate=args.near_duplicate, min_images=args.min_images,
                                         mislabel_ratio=args.mislabel_ratio),
            extractor=load_extractor(args.model_path) if args.model_path is not None else None,
            features_dir=args.features, ignore=tuple(args.ignore), progress=not args.quiet, key=script_key(args),
        )
        moves = quarantine(report, args.faces_path, args.quarantine) if args.quarantine is not None else []
        if args.json:
            print(json.dumps({**report.as_dict(), "moved": [[str(old), str(new)] for old, new in moves]}))
        else:
            print(report.table())
            for old, new in moves:
                print(f"moved {old} -> {new}")
        return FLAGGED_EXIT_CODE if args.strict and report.findings else 0

    return run_reporting_errors(body, parser)


if __name__ == "__main__":
    sys.exit(main())
