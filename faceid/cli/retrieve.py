"""Find the person in a photo gallery from a sketch: the gallery's best candidates, with scores.

Usage:
    python retrieve.py --query sketch.png --gallery photos/ --model_path models/sketch --top 10
    python retrieve.py --query s1.png s2.png --gallery photos/ --model_path models/sketch --html sheet.html
    python retrieve.py --query sketch.png --gallery photos/ --model_path models/sketch --json

The gallery (flat photos, each its own identity by file name, or one sub-folder per person) is
embedded once into a feature cache (--features; default features/galleries/<name>-<hash>) and
only new or changed photos are embedded on later runs. --model_path is any extractor directory:
a cross-domain one (train_siamese.py --pairs_path) embeds the query as a sketch and the gallery as
photos; any other embeds both alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from faceid.backbones import load_extractor
from faceid.cli import add_detection_options, add_verbosity, run_main
from faceid.detect.faces import FaceOptions
from faceid.errors import InputError
from faceid.io.store import write_bytes
from faceid.retrieve.gallery import default_cache, embed_gallery, embed_queries
from faceid.retrieve.sheet import Candidate, SheetRow, render_contact_sheet
from faceid.settings import DEFAULTS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--query", type=Path, nargs="+", required=True, help="sketch image(s) to search for")
    parser.add_argument("--gallery", type=Path, required=True,
                        help="folder of photos: flat (each photo one identity) or one sub-folder per person")
    parser.add_argument("--model_path", type=Path, default=Path(DEFAULTS.extractor_path),
                        help="extractor directory (train_siamese.py --pairs_path ... --output DIR for sketches)")
    parser.add_argument("--top", type=int, default=10, help="candidates listed per query (each identity once)")
    parser.add_argument("--features", "--features_path", dest="features", type=Path,
                        help="the gallery's feature cache (default features/galleries/<gallery name>-<hash>)")
    parser.add_argument("--rebuild", action="store_true", help="re-embed every gallery photo")
    parser.add_argument("--html", type=Path, help="write a contact sheet: each query beside its top candidates")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object only (for scripts)")
    parser.add_argument("--no_detect", action="store_true", help="images are already face crops: resize, find no face")
    add_detection_options(parser)
    parser.add_argument("--workers", type=int, default=DEFAULTS.workers, help="processes detecting gallery faces")
    add_verbosity(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise InputError(f"--top {args.top}: list at least one candidate")
    face_options = FaceOptions(detect=not args.no_detect, upsample=args.upsample, detector=args.detector)
    extractor = load_extractor(args.model_path)
    started = time.perf_counter()
    gallery = embed_gallery(args.gallery, extractor, args.features, face_options, args.workers, args.rebuild,
                            progress=not (args.quiet or args.json), key=args.key)
    loaded = time.perf_counter()
    vectors, kept, _ = embed_queries(args.query, extractor, face_options, strict=True, key=args.key)
    ranked = gallery.rank(vectors, args.top)
    searched = time.perf_counter()
    results = []
    for row, candidates in zip(kept, ranked):
        results.append({"query": str(args.query[row]), "candidates": [
            {"rank": rank, "score": score, "identity": gallery.identities[index], "path": str(gallery.paths[index])}
            for rank, (index, score) in enumerate(candidates, start=1)]})
    if args.html:
        sheet = [SheetRow(Path(result["query"]), [Candidate(Path(c["path"]), c["identity"], c["score"])
                                                  for c in result["candidates"]]) for result in results]
        write_bytes(args.html, render_contact_sheet(sheet, f"Sketch search: {args.gallery}", key=args.key).encode())
    summary = {
        "command": "retrieve", "model_path": str(args.model_path), "gallery": str(args.gallery),
        "features": str(args.features or default_cache(args.gallery)), "gallery_photos": len(gallery),
        "gallery_skipped": len(gallery.skipped), "embedded_now": gallery.summary.embedded if gallery.summary else 0,
        "seconds": {"gallery": round(loaded - started, 3), "queries": round(searched - loaded, 3)},
        "results": results, "html": None if args.html is None else str(args.html),
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    if gallery.skipped:
        print(f"{len(gallery.skipped)} gallery photos gave no vector (e.g. {next(iter(gallery.skipped.items()))})",
              file=sys.stderr)
    for result in results:
        print(f"{result['query']}: {len(gallery)} gallery photos")
        for candidate in result["candidates"]:
            print(f"  {candidate['rank']:>3}  {candidate['score']:.3f}  {candidate['identity']}  {candidate['path']}")
    if args.html:
        print(f"wrote {args.html}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
