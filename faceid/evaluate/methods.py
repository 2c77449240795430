"""Scoring methods compared side by side: Euclidean, cosine and the similarity head."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from faceid.errors import InputError
from faceid.match.decision import Decision
from faceid.match.head import SimilarityHead, score_pairs
from faceid.match.model import SimilarityModel
from faceid.match.scoring import Rule, pairwise_scores, unit_vectors

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    """One way of scoring two faces.

    Attributes:
        name: key in the results (``euclidean``, ``cosine``, ``head``, ``head_per_fold``).
        kind: ``euclidean`` (minus the distance), ``cosine`` or ``head``.
        head: the similarity head, for ``kind="head"``.
        normalizer: z-score the head was trained with (applied before differencing).
        rule: how a person's vectors become one per-person score in identification.
        decision: the per-person accept/reject decision for the open-set rejection rate
            (the model's saved one for a head; ``None`` reports null).
    """

    name: str
    kind: str
    head: SimilarityHead | None = None
    normalizer: Callable[[np.ndarray], np.ndarray] | None = None
    rule: Rule = field(default_factory=Rule)
    decision: Decision | None = None

    @property
    def threshold(self) -> float | None:
        return None if self.decision is None else self.decision.threshold

    def pair_scores(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Score row ``k`` of ``first`` against row ``k`` of ``second``: ``(n,) float32``."""
        first = np.asarray(first, dtype=np.float32)
        second = np.asarray(second, dtype=np.float32)
        if self.kind == "cosine":
            return np.sum(unit_vectors(first) * unit_vectors(second), axis=1).astype(np.float32)
        if self.kind == "euclidean":
            return -np.linalg.norm(first - second, axis=1).astype(np.float32)
        if self.normalizer is not None:
            first, second = self.normalizer(first), self.normalizer(second)
        return score_pairs(self.head, first, second)

    def score_matrix(self, queries: np.ndarray, references: np.ndarray) -> np.ndarray:
        """Every query against every reference: ``(m, n) float32``."""
        return pairwise_scores(queries, references, head=self.head, normalizer=self.normalizer, scorer=self.kind)

    def accepts(self, scores: np.ndarray) -> np.ndarray:
        """The method's decision on per-person scores (it must have one)."""
        if self.decision is None:
            raise InputError(f"method {self.name} has no decision threshold")
        return self.decision.accepts(scores)


def build_methods(
    model: SimilarityModel | None,
    euclidean_threshold: float | None = None,
    cosine_threshold: float | None = None,
) -> list[Method]:
    """Euclidean and cosine always; the head when a similarity model is given.

    ``euclidean_threshold`` is a *distance* (dlib's customary 0.6); it becomes the
    score ``-distance``.
    """
    methods = [
        Method(
            "euclidean", "euclidean",
            decision=None if euclidean_threshold is None else Decision(-float(euclidean_threshold)),
        ),
        Method("cosine", "cosine", decision=None if cosine_threshold is None else Decision(float(cosine_threshold))),
    ]
    if model is not None:
        methods.append(
            Method(
                "head",
                "head",
                head=model.head,
                normalizer=model.normalizer,
                rule=model.rule,
                decision=model.decision,
            )
        )
    return methods
