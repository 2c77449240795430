"""The trained similarity model as one directory (what train.py writes, test.py reads).

::

    models/similarity/
      head.npz, head.json    the head's weights (NumPy, no pickle) and its manifest,
                             which also records the extractor, the normalisation and
                             the decision (calibrated threshold, rule, comparison)
      head.keras             the same head as a Keras model, for users who want one
      normalizer.npz         mean/std used in training (only with --normalize 1)
      calibration.npz        open-set calibration of every scorer on the held-out people
                             (faceid/match/openset.py); head.json names the default scorer
      report.json            the training report (validation AUC, threshold, ...)

Every file but the report changes together, in one :class:`faceid.io.store.StagedFiles`
commit: an interrupted save leaves the previous model whole. ``head.json`` records the
SHA-256 of every file that is read back (``weights_sha256``, ``normalizer_sha256``,
``calibration_sha256``; ``None`` for a file the save did not write), and :meth:`SimilarityModel.load`
checks each before reading it: a model directory may come from someone else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceid.errors import InputError
from faceid.features.cache import check_same_extractor
from faceid.features.stats import Normalizer
from faceid.io.manifest import check_file_sha256, sha256_file
from faceid.io.store import StagedFiles
from faceid.match.decision import Decision
from faceid.match.gallery import Gallery
from faceid.match.head import HEAD_MANIFEST_FILE, SimilarityHead
from faceid.match.openset import CALIBRATION_FILE, OpenSetCalibration, calibration_arrays, load_calibrations
from faceid.match.scoring import Rule
from faceid.settings import DEFAULTS

NORMALIZER_FILE = "normalizer.npz"
MODEL_FORMAT = "faceid-similarity/1"


def _stage_hashed(staged: StagedFiles, name: str, write: Callable[[Path], object]) -> str:
    """Stage ``name`` (``write(temporary_path)``) and return the SHA-256 of what was staged."""
    digests: list[str] = []

    def write_and_hash(path: Path) -> None:
        write(path)
        digests.append(sha256_file(path))

    staged.write_with(name, write_and_hash)
    return digests[0]


@dataclass
class SimilarityModel:
    head: SimilarityHead
    normalizer: Normalizer | None  # z-score the head was trained with (--normalize 1)
    decision: Decision  # the calibrated accept/reject decision (threshold, rule, comparison)
    extractor: dict[str, Any]  # manifest of the extractor whose features the head takes
    # Open-set calibration per scorer on the held-out people, and the scorer that measured best
    # there (models saved before them have neither: the head and its per-person decision).
    calibrations: dict[str, OpenSetCalibration] = field(default_factory=dict)
    default_scorer: str = "head"

    @property
    def threshold(self) -> float:
        return self.decision.threshold

    @property
    def rule(self) -> Rule:
        return self.decision.rule

    @property
    def target_far(self) -> float | None:
        return self.decision.target_far

    def save(self, directory: str | Path) -> None:
        # head.json (staged last) records the hash of each file, None for one this save removes.
        digests: dict[str, str | None] = {"normalizer_sha256": None, "calibration_sha256": None}
        with StagedFiles(directory) as staged:
            if self.normalizer is not None:
                digests["normalizer_sha256"] = _stage_hashed(staged, NORMALIZER_FILE, self.normalizer.write)
            else:
                staged.remove(NORMALIZER_FILE)
            if self.calibrations:
                digests["calibration_sha256"] = _stage_hashed(
                    staged, CALIBRATION_FILE, lambda path: np.savez(path, **calibration_arrays(self.calibrations)))
            else:
                staged.remove(CALIBRATION_FILE)
            self.head.stage(
                staged,
                {
                    "format": MODEL_FORMAT,
                    "normalize": self.normalizer is not None,
                    **digests,
                    # threshold, rule and target_far stay at the top level for readers of
                    # earlier models; "decision" is what this code reads.
                    "threshold": self.decision.threshold,
                    "rule": asdict(self.decision.rule),
                    "target_far": self.decision.target_far,
                    "decision": self.decision.as_dict(),
                    "default_scorer": self.default_scorer,
                    "extractor": self.extractor,
                },
            )

    @classmethod
    def load(cls, directory: str | Path) -> SimilarityModel:
        directory = Path(directory)
        head, manifest = SimilarityHead.load(directory)
        if manifest.get("format") != MODEL_FORMAT:
            raise InputError(f"{directory} is not a faceid similarity model: train one there with train.py")
        manifest_path = directory / HEAD_MANIFEST_FILE
        normalizer = None
        if manifest["normalize"]:
            path = directory / NORMALIZER_FILE
            if path.is_file():  # a missing one: Normalizer.read says so
                check_file_sha256(path, manifest, "normalizer_sha256", manifest_path, "re-run train.py")
            normalizer = Normalizer.read(path, "re-run train.py")
        if "decision" in manifest:
            decision = Decision.from_dict(manifest["decision"])
        else:  # a model saved before the decision object: its threshold was calibrated with ">="
            decision = Decision.calibrated(manifest["threshold"], Rule(**manifest["rule"]), manifest["target_far"])
        calibrations = {}
        path = directory / CALIBRATION_FILE
        if path.is_file():
            check_file_sha256(path, manifest, "calibration_sha256", manifest_path, "re-run train.py")
            calibrations = load_calibrations(path, "re-run train.py")
        elif manifest.get("calibration_sha256"):  # without it the model would decide another way
            raise InputError(f"{path} is missing but {manifest_path} records it: the model directory is incomplete; "
                             "copy all of it, or re-run train.py")
        return cls(head=head, normalizer=normalizer, decision=decision, extractor=manifest["extractor"],
                   calibrations=calibrations, default_scorer=str(manifest.get("default_scorer", "head")))

    def check_extractor(self, extractor_manifest: dict[str, Any], other: str) -> None:
        """Stop if ``other`` (a cache or extractor) is not what the head was trained on."""
        check_same_extractor(
            extractor_manifest,
            self.extractor,
            other,
            "the similarity head only understands vectors of the extractor it was trained on; "
            "use that extractor, or train a head on this extractor's features with train.py",
        )

    def gallery(
        self,
        rule: Rule | None = None,
        threshold: float | None = None,
        shortlist: int | None = None,
        scorer: str | None = None,
        target_fpir: float | None = None,
        fallback: dict[str, OpenSetCalibration] | None = None,
    ) -> Gallery:
        """An unfitted :class:`Gallery` with this head, its normalisation and a decision for ``scorer``.

        ``scorer`` (default: the one that measured best in training) picks its open-set
        calibration; ``fit`` then sets the threshold for the people enrolled at ``target_fpir``.
        A model saved before calibrations keeps its per-person decision for the head, and a
        metric scorer it has no calibration for uses ``fallback`` (the backbone's). ``rule`` and
        ``threshold`` override as :meth:`faceid.match.decision.Decision.overridden` says;
        ``shortlist`` turns on the two-stage search (:mod:`faceid.match.search`).
        """
        scorer = scorer or self.default_scorer
        calibration = self.calibrations.get(scorer) or (fallback or {}).get(scorer)
        if calibration is not None and (rule is None or rule == calibration.rule):
            return Gallery(head=self.head, normalizer=self.normalizer, calibration=calibration,
                           target_fpir=target_fpir or DEFAULTS.target_fpir, threshold=threshold, shortlist=shortlist)
        if scorer == self.decision.scorer:
            decision = self.decision.overridden(rule, threshold)
            return Gallery(head=self.head, normalizer=self.normalizer, decision=decision, shortlist=shortlist)
        if threshold is None:
            raise InputError(f"no calibration of the {scorer} scorer for this model and extractor: pass `threshold`, "
                             "or re-run train.py (it calibrates every scorer)")
        decision = Decision.for_rule(rule or self.rule, threshold, scorer)
        return Gallery(head=self.head, normalizer=self.normalizer, decision=decision, shortlist=shortlist)
