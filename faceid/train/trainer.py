"""Training the similarity head on a feature cache, validated on held-out people.

The head is identity-agnostic: it learns "same person?" from ``|f1 - f2|`` on
one labelled set and is then used for whoever is enrolled. So validation holds
out whole *people*, never just images of people seen in training, and the
decision threshold is calibrated there, on the same per-person score
(:mod:`faceid.match.scoring`) that identification uses, and saved as the model's
:class:`~faceid.match.decision.Decision`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from faceid.errors import InputError
from faceid.features.cache import FeatureCache
from faceid.features.stats import FeatureStats
from faceid.match.crossval import calibrate_scorers
from faceid.match.decision import Decision
from faceid.match.head import HeadArchitecture, SimilarityHead
from faceid.match.metrics import accuracy_at, best_accuracy_threshold, roc_auc, threshold_at_far
from faceid.match.model import SimilarityModel
from faceid.match.scoring import SCORERS, Rule, pairwise_scores, person_scores
from faceid.settings import DEFAULTS
from faceid.train.head import train_head
from faceid.train.pairs import PairSet, pair_features, sample_pairs

logger = logging.getLogger(__name__)

# Leave-one-out calibration scores every probe against every held-out vector;
# this many probes keep it to seconds while giving ~10^5 impostor scores.
MAX_CALIBRATION_PROBES = 2000


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = DEFAULTS.epochs
    neg_ratio: float = DEFAULTS.neg_ratio
    max_positive_per_person: int | None = DEFAULTS.max_positive_per_person
    val_people: float = DEFAULTS.val_people
    target_far: float = DEFAULTS.target_far
    target_fpir: float = DEFAULTS.target_fpir
    normalize: bool = False
    learning_rate: float = DEFAULTS.learning_rate
    batch_size: int = DEFAULTS.train_batch_size
    seed: int = DEFAULTS.seed
    rule: Rule = field(default_factory=Rule)
    architecture: HeadArchitecture = field(default_factory=HeadArchitecture)


def split_people(labels: np.ndarray, val_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split images by person: ``(train_rows, val_rows)`` index arrays, no person on both sides.

    The validation side gets ``round(val_share * people)`` people, at least two.
    """
    if not 0.0 < val_share < 1.0:
        raise InputError(f"`val_people` must be between 0 and 1 (a share of people), got {val_share}")
    people = np.unique(labels)
    n_val = max(2, int(round(val_share * len(people))))
    if len(people) - n_val < 2:
        raise InputError(
            f"{len(people)} people are too few to hold {n_val} out for validation and still train: "
            "enrol more people (4 at the very least; LFW DevTrain has 1,184) or lower `val_people`"
        )
    shuffled = np.random.default_rng(seed).permutation(people)
    val_people = np.isin(labels, shuffled[:n_val])
    return np.flatnonzero(~val_people), np.flatnonzero(val_people)


def pairs_within(rows: np.ndarray, labels: np.ndarray, options: TrainOptions, seed: int) -> PairSet:
    """Pairs among ``rows`` (indices into the full matrix), re-indexed to the full matrix."""
    local = sample_pairs(labels[rows], options.neg_ratio, options.max_positive_per_person, seed)
    return PairSet(first=rows[local.first], second=rows[local.second], label=local.label)


def _score_pairs(features: np.ndarray, pairs: PairSet, head: SimilarityHead | None, batch: int = 65536) -> np.ndarray:
    """Head probability (or minus Euclidean distance when ``head`` is None) of each pair."""
    scores = []
    for start in range(0, len(pairs), batch):
        index = slice(start, start + batch)
        differences = pair_features(features, pairs, index)
        scores.append(-np.linalg.norm(differences, axis=1) if head is None else head.predict(differences))
    return np.concatenate(scores).astype(np.float32)


def calibrate(
    vectors: np.ndarray,
    labels: np.ndarray,
    head: SimilarityHead | None,
    normalizer,
    rule: Rule,
    target_far: float,
    seed: int,
) -> dict[str, float]:
    """Leave-one-out per-person scores on held-out people, and the threshold at ``target_far``.

    Each probe is one held-out image; the gallery is every other held-out image.
    Genuine score: the probe against its own person (other images only);
    impostor scores: against every other person.
    """
    people, dense_labels = np.unique(labels, return_inverse=True)
    rng = np.random.default_rng(seed)
    probes = np.arange(len(vectors))
    if len(probes) > MAX_CALIBRATION_PROBES:
        probes = np.sort(rng.choice(probes, MAX_CALIBRATION_PROBES, replace=False))
    pair_scores = pairwise_scores(vectors[probes], vectors, head=head, normalizer=normalizer)
    exclude = probes[:, None] == np.arange(len(vectors))[None, :]
    scores = person_scores(pair_scores, dense_labels, len(people), rule, exclude=exclude)
    own = dense_labels[probes]
    genuine_mask = np.zeros_like(scores, dtype=bool)
    genuine_mask[np.arange(len(probes)), own] = True
    finite = np.isfinite(scores)
    genuine = scores[genuine_mask & finite]
    impostor = scores[~genuine_mask & finite]
    if len(genuine) == 0 or len(impostor) == 0:
        raise InputError("held-out people need at least two images each for calibration: enrol more images per person")
    threshold = threshold_at_far(impostor, target_far)
    decision = Decision.calibrated(threshold, rule, target_far)
    has_own = finite[np.arange(len(probes)), own]
    best = np.argmax(scores, axis=1)
    correct_rank1 = (best == own)[has_own]
    accepted_correct = ((best == own) & decision.accepts(scores.max(axis=1)))[has_own]
    return {
        "threshold": float(threshold),
        "tar_at_threshold": float(np.mean(decision.accepts(genuine))),
        "far_at_threshold": float(np.mean(decision.accepts(impostor))),
        "auc": float(roc_auc(np.concatenate([genuine, impostor]), np.r_[np.ones(len(genuine)), np.zeros(len(impostor))])),
        "rank1": float(np.mean(correct_rank1)),
        "identified_at_threshold": float(np.mean(accepted_correct)),
        "n_probes": len(probes),
        "n_genuine": len(genuine),
        "n_impostor": len(impostor),
    }


def train_similarity(
    cache: FeatureCache, stats: FeatureStats | None, options: TrainOptions = TrainOptions(), progress: bool = True
) -> tuple[SimilarityModel, dict[str, Any]]:
    """Train, validate and calibrate a head on ``cache``.

    Args:
        cache: the feature cache (people are split into train and validation).
        stats: normalisation statistics of the cache; required with ``options.normalize``.

    Returns:
        The model (head, normaliser, threshold, rule, extractor manifest) and the report.
    """
    started = time.perf_counter()
    if options.normalize and stats is None:
        raise InputError("`normalize` 1 needs the cache's statistics: run compute_mean.py first")
    vectors, labels, names = cache.matrix(min_images=1)
    train_rows, val_rows = split_people(labels, options.val_people, options.seed)
    normalizer = stats.normalizer if options.normalize else None
    head_input = normalizer(vectors) if normalizer is not None else vectors

    train_pairs = pairs_within(train_rows, labels, options, options.seed)
    val_pairs = pairs_within(val_rows, labels, options, options.seed + 1)
    logger.info("training pairs: %d (+%d / -%d)", len(train_pairs), train_pairs.n_positive, train_pairs.n_negative)
    head, history = train_head(
        head_input, train_pairs, val_pairs,
        architecture=options.architecture, epochs=options.epochs, batch_size=options.batch_size,
        learning_rate=options.learning_rate, seed=options.seed, progress=progress,
    )

    is_same = val_pairs.label.astype(bool)
    head_val = _score_pairs(head_input, val_pairs, head)
    # The Euclidean baseline scores the raw vectors. Both methods' pair-accuracy
    # thresholds are chosen on the training people's pairs, then applied to held-out ones.
    euclid_val = _score_pairs(vectors, val_pairs, None)
    train_same = train_pairs.label.astype(bool)
    head_threshold, _ = best_accuracy_threshold(_score_pairs(head_input, train_pairs, head), train_same)
    euclid_threshold, _ = best_accuracy_threshold(_score_pairs(vectors, train_pairs, None), train_same)
    head_calibration = calibrate(vectors[val_rows], labels[val_rows], head, normalizer, options.rule, options.target_far, options.seed)
    euclid_calibration = calibrate(vectors[val_rows], labels[val_rows], None, None, options.rule, options.target_far, options.seed)

    scorers = {name: {"scorer": name, "head": head, "normalizer": normalizer if name == "head" else None}
               for name in SCORERS}
    calibrations, winner, open_set = calibrate_scorers(
        vectors[val_rows], labels[val_rows], scorers, rule=options.rule, target_fpir=options.target_fpir,
        seed=options.seed, source={"extractor_fingerprint": cache.fingerprint, "measured_on": "train.py held-out people"},
    )
    model = SimilarityModel(
        head=head, normalizer=normalizer,
        decision=Decision.calibrated(head_calibration["threshold"], options.rule, options.target_far),
        extractor=cache.manifest["extractor"], calibrations=calibrations, default_scorer=winner,
    )
    report = {
        "val_auc": roc_auc(head_val, is_same),
        "val_accuracy": accuracy_at(head_val, is_same, head_threshold),
        "val_accuracy_at_0.5": accuracy_at(head_val, is_same, 0.5),
        "pair_threshold": float(head_threshold),
        "val_auc_euclidean": roc_auc(euclid_val, is_same),
        "val_accuracy_euclidean": accuracy_at(euclid_val, is_same, euclid_threshold),
        "euclidean_threshold_distance": -float(euclid_threshold),
        "threshold": head_calibration["threshold"],
        "target_far": options.target_far,
        "calibration": {"head": head_calibration, "euclidean": euclid_calibration},
        "open_set": open_set,
        "default_scorer": winner,
        "target_fpir": options.target_fpir,
        "rule": asdict(options.rule),
        "normalize": options.normalize,
        "people": {"train": len(np.unique(labels[train_rows])), "val": len(np.unique(labels[val_rows]))},
        "images": {"train": len(train_rows), "val": len(val_rows)},
        "pairs": {
            "train_positive": train_pairs.n_positive, "train_negative": train_pairs.n_negative,
            "val_positive": val_pairs.n_positive, "val_negative": val_pairs.n_negative,
        },
        "epochs": options.epochs,
        "seed": options.seed,
        "history": history,
        "architecture": asdict(options.architecture),
        "extractor_fingerprint": cache.fingerprint,
        "cache_digest": cache.content_digest(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    report["winner_auc"] = "head" if report["val_auc"] > report["val_auc_euclidean"] else "euclidean"
    return model, report
