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


@dataclass(frozen=True)
class Decision:
    """Accept a person when their per-person score passes ``threshold`` by ``comparison``."""

    threshold: float
    rule: Rule = field(default_factory=Rule)
    comparison: str = ">="
    source: str = GIVEN  # CALIBRATED (train.py), GIVEN (--threshold) or VOTE_SHARE (the original rule)
    target_far: float | None = None  # the false-accept rate a calibrated threshold was set to

    def __post_init__(self) -> None:
        if self.comparison not in COMPARISONS:
            raise InputError(f"unknown comparison {self.comparison!r}: choose one of {', '.join(COMPARISONS)}")
        if np.isnan(self.threshold):
            raise InputError("a decision threshold must be a number, got NaN")

    @classmethod
    def calibrated(cls, threshold: float, rule: Rule, target_far: float) -> Decision:
        """What train.py saves: ``threshold`` accepts at most ``target_far`` of strangers, per person."""
        return cls(float(threshold), rule, ">=", CALIBRATED, float(target_far))

    @classmethod
    def original_vote(cls, rule: Rule) -> Decision:
        """The original design's rule: more than ``vote_share`` of a person's photos score ``vote_score``."""
        if rule.name != "vote":
            raise InputError(f"the original vote decision needs the vote rule, not {rule.name!r}")
        return cls(float(rule.vote_share), rule, ">", VOTE_SHARE)

    @classmethod
    def for_rule(cls, rule: Rule, threshold: float | None = None) -> Decision:
        """A decision without a calibration: the given ``threshold``, else the vote rule's own share."""
        if threshold is not None:
            return cls(float(threshold), rule, ">=", GIVEN)
        if rule.name == "vote":
            return cls.original_vote(rule)
        raise InputError("no decision threshold: pass one (--threshold), or use the calibrated one saved by train.py")

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
                f"pass --threshold T, or train a head with train.py --rule {rule.name}"
            )
        return Decision.for_rule(rule, threshold)

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold, "rule": asdict(self.rule), "comparison": self.comparison,
            "source": self.source, "target_far": self.target_far,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Decision:
        try:
            return cls(
                threshold=float(values["threshold"]), rule=Rule(**values["rule"]),
                comparison=str(values.get("comparison", ">=")), source=str(values.get("source", GIVEN)),
                target_far=None if values.get("target_far") is None else float(values["target_far"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"malformed decision {values!r} ({error}): re-run train.py") from error
