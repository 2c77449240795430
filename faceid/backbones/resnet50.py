"""Keras ResNet50 (ImageNet) cut at ``conv5_block2_out`` + global pooling: 2048-d vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from faceid.backbones.registry import (
    Backbone,
    BackboneOptions,
    Extractor,
    finish_manifest,
    register_backbone,
)
from faceid.backbones.runtime import KerasExtractor, load_saved_extractor, weights_digest, write_onnx
from faceid.errors import InputError, WeightsUnavailableError
from faceid.extras import require_all
from faceid.io.manifest import library_versions, sha256_file
from faceid.settings import DEFAULTS

# ImageNet channel means in BGR order: the "caffe" preprocessing the Keras
# ResNet50 ImageNet weights were trained with.
IMAGENET_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def preprocess_resnet50(chips: np.ndarray) -> np.ndarray:
    """ImageNet "caffe" preprocessing: RGB ``uint8`` -> BGR ``float32`` minus the channel means.

    Written in NumPy (not ``keras.applications.resnet50.preprocess_input``) so every
    runtime that runs this backbone shares the exact same input.

    Args:
        chips: ``(n, size, size, 3) uint8`` RGB.

    Returns:
        ``(n, size, size, 3) float32`` BGR, mean-subtracted.
    """
    return chips[..., ::-1].astype(np.float32) - IMAGENET_BGR_MEAN


def _export_onnx_bytes(model, chips: np.ndarray) -> bytes:
    """The Keras model as a serialised fp32 ONNX graph (through a scratch file: tf2onnx writes files)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="faceid-export-") as scratch:
        return write_onnx(model, Path(scratch) / "fp32.onnx", preprocess_resnet50(chips[:1])).read_bytes()


@register_backbone
class ResNet50Backbone(Backbone):
    name = "resnet50"
    description = "Keras ResNet50 (ImageNet) cut at conv5_block2_out + global pooling: 2048-d"

    @classmethod
    def _base_model(cls, options: BackboneOptions):
        import keras  # its callers (create, train_siamese's tower) checked the [train] extra

        keras.utils.set_random_seed(options.seed)
        shape = (options.input_size, options.input_size, 3)
        weights = options.weights
        if weights.lower() == "none":
            return keras.applications.ResNet50(weights=None, include_top=False, input_shape=shape), "none (random)"
        if weights.lower() == "imagenet":
            try:
                model = keras.applications.ResNet50(weights="imagenet", include_top=False, input_shape=shape)
            except Exception as error:  # no network, proxy, corrupt download: all the same to the user
                raise WeightsUnavailableError(
                    f"could not load ImageNet weights for ResNet50 ({type(error).__name__}: {error}). "
                    "Keras downloads them on first use and this machine could not; "
                    "pass `weights`, the path to a local resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5, "
                    "or use `backbone` dlib (its models ship in the face_recognition_models package)"
                ) from error
            return model, "imagenet"
        path = Path(weights)
        if not path.is_file():
            raise WeightsUnavailableError(
                f"weights file {path} does not exist: pass `weights` imagenet, none, "
                "or the path to a ResNet50 .h5, or use `backbone` dlib"
            )
        model = keras.applications.ResNet50(weights=None, include_top=False, input_shape=shape)
        try:
            model.load_weights(str(path))
        except Exception as error:
            raise WeightsUnavailableError(
                f"{path} does not hold ResNet50 weights without the top ({type(error).__name__}: {error}); "
                "use resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5, or `backbone` dlib"
            ) from error
        return model, f"file {path.name} sha256:{sha256_file(path)[:16]}"

    @classmethod
    def create(cls, options: BackboneOptions) -> Extractor:
        require_all(("tensorflow", "keras"), "the resnet50 backbone")
        import keras

        if options.pooling not in ("avg", "max"):
            raise InputError(f"unknown pooling {options.pooling!r}: choose avg or max")
        if options.input_size < 32:
            raise InputError(f"`input_size` {options.input_size} is too small: ResNet50 needs at least 32")
        base, weights_source = cls._base_model(options)
        try:
            layer = base.get_layer(options.layer)
        except ValueError:
            candidates = [layer.name for layer in base.layers if layer.name.endswith("_out")]
            raise InputError(
                f"ResNet50 has no layer {options.layer!r}: pick one of its block outputs, e.g. "
                + ", ".join(candidates[-6:])
            ) from None
        features = layer.output
        pooled = len(features.shape) == 4
        if pooled:
            pooling_layer = keras.layers.GlobalAveragePooling2D if options.pooling == "avg" else keras.layers.GlobalMaxPooling2D
            features = pooling_layer(name=f"{options.pooling}_pool")(features)
        model = keras.Model(base.input, features, name=f"resnet50_{options.layer}")
        model.trainable = False
        manifest = {
            "backbone": cls.name,
            "layer": options.layer,
            "layer_shape": [int(size) for size in layer.output.shape[1:]],
            "input_size": options.input_size,
            "pooling": options.pooling if pooled else "none",
            "output_dim": int(features.shape[-1]),
            "align_padding": DEFAULTS.align_padding,
            "alignment": "dlib 5-point get_face_chip",
            "preprocessing": "RGB chip -> BGR float32 minus ImageNet mean [103.939, 116.779, 123.68] (caffe)",
            "weights": weights_source,
            "weights_sha256": weights_digest(model),
            "seed": options.seed if options.weights.lower() == "none" else None,
            "tta": options.tta,
            "precision": options.precision,
            "versions": library_versions(["keras", "tensorflow-cpu", "tensorflow", "numpy", "dlib-bin"]),
        }
        manifest = finish_manifest(
            manifest,
            ("backbone", "layer", "input_size", "pooling", "align_padding", "alignment", "preprocessing", "weights_sha256"),
            "backbones/resnet50.py",
        )
        if options.precision == "int8":
            from faceid.backbones.quantize import quantized_extractor

            return quantized_extractor(manifest, options.calibration_faces, preprocess_resnet50,
                                       lambda chips: _export_onnx_bytes(model, chips))
        return KerasExtractor(manifest, model, preprocess_resnet50)

    @classmethod
    def load(cls, directory: Path, manifest: dict[str, Any], runtime: str = "auto") -> Extractor:
        return load_saved_extractor(directory, manifest, runtime, preprocess_resnet50, "network.py")
