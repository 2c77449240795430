"""Per-fold accuracy with the threshold chosen on the other folds (LFW's protocol)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from faceid.errors import InputError
from faceid.match.metrics import (
    accuracy_at,
    best_accuracy_threshold,
    best_balanced_threshold,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldAccuracy:
    """Per-fold results of :func:`fold_accuracy`, each ``(n_folds,) float64``."""

    accuracies: np.ndarray  # accuracy on the fold at the threshold chosen on the other folds
    thresholds: np.ndarray  # that threshold (accept when score >= it)
    balanced_accuracies: np.ndarray  # mean of TAR and TNR at the balanced threshold of the other folds
    balanced_thresholds: np.ndarray

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        """Sample standard deviation over folds (0 for a single fold)."""
        return float(np.std(self.accuracies, ddof=1)) if len(self.accuracies) > 1 else 0.0


def _balanced_accuracy_at(scores: np.ndarray, is_same: np.ndarray, threshold: float) -> float:
    """Mean of the per-class rates decided correctly; a fold with one class gives that class's rate."""
    rates = [
        np.mean(scores[mask] >= threshold) if same else np.mean(scores[mask] < threshold)
        for same, mask in ((True, is_same), (False, ~is_same))
        if mask.any()
    ]
    return float(np.mean(rates))


def fold_accuracy(scores: np.ndarray, is_same: np.ndarray, fold: np.ndarray) -> FoldAccuracy:
    """Accuracy of each fold at the threshold chosen on the other folds.

    Args:
        scores: ``(n_pairs,)`` scores from one scorer for every fold, or
            ``(n_folds, n_pairs)`` where row ``k`` scores every pair with the scorer used
            for fold ``k`` (a head trained without fold ``k``); row ``k`` then provides both
            the training folds' scores (threshold) and fold ``k``'s (accuracy).
        is_same: ``(n_pairs,) bool``.
        fold: ``(n_pairs,) int`` in ``[0, n_folds)``; every fold must be non-empty.

    Raises:
        InputError: fewer than two folds, an empty fold, or training folds lacking one kind of pair.
    """
    is_same = np.asarray(is_same, dtype=bool)
    fold = np.asarray(fold)
    n_folds = int(fold.max()) + 1 if len(fold) else 0
    if n_folds < 2:
        raise InputError("fold accuracy needs at least two folds")
    scores = np.asarray(scores)
    per_fold = scores if scores.ndim == 2 else np.broadcast_to(scores, (n_folds, len(scores)))
    if per_fold.shape != (n_folds, len(is_same)):
        raise InputError(f"scores of shape {scores.shape} do not match {n_folds} folds of {len(is_same)} pairs")
    results = np.zeros((4, n_folds))
    for k in range(n_folds):
        test = fold == k
        if not test.any():
            raise InputError(f"fold {k} has no pair left to evaluate: use fewer `folds`")
        train = ~test
        threshold, _ = best_accuracy_threshold(per_fold[k][train], is_same[train])
        balanced_threshold, _ = best_balanced_threshold(per_fold[k][train], is_same[train])
        results[:, k] = (
            accuracy_at(per_fold[k][test], is_same[test], threshold),
            threshold,
            _balanced_accuracy_at(per_fold[k][test], is_same[test], balanced_threshold),
            balanced_threshold,
        )
    return FoldAccuracy(*results)
