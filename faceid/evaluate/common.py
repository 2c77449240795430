"""What every evaluation shares: the set-up (extractor, model, cache), the result object, the settings."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from faceid.backbones import Extractor, load_extractor
from faceid.detect.faces import FaceOptions
from faceid.evaluate.images import EmbeddedImages, open_cache
from faceid.features.cache import FeatureCache, describe_extractor
from faceid.io.sealed import Key
from faceid.features.embedding import FaceEmbedder
from faceid.match.model import SimilarityModel

logger = logging.getLogger(__name__)

DEFAULT_FAR_TARGETS = (1e-3, 1e-2)
# Ranks kept for the CMC curve and its plot.
CMC_MAX_RANK = 20


@dataclass
class Evaluation:
    """What one evaluation produced.

    Attributes:
        summary: the JSON object printed and written with ``--json``.
        curves: per-method arrays for the plots (``roc``, ``genuine``/``impostor`` scores,
            ``cmc``, ``open_set``), keyed by method name.
        settings: what the HTML page lists under "how this was measured".
    """

    summary: dict[str, Any]
    curves: dict[str, dict[str, Any]]
    settings: dict[str, Any]


@dataclass
class Setup:
    extractor: Extractor
    embedder: FaceEmbedder
    model: SimilarityModel | None
    cache: FeatureCache | None
    cache_info: dict[str, Any]
    key: Key | None = None  # what the encrypted cache and encrypted images open with


def set_up(
    model_path: str | Path, classification: str | Path | None, features: str | Path | None, face_options: FaceOptions,
    *, key: Key | None = None,
) -> Setup:
    extractor = load_extractor(model_path)
    model = None
    if classification is not None:
        model = SimilarityModel.load(classification)
        model.check_extractor(extractor.manifest, f"extractor {model_path}")
    cache, cache_info = open_cache(Path(features) if features is not None else None, extractor, key=key)
    return Setup(extractor, FaceEmbedder(extractor, face_options), model, cache, cache_info, key)


def run_settings(
    setup: Setup,
    model_path,
    classification,
    face_options: FaceOptions,
    argv: Sequence[str] | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """What the HTML page lists under "how this was measured"."""
    model_summary = None
    if setup.model is not None:
        model_summary = {
            "path": str(classification),
            "threshold": setup.model.threshold,
            "rule": f"{setup.model.rule.name} (top_k {setup.model.rule.top_k})",
            "normalize": setup.model.normalizer is not None,
            "target_far": setup.model.target_far,
            "hidden_units": list(setup.model.head.architecture.hidden_units),
        }
    return {
        # The library never reads sys.argv: the script passes its arguments (None from Python code).
        "command_line": None if argv is None else " ".join(["evaluate.py", *argv]),
        "generated": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        "extractor": {"path": str(model_path), "description": describe_extractor(setup.extractor.manifest)},
        "model": model_summary,
        "feature_cache": setup.cache_info,
        "detection": {
            "detect": face_options.detect,
            "upsample": face_options.effective_upsample,
            "detector": face_options.detector,
        },
        **extra,
    }


def summary_head(command: str, setup: Setup, model_path, classification, images: EmbeddedImages) -> dict[str, Any]:
    return {
        "command": command,
        "extractor": {
            "path": str(model_path),
            "backbone": setup.extractor.name,
            "fingerprint": setup.extractor.fingerprint,
        },
        "model": None if classification is None else str(classification),
        "feature_cache": setup.cache_info,
        "images": images.counts(),
    }
