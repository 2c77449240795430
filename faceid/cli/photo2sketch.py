"""Turn face photos into pencil-sketch-like images, one PNG per photo, the same size.

Usage:
    python photo2sketch.py --photos lfw/ --output lfw_sketches/
    python photo2sketch.py --photos cuhk/photos --output synthetic/sketches --blur 0.05 --shading 0.3

--photos is flat or one sub-folder per person; --output mirrors it (photos/ann/1.jpg ->
output/ann/1.png). Existing files are never overwritten (they are counted and left alone), so a
re-run only adds what is missing. Unreadable files are reported and skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faceid.cli import add_verbosity, run_main
from faceid.errors import ImageReadError, InputError
from faceid.io.images import FLAT, encode_png, list_photos, read_image
from faceid.io.store import write_new_private
from faceid.sketch.synthesis import SketchStyle, photo_to_sketch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, required=True, help="folder of photos (flat or one sub-folder per person)")
    parser.add_argument("--output", type=Path, required=True, help="folder to write the sketches into (mirrors --photos)")
    parser.add_argument("--blur", type=float, default=SketchStyle.blur,
                        help="stroke width: blur of the negative as a share of the shorter side")
    parser.add_argument("--shading", type=float, default=SketchStyle.shading,
                        help="share of the photo's shading kept (0: lines only)")
    parser.add_argument("--gamma", type=float, default=SketchStyle.gamma, help="> 1 darkens the strokes")
    add_verbosity(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if not 0 < args.blur < 0.5 or not 0 <= args.shading <= 1 or args.gamma <= 0:
        raise InputError("--blur must be in (0, 0.5), --shading in [0, 1], --gamma positive")
    if args.output.resolve() == args.photos.resolve():
        raise InputError("--output must differ from --photos (the photos are never touched)")
    style = SketchStyle(blur=args.blur, shading=args.shading, gamma=args.gamma)
    people = list_photos(args.photos, "`photos`")
    tasks = [(path, args.output / ("" if person == FLAT else person) / f"{path.stem}.png")
             for person, paths in people.items() for path in paths]
    written, existing, unreadable = 0, 0, []
    for source, target in tqdm(tasks, desc="sketches", unit="img", disable=None if not args.quiet else True):
        if target.exists():
            existing += 1
            continue
        try:
            image = read_image(source, args.key)
        except ImageReadError as error:
            unreadable.append(str(error))
            continue
        try:
            write_new_private(target, encode_png(photo_to_sketch(image, style)), key=args.key)
            written += 1
        except FileExistsError:
            existing += 1
    if unreadable:
        print(f"skipped {len(unreadable)} unreadable files, e.g. {unreadable[0]}", file=sys.stderr)
    print(json.dumps({"command": "photo2sketch", "written": written, "existing_kept": existing,
                      "unreadable": len(unreadable), "output": str(args.output)}))
    if written == 0 and existing == 0:
        raise InputError(f"no sketch written: none of the {len(tasks)} files in {args.photos} could be read")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
