"""Measure accuracy the way the field does: LFW pair verification, identification, N-way one-shot.

Usage:
    python evaluate.py pairs --pairs_file pairs.txt --images_root lfw/ --model_path models/extractor \\
        [--classification models/similarity] [--train_per_fold] [--features features/]
    python evaluate.py identify --faces_path faces/ --model_path models/extractor --gallery_per_person 2
    python evaluate.py oneshot --faces_path faces/ --model_path models/extractor --way 20 --trials 1000
    python evaluate.py openset --features features/ --folds 5 --gallery_sizes 100,1000
    python evaluate.py calibrate --features features/ --output models/extractor/calibration.npz
    python evaluate.py retrieve --queries cuhk/sketches --gallery cuhk/photos --model_path models/sketch \\
        [--distractors lfw/] [--html report.html]
    python evaluate.py sample_pairs --images_root lfw/ --people models/siamese/training/split.json --output pairs.txt
    python evaluate.py cluster --faces_path faces/ --model_path models/extractor [--features features/] \\
        [--methods chinese-whispers,hdbscan] [--json result.json] [--plots plots/]

Euclidean distance, cosine similarity and the similarity head side by side. Each command
prints a table, then the results as one JSON object on the last line of stdout; --json,
--plots and --html write them to files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from faceid.cli import add_detection_options, add_verbosity, run_main
from faceid.cluster.methods import METHODS as CLUSTER_METHODS
from faceid.detect.faces import FaceOptions
from faceid.evaluate.identify import evaluate_identify
from faceid.evaluate.images import FACE_CHOICES, NO_FACE_POLICIES
from faceid.evaluate.oneshot import evaluate_oneshot
from faceid.evaluate.pairlist import read_people, sample_pair_list
from faceid.evaluate.pairs import MISSING_POLICIES, evaluate_pairs
from faceid.evaluate.report import notes, open_set_table, text_table, write_outputs
from faceid.features.cache import FeatureCache, check_same_extractor
from faceid.io.store import read_json, write_bytes, write_json
from faceid.match.crossval import calibrate_scorers, cross_validate_open_set
from faceid.match.model import SimilarityModel
from faceid.match.openset import CALIBRATION_FILE, save_calibrations
from faceid.match.scoring import METRIC_SCORERS, SCORERS
from faceid.settings import DEFAULTS


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model_path", type=Path, default=Path(DEFAULTS.extractor_path),
                        help="extractor directory from network.py")
    common.add_argument("--classification", type=Path,
                        help="similarity model from train.py, evaluated as method 'head' (omit: distances only)")
    common.add_argument("--features", "--features_path", dest="features", type=Path,
                        help="feature cache of this extractor: images it holds (same bytes) are not embedded again")
    add_detection_options(common)
    common.add_argument("--batch_size", type=int, default=DEFAULTS.batch_size, help="faces per backbone call")
    common.add_argument("--seed", type=int, default=DEFAULTS.seed,
                        help="fixes every random choice (folds' heads, splits, trials)")
    common.add_argument("--json", type=Path, help="also write the JSON result to this file")
    common.add_argument("--plots", type=Path, help="write PNG plots into this folder")
    common.add_argument("--html", type=Path, help="write a self-contained HTML report (numbers, plots, settings)")
    add_verbosity(common)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    pairs = commands.add_parser("pairs", parents=[common], help="verification accuracy on an LFW pair list")
    pairs.add_argument("--pairs_file", type=Path, required=True, help="LFW pair list (pairs.txt, pairsDevTrain.txt)")
    pairs.add_argument("--images_root", type=Path, required=True, help="folder holding <name>/<name>_0001.jpg")
    pairs.add_argument("--folds", type=int, default=10,
                       help="folds to cut a single list into (pairs.txt brings its own 10); more folds, finer std")
    pairs.add_argument("--train_per_fold", action="store_true",
                       help="also train a head per fold on the other folds' pairs (LFW restricted protocol)")
    pairs.add_argument("--head_epochs", type=int, default=10,
                       help="epochs of each per-fold head; raise if it underfits")
    pairs.add_argument("--missing", choices=MISSING_POLICIES, default="drop",
                       help="listed image not on disk: drop its pair, or (different pairs) use another person's image")
    pairs.add_argument("--no_face", choices=NO_FACE_POLICIES, default="centre",
                       help="image without a detected face: embed its centre crop (LFW practice), or reject its pairs")
    pairs.add_argument("--face", choices=FACE_CHOICES, default="centre",
                       help="the labelled face: the one at the centre (LFW's rule; detects every image) or the largest")
    pairs.add_argument("--far", type=float, nargs="+", default=[1e-3, 1e-2], help="false accept rates to report TAR at")
    identify = commands.add_parser("identify", parents=[common], help="closed- and open-set identification")
    oneshot = commands.add_parser("oneshot", parents=[common], help="N-way one-shot accuracy (Koch et al.)")
    for command in (identify, oneshot):
        command.add_argument("--faces_path", type=Path, required=True, help="folder with one sub-folder per person")
        command.add_argument("--no_face", choices=NO_FACE_POLICIES, default="skip",
                             help="image without a detected face: skip it (as extraction does), or embed a centre crop")
        command.add_argument("--face", choices=FACE_CHOICES, default="largest",
                             help="the person's face in a photo: the largest (as extraction does) or the centred one")
        command.add_argument("--people", type=Path,
                             help="only these people: a JSON list, one name per line, or train_siamese.py's "
                                  "training/split.json (its validation people, never trained on)")
    retrieve = commands.add_parser("retrieve", help="sketch -> photo retrieval: rank-1/5/10, CMC, mAP")
    retrieve.add_argument("--queries", type=Path, required=True,
                          help="query images (sketches): flat, matched by file-name stem, or one folder per person")
    retrieve.add_argument("--gallery", type=Path, required=True, help="photos, laid out like --queries")
    retrieve.add_argument("--model_path", type=Path, default=Path(DEFAULTS.extractor_path),
                          help="extractor directory (train_siamese.py --pairs_path ... --output DIR)")
    retrieve.add_argument("--distractors", type=Path,
                          help="photos of other people added to the gallery (flat or one folder per person, e.g. LFW)")
    retrieve.add_argument("--features", "--features_path", dest="features", type=Path,
                          help="the gallery's feature cache (default features/galleries/<name>-<hash>)")
    retrieve.add_argument("--distractor_features", type=Path, help="the distractors' feature cache (default likewise)")
    retrieve.add_argument("--no_detect", action="store_true", help="images are already face crops: resize, find no face")
    add_detection_options(retrieve)
    retrieve.add_argument("--workers", type=int, default=DEFAULTS.workers, help="processes detecting gallery faces")
    retrieve.add_argument("--seed", type=int, default=DEFAULTS.seed, help="fixes the distractor subsets")
    retrieve.add_argument("--json", type=Path, help="also write the JSON result to this file")
    retrieve.add_argument("--plots", type=Path, help="write PNG plots (CMC, rank-1 by gallery size) into this folder")
    retrieve.add_argument("--html", type=Path, help="write an HTML report: numbers, plots, a contact sheet of queries")
    add_verbosity(retrieve)
    cluster = commands.add_parser("cluster", help="clustering against person folders: pairwise and BCubed F")
    cluster.add_argument("--faces_path", type=Path, required=True,
                         help="one sub-folder of photos per person: the truth the clusters are scored against")
    cluster.add_argument("--model_path", type=Path, default=Path(DEFAULTS.extractor_path),
                         help="extractor directory; the default method's thresholds come from its calibration")
    cluster.add_argument("--features", "--features_path", dest="features", type=Path,
                         help="feature cache of this extractor to reuse and update (the photos are added to it); "
                              "default: a temporary cache, removed afterwards")
    cluster.add_argument("--methods", default="",
                         help=f"methods run beside the default ({DEFAULTS.cluster_method}), comma-separated, "
                              "from: " + ", ".join(CLUSTER_METHODS))
    cluster.add_argument("--people", type=Path,
                         help="only these people: a JSON list, one name per line, or train_siamese.py's "
                              "training/split.json (e.g. people no threshold was tuned on)")
    cluster.add_argument("--min_photos", type=int, default=1,
                         help="person folders with fewer photos are left out (5: LFW's usual clustering subset)")
    add_detection_options(cluster)
    cluster.add_argument("--workers", type=int, default=DEFAULTS.workers, help="processes detecting faces")
    cluster.add_argument("--batch_size", type=int, default=DEFAULTS.batch_size, help="faces per backbone call")
    cluster.add_argument("--json", type=Path, help="also write the JSON result to this file")
    cluster.add_argument("--plots", type=Path,
                         help="write PNG plots into this folder (F per method; cluster sizes against the people's)")
    add_verbosity(cluster)
    sample = commands.add_parser("sample_pairs", help="write an LFW-format pair list drawn from some people")
    sample.add_argument("--images_root", type=Path, required=True, help="folder holding <name>/<name>_0001.jpg")
    sample.add_argument("--people", type=Path, required=True,
                        help="whose images: a JSON list, one name per line, or train_siamese.py's training/split.json")
    sample.add_argument("--per_kind", type=int, default=1000, help="same-person pairs, and as many different-person")
    sample.add_argument("--seed", type=int, default=DEFAULTS.seed, help="fixes the draw")
    sample.add_argument("--output", type=Path, required=True, help="pair list to write (for evaluate.py pairs)")
    add_verbosity(sample, key_file=False)
    identify.add_argument("--gallery_per_person", type=int, default=2,
                          help="images enrolled per person (K); the others are probes")
    identify.add_argument("--min_images", type=int, help="people with fewer usable images are left out (default K+1)")
    identify.add_argument("--stranger_share", type=float, default=0.2,
                          help="share of people never enrolled, whose images are strangers (0: closed set only)")
    identify.add_argument("--target_fpir", "--target_far", dest="target_fpir", type=float, default=DEFAULTS.target_fpir,
                          help="share of strangers the shipped decision may name (its threshold is derived for the "
                               "gallery evaluated); FNIR is also reported at FPIR 0.001, 0.01 and 0.1")
    identify.add_argument("--scorer", nargs="+", choices=SCORERS,
                          help="scorers to report (default: euclidean, cosine, and the head with --classification)")
    identify.add_argument("--gallery_sizes", type=_sizes,
                          help="e.g. 10,100,1000: repeat the open-set measures with galleries of that many people "
                               "(the known people plus people with too few images to probe, enrolled as distractors)")
    identify.add_argument("--max_probes_per_person", type=int, default=10,
                          help="probes per person (0 = all); stops one big folder from dominating the rates")
    identify.add_argument("--euclidean_threshold", type=float,
                          help="distance under which a person is accepted (dlib: 0.6), for the stranger rejection rate")
    identify.add_argument("--cosine_threshold", type=float, help="cosine similarity over which a person is accepted")
    openset = commands.add_parser("openset", help="decision rules and calibration, person-disjoint, cross-validated")
    calibrate = commands.add_parser("calibrate", help="calibrate the metric scorers of an extractor (no TensorFlow)")
    for command in (openset, calibrate):
        command.add_argument("--features", "--features_path", dest="features", type=Path, required=True,
                             help="feature cache of people no user will enrol (e.g. LFW DevTrain)")
        command.add_argument("--seed", type=int, default=DEFAULTS.seed, help="fixes the folds and the draws")
        command.add_argument("--target_fpir", type=float, default=DEFAULTS.target_fpir,
                             help="share of strangers named the thresholds are set for")
        command.add_argument("--json", type=Path, help="also write the JSON result to this file")
        add_verbosity(command)
    openset.add_argument("--folds", type=int, default=5, help="person-disjoint folds (each calibrated on the others)")
    openset.add_argument("--gallery_sizes", type=_sizes, default=(100, 1000),
                         help="people enrolled (each fold's known people plus other folds' people as distractors)")
    openset.add_argument("--photos", type=int, default=DEFAULTS.top_k, help="photos enrolled per person")
    openset.add_argument("--calibrate_as", type=int,
                         help="derive thresholds as if every person had this many photos (what ignoring counts costs)")
    openset.add_argument("--classification", type=Path,
                         help="also the head of this model (trained on other people, or the result is in-sample)")
    openset.add_argument("--train_head", action="store_true",
                         help="also a head trained for each fold on the other folds' people (train.py's network)")
    openset.add_argument("--head_epochs", type=int, default=DEFAULTS.epochs, help="epochs of each fold's head")
    calibrate.add_argument("--output", type=Path,
                           help="calibration file (default: calibration.npz in the cache's extractor directory, "
                                "--model_path)")
    calibrate.add_argument("--model_path", type=Path, default=Path(DEFAULTS.extractor_path),
                           help="extractor directory the default --output goes into")
    oneshot.add_argument("--way", type=int, default=20, help="people per trial (chance is 1/way)")
    oneshot.add_argument("--trials", type=int, default=1000,
                         help="trials; the 95%% interval narrows as 1/sqrt(trials)")
    return parser


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"gallery sizes are whole numbers separated by commas, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"gallery sizes must be at least 1, got {text!r}")
    return sizes


def run(args: argparse.Namespace, argv: list[str]) -> int:
    if args.command in ("openset", "calibrate"):
        return run_open_set(args)
    if args.command == "retrieve":
        return run_retrieve(args, argv)
    if args.command == "cluster":
        return run_cluster(args, argv)
    if args.command == "sample_pairs":
        write_bytes(args.output, sample_pair_list(args.images_root, read_people(args.people), args.per_kind,
                                                  args.seed).encode())
        print(json.dumps({"command": "sample_pairs", "output": str(args.output), "per_kind": args.per_kind}))
        return 0
    people = read_people(args.people) if getattr(args, "people", None) else None
    common = {
        "model_path": args.model_path, "classification": args.classification, "features": args.features,
        "face_options": FaceOptions(upsample=args.upsample, detector=args.detector), "no_face": args.no_face,
        "face_choice": args.face, "batch_size": args.batch_size, "seed": args.seed, "progress": not args.quiet,
        "argv": argv, "key": args.key,
    }
    if args.command == "pairs":
        evaluation = evaluate_pairs(
            args.pairs_file, args.images_root, folds=args.folds, train_per_fold=args.train_per_fold,
            head_epochs=args.head_epochs, missing=args.missing, far_targets=args.far, **common)
    elif args.command == "identify":
        evaluation = evaluate_identify(
            args.faces_path, gallery_per_person=args.gallery_per_person, min_images=args.min_images,
            stranger_share=args.stranger_share, target_fpir=args.target_fpir, scorers=args.scorer,
            gallery_sizes=args.gallery_sizes,
            max_probes_per_person=args.max_probes_per_person, euclidean_threshold=args.euclidean_threshold,
            cosine_threshold=args.cosine_threshold, people=people, **common)
    else:
        evaluation = evaluate_oneshot(args.faces_path, way=args.way, trials=args.trials, people=people, **common)
    written = write_outputs(evaluation, args.json, args.plots, args.html)
    print(text_table(evaluation))
    print("\n".join(notes(evaluation)))
    for path in written:
        print(f"wrote {path}")
    print(json.dumps(evaluation.summary))
    return 0


def run_retrieve(args: argparse.Namespace, argv: list[str]) -> int:
    from faceid.evaluate import retrieve

    evaluation = retrieve.evaluate_retrieve(
        args.queries, args.gallery, args.model_path, distractors=args.distractors, features=args.features,
        distractor_features=args.distractor_features,
        face_options=FaceOptions(detect=not args.no_detect, upsample=args.upsample, detector=args.detector),
        workers=args.workers, seed=args.seed, progress=not args.quiet, argv=argv, key=args.key)
    written = retrieve.write_outputs(evaluation, args.json, args.plots, args.html, key=args.key)
    print(retrieve.text_table(evaluation.summary))
    for path in written:
        print(f"wrote {path}")
    print(json.dumps(evaluation.summary))
    return 0


def run_cluster(args: argparse.Namespace, argv: list[str]) -> int:
    from faceid.evaluate import cluster

    evaluation = cluster.evaluate_cluster(
        args.faces_path, args.model_path, features=args.features, methods=cluster.parse_methods(args.methods),
        people=read_people(args.people) if args.people else None, min_photos=args.min_photos,
        face_options=FaceOptions(upsample=args.upsample, detector=args.detector), workers=args.workers,
        batch_size=args.batch_size, progress=not args.quiet, argv=argv, key=args.key)
    written = cluster.write_outputs(evaluation, args.json, args.plots)
    print(cluster.text_table(evaluation.summary))
    for path in written:
        print(f"wrote {path}")
    print(json.dumps(evaluation.summary))
    return 0


def train_fold_head(vectors: np.ndarray, labels: np.ndarray, rows: np.ndarray, args: argparse.Namespace):
    """A head trained as train.py trains one, on ``rows`` only: their people split into training
    and validation people, pairs sampled within each (Keras, imported here)."""
    from faceid.train.head import train_head
    from faceid.train.trainer import TrainOptions, pairs_within, split_people

    options = TrainOptions(epochs=args.head_epochs, seed=args.seed)
    train_rows, val_rows = split_people(labels[rows], options.val_people, options.seed)
    train_pairs = pairs_within(rows[train_rows], labels, options, options.seed)
    val_pairs = pairs_within(rows[val_rows], labels, options, options.seed + 1)
    head, _ = train_head(vectors, train_pairs, val_pairs, architecture=options.architecture, epochs=options.epochs,
                         batch_size=options.batch_size, learning_rate=options.learning_rate, seed=options.seed,
                         progress=False)
    return head


def run_open_set(args: argparse.Namespace) -> int:
    """``openset`` and ``calibrate``: on a feature cache, no images, no TensorFlow for metric scorers."""
    cache = FeatureCache.load(args.features, key=args.key)
    vectors, labels, _ = cache.matrix(min_images=1)
    scorers = {name: {"scorer": name} for name in METRIC_SCORERS}
    if args.command == "calibrate":
        output = args.output or args.model_path / CALIBRATION_FILE
        if args.output is None:
            manifest = read_json(args.model_path / "manifest.json", "extractor manifest", "pass --model_path or --output")
            check_same_extractor(cache.manifest["extractor"], manifest, f"feature cache {args.features}",
                                 f"calibrate with a cache of extractor {args.model_path}, or pass --output")
        source = {"extractor_fingerprint": cache.fingerprint, "measured_on": f"{cache.directory} (evaluate.py calibrate)",
                  "cache_digest": cache.content_digest()}
        calibrations, winner, report = calibrate_scorers(vectors, labels, scorers, target_fpir=args.target_fpir,
                                                         seed=args.seed, source=source)
        save_calibrations(output, calibrations)
        result = {"command": "calibrate", "output": str(output), "default_scorer": winner, "open_set": report,
                  "people": len(np.unique(labels)), "vectors": len(vectors)}
        print(f"calibrated {', '.join(calibrations)} on {result['people']} people ({result['vectors']} vectors); "
              f"default scorer {winner} ({report['measure']}: FNIR "
              + ", ".join(f"{name} {value:.1%}" for name, value in report["fnir"].items()) + f"); wrote {output}")
    else:
        if args.classification is not None:
            model = SimilarityModel.load(args.classification)
            model.check_extractor(cache.manifest["extractor"], f"feature cache {args.features}")
            scorers["head"] = {"scorer": "head", "head": model.head, "normalizer": model.normalizer}
        elif args.train_head:
            scorers["head"] = {"scorer": "head", "train": lambda rows: train_fold_head(vectors, labels, rows, args)}
        results = cross_validate_open_set(vectors, labels, scorers, folds=args.folds, gallery_sizes=args.gallery_sizes,
                                          photos=args.photos, target_fpir=args.target_fpir, seed=args.seed,
                                          calibrate_as=args.calibrate_as, progress=not args.quiet)
        result = {"command": "openset", "features": str(args.features), "folds": args.folds,
                  "photos": args.photos, "calibrate_as": args.calibrate_as, "target_fpir": args.target_fpir, "margin_weights": list(DEFAULTS.margin_weights),
                  "results": results}
        print(open_set_table(results, args.target_fpir))
    if args.json:
        write_json(args.json, result)
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    # The command line is recorded in the HTML report's settings.
    return run_main(build_parser(), lambda args: run(args, sys.argv[1:] if argv is None else argv), argv)


if __name__ == "__main__":
    sys.exit(main())
