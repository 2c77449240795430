"""The ONNX Runtime inference path, shared by extraction, live identification and the benchmarks.

Keras is the reference runtime for the ResNet50 extractor, but on a CPU its
per-call overhead dominates the small batches of live identification (one or
two faces a frame). ``network.py`` therefore also exports the extractor to ONNX
(:func:`export_onnx`), and :class:`OnnxModel` runs it; both are fed by the same
preprocessing function, and their outputs agree within 1e-4 (tested).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from faceid.errors import InputError
from faceid.manifest import atomic_path

logger = logging.getLogger(__name__)


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export_onnx(keras_model, path: Path, example_input: np.ndarray) -> Path:
    """Write ``keras_model`` as an ONNX file with a dynamic batch axis (atomically).

    Args:
        keras_model: the Keras model to export (TensorFlow backend).
        path: destination ``.onnx`` file.
        example_input: one preprocessed batch; Keras needs the model called once
            before export.

    Raises:
        InputError: the exporter (``tf2onnx``) is missing or fails.
    """
    try:
        import tf2onnx  # noqa: F401  (Keras' ONNX export is built on it)
    except ImportError as error:
        raise InputError("exporting to ONNX needs tf2onnx: pip install -r requirements.txt, or pass --export none") from error
    import warnings

    keras_model(example_input, training=False)
    with atomic_path(path) as temporary, warnings.catch_warnings():
        # tf2onnx probes deprecated NumPy aliases; the warning is theirs, not the user's.
        warnings.simplefilter("ignore", FutureWarning)
        try:
            keras_model.export(str(temporary), format="onnx", verbose=False)
        except Exception as error:  # the exporter raises anything from ValueError to its own types
            raise InputError(f"ONNX export failed ({type(error).__name__}: {error}); pass --export none") from error
    return path


class OnnxModel:
    """One ONNX model on the CPU execution provider: ``run(batch) -> outputs``."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime

        path = Path(path)
        if not path.is_file():
            raise InputError(f"ONNX model {path} is missing: re-run network.py, or delete the manifest's onnx_file entry")
        options = onnxruntime.SessionOptions()
        # One process, all cores for the convolutions: the same as Keras/TensorFlow's default.
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ONNX files are protobufs: loading one runs no code, unlike a pickle.
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.path = path

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The model's first output for one input batch (``float32``)."""
        return np.asarray(self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0])
