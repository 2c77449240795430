"""Train a siamese network end to end and write it as an extractor directory.

Usage:
    python train_siamese.py --faces_path faces/ --init dlib --loss triplet --output models/siamese
    python train_siamese.py --faces_path faces/ --init koch --loss bce --output models/koch
    python train_siamese.py --anchor data/anchor --positive data/positive --negative data/negative \\
        --init dlib --loss bce --output models/me
    python train_siamese.py --pairs_path cuhk_train --domains sketches photos --output models/sketch
    python train_siamese.py --pairs_path cuhk_train --domains sketches photos --cross_validate 5 --output runs/cv-hog
    python train_siamese.py --pairs_path cuhk_train --domains sketches photos --init dlib --loss triplet \\
        --cross_validate 5 --output runs/cv-dlib

The output works as --model_path / --model for extract_features.py, train.py, test.py and
evaluate.py. report.json beside it compares the trained network with the starting one on the
validation people; training/ holds the prepared chips and the checkpoint (--resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faceid.backbones.registry import TTA_MODES
from faceid.cli import add_detection_options, add_verbosity, run_main
from faceid.detect.faces import FaceOptions
from faceid.errors import InputError
from faceid.settings import DEFAULTS
from faceid.train.cross_domain import HogOptions, cross_validate, train_hog
from faceid.train.siamese import (
    AUGMENT,
    COLORS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_MARGIN,
    FINE_TUNE,
    LOSSES,
    MINING,
    TOWERS,
    DataOptions,
    SiameseOptions,
    train_siamese,
)
from faceid.train.siamese_data import load_anchor_layout, load_domain_pairs, load_faces


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data (one layout)")
    data.add_argument("--faces_path", type=Path, help="one sub-folder per person (LFW, ORL, capture.py's folders)")
    data.add_argument("--anchor", type=Path, help="webcam-app layout: your own captures (with --positive, --negative)")
    data.add_argument("--positive", type=Path, help="more captures of the anchor person")
    data.add_argument("--negative", type=Path, help="other people: flat images or one sub-folder per person (e.g. LFW)")
    data.add_argument("--pairs_path", type=Path, help="cross-domain layout: a folder with the two --domains folders")
    data.add_argument("--domains", nargs=2, metavar=("A", "B"), help="A/NN.png and B/NN.png show the same person")
    data.add_argument("--no_detect", action="store_true", help="images are already face crops: resize them, find no face")
    add_detection_options(parser)
    data.add_argument("--workers", type=int, default=DEFAULTS.workers, help="processes detecting faces (0: this one)")
    net = parser.add_argument_group("network")
    net.add_argument("--init", choices=(*TOWERS, "hog"),
                     help="dlib: dlib's face-trained ResNet, fine-tuned; koch: Koch et al.'s CNN from scratch; "
                          "resnet50: ImageNet ResNet50 (needs its weights, see --weights); hog: dense HOG with a "
                          "per-domain projection, no network (--pairs_path only). Default: hog with --pairs_path "
                          "(what cross-validation chose for sketches), dlib otherwise")
    net.add_argument("--loss", choices=LOSSES, default="bce",
                     help="bce: Koch's L1 distance + sigmoid (saved as the head); contrastive or triplet: an embedding")
    net.add_argument("--margin", type=float, help="contrastive/triplet margin on unit-length embeddings "
                     f"(default {DEFAULT_MARGIN['triplet']} triplet, {DEFAULT_MARGIN['contrastive']} contrastive)")
    net.add_argument("--mining", choices=MINING, default="semi-hard",
                     help="triplet negatives: semi-hard (FaceNet) or batch-hard (hardest per anchor)")
    net.add_argument("--fine_tune", choices=FINE_TUNE, default="top",
                     help="dlib/resnet50 layers that train: top (last stage + output), fc (output only), all")
    net.add_argument("--input_size", type=int, help="koch: chip side (default 105); resnet50: default "
                     f"{DEFAULTS.input_size}; dlib is fixed at 150")
    net.add_argument("--color", choices=COLORS, default="grey", help="koch: grey (the paper) or rgb (the webcam apps)")
    net.add_argument("--weights", default=DEFAULTS.weights,
                     help="resnet50: imagenet (downloaded by Keras) or a local ..._notop.h5 file")
    hog = parser.add_argument_group("sketch -> photo (--pairs_path)")
    hog.add_argument("--cell", type=int, default=HogOptions.cell, help="HOG cell side in pixels of the 150-px chip")
    hog.add_argument("--dims", type=int, default=HogOptions.dims,
                     help="PCA components kept (0: the whole 4,356-d descriptor, the most accurate)")
    hog.add_argument("--synthetic", type=Path,
                     help="--pairs_path: photos (flat or per person, e.g. LFW) turned into synthetic sketch-photo "
                          "pairs: extra training people for a network, extra PCA data for hog (with --dims)")
    hog.add_argument("--synthetic_limit", type=int, default=HogOptions.synthetic_limit,
                     help="most --synthetic photos used (a seeded random sample)")
    fit = parser.add_argument_group("training")
    fit.add_argument("--epochs", type=int, default=SiameseOptions.epochs, help="most passes over the training images")
    fit.add_argument("--patience", type=int, default=SiameseOptions.patience,
                     help="stop after this many epochs without a better validation AUC")
    fit.add_argument("--batch_size", type=int, default=SiameseOptions.batch_size, help="faces per batch (all pairs scored)")
    fit.add_argument("--per_person", type=int, default=SiameseOptions.per_person,
                     help="images per person in a batch (the rest of the batch: other people)")
    fit.add_argument("--learning_rate", type=float,
                     help="Adam step size (default " + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LEARNING_RATE.items()) + ")")
    fit.add_argument("--augment", choices=AUGMENT, default="auto",
                     help="brightness/contrast/saturation/flip/rotation/scale/shift/JPEG on the fly; auto: on below "
                          "20,000 training images")
    fit.add_argument("--save_augmented", type=int, default=0, metavar="N",
                     help="also write N augmented training chips to OUTPUT/augmented/ to look at")
    fit.add_argument("--val_people", type=float, default=DEFAULTS.val_people,
                     help="share of people held out for validation (and the choice of network)")
    fit.add_argument("--test_people", type=float, default=SiameseOptions.test_people,
                     help="share of people also held out of both, to measure the start, the fine-tuned and the written "
                          "network on (report.json's test; training/test_people.txt names them). 0: none")
    fit.add_argument("--bootstrap", type=int, default=SiameseOptions.bootstrap,
                     help="resamples of validation people in the paired bootstrap that decides whether fine-tuning "
                          "really beat the starting network (else the starting network is written)")
    fit.add_argument("--target_fpir", type=float, default=DEFAULTS.target_fpir,
                     help="share of strangers the calibrated threshold may name (test.py's default)")
    fit.add_argument("--seed", type=int, default=DEFAULTS.seed, help="fixes the split, the batches, augmentation and init")
    fit.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    fit.add_argument("--export", choices=("onnx", "none"), default="onnx", help="also export the tower to ONNX")
    fit.add_argument("--tta", choices=TTA_MODES,
                     help="test-time augmentation of the written tower and of every validation measure: flip averages "
                          "each chip's vector with its mirror image's (network.py's default for frozen backbones); "
                          f"default {SiameseOptions.tta} (none with --init hog, which has no network)")
    fit.add_argument("--cross_validate", type=int, default=0, metavar="K",
                     help="--pairs_path: instead of one model, train K models, each on all people but one fold, and "
                          "score sketch -> photo retrieval on the held-out fold (OUTPUT/crossval.json; frozen dlib "
                          "beside it)")
    parser.add_argument("--output", type=Path, required=True, help="extractor directory to write")
    add_verbosity(parser)
    return parser


def load_layout(args: argparse.Namespace):
    chosen = [name for name, given in (("--faces_path", args.faces_path), ("--anchor", args.anchor),
                                       ("--pairs_path", args.pairs_path)) if given is not None]
    if len(chosen) != 1:
        raise InputError("give one data layout: --faces_path DIR, or --anchor/--positive/--negative, or "
                         f"--pairs_path DIR --domains A B (got {', '.join(chosen) or 'none'})")
    if args.anchor is not None:
        if args.positive is None or args.negative is None:
            raise InputError("--anchor needs --positive and --negative too")
        return load_anchor_layout(args.anchor, args.positive, args.negative)
    if args.pairs_path is not None:
        if not args.domains:
            raise InputError("--pairs_path needs --domains A B: the two sub-folders whose files pair by name")
        return load_domain_pairs(args.pairs_path, tuple(args.domains))
    return load_faces(args.faces_path)


def run(args: argparse.Namespace) -> int:
    faces = load_layout(args)
    init = args.init or ("hog" if faces.layout == "pairs" else "dlib")
    face_options = FaceOptions(detect=not args.no_detect, upsample=args.upsample, detector=args.detector)
    progress = not args.quiet
    if init == "hog":
        if args.tta not in (None, "none") or args.test_people:
            raise InputError("--tta flip and --test_people are for network towers: --init hog fits a projection on "
                             "unmirrored HOG descriptors and measures itself with --cross_validate K")
        hog_options = HogOptions(cell=args.cell, dims=args.dims, synthetic=args.synthetic,
                                 synthetic_limit=args.synthetic_limit, val_people=args.val_people, seed=args.seed)

        def train(subset, output: Path) -> dict:
            shared = args.output / "crossval" / "synthetic" if args.cross_validate else None
            return train_hog(subset, output, hog_options, face_options, args.workers,
                             progress and not args.cross_validate, synthetic_chips=shared, key=args.key)
    else:
        options = SiameseOptions(
            init=init, loss=args.loss, margin=args.margin, mining=args.mining, fine_tune=args.fine_tune,
            input_size=args.input_size, color=args.color, weights=args.weights, epochs=args.epochs,
            batch_size=args.batch_size, per_person=args.per_person, learning_rate=args.learning_rate,
            patience=args.patience, val_people=args.val_people, augment=args.augment, target_fpir=args.target_fpir,
            seed=args.seed, export=args.export, tta=args.tta or SiameseOptions.tta, test_people=args.test_people,
            bootstrap=args.bootstrap,
            synthetic=None if args.synthetic is None else str(args.synthetic), synthetic_limit=args.synthetic_limit,
        )
        data = DataOptions(face_options=face_options, workers=args.workers)

        def train(subset, output: Path) -> dict:
            resume = args.resume or (args.cross_validate > 0 and (output / "training" / "state.json").is_file())
            return train_siamese(subset, output, options, data, resume=resume,
                                 progress=progress and not args.cross_validate, save_augmented=args.save_augmented,
                                 synthetic_chips=args.output / "crossval" / "synthetic" if args.cross_validate else None,
                                 key=args.key)
    if args.cross_validate:
        summary = cross_validate(faces, args.output, args.cross_validate, args.seed, train, face_options, args.workers,
                                 progress, key=args.key)
        print(crossval_table(summary))
        print(f"wrote {args.output / 'crossval.json'}")
        print(json.dumps({key: summary[key] for key in ("method", "method_all_photos", "frozen_dlib",
                                                         "frozen_dlib_all_photos", "folds", "people", "seconds")}))
        return 0
    report = train(faces, args.output)
    if init == "hog":
        summary = {"method": "hog", "val_rank1": report["val"]["rank1"], "val_map": report["val"]["map"],
                   "start_rank1": report["start"]["rank1"], "people": report["people"]["fitted_on"],
                   "seconds": report["seconds"]}
    else:
        summary = {key: report[key] for key in ("improved", "kept", "val_auc", "val_accuracy", "start", "best_epoch",
                                                "stopped", "seconds")}
        summary["threshold_one_person"] = report["calibration"].get("threshold_one_person")
        summary["default_scorer"] = report["calibration"].get("default_scorer")
        print(comparison_table(report))
    print(json.dumps(summary))
    print(f"saved: {args.output}")
    return 0


FIGURE_LABELS = {"pair_auc": "pair AUC", "pair_accuracy": "pair accuracy", "tar_at_far": "TAR at FAR 1%",
                 "rank1": "rank-1 (leave one out)", "own_fnir": "anchor person missed at FPIR"}


def comparison_table(report: dict) -> str:
    """The starting and the fine-tuned network side by side on the validation (and test) people."""
    kept = "fine-tuned" if report["improved"] else "starting"
    lines = [f"kept the {kept} network (improved: {str(report['improved']).lower()}): {report['decision']}"]
    parts = [(title, report[key]) for title, key in (("validation", "validation"), ("test", "test")) if report.get(key)]
    for title, part in parts:
        written, tuned = "written" in part, "fine_tuned" in part
        rows = [("", "start") + (("fine-tuned", "gain", "95% interval") if tuned else ()) + (("written",) if written else ())]
        for name, label in FIGURE_LABELS.items():
            if name not in part["start"] or (tuned and name not in part["fine_tuned"]):
                continue
            row = (label, f"{part['start'][name]:.4f}")
            if tuned:
                gain = part["gain"][name]
                interval = f"{gain['low']:+.4f} to {gain['high']:+.4f}" if "low" in gain else "-"
                row += (f"{part['fine_tuned'][name]:.4f}", f"{gain['value']:+.4f}", interval)
            rows.append(row + ((f"{part['written'][name]:.4f}",) if written else ()))
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        lines.append(f"{title}: {part['people']} people, {part['faces']} faces, {part['pairs']} pairs "
                     f"({part['pairs_same']} same-person)")
        lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def crossval_table(summary: dict) -> str:
    rows = [("method", "rank-1", "rank-5", "rank-10", "mAP", "gallery")]
    for name, label in (("method", "trained, held-out fold's photos"), ("method_all_photos", "trained, every photo"),
                        ("frozen_dlib", "frozen dlib, held-out fold's photos"),
                        ("frozen_dlib_all_photos", "frozen dlib, every photo")):
        part = summary[name]
        sizes = part["gallery_sizes"]
        rows.append((label, f"{part['rank1']:.1%}", f"{part['rank5']:.1%}", f"{part['rank10']:.1%}",
                     f"{part['map']:.3f}", f"{min(sizes)}-{max(sizes)}"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    return (f"{summary['folds']}-fold person-disjoint cross-validation, {summary['people']} people, "
            f"{summary['seconds']:.0f} s\n" + "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), run, argv, aliases={"folds": "cross_validate", "backbone": "init"})


if __name__ == "__main__":
    sys.exit(main())
