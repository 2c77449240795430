"""One ONNX Runtime session on the CPU, shared by everything that runs an ONNX graph.

BlazeFace (``detect/blazeface.py``), the CNN face detector (``detect/mmod.py``) and the ONNX runtime
of every backbone (``backbones/runtime.py: OnnxExtractor``) run their graphs through
:class:`OnnxModel`, with :func:`default_threads` threads unless told otherwise. The graphs we build
ourselves (``dlib_onnx.py``, ``tflite_onnx.py``) are finished by :func:`checked_model`, at the opset
and IR version every supported ONNX Runtime reads.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from faceid.errors import InputError


OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime this project supports (>= 1.18)


def checked_model(graph):
    """``graph`` (an ``onnx`` ``GraphProto``) as a checked ``ModelProto`` at :data:`OPSET` and :data:`IR_VERSION`."""
    from onnx import checker, helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="faceid")
    model.ir_version = IR_VERSION
    checker.check_model(model)
    return model


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime is installed (it is a core dependency, but a stripped install may lack it)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def default_threads() -> int:
    """Threads for one ONNX Runtime session: ``$OMP_NUM_THREADS`` when set (the convention numeric
    libraries follow; Ray sets it to a task's or an actor's CPUs), else every core."""
    try:
        threads = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        threads = 0
    return threads if threads > 0 else os.cpu_count() or 1


class OnnxModel:
    """One ONNX model on the CPU execution provider: ``run(batch) -> outputs``.

    Args:
        model: an ``.onnx`` file, or a serialised model built in memory (``bytes``).
        name: how messages name an in-memory model.
    """

    def __init__(self, model: str | Path | bytes, threads: int | None = None, name: str = "in-memory ONNX model"):
        import onnxruntime

        if isinstance(model, bytes):
            source: str | bytes = model
            path = Path(name)
        else:
            path = Path(model)
            if not path.is_file():
                raise InputError(f"ONNX model {path} is missing: re-run network.py, or delete the manifest's onnx_file entry")
            source = str(path)
        options = onnxruntime.SessionOptions()
        # One process, all cores for the convolutions (Keras/TensorFlow's default), unless told otherwise.
        options.intra_op_num_threads = threads or default_threads()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ONNX files are protobufs: loading one runs no code, unlike a pickle.
        try:
            self.session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            raise InputError(f"ONNX Runtime cannot load {path} ({type(error).__name__}: {error}): re-run network.py") from error
        self.input_name = self.session.get_inputs()[0].name
        self.path = path

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The model's first output for one input batch (``float32``)."""
        return self.run_all(batch)[0]

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output of the model for one input batch, in the graph's order (a detector's boxes and scores)."""
        return [np.asarray(output) for output in self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})]
