"""The trained similarity model as one directory (what train.py writes, test.py reads).

::

    models/similarity/
      head.npz, head.json    the head's weights (NumPy, no pickle) and its manifest,
                             which also records the extractor, the normalisation,
                             the calibrated threshold and the identification rule
      head.keras             the same head as a Keras model, for users who want one
      normalizer.npz         mean/std used in training (only with --normalize 1)
      report.json            the training report (validation AUC, threshold, ...)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceid.cache import check_same_extractor
from faceid.errors import InputError
from faceid.gallery import Gallery
from faceid.head import SimilarityHead
from faceid.manifest import CORRUPT_FILE_ERRORS, atomic_path
from faceid.scoring import Rule
from faceid.stats import Normalizer

NORMALIZER_FILE = "normalizer.npz"
MODEL_FORMAT = "faceid-similarity/1"


@dataclass
class SimilarityModel:
    head: SimilarityHead
    normalizer: Normalizer | None  # z-score the head was trained with (--normalize 1)
    threshold: float  # calibrated per-person score threshold (topk rule)
    rule: Rule  # the rule the threshold was calibrated for
    extractor: dict[str, Any]  # manifest of the extractor whose features the head takes
    target_far: float

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.normalizer is not None:
            with atomic_path(directory / NORMALIZER_FILE) as temporary:
                np.savez(temporary, **self.normalizer.as_arrays())
        else:
            (directory / NORMALIZER_FILE).unlink(missing_ok=True)
        self.head.save(
            directory,
            {
                "format": MODEL_FORMAT,
                "normalize": self.normalizer is not None,
                "threshold": self.threshold,
                "rule": asdict(self.rule),
                "target_far": self.target_far,
                "extractor": self.extractor,
            },
        )

    @classmethod
    def load(cls, directory: str | Path) -> "SimilarityModel":
        directory = Path(directory)
        head, manifest = SimilarityHead.load(directory)
        if manifest.get("format") != MODEL_FORMAT:
            raise InputError(f"{directory} is not a faceid similarity model: train one with train.py --output_model {directory}")
        normalizer = None
        if manifest["normalize"]:
            try:
                with np.load(directory / NORMALIZER_FILE, allow_pickle=False) as data:
                    normalizer = Normalizer.from_arrays(data["mean"], data["std"])
            except CORRUPT_FILE_ERRORS as error:
                raise InputError(
                    f"{directory / NORMALIZER_FILE} is missing or corrupt ({error}): re-run train.py"
                ) from error
        return cls(
            head=head,
            normalizer=normalizer,
            threshold=float(manifest["threshold"]),
            rule=Rule(**manifest["rule"]),
            extractor=manifest["extractor"],
            target_far=float(manifest["target_far"]),
        )

    def check_extractor(self, extractor_manifest: dict[str, Any], other: str) -> None:
        """Stop if ``other`` (a cache or extractor) is not what the head was trained on."""
        check_same_extractor(
            extractor_manifest,
            self.extractor,
            other,
            "the similarity head only understands vectors of the extractor it was trained on; "
            "use that extractor, or train a head on this extractor's features with train.py",
        )

    def gallery(self, rule: Rule | None = None, threshold: float | None = None, shortlist: int | None = None) -> Gallery:
        """An unfitted :class:`Gallery` using this head, its normalisation and threshold.

        Without a ``threshold``, the ``topk`` rule uses the calibrated one and the
        ``vote`` rule its own share (the original design's decision). ``shortlist``
        turns on the two-stage search (:mod:`faceid.search`) for large galleries.
        """
        rule = rule or self.rule
        if threshold is None and rule.name == "topk":
            threshold = self.threshold
        return Gallery(head=self.head, normalizer=self.normalizer, rule=rule, threshold=threshold, shortlist=shortlist)
