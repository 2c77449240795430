"""LFW pair verification (:func:`evaluate_pairs`)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceid.detect.faces import FaceOptions
from faceid.errors import InputError
from faceid.evaluate.common import DEFAULT_FAR_TARGETS, Evaluation, run_settings, set_up, summary_head
from faceid.evaluate.folds import fold_accuracy
from faceid.evaluate.images import MISSING, embed_images
from faceid.evaluate.methods import Method, build_methods
from faceid.evaluate.pairlist import ImageKey, PairList, read_pair_list
from faceid.io.images import UNREADABLE
from faceid.io.sealed import Key
from faceid.match.head import HeadArchitecture, SimilarityHead
from faceid.match.metrics import (
    best_accuracy_threshold,
    equal_error_rate,
    roc_auc,
    roc_curve,
    tar_at_far,
)
from faceid.settings import DEFAULTS
from faceid.train.head import train_head
from faceid.train.pairs import PairSet

logger = logging.getLogger(__name__)

# A listed image that is absent: drop its pair, or (different pairs) swap in another person's image.
MISSING_POLICIES = ("drop", "replace")


def _replace_missing(
    pairs: PairList, available: dict[ImageKey, bool], embedded: set[ImageKey], rng: np.random.Generator
) -> tuple[list[ImageKey], list[ImageKey], int]:
    """Swap the unavailable images of different pairs for random images of other people in the same fold.

    Only missing or unreadable images are swapped (an image without a face stays, so the
    no-face policy still applies to it); replacements are drawn from the fold's embedded
    images, so person-disjoint folds stay disjoint, and a pair whose fold has no image of
    another person is left out. Same pairs are never changed: no other image is known to
    show the same person.
    """
    first, second = list(pairs.first), list(pairs.second)
    replaced = 0
    for k in range(pairs.n_folds):
        rows = np.flatnonzero(pairs.fold == k)
        pool = [
            key
            for key in dict.fromkeys([first[row] for row in rows] + [second[row] for row in rows])
            if key in embedded
        ]
        for row in rows:
            if pairs.is_same[row] or (available[first[row]] and available[second[row]]):
                continue
            for side, other in ((first, second), (second, first)):
                if not available[side[row]]:
                    candidates = [key for key in pool if key[0] != other[row][0]]
                    if candidates:
                        side[row] = candidates[rng.integers(len(candidates))]
            replaced += int(available.get(first[row], False) and available.get(second[row], False))
    return first, second, replaced


def _train_fold_heads(
    features: np.ndarray,
    first_rows: np.ndarray,
    second_rows: np.ndarray,
    is_same: np.ndarray,
    fold: np.ndarray,
    trainable: np.ndarray,
    epochs: int,
    seed: int,
    progress: bool,
) -> list[SimilarityHead]:
    """One head per fold, trained on the other folds' listed pairs (both images embedded).

    The minority kind of pair is repeated until both kinds are equally many, so a list
    that lost pairs (missing images) does not teach the head to say "same" by default.
    """
    from tqdm import tqdm

    heads = []
    n_folds = int(fold.max()) + 1
    for k in tqdm(range(n_folds), desc="heads", unit="fold", disable=None if progress else True):
        rows = np.flatnonzero((fold != k) & trainable)
        positives, negatives = rows[is_same[rows]], rows[~is_same[rows]]
        if len(positives) == 0 or len(negatives) == 0:
            raise InputError(
                f"fold {k}: the other folds hold no {'same' if len(positives) == 0 else 'different'} "
                "pair with both images embedded, so no head can be trained for it"
            )
        size = max(len(positives), len(negatives))
        rows = np.concatenate([np.resize(positives, size), np.resize(negatives, size)])
        pair_set = PairSet(first=first_rows[rows], second=second_rows[rows], label=is_same[rows].astype(np.float32))
        head, _ = train_head(
            features,
            pair_set,
            None,
            architecture=HeadArchitecture(),
            epochs=epochs,
            batch_size=DEFAULTS.train_batch_size,
            learning_rate=DEFAULTS.learning_rate,
            seed=seed + k,
            progress=False,
        )
        heads.append(head)
    return heads


def _verification_metrics(
    scores: np.ndarray, pooled: np.ndarray, is_same: np.ndarray, fold: np.ndarray, far_targets: Sequence[float]
) -> dict[str, Any]:
    folds = fold_accuracy(scores, is_same, fold)
    n_folds = len(folds.accuracies)
    threshold, _ = best_accuracy_threshold(pooled, is_same)
    return {
        "accuracy": folds.mean,
        "accuracy_std": folds.std,
        "accuracy_sem": folds.std / math.sqrt(n_folds),
        "fold_accuracy": [float(value) for value in folds.accuracies],
        "fold_threshold": [float(value) for value in folds.thresholds],
        "balanced_accuracy": float(np.mean(folds.balanced_accuracies)),
        "balanced_accuracy_std": float(np.std(folds.balanced_accuracies, ddof=1)),
        "auc": roc_auc(pooled, is_same),
        "eer": equal_error_rate(pooled, is_same),
        "tar_at_far": {f"{target:g}": tar_at_far(pooled, is_same, target) for target in far_targets},
        "threshold": threshold,
    }


def evaluate_pairs(
    pairs_file: str | Path,
    images_root: str | Path,
    model_path: str | Path,
    *,
    classification: str | Path | None = None,
    features: str | Path | None = None,
    folds: int = 10,
    train_per_fold: bool = False,
    head_epochs: int = 10,
    missing: str = "drop",
    no_face: str = "centre",
    face_choice: str = "centre",
    far_targets: Sequence[float] = DEFAULT_FAR_TARGETS,
    face_options: FaceOptions | None = None,
    batch_size: int = DEFAULTS.batch_size,
    seed: int = DEFAULTS.seed,
    progress: bool = True,
    argv: Sequence[str] | None = None,
    key: Key | None = None,
) -> Evaluation:
    """Verification accuracy on an LFW pair list, every method side by side.

    See the module docstring for the protocol. ``head_per_fold`` (``train_per_fold``)
    trains, for fold ``k``, a fresh head (``HeadArchitecture()``, raw features, Adam
    with the training defaults, ``head_epochs`` epochs, seed ``seed + k``) on the pairs
    of every other fold exactly as the file lists them, with the file's labels.

    Raises:
        InputError: unreadable pair list, no pair left to evaluate, or a fold without pairs.
        ManifestMismatchError: the similarity model was trained on another extractor.
    """
    started = time.perf_counter()
    if missing not in MISSING_POLICIES:
        raise InputError(f"unknown missing-image policy {missing!r}: choose one of {', '.join(MISSING_POLICIES)}")
    if head_epochs < 1:
        raise InputError(f"`head_epochs` must be at least 1, got {head_epochs}")
    pairs = read_pair_list(pairs_file, folds)
    images_root = Path(images_root)
    if not images_root.is_dir():
        raise InputError(
            f"images root {images_root} is not a folder: pass `images_root`, a folder holding <name>/<name>_0001.jpg"
        )
    face_options = face_options or FaceOptions()
    setup = set_up(model_path, classification, features, face_options, key=key)
    images = embed_images(
        pairs.images(),
        images_root,
        setup.embedder,
        setup.cache,
        no_face=no_face,
        face_choice=face_choice,
        batch_size=batch_size,
        progress=progress,
        key=setup.key,
    )

    # "Available": the file exists and could be read. Pairs naming an unavailable image are
    # left out (or, for different pairs with missing="replace", repaired first).
    available = {key: state not in (MISSING, UNREADABLE) for key, state in images.status.items()}
    n_missing = sum(not (available[a] and available[b]) for a, b in zip(pairs.first, pairs.second))
    first, second, replaced = list(pairs.first), list(pairs.second), 0
    if missing == "replace":
        first, second, replaced = _replace_missing(pairs, available, set(images.vectors), np.random.default_rng(seed))
    keep = np.array([available.get(a, False) and available.get(b, False) for a, b in zip(first, second)])
    n_dropped = int(np.count_nonzero(~keep))
    if n_missing:
        logger.warning(
            "%d of %d pairs name an image that is missing or unreadable under %s: %d replaced, %d left out",
            n_missing,
            len(pairs),
            images_root,
            replaced,
            n_dropped,
        )
    rows = np.flatnonzero(keep)
    is_same, fold = pairs.is_same[rows], pairs.fold[rows]
    if not is_same.any() or is_same.all():
        raise InputError(
            f"after leaving out pairs with missing images, {int(is_same.sum())} same and {int((~is_same).sum())} "
            f"different pairs remain: `images_root` {images_root} must hold the images the pair list names"
        )
    kept_first = [first[row] for row in rows]
    kept_second = [second[row] for row in rows]
    # Pairs whose image has no vector (no face, --no_face skip) are rejected by every method.
    scored = np.array([a in images.vectors and b in images.vectors for a, b in zip(kept_first, kept_second)])
    keys = list(dict.fromkeys([key for key in kept_first + kept_second if key in images.vectors]))
    row_of = {key: index for index, key in enumerate(keys)}
    dim = setup.extractor.output_dim
    matrix = (
        np.stack([images.vectors[key] for key in keys]).astype(np.float32) if keys else np.zeros((0, dim), np.float32)
    )
    first_rows = np.array([row_of.get(key, -1) for key in kept_first])
    second_rows = np.array([row_of.get(key, -1) for key in kept_second])

    def finish(raw: np.ndarray) -> np.ndarray:
        """Scores of every kept pair; rejected pairs go below every scored one."""
        full = np.empty(len(rows), dtype=np.float64)
        full[scored] = raw
        floor = float(raw.min()) - 1.0 if len(raw) else 0.0
        full[~scored] = floor
        return full

    methods = build_methods(setup.model)
    scores_by_method: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> (scores for fold_accuracy, pooled)
    for method in methods:
        pooled = finish(method.pair_scores(matrix[first_rows[scored]], matrix[second_rows[scored]]))
        scores_by_method[method.name] = (pooled, pooled)
    if train_per_fold:
        heads = _train_fold_heads(matrix, first_rows, second_rows, is_same, fold, scored, head_epochs, seed, progress)
        per_fold = np.stack(
            [
                finish(
                    Method("head_per_fold", "head", head=head).pair_scores(
                        matrix[first_rows[scored]], matrix[second_rows[scored]]
                    )
                )
                for head in heads
            ]
        )
        pooled = per_fold[fold, np.arange(len(rows))]
        scores_by_method["head_per_fold"] = (per_fold, pooled)

    no_face_share = images.counts()["no_face_share"]
    results: dict[str, Any] = {}
    curves: dict[str, dict[str, Any]] = {}
    for name, (scores, pooled) in scores_by_method.items():
        results[name] = _verification_metrics(scores, pooled, is_same, fold, far_targets)
        results[name]["no_face_share"] = no_face_share
        if name == "euclidean":
            results[name]["distance_threshold"] = -results[name]["threshold"]
        if name == "head_per_fold":
            results[name]["threshold"] = None  # ten heads, ten scales: no single threshold to deploy
        far, tar, _ = roc_curve(pooled, is_same)
        curves[name] = {"roc": (far, tar), "genuine": pooled[is_same & scored], "impostor": pooled[~is_same & scored]}

    n_different = int(np.count_nonzero(~is_same))
    for target in far_targets:
        if target * n_different < 1:
            logger.warning(
                "TAR at FAR %g rests on %d different pairs: it means 'no different pair accepted'", target, n_different
            )
    summary = summary_head("pairs", setup, model_path, classification, images)
    summary.update(
        {
            "pairs_file": str(pairs_file),
            "images_root": str(images_root),
            "folds": {
                "count": pairs.n_folds,
                "from_file": pairs.folds_from_file,
                "person_disjoint": pairs.person_disjoint(),
            },
            "pairs": {
                "listed": len(pairs),
                "evaluated": len(rows),
                "same": int(is_same.sum()),
                "different": n_different,
                "missing_image": n_missing,
                "replaced": replaced,
                "left_out": n_dropped,
                "rejected_no_face": int(np.count_nonzero(~scored)),
            },
            "no_face_policy": no_face,
            "face_choice": face_choice,
            "missing_policy": missing,
            "head_per_fold": {
                "epochs": head_epochs,
                "architecture": list(HeadArchitecture().hidden_units),
                "trained_on": "the other folds' listed pairs, minority kind repeated to balance",
            }
            if train_per_fold
            else None,
            "methods": results,
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    fold_source = "from the file" if pairs.folds_from_file else "contiguous chunks of a single list"
    settings = run_settings(
        setup,
        model_path,
        classification,
        face_options,
        argv,
        {
            "pairs_file": str(pairs_file),
            "images_root": str(images_root),
            "folds": f"{pairs.n_folds} ({fold_source}; person-disjoint: {pairs.person_disjoint()})",
            "no_face": no_face,
            "face_choice": face_choice,
            "missing": missing,
            "train_per_fold": train_per_fold,
            "seed": seed,
        },
    )
    return Evaluation(summary, curves, settings)
