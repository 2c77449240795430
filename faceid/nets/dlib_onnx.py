"""dlib's face ResNet as an ONNX graph, built with ``onnx.helper`` from the parsed layers.

No TensorFlow: this is what identification with the dlib backbone runs (through ONNX Runtime,
batched, on every core). The graph takes the NHWC output of
:func:`faceid.nets.dlib_graph.preprocess_face_resnet`, transposes it to NCHW, and runs
:func:`faceid.nets.dlib_graph.walk`'s steps. Each ``affine`` that follows a convolution
is folded into that convolution's weights (``gamma * (W x + b) + beta``), which is exact up to
float rounding; the Keras model keeps them apart so they can be trained.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceid.errors import InputError
from faceid.io.store import write_bytes
from faceid.nets.dlib_graph import FaceResNet, MmodDetector, Step, walk
from faceid.nets.onnx_session import checked_model

INPUT_NAME = "chips"
OUTPUT_NAME = "descriptors"
DETECTOR_INPUT_NAME = "pyramid"
DETECTOR_OUTPUT_NAME = "scores"


class _OnnxBuilder:
    def __init__(self, network: FaceResNet | MmodDetector, input_name: str = INPUT_NAME):
        from onnx import helper, numpy_helper

        self.helper = helper
        self.numpy_helper = numpy_helper
        self.network = network
        self.input_name = input_name
        self.nodes: list = []
        self.initializers: list = []
        self._pending_con: dict[str, tuple[Step, str]] = {}

    def _constant(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def _node(self, op: str, inputs: list[str], name: str, **attributes) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [name], name=name, **attributes))
        return name

    def input(self, step: Step, mean_rgb) -> str:
        return self._node("Transpose", [self.input_name], "to_nchw", perm=[0, 3, 1, 2])

    def _emit_con(self, step: Step, x: str, gamma: np.ndarray | None = None, beta: np.ndarray | None = None) -> str:
        attributes = step.layer.attributes
        weights = step.layer.arrays["filters"].astype(np.float32)
        biases = step.layer.arrays["biases"].astype(np.float32)
        if gamma is not None and beta is not None:
            weights = weights * gamma[:, None, None, None]
            biases = biases * gamma + beta
        name = f"con_{step.index}"
        padding = [attributes["padding_y"], attributes["padding_x"]] * 2
        return self._node(
            "Conv", [x, self._constant(f"{name}.W", weights), self._constant(f"{name}.B", biases)], name,
            kernel_shape=[attributes["rows"], attributes["columns"]],
            strides=[attributes["stride_y"], attributes["stride_x"]], pads=padding,
        )

    def con(self, step: Step, x: str) -> str:
        # Held back one step: the affine that follows is folded into it.
        placeholder = f"pending_con_{step.index}"
        self._pending_con[placeholder] = (step, x)
        return placeholder

    def _resolve(self, x: str) -> str:
        if x in self._pending_con:
            step, source = self._pending_con.pop(x)
            return self._emit_con(step, source)
        return x

    def affine(self, step: Step, x: str) -> str:
        gamma, beta = step.layer.arrays["gamma"], step.layer.arrays["beta"]
        if x in self._pending_con:
            con_step, source = self._pending_con.pop(x)
            return self._emit_con(con_step, source, gamma, beta)
        name = f"affine_{step.index}"
        scaled = self._node("Mul", [x, self._constant(f"{name}.gamma", gamma.reshape(1, -1, 1, 1))], f"{name}.scaled")
        return self._node("Add", [scaled, self._constant(f"{name}.beta", beta.reshape(1, -1, 1, 1))], name)

    def relu(self, step: Step, x: str) -> str:
        return self._node("Relu", [self._resolve(x)], f"relu_{step.index}")

    def pool(self, step: Step, x: str, kind: str) -> str:
        attributes = step.layer.attributes
        op = "MaxPool" if kind == "max_pool" else "AveragePool"
        return self._node(
            op, [self._resolve(x)], f"{kind}_{step.index}",
            kernel_shape=[attributes["rows"], attributes["columns"]],
            strides=[attributes["stride_y"], attributes["stride_x"]],
            pads=[attributes["padding_y"], attributes["padding_x"]] * 2,
        )

    def global_avg_pool(self, step: Step, x: str) -> str:
        pooled = self._node("GlobalAveragePool", [self._resolve(x)], f"avg_pool_everything_{step.index}")
        return self._node("Flatten", [pooled], f"flatten_{step.index}", axis=1)

    def fc(self, step: Step, x: str) -> str:
        weights = self._constant(f"fc_{step.index}.W", step.layer.arrays["weights"].astype(np.float32))
        return self._node("MatMul", [self._resolve(x), weights], OUTPUT_NAME)

    def _pad_to(self, x: str, shape, out_shape, name: str) -> str:
        missing = [want - have for have, want in zip(shape, out_shape)]
        if not any(missing):
            return x
        pads = np.array([0, 0, 0, 0, 0, *missing], dtype=np.int64)  # NCHW: nothing before, zeros after
        return self._node("Pad", [x, self._constant(f"{name}.pads", pads)], name, mode="constant")

    def add(self, step: Step, x: str, x_shape, shortcut: str, shortcut_shape, out_shape) -> str:
        x = self._pad_to(self._resolve(x), x_shape, out_shape, f"add_prev_{step.index}.pad_x")
        shortcut = self._pad_to(self._resolve(shortcut), shortcut_shape, out_shape, f"add_prev_{step.index}.pad_shortcut")
        return self._node("Add", [x, shortcut], f"add_prev_{step.index}")


def _model(network: FaceResNet | MmodDetector, graph_name: str, input_name: str, input_shape, output_name: str, output_shape):
    try:
        from onnx import TensorProto, helper
    except ImportError as error:
        raise InputError("building dlib's networks for ONNX Runtime needs the onnx package: pip install onnx") from error
    builder = _OnnxBuilder(network, input_name)
    output = builder._resolve(walk(network, builder))
    if output != output_name:
        builder._node("Identity", [output], output_name)
    graph = helper.make_graph(
        builder.nodes, graph_name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, output_shape)],
        builder.initializers,
    )
    return checked_model(graph)


def face_resnet_onnx(network: FaceResNet):
    """The ONNX ``ModelProto`` of ``network``: ``chips (n, size, size, 3) -> descriptors (n, 128)``."""
    size = network.input_size
    return _model(
        network, "dlib_face_recognition_resnet_model_v1", INPUT_NAME, ["n", size, size, 3], OUTPUT_NAME, ["n", network.output_dim]
    )


def mmod_detector_onnx_bytes(detector: MmodDetector) -> bytes:
    """The CNN face detector as a serialised ONNX model: ``pyramid (n, rows, columns, 3)`` (the
    tiled, normalised image pyramid, channels last) ``-> scores (n, windows, out_rows, out_columns)``."""
    model = _model(
        detector, "mmod_human_face_detector", DETECTOR_INPUT_NAME, ["n", "rows", "columns", 3],
        DETECTOR_OUTPUT_NAME, ["n", len(detector.windows), "out_rows", "out_columns"],
    )
    return model.SerializeToString()


def face_resnet_onnx_bytes(network: FaceResNet) -> bytes:
    return face_resnet_onnx(network).SerializeToString()


def write_face_resnet_onnx(network: FaceResNet, path: Path) -> Path:
    """Write the ONNX file atomically."""
    write_bytes(path, face_resnet_onnx_bytes(network))
    return path
