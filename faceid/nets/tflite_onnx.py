"""A TensorFlow Lite graph as an ONNX graph, built with ``onnx.helper`` from :mod:`faceid.nets.tflite_format`.

No TensorFlow: MediaPipe's BlazeFace detectors run through ONNX Runtime
(:class:`faceid.nets.onnx_session.OnnxModel`) from the ``.tflite`` file read by our own reader.
The ONNX graph keeps the TFLite graph's interface: one input of the same name and NHWC shape
(float32), and the same outputs, in the same order, names and shapes.

TFLite computes in NHWC; ONNX's convolutions and pools want NCHW. Every 4-D tensor is therefore
carried in NCHW from the first operator that needs it (one Transpose after the input) and turned
back to NHWC only where the TFLite graph works on the NHWC layout itself (a RESHAPE, a
CONCATENATION on an axis that has no NCHW counterpart, a graph output). Where the two graphs
differ in convention, the conversion is exact:

- SAME padding: TFLite pads ``total = max((out - 1) * stride + (k - 1) * dilation + 1 - in, 0)``,
  the extra pixel at the bottom/right; the ONNX node gets those pads explicitly, from the static
  shapes (``auto_pad=SAME_UPPER`` would do the same, but explicit pads leave nothing to guess);
- PAD's ``(rank, 2)`` paddings are reordered NHWC -> NCHW (BlazeFace pads the channel axis to
  widen its residual shortcuts);
- weights: CONV_2D ``(O, kh, kw, I)`` -> ``(O, I, kh, kw)``; DEPTHWISE_CONV_2D ``(1, kh, kw, C * m)``
  -> ``(C * m, 1, kh, kw)`` with ``group = C`` (TFLite's output channel ``c * m + j`` is group ``c``'s
  ``j``-th, as in ONNX);
- RESIZE_BILINEAR: ``align_corners`` -> ``align_corners``, ``half_pixel_centers`` -> ``half_pixel``,
  neither -> ``asymmetric``, with the constant target size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from faceid.errors import InputError
from faceid.nets.onnx_session import checked_model
from faceid.nets.tflite_format import TfliteModel, TfliteOperator

TO_NCHW = [0, 3, 1, 2]
TO_NHWC = [0, 2, 3, 1]


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite's SAME padding on one axis: (before, after), the odd pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class _TfliteOnnxBuilder:
    """Walks the operators in order; ``values`` maps a TFLite tensor index to its ONNX value and
    that value's layout (``"nchw"``: a 4-D tensor transposed; ``"tflite"``: TFLite's own layout)."""

    def __init__(self, model: TfliteModel):
        from onnx import helper, numpy_helper

        self.helper = helper
        self.numpy_helper = numpy_helper
        self.model = model
        self.nodes: list = []
        self.initializers: list = []
        self.values: dict[int, tuple[str, str]] = {}
        self._converted: dict[tuple[str, str], str] = {}
        self._count = 0

    # -- plumbing -------------------------------------------------------------------------------
    def fail(self, operator: TfliteOperator, message: str) -> InputError:
        return InputError(f"{self.model.path}: {operator.op} {message}: this TFLite graph cannot be built for ONNX Runtime")

    def _name(self, stem: str) -> str:
        self._count += 1
        return f"_{stem}_{self._count}"  # a leading underscore keeps clear of the TFLite names kept as outputs

    def constant(self, stem: str, array: np.ndarray) -> str:
        name = self._name(stem)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], stem: str, **attributes) -> str:
        name = self._name(stem)
        self.nodes.append(self.helper.make_node(op, inputs, [name], name=name, **attributes))
        return name

    def shape(self, index: int) -> tuple[int, ...]:
        return self.model.tensors[index].shape

    def data(self, operator: TfliteOperator, position: int) -> np.ndarray:
        index = operator.inputs[position] if position < len(operator.inputs) else -1
        if index < 0 or self.model.tensors[index].data is None:
            raise self.fail(operator, f"needs a constant input {position}")
        return self.model.tensors[index].data

    def _value(self, index: int) -> tuple[str, str]:
        if index not in self.values:
            tensor = self.model.tensors[index]
            if tensor.data is None:
                raise InputError(f"{self.model.path}: tensor {tensor.name!r} is used before any operator computes it")
            self.values[index] = (self.constant("const", tensor.data), "tflite")
        return self.values[index]

    def nchw(self, index: int) -> str:
        """Tensor ``index`` (4-D) in NCHW."""
        name, layout = self._value(index)
        if layout == "nchw":
            return name
        tensor = self.model.tensors[index]
        if tensor.data is not None:
            return self.constant("const_nchw", tensor.data.transpose(TO_NCHW))
        if (name, "nchw") not in self._converted:
            self._converted[(name, "nchw")] = self.node("Transpose", [name], "to_nchw", perm=TO_NCHW)
        return self._converted[(name, "nchw")]

    def tflite_layout(self, index: int) -> str:
        """Tensor ``index`` in TFLite's own layout (NHWC for 4-D)."""
        name, layout = self._value(index)
        if layout == "tflite":
            return name
        if (name, "tflite") not in self._converted:
            self._converted[(name, "tflite")] = self.node("Transpose", [name], "to_nhwc", perm=TO_NHWC)
        return self._converted[(name, "tflite")]

    def activation(self, operator: TfliteOperator, x: str) -> str:
        function = operator.options.get("fused_activation_function", "NONE")
        if function == "NONE":
            return x
        if function == "RELU":
            return self.node("Relu", [x], "relu")
        if function == "RELU6":
            return self.node("Clip", [x, self.constant("zero", np.float32(0)), self.constant("six", np.float32(6))], "relu6")
        if function == "RELU_N1_TO_1":
            return self.node("Clip", [x, self.constant("minus_one", np.float32(-1)), self.constant("one", np.float32(1))], "relu_n1_to_1")
        if function == "TANH":
            return self.node("Tanh", [x], "tanh")
        raise self.fail(operator, f"has fused activation {function}, which is not supported")

    def output(self, operator: TfliteOperator, name: str, layout: str) -> None:
        self.values[operator.outputs[0]] = (name, layout)

    def _window_pads(self, operator: TfliteOperator, kernel: tuple[int, int]) -> list[int]:
        options = operator.options
        if options.get("padding") == "VALID":
            return [0, 0, 0, 0]
        if options.get("padding") != "SAME":
            raise self.fail(operator, f"has padding {options.get('padding')!r}")
        _, height, width, _ = self.shape(operator.inputs[0])
        top, bottom = _same_pads(height, kernel[0], options["stride_h"], options.get("dilation_h", 1))
        left, right = _same_pads(width, kernel[1], options["stride_w"], options.get("dilation_w", 1))
        return [top, left, bottom, right]

    # -- operators ------------------------------------------------------------------------------
    def conv(self, operator: TfliteOperator, depthwise: bool) -> None:
        options = operator.options
        weights = self.data(operator, 1).astype(np.float32)
        channels = self.shape(operator.inputs[0])[3]
        if depthwise:
            weights = weights.transpose(3, 0, 1, 2)  # (1, kh, kw, C*m) -> (C*m, 1, kh, kw)
            group = channels
        else:
            weights = weights.transpose(0, 3, 1, 2)  # (O, kh, kw, I) -> (O, I, kh, kw)
            group = channels // weights.shape[1]
        kernel = (weights.shape[2], weights.shape[3])
        inputs = [self.nchw(operator.inputs[0]), self.constant("weights", weights)]
        if len(operator.inputs) > 2 and operator.inputs[2] >= 0:
            inputs.append(self.constant("bias", self.data(operator, 2).astype(np.float32)))
        conv = self.node(
            "Conv", inputs, "depthwise_conv" if depthwise else "conv",
            kernel_shape=list(kernel), strides=[options["stride_h"], options["stride_w"]],
            dilations=[options.get("dilation_h", 1), options.get("dilation_w", 1)],
            pads=self._window_pads(operator, kernel), group=group,
        )
        self.output(operator, self.activation(operator, conv), "nchw")

    def pool(self, operator: TfliteOperator) -> None:
        options = operator.options
        kernel = (options["filter_h"], options["filter_w"])
        attributes: dict[str, Any] = {
            "kernel_shape": list(kernel), "strides": [options["stride_h"], options["stride_w"]],
            "pads": self._window_pads(operator, kernel),
        }
        if operator.op == "AVERAGE_POOL_2D":
            attributes["count_include_pad"] = 0  # TFLite averages over the pixels inside the image
        pooled = self.node("MaxPool" if operator.op == "MAX_POOL_2D" else "AveragePool", [self.nchw(operator.inputs[0])], "pool", **attributes)
        self.output(operator, self.activation(operator, pooled), "nchw")

    def _broadcast_operand(self, index: int, rank: int) -> str:
        """A constant operand of an element-wise op on an NCHW tensor, laid out to broadcast the same way."""
        tensor = self.model.tensors[index]
        data = tensor.data
        if data is None:
            if len(tensor.shape) != rank:
                raise InputError(f"{self.model.path}: {tensor.name!r} {tensor.shape} broadcast against a 4-D tensor is not supported")
            return self.nchw(index)
        data = data.astype(np.float32)
        if data.ndim < rank:
            data = data.reshape((1,) * (rank - data.ndim) + data.shape)
        return self.constant("operand_nchw", data.transpose(TO_NCHW))

    def elementwise(self, operator: TfliteOperator, op: str) -> None:
        first, second = operator.inputs[:2]
        if len(self.shape(operator.outputs[0])) == 4:
            inputs = [self._broadcast_operand(index, 4) for index in (first, second)]
            layout = "nchw"
        else:
            inputs = [self.tflite_layout(first), self.tflite_layout(second)]
            layout = "tflite"
        self.output(operator, self.activation(operator, self.node(op, inputs, op.lower())), layout)

    def unary(self, operator: TfliteOperator, op: str, **attributes) -> None:
        name, layout = self._value(operator.inputs[0])
        self.output(operator, self.node(op, [name], op.lower(), **attributes), layout)

    def relu6(self, operator: TfliteOperator) -> None:
        name, layout = self._value(operator.inputs[0])
        self.output(operator, self.activation(TfliteOperator("RELU6", (), (), {"fused_activation_function": "RELU6"}), name), layout)

    def pad(self, operator: TfliteOperator) -> None:
        paddings = self.data(operator, 1).astype(np.int64).reshape(-1, 2)
        if len(paddings) == 4:
            paddings = paddings[TO_NCHW]
            x = self.nchw(operator.inputs[0])
            layout = "nchw"
        else:
            x, layout = self.tflite_layout(operator.inputs[0]), "tflite"
        pads = np.concatenate([paddings[:, 0], paddings[:, 1]])
        self.output(operator, self.node("Pad", [x, self.constant("pads", pads)], "pad", mode="constant"), layout)

    def reshape(self, operator: TfliteOperator) -> None:
        # The output's static shape is what TFLite computed from new_shape (-1 resolved).
        shape = np.array(self.shape(operator.outputs[0]), dtype=np.int64)
        x = self.tflite_layout(operator.inputs[0])
        self.output(operator, self.node("Reshape", [x, self.constant("shape", shape)], "reshape"), "tflite")

    def concatenation(self, operator: TfliteOperator) -> None:
        rank = len(self.shape(operator.outputs[0]))
        axis = operator.options.get("axis", 0) % rank
        if rank == 4 and all(self._value(index)[1] == "nchw" for index in operator.inputs):
            inputs, layout, axis = [self.nchw(index) for index in operator.inputs], "nchw", TO_NCHW.index(axis)
        else:
            inputs, layout = [self.tflite_layout(index) for index in operator.inputs], "tflite"
        concatenated = self.node("Concat", inputs, "concat", axis=axis)
        self.output(operator, self.activation(operator, concatenated), layout)

    def resize_bilinear(self, operator: TfliteOperator) -> None:
        options = operator.options
        if options.get("align_corners"):
            mode = "align_corners"
        elif options.get("half_pixel_centers"):
            mode = "half_pixel"
        else:
            mode = "asymmetric"
        batch, _, _, channels = self.shape(operator.inputs[0])
        height, width = (int(size) for size in self.data(operator, 1).reshape(-1))
        sizes = self.constant("sizes", np.array([batch, channels, height, width], dtype=np.int64))
        resized = self.node(
            "Resize", [self.nchw(operator.inputs[0]), "", "", sizes], "resize_bilinear",
            mode="linear", coordinate_transformation_mode=mode,
        )
        self.output(operator, resized, "nchw")

    def prelu(self, operator: TfliteOperator) -> None:
        if len(self.shape(operator.outputs[0])) == 4:
            x, slope, layout = self.nchw(operator.inputs[0]), self._broadcast_operand(operator.inputs[1], 4), "nchw"
        else:
            x, slope, layout = self.tflite_layout(operator.inputs[0]), self.tflite_layout(operator.inputs[1]), "tflite"
        self.output(operator, self.node("PRelu", [x, slope], "prelu"), layout)

    def build(self, operator: TfliteOperator) -> None:
        for index in operator.outputs:
            if self.model.tensors[index].dtype != "float32":
                raise self.fail(operator, f"computes a {self.model.tensors[index].dtype} tensor (only float32 graphs are supported)")
        op = operator.op
        if op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            self.conv(operator, depthwise=op == "DEPTHWISE_CONV_2D")
        elif op in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            self.pool(operator)
        elif op == "ADD":
            self.elementwise(operator, "Add")
        elif op == "RELU":
            self.unary(operator, "Relu")
        elif op == "RELU6":
            self.relu6(operator)
        elif op == "LOGISTIC":
            self.unary(operator, "Sigmoid")
        elif op == "PAD":
            self.pad(operator)
        elif op == "RESHAPE":
            self.reshape(operator)
        elif op == "CONCATENATION":
            self.concatenation(operator)
        elif op == "RESIZE_BILINEAR":
            self.resize_bilinear(operator)
        elif op == "PRELU":
            self.prelu(operator)
        else:
            raise self.fail(operator, "is not supported")


def tflite_onnx(model: TfliteModel):
    """The ONNX ``ModelProto`` of ``model``: the TFLite graph's input (NHWC, float32) and outputs,
    same names, shapes and order."""
    try:
        from onnx import TensorProto, helper
    except ImportError as error:
        raise InputError("building a TensorFlow Lite graph for ONNX Runtime needs the onnx package: pip install onnx") from error
    if len(model.inputs) != 1:
        raise InputError(f"{model.path} has {len(model.inputs)} inputs: only single-input graphs are supported")
    builder = _TfliteOnnxBuilder(model)
    input_tensor = model.tensors[model.inputs[0]]
    if input_tensor.dtype != "float32":
        raise InputError(f"{model.path}: input {input_tensor.name!r} is {input_tensor.dtype}: only float32 inputs are supported")
    builder.values[model.inputs[0]] = (input_tensor.name, "tflite")
    for operator in model.operators:
        builder.build(operator)
    outputs = []
    for index in model.outputs:
        tensor = model.tensors[index]
        builder.nodes.append(helper.make_node("Identity", [builder.tflite_layout(index)], [tensor.name], name=f"output_{tensor.name}"))
        outputs.append(helper.make_tensor_value_info(tensor.name, TensorProto.FLOAT, list(tensor.shape)))
    graph = helper.make_graph(
        builder.nodes, model.path.stem or "tflite_graph",
        [helper.make_tensor_value_info(input_tensor.name, TensorProto.FLOAT, list(input_tensor.shape))],
        outputs, builder.initializers,
    )
    return checked_model(graph)


def tflite_onnx_bytes(model: TfliteModel) -> bytes:
    """:func:`tflite_onnx`, serialised (what :class:`faceid.nets.onnx_session.OnnxModel` takes)."""
    return tflite_onnx(model).SerializeToString()
