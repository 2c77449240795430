"""Every clustering method by name, and the thresholds they use, derived from the backbone's calibration.

``linkage`` (the default, faceid/cluster/linkage.py) and the baselines it was measured against
(docs/clustering.md), each run on the same unit vectors:

- ``chinese-whispers``: dlib's graph clustering (what dlib's examples and Nextcloud FaceRecognition run):
  faces closer than a Euclidean distance are linked, labels spread along the links.
- ``hdbscan``: scikit-learn's HDBSCAN (LibrePhotos, Nextcloud Recognize); its noise faces are singletons.
- ``dbscan``: scikit-learn's DBSCAN (Immich); noise faces are singletons.
- ``agglomerative``: scikit-learn's average linkage with one cosine threshold, on the full distance matrix.

Thresholds are not numbers for one backbone: each is the cosine similarity at which impostor pairs
(different people, one photo each) are matched at a chosen rate, read off the backbone's open-set
calibration (`faceid.match.openset.backbone_calibrations`, cosine scorer). The rates are the values that
gave each method its best BCubed F on LFW DevTrain people with at least 5 photos (docs/clustering.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from faceid.cluster.linkage import MergeThresholds, average_linkage
from faceid.errors import InputError
from faceid.extras import require
from faceid.match.scoring import unit_vectors
from faceid.settings import DEFAULTS

METHODS = ("linkage", "chinese-whispers", "hdbscan", "dbscan", "agglomerative")
# Impostor-pair match rates of the single-threshold baselines, each its best on LFW (cosine of dlib's
# vectors: Chinese Whispers 0.947 = Euclidean 0.325 on unit vectors; DBSCAN 0.949 = eps 0.32; average
# linkage 0.93). dlib's own example clusters its raw vectors at Euclidean 0.5, a looser link.
BASELINE_FMR = {"chinese-whispers": 4e-5, "dbscan": 2.6e-5, "agglomerative": 7e-4}
# HDBSCAN's best on LFW (min_cluster_size 2-5 x min_samples 1-5): clusters of at least 3 faces, no smoothing.
HDBSCAN_MIN_CLUSTER_SIZE = 3
HDBSCAN_MIN_SAMPLES = 1


def check_method(method: str) -> None:
    """Refuse a clustering method that is not one of :data:`METHODS`."""
    if method not in METHODS:
        raise InputError(f"unknown clustering `method` {method!r}: choose one of {', '.join(METHODS)}")


def similarity_at_fmr(calibration, fmr: float) -> float:
    """The cosine similarity impostor pairs reach at rate ``fmr``, by bisection on the calibration."""
    if not 0.0 < fmr < 1.0:
        raise InputError(f"an impostor match rate must be in (0, 1), got {fmr}")
    people = np.array([1])
    low, high = -1.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        if calibration.fpir_exact(middle, people) > fmr:
            low = middle
        else:
            high = middle
    return round(high, 4)


def merge_thresholds(
    extractor_manifest: dict[str, Any],
    extractor_dir: str | os.PathLike | None = None,
    *,
    pair_fmr: float = DEFAULTS.cluster_pair_fmr,
    group_fmr: float = DEFAULTS.cluster_group_fmr,
) -> MergeThresholds:
    """The thresholds of every method for an extractor, from its cosine open-set calibration.

    Args:
        extractor_manifest: the extractor's manifest (its fingerprint finds the calibration).
        extractor_dir: the extractor directory (its own ``calibration.npz`` comes first).
        pair_fmr: impostor match rate at which two single faces join (`linkage`).
        group_fmr: the rate for two large clusters (lower: stricter).

    Raises:
        InputError: the extractor has no cosine calibration (``evaluate.py calibrate`` writes one).
    """
    from faceid.match.openset import backbone_calibrations

    calibrations = backbone_calibrations(extractor_manifest, None if extractor_dir is None else Path(extractor_dir))
    calibration = calibrations.get("cosine")
    if calibration is None:
        raise InputError(
            f"extractor {extractor_manifest.get('fingerprint', '?')[:12]} has no cosine open-set calibration to derive "
            "the clustering thresholds from: write one with evaluate.py calibrate into its directory, or pass "
            "`thresholds` (MergeThresholds) yourself"
        )
    return MergeThresholds(
        pair=similarity_at_fmr(calibration, pair_fmr),
        group=similarity_at_fmr(calibration, group_fmr),
        baselines={method: similarity_at_fmr(calibration, fmr) for method, fmr in BASELINE_FMR.items()},
    )


def _singletons_for_noise(labels: np.ndarray) -> np.ndarray:
    """Noise (-1) becomes one cluster per face: faces that belong nowhere are never lumped together."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    noise = labels < 0
    labels[noise] = (labels.max(initial=-1) + 1) + np.arange(int(noise.sum()))
    return labels


def _baseline(thresholds: MergeThresholds, method: str) -> float:
    if method not in thresholds.baselines:
        raise InputError(f"`thresholds` has no threshold for the {method} method: derive them with merge_thresholds")
    return float(thresholds.baselines[method])


def _baseline_distance(thresholds: MergeThresholds, method: str) -> float:
    """A baseline's cosine threshold as the Euclidean distance of unit vectors (``d^2 = 2 - 2 s``)."""
    return float(np.sqrt(max(0.0, 2.0 - 2.0 * _baseline(thresholds, method))))


def _sklearn(method: str):
    return require("sklearn.cluster", f"the {method} clustering method")


def cluster_labels(vectors: np.ndarray, method: str = DEFAULTS.cluster_method, *,
                   thresholds: MergeThresholds | None = None,
                   neighbours: int = DEFAULTS.cluster_neighbours) -> np.ndarray:
    """Cluster face vectors with one method.

    Args:
        vectors: ``(n, dim)`` face vectors of one extractor.
        method: one of :data:`METHODS`.
        thresholds: from `merge_thresholds` (every method but ``hdbscan`` needs them).
        neighbours: the ``linkage`` method's graph degree.

    Returns:
        ``(n,) int64`` cluster labels; a face that belongs nowhere has a label of its own.
    """
    check_method(method)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise InputError(f"`vectors` must be (faces, dim), got shape {vectors.shape}")
    if len(vectors) == 0:
        return np.zeros(0, np.int64)
    if len(vectors) == 1:
        return np.zeros(1, np.int64)
    if thresholds is None and method != "hdbscan":
        raise InputError(f"the {method} method needs `thresholds`: derive them with merge_thresholds(extractor manifest)")
    units = unit_vectors(vectors)
    if method == "linkage":
        labels = average_linkage(units, thresholds, neighbours=neighbours)
    elif method == "chinese-whispers":
        import dlib

        distance = _baseline_distance(thresholds, method)
        labels = np.asarray(dlib.chinese_whispers_clustering([dlib.vector(row.tolist()) for row in units.astype(float)],
                                                             distance), dtype=np.int64)
    elif method == "hdbscan":
        labels = _sklearn(method).HDBSCAN(min_cluster_size=HDBSCAN_MIN_CLUSTER_SIZE, copy=True,
                                          min_samples=HDBSCAN_MIN_SAMPLES).fit_predict(units)
    elif method == "dbscan":
        labels = _sklearn(method).DBSCAN(eps=_baseline_distance(thresholds, method), min_samples=1).fit_predict(units)
    else:
        labels = _sklearn(method).AgglomerativeClustering(
            n_clusters=None, distance_threshold=1.0 - _baseline(thresholds, method), linkage="average",
            metric="cosine").fit_predict(units)
    return _singletons_for_noise(labels)
