"""Verification and identification metrics in plain NumPy.

Conventions used by every function here:

* A *score* is "higher = more likely the same person". Callers that have distances pass
  ``-distance``.
* The decision rule is **accept (say "same person") when ``score >= threshold``**. Every
  threshold returned here is meant for that rule, and is a float in the precision of the scores
  (float32 scores give thresholds that survive a round trip through float32).
* ``is_same`` is a boolean (or 0/1) array: True for genuine pairs (same person), False for
  impostor pairs.
* FAR (false accept rate) is the fraction of impostor scores accepted; TAR (true accept rate)
  the fraction of genuine scores accepted; FRR = 1 - TAR.
"""

from __future__ import annotations

import logging

import numpy as np

from faceid.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "accuracy_at",
    "best_accuracy_threshold",
    "cmc_curve",
    "det_curve",
    "equal_error_rate",
    "fnir_at_fpir",
    "open_set_rates",
    "roc_auc",
    "roc_curve",
    "tar_at_far",
    "threshold_at_far",
]


def roc_curve(scores: np.ndarray, is_same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve: FAR and TAR at every distinct score used as the threshold.

    Tied scores are one threshold, so a run of ties between genuine and impostor pairs becomes a
    single diagonal step (which is what makes ties count half in :func:`roc_auc`).

    Args:
        scores: ``(n_pairs,)`` similarity scores, higher = more likely the same person.
        is_same: ``(n_pairs,)`` bool, True for genuine pairs.

    Returns:
        ``far``, ``tar``, ``thresholds``, each ``(n_distinct_scores + 1,)``. ``thresholds`` is
        strictly descending and starts at ``+inf`` (accept nothing: far = tar = 0);
        ``far[k]``/``tar[k]`` are the rates when accepting ``scores >= thresholds[k]``, ending at
        far = tar = 1 for the lowest score.

    Raises:
        InputError: empty or mismatched input, non-finite scores, or only one class present.
    """
    scores, is_same = _check_scores(scores, is_same, need_both_classes=True)
    far, tar, thresholds, _, _ = _cumulative_counts(scores, is_same)
    return far, tar, thresholds


def roc_auc(scores: np.ndarray, is_same: np.ndarray) -> float:
    """Area under the ROC curve: P(genuine score > impostor score) + 0.5 P(equal).

    Equal to ``sklearn.metrics.roc_auc_score(is_same, scores)``.

    Args:
        scores: ``(n_pairs,)`` similarity scores.
        is_same: ``(n_pairs,)`` bool, True for genuine pairs.

    Raises:
        InputError: empty or mismatched input, non-finite scores, or only one class present.
    """
    far, tar, _ = roc_curve(scores, is_same)
    # Trapezoids, written out because np.trapezoid needs NumPy 2 and np.trapz is gone from it.
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2.0))


def equal_error_rate(scores: np.ndarray, is_same: np.ndarray) -> float:
    """Rate at which FAR equals FRR (= 1 - TAR) on the ROC curve.

    The empirical curve is a staircase, so FAR and FRR rarely meet exactly at a threshold; this
    interpolates linearly between the two ROC points that straddle FAR = FRR (the ROC convex
    segment, as in the usual "EER from ROC" computation). Perfect separation gives 0.0, perfectly
    reversed scores give 1.0.

    Args:
        scores: ``(n_pairs,)`` similarity scores.
        is_same: ``(n_pairs,)`` bool, True for genuine pairs.

    Raises:
        InputError: empty or mismatched input, non-finite scores, or only one class present.
    """
    far, tar, _ = roc_curve(scores, is_same)
    frr = 1.0 - tar
    # far - frr rises from -1 (accept nothing) to +1 (accept everything).
    gap = far - frr
    crossing = int(np.argmax(gap >= 0.0))
    if crossing == 0:
        return float(far[0])
    before, after = crossing - 1, crossing
    fraction = -gap[before] / (gap[after] - gap[before])
    return float(far[before] + fraction * (far[after] - far[before]))


def threshold_at_far(impostor_scores: np.ndarray, target_far: float) -> float:
    """Smallest threshold whose false accept rate on these impostors is at most ``target_far``.

    Rule: accept when ``score >= threshold``. The returned ``t`` is the smallest float (in the
    scores' precision) with ``mean(impostor_scores >= t) <= target_far``. Because the empirical
    FAR only changes at impostor scores, ``t`` is the next float *above* the highest impostor
    score that must be rejected; tied impostor scores are accepted or rejected together, so the
    achieved FAR can be below ``target_far``. If every impostor may be accepted
    (``target_far >= 1``) the result is ``-inf``.

    Example: impostors ``[0.1, 0.2, 0.3, 0.3, 0.4]`` with ``target_far=0.5`` give
    ``nextafter(0.3, inf)``: accepting either 0.3 would accept both (FAR 0.6).

    Args:
        impostor_scores: ``(n_impostor,)`` scores of different-person pairs.
        target_far: allowed false accept rate, in ``[0, 1]``.

    Raises:
        InputError: empty input, non-finite scores, or ``target_far`` outside ``[0, 1]``.
    """
    impostor_scores = _check_score_array(impostor_scores, "impostor_scores")
    if not 0.0 <= target_far <= 1.0:
        raise InputError(f"target_far must be in [0, 1]; got {target_far}")
    distinct_descending = np.unique(impostor_scores)[::-1]
    n_impostor = len(impostor_scores)
    # accepted[k]: how many impostors a threshold of distinct_descending[k] accepts.
    accepted = np.searchsorted(np.sort(impostor_scores), distinct_descending, side="left")
    accepted = n_impostor - accepted
    feasible = accepted / n_impostor <= target_far
    if feasible.all():
        return float("-inf")
    # The highest score that must be rejected; every lower one is rejected with it.
    highest_rejected = distinct_descending[int(np.argmin(feasible))]
    return float(np.nextafter(highest_rejected, np.inf))


def open_set_rates(
    correct: np.ndarray, known_statistic: np.ndarray, stranger_statistic: np.ndarray, threshold: float
) -> tuple[float, float]:
    """FNIR and FPIR (NIST FRVT 1:N) of the decision ``statistic >= threshold``.

    Args:
        correct: ``(n_known,)`` bool, a known probe's best person is its own.
        known_statistic: ``(n_known,)`` decision statistic of each known probe's best person.
        stranger_statistic: ``(n_strangers,)`` decision statistic of each stranger's best person.

    Returns:
        ``(fnir, fpir)``: the share of known probes *not* named correctly (missed: under the
        threshold; or misnamed: someone else is best), and the share of strangers given a name.
    """
    correct = np.asarray(correct, dtype=bool)
    known_statistic = np.asarray(known_statistic)
    stranger_statistic = np.asarray(stranger_statistic)
    if len(correct) != len(known_statistic) or len(correct) == 0 or len(stranger_statistic) == 0:
        raise InputError("open-set rates need known probes (with a correct flag each) and strangers")
    fnir = 1.0 - float(np.mean(correct & (known_statistic >= threshold)))
    return fnir, float(np.mean(stranger_statistic >= threshold))


def fnir_at_fpir(
    correct: np.ndarray, known_statistic: np.ndarray, stranger_statistic: np.ndarray, target_fpir: float
) -> tuple[float, float]:
    """FNIR at the lowest threshold naming at most ``target_fpir`` of these strangers, and that
    threshold (:func:`threshold_at_far` on the strangers' statistics)."""
    threshold = threshold_at_far(_check_score_array(stranger_statistic, "stranger_statistic"), target_fpir)
    return open_set_rates(correct, known_statistic, stranger_statistic, threshold)[0], threshold


def det_curve(
    correct: np.ndarray, known_statistic: np.ndarray, stranger_statistic: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The open-set DET curve: FPIR and FNIR at every distinct statistic used as the threshold
    (descending thresholds: FPIR rises from 0, FNIR falls)."""
    correct = np.asarray(correct, dtype=bool)
    known_statistic = np.asarray(known_statistic, dtype=np.float64)
    stranger_sorted = np.sort(np.asarray(stranger_statistic, dtype=np.float64))
    thresholds = np.unique(np.concatenate([known_statistic, stranger_sorted]))[::-1]
    fpir = (len(stranger_sorted) - np.searchsorted(stranger_sorted, thresholds, side="left")) / len(stranger_sorted)
    hits = np.sort(known_statistic[correct])
    fnir = 1.0 - (len(hits) - np.searchsorted(hits, thresholds, side="left")) / len(known_statistic)
    return fpir, fnir


def tar_at_far(scores: np.ndarray, is_same: np.ndarray, target_far: float) -> float:
    """True accept rate at the threshold that :func:`threshold_at_far` picks on the impostors.

    Args:
        scores: ``(n_pairs,)`` similarity scores.
        is_same: ``(n_pairs,)`` bool, True for genuine pairs.
        target_far: allowed false accept rate, in ``[0, 1]``.

    Raises:
        InputError: empty or mismatched input, non-finite scores, or only one class present.
    """
    scores, is_same = _check_scores(scores, is_same, need_both_classes=True)
    threshold = threshold_at_far(scores[~is_same], target_far)
    return float(np.mean(scores[is_same] >= threshold))


def best_accuracy_threshold(scores: np.ndarray, is_same: np.ndarray) -> tuple[float, float]:
    """Threshold that maximises accuracy on these pairs, and that accuracy.

    Meant for choosing a threshold on training folds and applying it to a held-out fold. Every
    threshold between two neighbouring distinct scores gives the same accuracy here, so the
    midpoint of the best gap is returned (the widest margin on both sides); when the best choice
    is to accept every pair the lowest score is returned, and when it is to reject every pair
    the next float above the highest score. Among equally accurate gaps the highest threshold
    wins (fewer false accepts).

    Args:
        scores: ``(n_pairs,)`` similarity scores.
        is_same: ``(n_pairs,)`` bool, True for genuine pairs.

    Returns:
        ``(threshold, accuracy)``; accept when ``score >= threshold``.

    Raises:
        InputError: empty or mismatched input, non-finite scores, or only one class present.
    """
    scores, is_same = _check_scores(scores, is_same, need_both_classes=True)
    _, _, thresholds, true_accepts, false_accepts = _cumulative_counts(scores, is_same)
    n_impostor = int(np.count_nonzero(~is_same))
    correct = true_accepts + (n_impostor - false_accepts)
    best = int(np.argmax(correct))
    return _gap_threshold(thresholds, best), float(correct[best] / len(scores))


def best_balanced_threshold(scores: np.ndarray, is_same: np.ndarray) -> tuple[float, float]:
    """Threshold maximising balanced accuracy (mean of the same and different rates), and it.

    On a list with as many same as different pairs this is exactly
    :func:`best_accuracy_threshold`; on an unbalanced one it weighs both kinds
    equally, so the threshold does not drift towards the majority. Placed like
    :func:`best_accuracy_threshold` (midpoint of the best gap; highest among ties).
    """
    far, tar, thresholds = roc_curve(scores, is_same)
    balanced = (tar + 1.0 - far) / 2.0
    best = int(np.argmax(balanced))
    return _gap_threshold(thresholds, best), float(balanced[best])


def _gap_threshold(thresholds: np.ndarray, best: int) -> float:
    """The threshold for ROC point ``best`` (``thresholds`` descending, ``+inf`` first):
    the midpoint of the gap below it, the next float above the top score for
    "reject all", the lowest score for "accept all"."""
    if best == 0:
        return float(np.nextafter(thresholds[1], np.inf))
    if best == len(thresholds) - 1:
        return float(thresholds[best])
    upper, lower = thresholds[best], thresholds[best + 1]
    threshold = lower + (upper - lower) / 2
    # Adjacent floats have no midpoint: the upper one is exact.
    return float(threshold if lower < threshold <= upper else upper)


def accuracy_at(scores: np.ndarray, is_same: np.ndarray, threshold: float) -> float:
    """Fraction of pairs decided correctly when accepting ``scores >= threshold``.

    Args:
        scores: ``(n_pairs,)`` similarity scores.
        is_same: ``(n_pairs,)`` bool, True for genuine pairs (one class alone is allowed).
        threshold: decision threshold.

    Raises:
        InputError: empty or mismatched input or non-finite scores.
    """
    scores, is_same = _check_scores(scores, is_same, need_both_classes=False)
    return float(np.mean((scores >= threshold) == is_same))


def cmc_curve(score_matrix: np.ndarray, true_class: np.ndarray, max_rank: int) -> np.ndarray:
    """Cumulative match characteristic: rank-k identification rate for k = 1..max_rank.

    A probe is identified at rank k when its true class is among its k best-scoring classes.
    Ties are counted against the probe: the true class's rank is the number of classes scoring
    at least as high as it (itself included), so a constant score matrix never reports rank-1
    hits it could not resolve.

    Args:
        score_matrix: ``(n_probes, n_classes)`` score of each probe against each class.
        true_class: ``(n_probes,)`` int column index of each probe's true class.
        max_rank: highest rank to report, >= 1; ranks beyond ``n_classes`` report 1.0.

    Returns:
        ``(max_rank,) float64``; entry ``k - 1`` is the rank-k identification rate.

    Raises:
        InputError: empty or mis-shaped input, non-finite scores, class index out of range, or
            ``max_rank < 1``.
    """
    score_matrix = np.asarray(score_matrix)
    true_class = np.asarray(true_class)
    if score_matrix.ndim != 2 or score_matrix.size == 0:
        raise InputError(
            f"score_matrix must be a non-empty (n_probes, n_classes) array; got shape {score_matrix.shape}"
        )
    if not np.all(np.isfinite(score_matrix)):
        raise InputError("score_matrix contains NaN or infinite scores; fix the scorer upstream")
    n_probes, n_classes = score_matrix.shape
    if true_class.shape != (n_probes,) or not np.issubdtype(true_class.dtype, np.integer):
        raise InputError(
            f"true_class must be an int array of shape ({n_probes},); got shape "
            f"{true_class.shape} dtype {true_class.dtype}"
        )
    if true_class.min() < 0 or true_class.max() >= n_classes:
        raise InputError(
            f"true_class values must be column indices in [0, {n_classes}); got range "
            f"[{true_class.min()}, {true_class.max()}]"
        )
    if max_rank < 1:
        raise InputError(f"max_rank must be >= 1; got {max_rank}")
    true_scores = score_matrix[np.arange(n_probes), true_class]
    rank = np.count_nonzero(score_matrix >= true_scores[:, None], axis=1)
    hits_at_rank = np.bincount(rank, minlength=max_rank + 1)[1 : max_rank + 1]
    return np.cumsum(hits_at_rank) / n_probes


def _check_score_array(scores: np.ndarray, name: str) -> np.ndarray:
    """Validate a 1-D non-empty finite score array; keep float32/float64, else use float64."""
    scores = np.asarray(scores)
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    if scores.ndim != 1:
        raise InputError(f"{name} must be one-dimensional; got shape {scores.shape}")
    if len(scores) == 0:
        raise InputError(f"{name} is empty; evaluate on at least one pair")
    if not np.all(np.isfinite(scores)):
        raise InputError(f"{name} contains NaN or infinite scores; fix the scorer upstream")
    return scores


def _check_scores(scores: np.ndarray, is_same: np.ndarray, need_both_classes: bool) -> tuple[np.ndarray, np.ndarray]:
    """Validate scores and labels together and return them as (float array, bool array)."""
    scores = _check_score_array(scores, "scores")
    labels = np.asarray(is_same)
    if labels.shape != scores.shape:
        raise InputError(
            f"is_same has shape {labels.shape} but scores has shape {scores.shape}; pass one label per score"
        )
    if labels.dtype != np.bool_:
        if not np.all((labels == 0) | (labels == 1)):
            raise InputError("is_same must be boolean or 0/1; got other values")
        labels = labels.astype(bool)
    if need_both_classes:
        n_genuine = int(np.count_nonzero(labels))
        if n_genuine == 0 or n_genuine == len(labels):
            present = "genuine" if n_genuine else "impostor"
            raise InputError(
                f"only {present} pairs given; this metric needs both same-person and different-person pairs"
            )
    return scores, labels


def _cumulative_counts(
    scores: np.ndarray, is_same: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ROC arrays plus the raw true/false accept counts at each threshold (inf first)."""
    order = np.argsort(scores, kind="stable")[::-1]
    sorted_scores = scores[order]
    sorted_same = is_same[order]
    # Last position of each run of equal scores: the threshold accepts the whole run.
    run_end = np.flatnonzero(np.diff(sorted_scores) != 0)
    run_end = np.append(run_end, len(sorted_scores) - 1)
    true_accepts = np.concatenate(([0], np.cumsum(sorted_same)[run_end]))
    false_accepts = np.concatenate(([0], run_end + 1)) - true_accepts
    n_genuine = true_accepts[-1]
    n_impostor = false_accepts[-1]
    thresholds = np.concatenate((np.asarray([np.inf], dtype=scores.dtype), sorted_scores[run_end]))
    far = false_accepts / n_impostor
    tar = true_accepts / n_genuine
    return far, tar, thresholds, true_accepts, false_accepts
