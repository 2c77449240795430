"""Embed every enrolled face once and cache the vectors per person.

Usage:
    python extract_features.py --faces_path faces/ --model_path models/extractor --features features/

Incremental: a second run embeds only added or changed images and drops removed ones.
--engine ray runs the work on a Ray cluster (pip install "faceid[ray]"); the cache is the same.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faceid.backbones import RUNTIMES, load_extractor
from faceid.cli import add_detection_options, add_verbosity, run_main
from faceid.cli.keys import convert
from faceid.detect.faces import FaceOptions
from faceid.errors import InputError
from faceid.features.cache import MANIFEST_NAME
from faceid.features.extract import extract_features
from faceid.features.ray_engine import ENGINES, RayEngine
from faceid.io.sealed import KEY_ENV, KeyRequiredError
from faceid.settings import DEFAULTS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces_path", type=Path, required=True, help="folder with one sub-folder of images per person")
    parser.add_argument("--model_path", type=Path, default=Path(DEFAULTS.extractor_path), help="extractor directory from network.py")
    parser.add_argument("--features", "--features_path", dest="features", type=Path, default=Path(DEFAULTS.features_path),
                        help="cache directory to create or update")
    parser.add_argument("--rebuild", action="store_true",
                        help="re-embed everything (needed when the cache was made by another extractor)")
    parser.add_argument("--no_detect", action="store_true",
                        help="the images already are face crops: resize them whole instead of detecting a face")
    add_detection_options(parser)
    parser.add_argument("--max_width", type=int, default=DEFAULTS.max_search_width,
                        help="search photos wider than this shrunk to this width (speed, memory; the same as "
                             "check_faces.py, so both agree on 'no face'); 0 = full size")
    parser.add_argument("--batch_size", type=int, default=DEFAULTS.batch_size,
                        help="faces per backbone call; larger amortises overhead, costs memory")
    parser.add_argument("--workers", type=int, default=DEFAULTS.workers,
                        help="processes that decode, detect and align while the backbone runs; one per core "
                             "keeps the CPU busy, 0 does everything in this process")
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="where decode, detect, align and embed run: local (this machine: --workers processes), or "
                             "ray (Ray Data tasks and an actor pool on a Ray cluster; needs faceid[ray], and the "
                             "images on a file system every node mounts at the same path); this process writes the "
                             "cache either way, and both give the same cache")
    parser.add_argument("--ray_address", default=None,
                        help="with --engine ray: the cluster to join (ray://HOST:10001, HOST:6379, or auto); "
                             "default: start a local Ray instance with this machine's cores")
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="what runs the backbone: onnx (ONNX Runtime, batched, all cores), keras, dlib (dlib's "
                             "own code; dlib backbone only), or auto (onnx when installed); same vectors")
    parser.add_argument("--encrypt", action="store_true",
                        help="with --key_file: first convert an existing plaintext cache to encrypted, in place "
                             "(file by file; run again to resume an interrupted conversion), then extract")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    add_verbosity(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.ray_address and args.engine != "ray":
        raise InputError("--ray_address is for --engine ray")
    # Before any work: a missing [ray] extra is named before a cache is converted or read.
    engine = RayEngine(args.model_path, args.runtime, args.ray_address, quiet=args.quiet) if args.engine == "ray" else None
    if args.encrypt:
        key = args.key
        if key is None:
            raise KeyRequiredError(f"--encrypt needs a key: pass --key_file FILE (keys.py new --output FILE) or set {KEY_ENV}")
        if (args.features / MANIFEST_NAME).is_file():
            for place, counts in convert(args.features, None, None, key).items():
                print(f"encrypted {place}: {counts['rewritten']} files ({counts['already']} already)", file=sys.stderr)
    extractor = load_extractor(args.model_path, args.runtime)
    summary = extract_features(
        args.faces_path, extractor, args.features,
        face_options=FaceOptions(detect=not args.no_detect, upsample=args.upsample, detector=args.detector,
                                 max_width=args.max_width or None),
        rebuild=args.rebuild, batch_size=args.batch_size, workers=args.workers, engine=engine, progress=not args.quiet,
        key=args.key,
    )
    if args.json:
        print(json.dumps(summary.as_dict()))
    else:
        print(summary.report())
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
