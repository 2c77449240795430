"""The accept/reject decision: the one place that says whether a per-person score names a face.

A :class:`Decision` is a threshold, the per-person :class:`~faceid.match.scoring.Rule`
it applies to, and the comparison. train.py calibrates one and saves it with the head
(``head.json``); :class:`~faceid.match.gallery.Gallery`, the evaluation protocols and
the live per-track vote all call :meth:`Decision.accepts`, so they cannot disagree.

* A calibrated or user-given threshold accepts scores that **reach** it (``>=``), the
  convention of :mod:`faceid.match.metrics` (``threshold_at_far``).
* The original design's vote rule without a calibrated threshold accepts a person when
  **more than** ``vote_share`` of their photos vote (``>``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from faceid.errors import InputError
from faceid.match.scoring import Rule

COMPARISONS = (">=", ">")
# Where a decision's threshold came from (recorded in head.json and evaluation reports).
CALIBRATED, GIVEN, VOTE_SHARE = "calibrated", "given", "vote_share"
# A threshold derived for the number of people enrolled at a target FPIR (faceid/match/openset.py).
GALLERY = "gallery"


@dataclass(frozen=True)
class Decision:
    """Accept a person when their per-person score passes ``threshold`` by ``comparison``."""

    threshold: float
    rule: Rule = field(default_factory=Rule)
    comparison: str = ">="
    source: str = GIVEN  # GALLERY, CALIBRATED (per person), GIVEN (--threshold) or VOTE_SHARE (the original rule)
    target_far: float | None = None  # the per-person false-accept rate a CALIBRATED threshold was set to
    scorer: str = "head"  # what the per-person scores are (faceid.match.scoring.SCORERS)
    target_fpir: float | None = None  # GALLERY: the share of strangers the threshold may name ...
    enrolled: int | None = None  # ... with this many people enrolled
    # The open-set statistic compared with the threshold: best + margin * (best - second best).
    # 0 compares the best per-person score alone (every decision saved before margins).
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.comparison not in COMPARISONS:
            raise InputError(f"unknown comparison {self.comparison!r}: choose one of {', '.join(COMPARISONS)}")
        if np.isnan(self.threshold):
            raise InputError("a decision threshold must be a number, got NaN")

    @classmethod
    def calibrated(cls, threshold: float, rule: Rule, target_far: float, scorer: str = "head") -> Decision:
        """A per-person threshold: it accepts at most ``target_far`` of strangers against *one* person
        (what train.py saved before gallery-aware thresholds; still read from older models)."""
        return cls(float(threshold), rule, ">=", CALIBRATED, float(target_far), scorer)

    @classmethod
    def for_gallery(
        cls, threshold: float, rule: Rule, scorer: str, target_fpir: float, enrolled: int, margin: float
    ) -> Decision:
        """A threshold naming at most ``target_fpir`` of strangers among ``enrolled`` people."""
        return cls(float(threshold), rule, ">=", GALLERY, None, scorer, float(target_fpir), int(enrolled), float(margin))

    @classmethod
    def original_vote(cls, rule: Rule) -> Decision:
        """The original design's rule: more than ``vote_share`` of a person's photos score ``vote_score``."""
        if rule.name != "vote":
            raise InputError(f"the original vote decision needs the vote rule, not {rule.name!r}")
        return cls(float(rule.vote_share), rule, ">", VOTE_SHARE)

    @classmethod
    def for_rule(cls, rule: Rule, threshold: float | None = None, scorer: str = "head") -> Decision:
        """A decision without a calibration: the given ``threshold``, else the vote rule's own share."""
        if threshold is not None:
            return cls(float(threshold), rule, ">=", GIVEN, scorer=scorer)
        if rule.name == "vote":
            return replace(cls.original_vote(rule), scorer=scorer)
        raise InputError("no decision threshold: pass `threshold`, or use the calibrated one saved by train.py")

    def statistic(self, person_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The best person of each row of ``person_scores (m, people)`` and the score the
        threshold is compared with: ``best + margin * (best - second best)``.

        A face that resembles its best person far more than anyone else is surer than one
        two people explain equally well. With one person enrolled (no second) the margin is 0.
        """
        person_scores = np.asarray(person_scores, dtype=np.float32)
        best_index = np.argmax(person_scores, axis=1)
        rows = np.arange(len(person_scores))
        best = person_scores[rows, best_index]
        if self.margin == 0.0 or person_scores.shape[1] < 2:
            return best_index, best
        second = np.partition(person_scores, -2, axis=1)[:, -2]
        margin = np.where(np.isfinite(second), best - second, 0.0)
        return best_index, (best + np.float32(self.margin) * margin).astype(np.float32)

    def accepts(self, scores: np.ndarray | float) -> np.ndarray:
        """Whether each per-person score names its person: a bool array shaped like ``scores``."""
        # The threshold stays a Python float: NumPy compares it in the scores' own precision.
        scores = np.asarray(scores)
        return scores >= self.threshold if self.comparison == ">=" else scores > self.threshold

    def accepts_one(self, score: float) -> bool:
        """:meth:`accepts` for one score (the live per-track vote: a mean of float32 scores)."""
        return bool(self.accepts(np.float32(score)))

    def overridden(self, rule: Rule | None = None, threshold: float | None = None) -> Decision:
        """This decision with what a user changed (test.py ``--rule``, ``--top_k``, ``--threshold`` ...).

        A given ``threshold`` replaces the calibrated one. A rule of the same kind keeps the
        calibrated threshold (e.g. another ``top_k``); the vote rule on a model calibrated for
        ``topk`` falls back to the original vote decision. ``topk`` on a model calibrated for
        the vote rule has no threshold to use and is an error.
        """
        rule = rule or self.rule
        if threshold is None and rule.name == self.rule.name:
            return replace(self, rule=rule)
        if threshold is None and rule.name != "vote":
            raise InputError(
                f"this model's threshold was calibrated for the {self.rule.name} rule, not {rule.name}: "
                f"pass `threshold`, or train a head with train.py for the {rule.name} rule (`rule` {rule.name})"
            )
        return Decision.for_rule(rule, threshold, self.scorer)

    def describe(self) -> str:
        """One line for a user: the threshold and what it promises."""
        if self.source == GALLERY:
            return (f"{self.enrolled} people enrolled: threshold {self.threshold:.4g} for FPIR {100 * self.target_fpir:g}% "
                    f"({self.scorer} scorer, margin weight {self.margin:g}: at most {100 * self.target_fpir:g}% of "
                    "strangers are given a name)")
        if self.source == CALIBRATED:
            return (f"threshold {self.threshold:.4g} ({self.scorer}), calibrated for {self.target_far:.3g} false accepts "
                    "against one person: more strangers are named as more people are enrolled")
        if self.source == VOTE_SHARE:
            return f"vote rule: more than {self.threshold:.0%} of a person's photos must score {self.rule.vote_score}"
        return f"threshold {self.threshold:.4g} ({self.scorer}), given by the user"

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold, "rule": asdict(self.rule), "comparison": self.comparison,
            "source": self.source, "target_far": self.target_far, "scorer": self.scorer,
            "target_fpir": self.target_fpir, "enrolled": self.enrolled, "margin": self.margin,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Decision:
        try:
            return cls(
                threshold=float(values["threshold"]), rule=Rule(**values["rule"]),
                comparison=str(values.get("comparison", ">=")), source=str(values.get("source", GIVEN)),
                target_far=None if values.get("target_far") is None else float(values["target_far"]),
                scorer=str(values.get("scorer", "head")),
                target_fpir=None if values.get("target_fpir") is None else float(values["target_fpir"]),
                enrolled=None if values.get("enrolled") is None else int(values["enrolled"]),
                margin=float(values.get("margin", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"malformed decision {values!r} ({error}): re-run train.py") from error
