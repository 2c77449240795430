"""Ranking a gallery for a query, and how good the rankings are: rank-k, CMC, mAP.

One query (an artist's sketch) against a gallery of photos: every photo gets a score (cosine
similarity of the two vectors), the photos are
listed best first, and what an investigator cares about is how far down the list the right
person is. ``rank-k`` is the share of queries whose first correct photo is among the top ``k``
(the CMC curve is rank-k for every k); ``mAP`` averages, over queries, the precision at each
correct photo's position (with one correct photo per query it is the mean reciprocal rank).

Ties are counted against the query (a correct photo tied with a wrong one ranks below it), so
a constant score matrix never reports hits it could not resolve. A query that could not be
scored at all (no face found) counts as a miss at every rank, with AP 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from faceid.errors import InputError

RANKS = (1, 5, 10)
# Ranks kept for the CMC curve.
CMC_MAX_RANK = 20
# Gallery rows scored at once per query block: bounds the score matrix (queries x rows) in memory.
_GALLERY_BLOCK = 262_144


def ranking(scores: np.ndarray, relevant: np.ndarray | None = None) -> np.ndarray:
    """Gallery columns best first, per query: ``(q, g) -> (q, g) int64``; equal scores put
    relevant columns (``relevant`` True) after irrelevant ones."""
    scores = np.asarray(scores, dtype=np.float64)
    if relevant is None:
        return np.argsort(-scores, axis=1, kind="stable")
    return np.lexsort((np.asarray(relevant, dtype=bool), -scores), axis=1)


def first_relevant_ranks(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """1-based rank of each query's best-placed relevant gallery item (ties against it): ``(q,) int64``."""
    scores, relevant = _check(scores, relevant)
    order = ranking(scores, relevant)
    placed = np.take_along_axis(relevant, order, axis=1)
    return placed.argmax(axis=1) + 1


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """AP of each query's ranking: mean over its relevant items of the precision at their positions."""
    scores, relevant = _check(scores, relevant)
    placed = np.take_along_axis(relevant, ranking(scores, relevant), axis=1).astype(np.float64)
    hits = np.cumsum(placed, axis=1)
    positions = np.arange(1, placed.shape[1] + 1, dtype=np.float64)
    return (placed * hits / positions).sum(axis=1) / placed.sum(axis=1)


def retrieval_metrics(scores: np.ndarray, relevant: np.ndarray, missed: int = 0,
                      max_rank: int = CMC_MAX_RANK) -> dict[str, Any]:
    """rank-1/5/10, the CMC curve (ranks 1..``max_rank``) and mAP.

    Args:
        scores: ``(q, g)`` score of every scored query against every gallery item (higher: closer).
        relevant: ``(q, g)`` bool, True where the gallery item shows the query's person; every
            query needs at least one.
        missed: further queries that were not scored (no face found): misses at every rank, AP 0.
    """
    scores, relevant = _check(scores, relevant)
    total = len(scores) + missed
    ranks = first_relevant_ranks(scores, relevant)
    cmc = [float((ranks <= k).sum() / total) for k in range(1, max_rank + 1)]
    aps = average_precision(scores, relevant)
    result: dict[str, Any] = {f"rank{k}": float((ranks <= k).sum() / total) for k in RANKS}
    result.update({"map": float(aps.sum() / total), "cmc": cmc, "queries": total, "missed": missed,
                   "gallery": int(scores.shape[1]), "median_rank": float(np.median(ranks)) if len(ranks) else None})
    return result


def _check(scores: np.ndarray, relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.ndim != 2 or scores.shape != relevant.shape:
        raise InputError(f"scores {scores.shape} and relevance {relevant.shape} must be the same (queries, gallery) shape")
    if scores.size == 0:
        raise InputError("nothing to rank: no scored query, or an empty gallery")
    if not np.isfinite(scores).all():
        raise InputError("scores must be finite")
    if not relevant.any(axis=1).all():
        raise InputError("every query needs at least one relevant gallery item (its own person)")
    return scores, relevant


def top_matches(queries: np.ndarray, gallery: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` best gallery rows per query by cosine similarity, exhaustive and exact.

    Both sides are unit vectors (:func:`faceid.match.scoring.unit_vectors`, done once when a gallery
    is loaded), so the cosine is a dot product. The gallery is scored in blocks, keeping only each block's best ``top``, so memory stays
    bounded whatever its size; 100,000 vectors take milliseconds (README: the retrieval benchmark).

    Returns:
        ``(rows (q, top) int64, scores (q, top) float32)``, best first.
    """
    queries = np.asarray(queries, dtype=np.float32)
    gallery = np.asarray(gallery, dtype=np.float32)
    top = min(top, len(gallery))
    if top < 1:
        raise InputError("the gallery is empty: nothing to rank")
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    for start in range(0, len(gallery), _GALLERY_BLOCK):
        block = queries @ gallery[start:start + _GALLERY_BLOCK].T
        keep = min(top, block.shape[1])
        part = np.argpartition(-block, keep - 1, axis=1)[:, :keep]
        best_rows = np.concatenate([best_rows, part + start], axis=1)
        best_scores = np.concatenate([best_scores, np.take_along_axis(block, part, axis=1)], axis=1)
        order = np.argsort(-best_scores, axis=1, kind="stable")[:, :top]
        best_rows = np.take_along_axis(best_rows, order, axis=1)
        best_scores = np.take_along_axis(best_scores, order, axis=1)
    return best_rows, best_scores
