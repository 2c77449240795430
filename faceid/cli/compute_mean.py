"""Compute and save the feature cache's normalisation statistics (for --normalize 1).

Usage:
    python compute_mean.py --features_path features/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from faceid.cli import add_verbosity, run_main
from faceid.features.cache import FeatureCache
from faceid.features.stats import compute_stats, save_stats
from faceid.settings import DEFAULTS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features_path", "--features", dest="features_path", type=Path, default=Path(DEFAULTS.features_path),
                        help="feature cache from extract_features.py; the stats are saved inside it")
    add_verbosity(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    stats = compute_stats(FeatureCache.load(args.features_path, key=args.key))
    path = save_stats(stats, args.features_path, key=args.key)
    dim = len(stats.normalizer.mean)
    print(f"vectors: {stats.n_vectors} x {dim}")
    print(f"global mean: {stats.global_mean:.6f}  global std: {stats.global_std:.6f}")
    print(f"per-dimension std: min {stats.normalizer.std.min():.6f}, max {stats.normalizer.std.max():.6f}")
    print(f"saved: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
