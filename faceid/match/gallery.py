"""Open-set identification against enrolled people, with a scikit-learn shape.

>>> gallery = model.gallery()           # the model's default scorer and its open-set calibration
>>> gallery = Gallery(calibration=backbone_calibrations(extractor.manifest)["euclidean"])  # no head
>>> gallery.fit(vectors, names)          # the feature cache: (n, dim), (n,)
>>> gallery.decision_.describe()         # "100 people enrolled: threshold ... for FPIR 1% ..."
>>> gallery.predict(face_vectors)        # names, or "unknown"

The threshold is set for the gallery: with an open-set calibration
(:mod:`faceid.match.openset`) ``fit`` derives it from the number of people enrolled (and their
photos) so that at most ``target_fpir`` of strangers get a name, however many are enrolled.

By default every face is scored against every cached vector (the exhaustive path, the
reference). ``Gallery(..., shortlist=50)`` searches in two stages instead
(:mod:`faceid.match.search`): a cheap shortlist of 50 people, then the head on their vectors only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from faceid.errors import InputError, NotFittedError
from faceid.match.decision import GIVEN, Decision
from faceid.match.openset import OpenSetCalibration
from faceid.match.scoring import SCORERS, Rule, pairwise_scores, person_scores
from faceid.match.search import BACKENDS, ShortlistIndex
from faceid.settings import DEFAULTS

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Identification:
    """The decision for one face."""

    name: str  # the person, or the unknown label
    score: float  # the decision statistic of the best person (under the threshold when unknown)
    best_person: str  # the best-scoring person, even when rejected
    known: bool = False  # accepted: ``name`` is ``best_person``


class Gallery:
    """Names faces by their best-scoring enrolled person, or ``unknown_label``.

    Args:
        head: similarity head (:class:`faceid.match.head.SimilarityHead`), for the ``head`` scorer.
        normalizer: z-score applied before the head (what the head was trained with).
        decision: a fixed accept/reject decision (:class:`faceid.match.decision.Decision`);
            its scorer compares faces and its rule aggregates a person's vectors.
        calibration: an :class:`~faceid.match.openset.OpenSetCalibration`: ``fit`` derives
            the decision for the people enrolled at ``target_fpir`` (``threshold`` overrides
            its threshold, keeping its scorer, rule and margin).
        rule, threshold, scorer: without ``decision`` or ``calibration``,
            ``Decision.for_rule(rule, threshold, scorer)``: a person is named when their score
            reaches ``threshold``; ``None`` uses the vote rule's own share (required for ``topk``).
            ``scorer`` defaults to the head when one is given, else Euclidean.
        unknown_label: answer for faces below the threshold.
        shortlist: people kept by the cheap first stage before the head scores their
            vectors (two-stage search, :mod:`faceid.match.search`). ``None`` or 0: score every
            vector (exhaustive, the reference); so does a shortlist of at least the number
            of people. ``DEFAULTS.shortlist`` is the measured default for large galleries.
        search_dims: PCA dimensions of the first stage (0 = the vectors' own).
        search_backend: first-stage engine: ``auto`` (NumPy, FAISS from
            ``DEFAULTS.faiss_min_vectors`` vectors), ``numpy`` or ``faiss``.
    """

    def __init__(
        self,
        *,
        head=None,
        normalizer: Callable[[np.ndarray], np.ndarray] | None = None,
        decision: Decision | None = None,
        calibration: OpenSetCalibration | None = None,
        target_fpir: float = DEFAULTS.target_fpir,
        rule: Rule | None = None,
        threshold: float | None = None,
        scorer: str | None = None,
        unknown_label: str = UNKNOWN,
        shortlist: int | None = None,
        search_dims: int = DEFAULTS.search_dims,
        search_backend: str = "auto",
    ):
        self.head = head
        self.normalizer = normalizer
        self.decision = decision
        self.calibration = calibration
        self.target_fpir = target_fpir
        self.rule = rule
        self.threshold = threshold
        self.scorer = scorer
        self.unknown_label = unknown_label
        self.shortlist = shortlist
        self.search_dims = search_dims
        self.search_backend = search_backend

    def fit(self, X: np.ndarray, y) -> Gallery:
        """Enrol vectors ``X (n, dim)`` of people ``y (n,)``."""
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y)
        if X.ndim != 2 or len(X) == 0:
            raise InputError(f"nobody to identify: the gallery needs at least one vector, got shape {X.shape}")
        if len(y) != len(X):
            raise InputError(f"{len(X)} vectors but {len(y)} names")
        if self.decision is not None and (
            self.rule is not None or self.threshold is not None or self.calibration is not None
        ):
            raise InputError("pass either a decision, or a calibration / rule and threshold, not both")
        self.classes_, self.labels_ = np.unique(y, return_inverse=True)
        if self.decision is not None:
            self.decision_ = self.decision
        elif self.calibration is not None:
            if self.rule is not None and self.rule != self.calibration.rule and self.threshold is None:
                raise InputError(
                    f"the calibration was measured for the rule {self.calibration.rule}, not {self.rule}: "
                    "keep the calibrated rule, or pass `threshold`"
                )
            self.decision_ = self.calibration.decision(np.bincount(self.labels_), self.target_fpir)
            if self.threshold is not None:
                self.decision_ = replace(self.decision_, threshold=float(self.threshold), source=GIVEN,
                                         rule=self.rule or self.decision_.rule)
        else:
            scorer = self.scorer or ("euclidean" if self.head is None else "head")
            self.decision_ = Decision.for_rule(self.rule or Rule(), self.threshold, scorer)
        if self.decision_.scorer not in SCORERS:
            raise InputError(f"unknown scorer {self.decision_.scorer!r}: choose one of {', '.join(SCORERS)}")
        if self.decision_.scorer == "head" and self.head is None:
            raise InputError("the head scorer needs a similarity head: pass `head` (of a similarity model written by "
                             "train.py), or choose `scorer` euclidean or cosine")
        if self.shortlist is not None and self.shortlist < 0:
            raise InputError(f"`shortlist` must be a number of people (0 = exhaustive), got {self.shortlist}")
        if self.search_backend not in BACKENDS:
            raise InputError(f"unknown search backend {self.search_backend!r}: choose one of {', '.join(BACKENDS)}")
        self.vectors_ = X
        self.scorer_ = self.decision_.scorer
        self.rule_ = self.decision_.rule
        self.threshold_ = self.decision_.threshold
        self.index_ = None
        if self.shortlist and self.shortlist < len(self.classes_):
            # The first stage compares the vectors the head compares: normalised the same way.
            self.index_ = ShortlistIndex(
                dims=self.search_dims, backend=self.search_backend, top_k=self.rule_.top_k
            ).fit(self._normalised(X), self.labels_)
        return self

    def _normalised(self, X: np.ndarray) -> np.ndarray:
        # The normaliser is the head's; metric scorers compare the backbone's own vectors.
        return X if self.normalizer is None or self.scorer_ != "head" else self.normalizer(X)

    def _pair_scores(self, X: np.ndarray, references: np.ndarray) -> np.ndarray:
        return pairwise_scores(X, references, head=self.head, normalizer=self.normalizer, scorer=self.scorer_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "vectors_"):
            raise NotFittedError("this Gallery is not fitted yet: call fit(vectors, names) first")

    def score_people(self, X: np.ndarray) -> np.ndarray:
        """Per-person scores of faces ``X (m, dim)``: ``(m, n_classes) float32``.

        With a shortlist, only the shortlisted people of each face are scored (with the
        exhaustive path's exact scores); the others get ``-inf``.
        """
        self._check_fitted()
        X = np.asarray(X, dtype=np.float32).reshape(-1, self.vectors_.shape[1])
        if self.index_ is None:
            pair_scores = self._pair_scores(X, self.vectors_)
            return person_scores(pair_scores, self.labels_, len(self.classes_), self.rule_)
        return self._score_shortlisted(X)

    def shortlist_people(self, X: np.ndarray) -> np.ndarray:
        """The people the first stage keeps for faces ``X (m, dim)``: ``(m, shortlist)`` class
        indices, nearest first (``-1`` pads a row an approximate search could not fill)."""
        self._check_fitted()
        if self.index_ is None:
            raise InputError("this Gallery scores every person (no shortlist): pass shortlist=M to search in two stages")
        X = np.asarray(X, dtype=np.float32).reshape(-1, self.vectors_.shape[1])
        return self.index_.shortlist(self._normalised(X), self.shortlist)

    def _score_shortlisted(self, X: np.ndarray) -> np.ndarray:
        index = self.index_
        scores = np.full((len(X), len(self.classes_)), -np.inf, dtype=np.float32)
        for face, people in enumerate(self.shortlist_people(X)):
            people = people[people >= 0]
            if len(people) == 0:
                continue
            rows = np.concatenate([index.order_[index.starts_[p] : index.starts_[p] + index.counts_[p]] for p in people])
            local_labels = np.repeat(np.arange(len(people)), index.counts_[people])
            pair_scores = self._pair_scores(X[face : face + 1], self.vectors_[rows])
            scores[face, people] = person_scores(pair_scores, local_labels, len(people), self.rule_)[0]
        return scores

    def accepts(self, scores: np.ndarray) -> np.ndarray:
        """Whether decision statistics pass the decision (:meth:`faceid.match.decision.Decision.accepts`)."""
        self._check_fitted()
        return self.decision_.accepts(scores)

    def identify(self, X: np.ndarray) -> list[Identification]:
        """One :class:`Identification` per face of ``X (m, dim)``."""
        scores = self.score_people(X)
        if len(scores) == 0:
            return []
        best, best_scores = self.decision_.statistic(scores)
        accepted = self.accepts(best_scores)
        return [
            Identification(
                name=str(self.classes_[index]) if ok else self.unknown_label,
                score=float(score),
                best_person=str(self.classes_[index]),
                known=bool(ok),
            )
            for index, score, ok in zip(best, best_scores, accepted)
        ]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Names (or the unknown label) of faces ``X (m, dim)``: ``(m,)`` object array."""
        return np.array([result.name for result in self.identify(X)], dtype=object)


class EmptyGallery:
    """The gallery of nobody: every face is unknown, with no score (``nan``) and no best person.

    What live identification decides with before anyone is enrolled (``faceid serve``'s cameras
    record the strangers they see from the start); it answers `identify` like a fitted `Gallery`.
    """

    def __init__(self, unknown_label: str = UNKNOWN):
        self.unknown_label = unknown_label
        self.classes_ = np.array([], dtype=object)
        self.decision_ = Decision(float("inf"))  # accepts nothing
        self.threshold_ = float("inf")

    def identify(self, X: np.ndarray) -> list[Identification]:
        """One unknown :class:`Identification` per face of ``X (m, dim)``."""
        return [Identification(name=self.unknown_label, score=float("nan"), best_person=self.unknown_label)
                for _ in range(len(X))]
