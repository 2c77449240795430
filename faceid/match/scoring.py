"""Scoring faces against people: the one implementation identification, calibration
and evaluation share.

Two steps:

1. :func:`pairwise_scores` — a score for every (query face, cached vector) pair by one of
   the :data:`SCORERS`: the similarity head's probability on ``|z(q) - z(g)|``, minus the
   Euclidean distance, or the cosine similarity. Higher always means "more alike".
2. :func:`person_scores` — one score per (query, person), aggregating that
   person's vectors by a :class:`Rule`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from faceid.errors import InputError
from faceid.settings import DEFAULTS

RULES = ("topk", "vote")
# How two faces are compared (test.py / evaluate.py / bench.py --scorer). The metric scorers
# need no trained head: the backbone's own calibration (faceid/match/calibrations) names people.
SCORERS = ("head", "euclidean", "cosine")
METRIC_SCORERS = ("euclidean", "cosine")
# Elements of the (queries x references x dim) difference tensor built at once;
# bounds memory to ~64 MB of float32 whatever the gallery size.
_CHUNK_ELEMENTS = 16_000_000


@dataclass(frozen=True)
class Rule:
    """How a person's per-vector scores become one per-person score.

    ``topk``: mean of the ``top_k`` best scores (``k`` capped at the person's
    number of vectors), so one odd enrolment photo neither makes nor breaks a match.
    ``vote``: the original design's rule; the score is the share of the person's
    vectors scoring at least ``vote_score``, and a match needs more than
    ``vote_share`` of them (that share is the rule's threshold).
    """

    name: str = "topk"
    top_k: int = DEFAULTS.top_k
    vote_score: float = DEFAULTS.vote_score
    vote_share: float = DEFAULTS.vote_share

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise InputError(f"unknown rule {self.name!r}: choose one of {', '.join(RULES)}")
        if self.top_k < 1:
            raise InputError(f"`top_k` must be at least 1, got {self.top_k}")


def pairwise_scores(
    queries: np.ndarray,
    references: np.ndarray,
    head=None,
    normalizer: Callable[[np.ndarray], np.ndarray] | None = None,
    scorer: str | None = None,
) -> np.ndarray:
    """Score every query against every reference vector.

    Args:
        queries: ``(m, dim)`` vectors of the faces to identify.
        references: ``(n, dim)`` cached vectors.
        head: a :class:`faceid.match.head.SimilarityHead`, for the ``head`` scorer.
        normalizer: z-score applied to both sides before the head's differencing (``--normalize 1``).
        scorer: one of :data:`SCORERS`; ``None``: the head when one is given, else Euclidean.

    Returns:
        ``(m, n) float32``; higher means more likely the same person.
    """
    queries = np.asarray(queries, dtype=np.float32)
    references = np.asarray(references, dtype=np.float32)
    if queries.ndim != 2 or references.ndim != 2 or queries.shape[1] != references.shape[1]:
        raise InputError(f"cannot compare vectors of shapes {queries.shape} and {references.shape}")
    scorer = scorer or ("euclidean" if head is None else "head")
    if scorer not in SCORERS:
        raise InputError(f"unknown scorer {scorer!r}: choose one of {', '.join(SCORERS)}")
    if scorer == "cosine":
        return (unit_vectors(queries) @ unit_vectors(references).T).astype(np.float32)
    if scorer == "euclidean":
        squared = (
            np.square(queries).sum(1)[:, None] + np.square(references).sum(1)[None, :] - 2.0 * queries @ references.T
        )
        return -np.sqrt(np.maximum(squared, 0.0)).astype(np.float32)
    if head is None:
        raise InputError("the head scorer needs a similarity head (of a similarity model written by train.py): "
                         "pass `head`, or choose `scorer` euclidean or cosine")
    if head.input_dim != queries.shape[1]:
        raise InputError(
            f"the similarity head takes {head.input_dim}-d vectors but the features are {queries.shape[1]}-d: "
            "train the head (train.py) on features from the same extractor"
        )
    if normalizer is not None:
        queries, references = normalizer(queries), normalizer(references)
    scores = np.empty((len(queries), len(references)), dtype=np.float32)
    step = max(1, _CHUNK_ELEMENTS // max(1, len(queries) * queries.shape[1]))
    for start in range(0, len(references), step):
        chunk = references[start : start + step]
        differences = np.abs(queries[:, None, :] - chunk[None, :, :]).reshape(-1, queries.shape[1])
        scores[:, start : start + len(chunk)] = head.predict(differences).reshape(len(queries), len(chunk))
    return scores


def unit_vectors(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (the cosine scorer compares directions only)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def person_scores(
    pair_scores: np.ndarray,
    labels: np.ndarray,
    n_people: int,
    rule: Rule = Rule(),
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Aggregate per-vector scores into one score per person.

    Args:
        pair_scores: ``(m, n)`` from :func:`pairwise_scores`.
        labels: ``(n,)`` int person index of each reference vector, in ``[0, n_people)``.
        n_people: number of people.
        rule: the aggregation.
        exclude: optional ``(m, n)`` bool, entries to leave out (a probe's own
            vector when calibrating leave-one-out).

    Returns:
        ``(m, n_people) float32``; ``-inf`` where a person has no (usable) vector.
    """
    pair_scores = np.asarray(pair_scores, dtype=np.float32)
    labels = np.asarray(labels)
    result = np.full((len(pair_scores), n_people), -np.inf, dtype=np.float32)
    order = np.argsort(labels, kind="stable")
    boundaries = np.searchsorted(labels[order], np.arange(n_people + 1))
    for person in range(n_people):
        columns = order[boundaries[person] : boundaries[person + 1]]
        if len(columns) == 0:
            continue
        block = pair_scores[:, columns]
        valid = np.ones(block.shape, dtype=bool) if exclude is None else ~exclude[:, columns]
        n_valid = valid.sum(axis=1)
        if rule.name == "vote":
            votes = ((block >= rule.vote_score) & valid).sum(axis=1)
            scores = votes / np.maximum(n_valid, 1)
        else:
            # Descending sort with excluded entries last; mean of the first min(k, n_valid).
            ranked = -np.sort(-np.where(valid, block, -np.inf), axis=1)
            k = np.minimum(rule.top_k, n_valid)
            taken = np.arange(ranked.shape[1])[None, :] < k[:, None]
            scores = np.where(taken, ranked, 0.0).sum(axis=1) / np.maximum(k, 1)
        result[:, person] = np.where(n_valid > 0, scores, -np.inf)
    return result
