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


def matmul_gflops(size: int = 1024, repeats: int = 10, threads: int | None = None) -> float:
    """This machine's float32 matrix-multiply rate through ONNX Runtime (best of ``repeats``).

    The "physical floor" of a network is its FLOPs over this rate. Measured with
    the runtime the extractor runs on, not NumPy: NumPy's BLAS may be pinned to a
    conservative kernel on some machines (OPENBLAS_CORETYPE) and would understate it.
    """
    import time

    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "matmul",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [size, size]) for name in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    inputs = {name: rng.standard_normal((size, size), dtype=np.float32) for name in ("a", "b")}
    session.run(None, inputs)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, inputs)
        best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best / 1e9
