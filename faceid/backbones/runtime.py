"""What runs a backbone's network: Keras, or the ONNX export through ONNX Runtime.

Keras is the reference runtime for the ResNet50 extractor, but on a CPU its
per-call overhead dominates the small batches of live identification (one or
two faces a frame). ``network.py`` therefore also exports the extractor to ONNX
(:func:`write_onnx`), and :class:`~faceid.nets.onnx_session.OnnxModel` runs it; both are fed by the same
preprocessing function, and their outputs agree within 1e-4 (tested).
:class:`ChipModelExtractor` is the batching both share; each backbone passes its own
preprocessing function in.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from faceid.backbones.registry import Extractor, check_file_sha256
from faceid.errors import InputError
from faceid.extras import require, require_all
from faceid.io.manifest import sha256_file
from faceid.io.store import atomic_path, write_bytes
from faceid.nets.onnx_session import OnnxModel, onnxruntime_available

logger = logging.getLogger(__name__)


def weights_digest(model) -> str:
    """SHA-256 (32 hex digits) of a Keras model's weights: what a manifest fingerprints."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(np.asarray(weight)).tobytes())
    return digest.hexdigest()[:32]


def write_onnx(keras_model, path: Path, example_input: np.ndarray) -> Path:
    """Write ``keras_model`` as an ONNX file with a dynamic batch axis (atomically).

    Args:
        keras_model: the Keras model to export (TensorFlow backend).
        path: destination ``.onnx`` file.
        example_input: one preprocessed batch; Keras needs the model called once
            before export.

    Raises:
        InputError: the exporter (``tf2onnx``) is missing or fails.
    """
    require("tf2onnx", "exporting to ONNX (Keras' export is built on tf2onnx; or save without an ONNX export: "
            "`export_onnx`)")
    import warnings

    keras_model(example_input, training=False)
    with atomic_path(path) as temporary, warnings.catch_warnings():
        # tf2onnx probes deprecated NumPy aliases; the warning is theirs, not the user's.
        warnings.simplefilter("ignore", FutureWarning)
        try:
            keras_model.export(str(temporary), format="onnx", verbose=False)
        except Exception as error:  # the exporter raises anything from ValueError to its own types
            raise InputError(f"ONNX export failed ({type(error).__name__}: {error}); save without an ONNX export: "
                             "`export_onnx`") from error
    return path


class ChipModelExtractor(Extractor):
    """A network from preprocessed chip to vector, run in batches; subclasses give the runtime.

    ``preprocess`` is the backbone's own function, ``(n, size, size, 3) uint8`` RGB chips ->
    the network's input: the same function feeds every runtime of that backbone.
    """

    def __init__(self, manifest: dict[str, Any], preprocess: Callable[[np.ndarray], np.ndarray]):
        super().__init__(manifest)
        self.preprocess = preprocess

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """``(n, size, size, 3) float32`` preprocessed -> ``(n, output_dim)``."""
        raise NotImplementedError

    def _embed(self, chips: np.ndarray, batch_size: int) -> np.ndarray:
        outputs = [
            self._forward(self.preprocess(chips[start : start + batch_size]))
            for start in range(0, len(chips), batch_size)
        ]
        return np.concatenate(outputs).astype(np.float32, copy=False)


class KerasExtractor(ChipModelExtractor):
    """The Keras model itself (the reference runtime; also what is saved and exported)."""

    runtime = "keras"

    def __init__(self, manifest: dict[str, Any], model, preprocess: Callable[[np.ndarray], np.ndarray]):
        super().__init__(manifest, preprocess)
        self.model = model

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        # Calling the model directly avoids predict()'s per-call dataset set-up,
        # which dominates for the small batches of live identification.
        return np.asarray(self.model(batch, training=False), dtype=np.float32)

    def save(self, directory: Path, model_name: str, export_onnx: bool = True) -> Path:
        """Write the Keras model, the ONNX export (``export_onnx``) and the manifest."""
        directory.mkdir(parents=True, exist_ok=True)
        model_file = f"{model_name}.keras"
        with atomic_path(directory / model_file) as temporary:
            self.model.save(temporary)
        # Each file's hash goes in the manifest (written last), checked before the file is read.
        self.manifest["model_file"] = model_file
        self.manifest["model_sha256"] = sha256_file(directory / model_file)
        self.manifest.pop("onnx_file", None)
        self.manifest.pop("onnx_sha256", None)
        if export_onnx:
            onnx_file = f"{model_name}.onnx"
            example = self.preprocess(np.zeros((1, self.chip_size, self.chip_size, 3), dtype=np.uint8))
            write_onnx(self.model, directory / onnx_file, example)
            self.manifest["onnx_file"] = onnx_file
            self.manifest["onnx_sha256"] = sha256_file(directory / onnx_file)
        return super().save(directory, model_name)

    def describe(self) -> str:
        lines: list[str] = []
        self.model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
        return super().describe() + "\n" + "\n".join(lines)


class OnnxExtractor(ChipModelExtractor):
    """The same network exported to ONNX, run by ONNX Runtime (no TensorFlow import at all)."""

    runtime = "onnx"

    def __init__(
        self, manifest: dict[str, Any], model: Path | bytes, preprocess: Callable[[np.ndarray], np.ndarray],
        save_model: bool = False,
    ):
        """``model``: a file, or a graph built in memory; ``save_model``: :meth:`save` writes that
        in-memory graph (an int8 model, which cannot be rebuilt without its calibration)."""
        super().__init__(manifest, preprocess)
        self.model = OnnxModel(model, name=f"{manifest.get('backbone', '?')} ONNX graph")
        self._model_bytes = model if save_model and isinstance(model, bytes) else None

    def save(self, directory: Path, model_name: str, export_onnx: bool = True) -> Path:
        if self._model_bytes is not None:
            directory.mkdir(parents=True, exist_ok=True)
            onnx_file = f"{model_name}.{self.precision}.onnx"
            write_bytes(directory / onnx_file, self._model_bytes)
            self.manifest["onnx_file"] = onnx_file
            self.manifest["onnx_sha256"] = hashlib.sha256(self._model_bytes).hexdigest()
            self.manifest.pop("model_file", None)
            self.manifest.pop("model_sha256", None)
        return super().save(directory, model_name)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return self.model.run(batch)


def saved_onnx_file(directory: Path, manifest: dict[str, Any], fix: str) -> Path:
    """The manifest's ``onnx_file`` in ``directory``, checked against its ``onnx_sha256`` (before
    ONNX Runtime reads it)."""
    path = directory / str(manifest["onnx_file"])
    check_file_sha256(path, manifest, "onnx_sha256", fix)
    return path


def load_saved_extractor(
    directory: Path, manifest: dict[str, Any], runtime: str, preprocess: Callable[[np.ndarray], np.ndarray],
    made_by: str, before_keras: Callable[[], object] | None = None,
) -> ChipModelExtractor:
    """Reopen a Keras-built extractor saved by :meth:`KerasExtractor.save`: its ONNX export on ONNX
    Runtime (``runtime`` onnx, or auto when exported), else the ``.keras`` file (``safe_mode``: loading
    runs no code from the file; custom layers must be registered, as ``dlib_keras``'s are on import).
    Either file is first checked against the hash the manifest recorded (``onnx_sha256``, ``model_sha256``).

    ``made_by``: the script that writes such a directory, named in the messages; ``before_keras``:
    called before the ``.keras`` file is read (to register custom layers).
    """
    onnx_file = manifest.get("onnx_file")
    fix = f"re-export it with {made_by}, writing {directory}"
    if runtime == "dlib":
        raise InputError(f"`runtime` dlib runs the dlib backbone only: use auto, onnx or keras for {manifest.get('backbone')}")
    if runtime == "onnx" and not onnx_file:
        raise InputError(f"{directory} has no ONNX export: re-create it with {made_by} with its ONNX export, "
                         "or use `runtime` keras")
    if runtime == "onnx" or (runtime == "auto" and onnx_file and onnxruntime_available()):
        return OnnxExtractor(manifest, saved_onnx_file(directory, manifest, fix), preprocess)
    model_path = directory / str(manifest.get("model_file", ""))
    if not manifest.get("model_file") or not model_path.is_file():
        raise InputError(f"extractor model file {model_path} is missing: {fix}")
    check_file_sha256(model_path, manifest, "model_sha256", fix)
    require_all(("tensorflow", "keras"), f"running {model_path.name} (a Keras model; re-export with ONNX to run without Keras)")
    import keras

    if before_keras is not None:
        before_keras()
    try:
        model = keras.models.load_model(model_path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file
        raise InputError(f"cannot load {model_path} ({type(error).__name__}: {error}): re-run {made_by}") from error
    return KerasExtractor(manifest, model, preprocess)
