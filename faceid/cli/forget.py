"""Remove one person from the feature cache, every gallery built from it, and (asked) their images.

Usage:
    python forget.py --person NAME --features features/ [--faces_path faces/] [--key_file K]

Prints what it removed. Afterwards no identification can name them: names come from the cache
alone (trained heads and extractors hold no per-person data). Without --faces_path their
enrolment images stay, and a later extract_features.py on that folder would enrol them again.
An encrypted cache needs its key (the manifest is re-sealed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faceid.apps.forget import forget_person
from faceid.cli import add_verbosity, run_main
from faceid.settings import DEFAULTS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--person", required=True, help="the person's name (their folder name)")
    parser.add_argument("--features", "--features_path", dest="features", type=Path, default=Path(DEFAULTS.features_path),
                        help="feature cache (every cache below it, e.g. retrieval galleries, is cleaned too)")
    parser.add_argument("--faces_path", type=Path, default=None,
                        help="enrolment folder: also delete <faces_path>/<person>/ (crops, frames)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line")
    add_verbosity(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    report = forget_person(args.person, args.features, args.faces_path, key=args.key)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print(f"forgot {report.person}:")
        for line in report.removed:
            print(f"  {line}")
        if args.faces_path is None:
            print("  (enrolment images not touched: pass --faces_path DIR to delete them too)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), run, argv, aliases={"name": "person"})


if __name__ == "__main__":
    sys.exit(main())
