"""How well a clustering groups faces by identity: pairwise and BCubed precision, recall and F.

*Pairwise*: over every pair of faces, precision is the share of pairs put in one cluster that show one
person, recall the share of same-person pairs put in one cluster; large clusters weigh quadratically.
*BCubed* (Bagga & Baldwin): per face, precision is the share of its cluster that is its person and
recall the share of its person that is in its cluster, averaged over faces; every face weighs the same.
Both are computed from the contingency table of clusters × people, never from the n² pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from faceid.errors import InputError

METRIC_KEYS = ("pairwise_f", "pairwise_precision", "pairwise_recall", "bcubed_f", "bcubed_precision",
               "bcubed_recall", "clusters", "people", "faces")


def _f(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall)


def clustering_metrics(predicted: Sequence[Any] | np.ndarray, truth: Sequence[Any] | np.ndarray) -> dict[str, float | int]:
    """Pairwise and BCubed precision, recall and F of ``predicted`` clusters against ``truth`` people.

    Args:
        predicted: one cluster label per face (any hashable values; a singleton is its own label).
        truth: one person per face, in the same order.

    Returns:
        ``pairwise_f``, ``pairwise_precision``, ``pairwise_recall``, ``bcubed_f``, ``bcubed_precision``,
        ``bcubed_recall`` (floats in [0, 1]), ``clusters``, ``people``, ``faces`` (counts). With no pair to
        judge (every cluster, or every person, a single face), pairwise precision (recall) is 1.

    Raises:
        InputError: no faces, or the two sequences differ in length.
    """
    predicted = np.asarray(predicted)
    truth = np.asarray(truth)
    if predicted.ndim != 1 or truth.ndim != 1 or len(predicted) != len(truth):
        raise InputError(f"`predicted` ({predicted.shape}) and `truth` ({truth.shape}) need one label per face each")
    if len(predicted) == 0:
        raise InputError("no faces to score: `predicted` and `truth` are empty")
    _, cluster = np.unique(predicted, return_inverse=True)
    _, person = np.unique(truth, return_inverse=True)
    # Contingency table as (cluster, person) -> count, without an n_clusters x n_people matrix.
    pairs, counts = np.unique(np.stack([cluster, person], axis=1), axis=0, return_counts=True)
    counts = counts.astype(np.float64)
    cluster_sizes = np.bincount(cluster).astype(np.float64)
    person_sizes = np.bincount(person).astype(np.float64)
    faces = float(len(predicted))

    together = float((counts * (counts - 1) / 2).sum())
    predicted_pairs = float((cluster_sizes * (cluster_sizes - 1) / 2).sum())
    true_pairs = float((person_sizes * (person_sizes - 1) / 2).sum())
    pairwise_precision = together / predicted_pairs if predicted_pairs else 1.0
    pairwise_recall = together / true_pairs if true_pairs else 1.0

    bcubed_precision = float((counts**2 / cluster_sizes[pairs[:, 0]]).sum() / faces)
    bcubed_recall = float((counts**2 / person_sizes[pairs[:, 1]]).sum() / faces)
    return {
        "pairwise_f": _f(pairwise_precision, pairwise_recall),
        "pairwise_precision": pairwise_precision,
        "pairwise_recall": pairwise_recall,
        "bcubed_f": _f(bcubed_precision, bcubed_recall),
        "bcubed_precision": bcubed_precision,
        "bcubed_recall": bcubed_recall,
        "clusters": int(len(cluster_sizes)),
        "people": int(len(person_sizes)),
        "faces": int(faces),
    }
