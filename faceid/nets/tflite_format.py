"""A reader for TensorFlow Lite model files, in NumPy: tensors, operators and their options.

A ``.tflite`` file is a FlatBuffer (schema ``tensorflow/lite/schema/schema.fbs``; file identifier
``TFL3`` at bytes 4-8). The ``tflite`` package is the schema's generated Python code: it parses the
bytes without TensorFlow, and this module turns what it returns into plain frozen dataclasses:

- a tensor is a name, a static shape, a dtype and, where a buffer holds its value, that value as a
  NumPy array (weights, biases, paddings, shapes);
- an operator is its builtin name (``"CONV_2D"``), the indices of its input and output tensors
  (``-1``: an optional input left out) and its options as a plain ``dict`` (``padding``
  ``"SAME"``/``"VALID"``, ``stride_h``, ``fused_activation_function`` ``"RELU"``...);
- MediaPipe's models store their weights as float16 constants, each read through a ``DEQUANTIZE``
  operator. Converting float16 to float32 is exact, so the reader does it here: the DEQUANTIZE's
  output tensor becomes a float32 constant and the operator is dropped.

Only subgraph 0 is read (the models a face detector needs have one). :mod:`faceid.nets.tflite_onnx`
builds the ONNX graph from what this returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceid.errors import InputError

FILE_IDENTIFIER = b"TFL3"
# The operators tflite_onnx.py can build (DEQUANTIZE only of constant float16 weights, folded here).
SUPPORTED_OPS = frozenset(
    {
        "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "LOGISTIC",
        "MAX_POOL_2D", "PAD", "PRELU", "RELU", "RELU6", "RESHAPE", "RESIZE_BILINEAR",
    }
)
# TensorType -> NumPy dtype (the types a float model's tensors and constants use).
DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8", 10: "float64"}
PADDINGS = {0: "SAME", 1: "VALID"}
ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


@dataclass(frozen=True)
class TfliteTensor:
    """One tensor of the graph.

    Attributes:
        name: the name the converter gave it (``"input"``, ``"regressors"``...).
        shape: its static shape (``(1, 128, 128, 3)``; NHWC for images).
        dtype: a NumPy dtype name (``"float32"``, ``"int32"``...).
        data: its constant value, shaped ``shape``; ``None`` for activations and graph inputs.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    data: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def is_constant(self) -> bool:
        return self.data is not None


@dataclass(frozen=True)
class TfliteOperator:
    """One operator: ``op`` (``"CONV_2D"``...), tensor indices in and out, and its options."""

    op: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class TfliteModel:
    """Subgraph 0 of a ``.tflite`` file: tensors (by index), operators in execution order, and
    the indices of the graph's inputs and outputs."""

    path: Path
    tensors: tuple[TfliteTensor, ...]
    operators: tuple[TfliteOperator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    description: str = ""

    def tensor(self, index: int) -> TfliteTensor:
        return self.tensors[index]

    def ops_used(self) -> dict[str, int]:
        """How many operators of each kind the graph runs (``{"CONV_2D": 21, ...}``)."""
        counts: dict[str, int] = {}
        for operator in self.operators:
            counts[operator.op] = counts.get(operator.op, 0) + 1
        return counts


def _builtin_names() -> dict[int, str]:
    from tflite.BuiltinOperator import BuiltinOperator

    return {value: name for name, value in vars(BuiltinOperator).items() if not name.startswith("_")}


def _option_table(operator, options_class):
    table = operator.BuiltinOptions()
    if table is None:
        return None
    options = options_class()
    options.Init(table.Bytes, table.Pos)
    return options


def _window_options(options, *, depthwise: bool = False, pool: bool = False) -> dict[str, Any]:
    values = {
        "padding": PADDINGS.get(options.Padding(), str(options.Padding())),
        "stride_h": int(options.StrideH()),
        "stride_w": int(options.StrideW()),
        "fused_activation_function": ACTIVATIONS.get(options.FusedActivationFunction(), "UNKNOWN"),
    }
    if pool:
        values["filter_h"], values["filter_w"] = int(options.FilterHeight()), int(options.FilterWidth())
    else:
        values["dilation_h"], values["dilation_w"] = int(options.DilationHFactor()), int(options.DilationWFactor())
    if depthwise:
        values["depth_multiplier"] = int(options.DepthMultiplier())
    return values


def _options(op: str, operator) -> dict[str, Any]:
    """An operator's builtin options as a plain dict (absent options: the schema's defaults)."""
    import tflite

    if op == "CONV_2D":
        options = _option_table(operator, tflite.Conv2DOptions)
        return _window_options(options) if options else {}
    if op == "DEPTHWISE_CONV_2D":
        options = _option_table(operator, tflite.DepthwiseConv2DOptions)
        return _window_options(options, depthwise=True) if options else {}
    if op in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        options = _option_table(operator, tflite.Pool2DOptions)
        return _window_options(options, pool=True) if options else {}
    if op == "ADD":
        options = _option_table(operator, tflite.AddOptions)
        return {"fused_activation_function": ACTIVATIONS.get(options.FusedActivationFunction(), "UNKNOWN") if options else "NONE"}
    if op == "CONCATENATION":
        options = _option_table(operator, tflite.ConcatenationOptions)
        if options is None:
            return {"axis": 0, "fused_activation_function": "NONE"}
        return {"axis": int(options.Axis()), "fused_activation_function": ACTIVATIONS.get(options.FusedActivationFunction(), "UNKNOWN")}
    if op == "RESHAPE":
        options = _option_table(operator, tflite.ReshapeOptions)
        if options is None or options.NewShapeIsNone():
            return {}
        return {"new_shape": tuple(int(size) for size in options.NewShapeAsNumpy())}
    if op == "RESIZE_BILINEAR":
        options = _option_table(operator, tflite.ResizeBilinearOptions)
        if options is None:
            return {"align_corners": False, "half_pixel_centers": False}
        return {"align_corners": bool(options.AlignCorners()), "half_pixel_centers": bool(options.HalfPixelCenters())}
    return {}


def _buffer_data(model, buffer_index: int, data: bytes) -> bytes | None:
    """A buffer's bytes: inline, or (files over 2 GB) at an offset into the file; ``None`` if empty."""
    if buffer_index <= 0 or buffer_index >= model.BuffersLength():
        return None
    buffer = model.Buffers(buffer_index)
    if getattr(buffer, "Offset", lambda: 0)() > 1:  # Offset/Size: schemas since TF 2.13
        return data[buffer.Offset() : buffer.Offset() + buffer.Size()]
    if buffer.DataLength() == 0:
        return None
    return buffer.DataAsNumpy().tobytes()


def _read_tensor(model, tensor, data: bytes, path: Path) -> TfliteTensor:
    name = (tensor.Name() or b"").decode("utf-8", "replace")
    shape = tuple(int(size) for size in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    dtype = DTYPES.get(tensor.Type())
    if dtype is None:
        raise InputError(f"{path}: tensor {name!r} has TensorFlow Lite type {tensor.Type()}, which this reader does not support")
    raw = _buffer_data(model, tensor.Buffer(), data)
    if raw is None:
        return TfliteTensor(name, shape, dtype)
    if tensor.Sparsity() is not None:
        raise InputError(f"{path}: tensor {name!r} is stored sparse (a DENSIFY model): use the dense model file")
    array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    if array.size != int(np.prod(shape, dtype=np.int64)):
        raise InputError(f"{path}: tensor {name!r} holds {array.size} values for shape {shape} (a damaged file?)")
    return TfliteTensor(name, shape, dtype, array.astype(dtype).reshape(shape))


def _fold_dequantize(tensors: list[TfliteTensor], operators: list[TfliteOperator], path: Path) -> list[TfliteOperator]:
    """Replace every DEQUANTIZE of a constant float16 tensor by a float32 constant (exact)."""
    kept = []
    for operator in operators:
        if operator.op != "DEQUANTIZE":
            kept.append(operator)
            continue
        source = tensors[operator.inputs[0]]
        if source.data is None or source.dtype != "float16":
            raise InputError(
                f"{path}: DEQUANTIZE of {source.name!r} ({source.dtype}, {'constant' if source.data is not None else 'computed'}) "
                "is not supported: only float16 weights are (a quantised model is not)"
            )
        target_index = operator.outputs[0]
        target = tensors[target_index]
        tensors[target_index] = TfliteTensor(target.name, target.shape, "float32", source.data.astype(np.float32).reshape(target.shape))
    return kept


def read_tflite(path: str | Path) -> TfliteModel:
    """Parse subgraph 0 of a TensorFlow Lite model file.

    Raises:
        InputError: the file is missing, is not a TensorFlow Lite model, or uses an operator (or a
            tensor type, or sparse weights) this reader does not support; the message names the
            file and what is missing.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read TensorFlow Lite model {path}: {error.strerror or error}") from error
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise InputError(f"{path} is not a TensorFlow Lite model (no {FILE_IDENTIFIER.decode()} FlatBuffer identifier at byte 4)")
    try:
        import tflite
    except ImportError as error:
        raise InputError(f"reading {path} needs the tflite package (a core dependency): pip install 'tflite>=2.10'") from error

    builtin_names = _builtin_names()
    try:
        model = tflite.Model.GetRootAsModel(data, 0)  # the name every tflite release has
        if model.SubgraphsLength() < 1:
            raise InputError(f"{path} holds no subgraph: not a usable TensorFlow Lite model")
        graph = model.Subgraphs(0)
        opcodes = []
        for index in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(index)
            # Codes above 127 live in BuiltinCode; older files kept them in DeprecatedBuiltinCode.
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = builtin_names.get(builtin, f"BUILTIN_{builtin}")
            if name == "CUSTOM":
                name = f"CUSTOM:{(code.CustomCode() or b'').decode('utf-8', 'replace')}"
            opcodes.append(name)
        raw_operators = [graph.Operators(index) for index in range(graph.OperatorsLength())]
        unsupported = sorted({opcodes[operator.OpcodeIndex()] for operator in raw_operators} - SUPPORTED_OPS)
        if unsupported:
            raise InputError(
                f"{path} uses TensorFlow Lite operator(s) {', '.join(unsupported)} that this reader does not support "
                f"(it supports {', '.join(sorted(SUPPORTED_OPS))})"
            )
        tensors = [_read_tensor(model, graph.Tensors(index), data, path) for index in range(graph.TensorsLength())]
        operators = [
            TfliteOperator(
                opcodes[operator.OpcodeIndex()],
                tuple(int(index) for index in operator.InputsAsNumpy()) if operator.InputsLength() else (),
                tuple(int(index) for index in operator.OutputsAsNumpy()) if operator.OutputsLength() else (),
                _options(opcodes[operator.OpcodeIndex()], operator),
            )
            for operator in raw_operators
        ]
        inputs = tuple(int(index) for index in graph.InputsAsNumpy())
        outputs = tuple(int(index) for index in graph.OutputsAsNumpy())
        description = (model.Description() or b"").decode("utf-8", "replace")
    except InputError:
        raise
    except Exception as error:  # a truncated or damaged FlatBuffer fails deep inside the generated code
        raise InputError(f"{path} is not a readable TensorFlow Lite model ({type(error).__name__}: {error})") from error
    operators = _fold_dequantize(tensors, operators, path)
    return TfliteModel(path, tuple(tensors), tuple(operators), inputs, outputs, description)
