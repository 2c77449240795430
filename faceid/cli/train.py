"""Train the similarity head on cached features, validated on held-out people.

Usage:
    python train.py --features_path features/ --output_model models/similarity --epochs 15 --normalize 0

Writes the head, the open-set calibration of every scorer (head, Euclidean, cosine) on the
held-out people, the scorer that measured best there (test.py's default), and report.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faceid.cli import add_verbosity, run_main
from faceid.extras import require_all
from faceid.features.cache import FeatureCache
from faceid.features.stats import load_stats
from faceid.io.store import write_json
from faceid.match.scoring import RULES, Rule
from faceid.settings import DEFAULTS
from faceid.train.trainer import TrainOptions, train_similarity


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features_path", "--features", dest="features_path", type=Path, default=Path(DEFAULTS.features_path),
                        help="feature cache from extract_features.py (people with many images work best)")
    parser.add_argument("--output_model", type=Path, default=Path(DEFAULTS.similarity_path), help="directory to write the model to")
    parser.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="passes over the pairs; watch val_loss in the report")
    parser.add_argument("--normalize", type=int, choices=(0, 1), default=0,
                        help="1: z-score features with compute_mean.py's statistics before the head")
    parser.add_argument("--neg_ratio", type=float, default=DEFAULTS.neg_ratio,
                        help="different-person pairs per same-person pair; more makes the head stricter")
    parser.add_argument("--max_pairs_per_person", type=int, default=DEFAULTS.max_positive_per_person,
                        help="cap on one person's same-person pairs (0 = no cap); keeps big folders from dominating")
    parser.add_argument("--val_people", type=float, default=DEFAULTS.val_people,
                        help="share of people held out for validation and threshold calibration")
    parser.add_argument("--target_far", type=float, default=DEFAULTS.target_far,
                        help="false-accept rate the threshold is set to; lower = fewer strangers named, more misses")
    parser.add_argument("--target_fpir", type=float, default=DEFAULTS.target_fpir,
                        help="share of strangers named at which the scorers are compared to pick the default one")
    parser.add_argument("--top_k", type=int, default=DEFAULTS.top_k,
                        help="per-person score = mean of the k best matches among that person's photos")
    parser.add_argument("--rule", choices=RULES, default="topk", help="per-person rule the threshold is calibrated for")
    parser.add_argument("--learning_rate", type=float, default=DEFAULTS.learning_rate, help="Adam step size")
    parser.add_argument("--batch_size", type=int, default=DEFAULTS.train_batch_size, help="pairs per gradient step")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="fixes the split, the pairs and the initialisation")
    add_verbosity(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    require_all(("tensorflow", "keras"), "train.py (the similarity head trains with Keras)")
    cache = FeatureCache.load(args.features_path, key=args.key)
    stats = load_stats(args.features_path, cache, key=args.key) if args.normalize else None
    options = TrainOptions(
        epochs=args.epochs, neg_ratio=args.neg_ratio, max_positive_per_person=args.max_pairs_per_person or None,
        val_people=args.val_people, target_far=args.target_far, target_fpir=args.target_fpir, normalize=bool(args.normalize),
        learning_rate=args.learning_rate, batch_size=args.batch_size, seed=args.seed,
        rule=Rule(name=args.rule, top_k=args.top_k),
    )
    model, report = train_similarity(cache, stats, options, progress=not args.quiet)
    model.save(args.output_model)
    write_json(args.output_model / "report.json", report)
    summary = {key: report[key] for key in ("val_auc", "val_auc_euclidean", "val_accuracy", "val_accuracy_euclidean",
                                           "threshold", "target_far", "winner_auc", "default_scorer")}
    summary["open_set_fnir"] = report["open_set"]["fnir"]
    summary["val_rank1"] = report["calibration"]["head"]["rank1"]
    summary["val_rank1_euclidean"] = report["calibration"]["euclidean"]["rank1"]
    print(json.dumps(summary))
    print(f"saved: {args.output_model}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
