"""Extractors trained end to end by train_siamese.py: one tower of the siamese network.

The directory train_siamese.py writes is an ordinary extractor directory: ``manifest.json``
(backbone ``siamese``, the tower it started from, the loss, the preprocessing, a hash of the
trained weights in the fingerprint), ``tower.keras`` and, when tf2onnx could export it,
``tower.onnx``. Every script opens it with :func:`faceid.backbones.load_extractor`; ONNX Runtime
runs it when the export exists (no TensorFlow), Keras otherwise (``safe_mode``). Either file is
checked against the hash its manifest recorded (``onnx_sha256``, ``model_sha256``) before it is read.

The preprocessing is named in the manifest and looked up in :data:`PREPROCESSING`: the tower
that started from dlib's network keeps dlib's, the ResNet50 one ImageNet's, Koch's scales
pixels to [0, 1] (greyscale, as in the paper, or RGB, as in the webcam apps).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from faceid.backbones.registry import (
    GREY_WEIGHTS,
    Backbone,
    BackboneOptions,
    Extractor,
    finish_manifest,
    register_backbone,
)
from faceid.backbones.runtime import load_saved_extractor
from faceid.errors import InputError
from faceid.settings import EXTRACTOR_HEAD_DIR  # noqa: F401  (re-exported: train_siamese writes it)

NAME = "siamese"


def preprocess_unit_grey(chips: np.ndarray) -> np.ndarray:
    """RGB ``uint8`` -> ``(n, s, s, 1)`` luminance in [0, 1] (Koch et al.'s greyscale input)."""
    return (chips.astype(np.float32) @ GREY_WEIGHTS)[..., None] / np.float32(255.0)


def preprocess_unit_rgb(chips: np.ndarray) -> np.ndarray:
    """RGB ``uint8`` -> ``float32`` in [0, 1] (the webcam apps' input)."""
    return chips.astype(np.float32) / np.float32(255.0)


def _dlib(chips: np.ndarray) -> np.ndarray:
    from faceid.backbones.dlib_resnet import preprocess_dlib

    return preprocess_dlib(chips)


def _resnet50(chips: np.ndarray) -> np.ndarray:
    from faceid.backbones.resnet50 import preprocess_resnet50

    return preprocess_resnet50(chips)


PREPROCESSING: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "unit-grey": preprocess_unit_grey,
    "unit-rgb": preprocess_unit_rgb,
    "dlib": _dlib,
    "resnet50-caffe": _resnet50,
}


def preprocessing(name: str) -> Callable[[np.ndarray], np.ndarray]:
    try:
        return PREPROCESSING[name]
    except KeyError:
        raise InputError(f"unknown siamese preprocessing {name!r}: this extractor was written by a newer "
                         "faceid; upgrade, or retrain it with train_siamese.py") from None


def siamese_manifest(fields: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a trained tower (``fields``: tower, loss, input_size, output_dim, ...)."""
    manifest = {"backbone": NAME, "pooling": "none", "tta": "none", "precision": "fp32", **fields}
    return finish_manifest(
        manifest, ("backbone", "tower", "input_size", "align_padding", "alignment", "preprocessing", "weights_sha256"),
        "backbones/siamese.py",
    )


@register_backbone
class SiameseBackbone(Backbone):
    name = NAME
    description = "a tower trained end to end by train_siamese.py (dlib, Koch or ResNet50 start)"

    @classmethod
    def create(cls, options: BackboneOptions) -> Extractor:
        raise InputError("siamese extractors are trained, not built: train one with train_siamese.py and use the "
                         "extractor directory it writes")

    @classmethod
    def load(cls, directory: Path, manifest: dict[str, Any], runtime: str = "auto") -> Extractor:
        preprocess = preprocessing(str(manifest.get("preprocessing")))
        return load_saved_extractor(directory, manifest, runtime, preprocess, "train_siamese.py",
                                    before_keras=_register_dlib_layers)


def _register_dlib_layers() -> None:
    """dlib's custom Keras layers (a tower that started from dlib's network uses them)."""
    import faceid.nets.dlib_keras  # noqa: F401
