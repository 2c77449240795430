"""Benchmarks that print numbers and ratios against a baseline run in the same process.

Usage:
    python bench.py live [--video FILE]     per-frame latency and FPS of live identification
    python bench.py extract                 images/s of feature extraction
    python bench.py match                   per-face gallery search latency at 1k-100k vectors
    python bench.py detect                  per-frame detection time and faces per shot, per detector
    python bench.py align                   LFW accuracy of chips aligned from BlazeFace: dlib's landmarks or its keypoints
    python bench.py retrieve                per-sketch search latency at 1k-100k gallery photos
    python bench.py encryption              what encryption at rest costs: extraction, loading 100k vectors
    python bench.py startup                 import time of faceid and of test.py --help (run with each venv)
    python bench.py install                 time, disk and packages of the core and of each extra, fresh venvs
    python bench.py ray                     images/s of extract_features.py --engine ray against the local engine
    python bench.py cluster                 time and peak memory of clustering 1k-100k vectors, F on their truth
    python bench.py serve                   faceid serve: /identify req/s at 1-32 clients, 10 FPS camera streams kept up

Each sub-command's --help lists its options. Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from faceid.benchmarks import SUBCOMMANDS
from faceid.cli import add_verbosity, run_reporting_errors, setup_script


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=module.__doc__.splitlines()[0], description=module.__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        add_verbosity(sub, key_file=False)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_script(args, parser)
    return run_reporting_errors(lambda: args.run(args), parser)


if __name__ == "__main__":
    sys.exit(main())
