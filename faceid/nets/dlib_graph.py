"""dlib's face ResNet as a program of steps, checked against the file and run by any graph builder.

A dlib file holds the layers but not how they connect (see :mod:`faceid.nets.dlib_format`):
which tensor a ``tag``/``skip``/``add_prev`` refers to is the network's C++ type. This module
writes that type down — ``anet_type`` in dlib's ``tools/python/src/face_recognition.cpp`` —
checks a parsed file against it layer by layer (so another network, or a file of another
shape, is refused with the first difference named), and walks the result as a list of
:class:`Step` that a builder turns into a graph: :mod:`faceid.nets.dlib_onnx` (ONNX, for
ONNX Runtime) and :mod:`faceid.nets.dlib_keras` (Keras 3, trainable) both use
:func:`walk`, so the two graphs are the same network by construction.

Semantics, from dlib's sources: ``tagN`` marks the current tensor; ``skipN`` makes the latest
``tagN`` current again; ``add_prevN`` adds the latest ``tagN`` to the current tensor, and when
their shapes differ both are zero-padded at the end of each axis to the larger (``tt::add``),
so a shortcut with fewer channels gains zero channels, and a 3x3 output is added into the
top-left of a 4x4 shortcut. Convolutions and pools pad ``k // 2`` at stride 1 and nothing at
stride 2 (dlib's default, and what the file stores). ``affine`` is ``gamma * x + beta`` per
channel (batch-norm folded at training time). The input layer maps RGB pixels to
``(pixel - mean) / 256`` planes; the output is the raw 128-d ``fc`` output (no L2 norm).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from faceid.nets.dlib_format import DlibLayer, DlibModelError, DlibNetwork, read_dlib_network

Tensor = TypeVar("Tensor")

# The face network's type, bottom up, as tokens: (kind, *numbers). Tag ids are C++ template ids.
Token = tuple[Any, ...]


def _block(filters: int, stride: int) -> list[Token]:
    # block<N, affine, stride> = affine<con<N,3,3,1,1, relu<affine<con<N,3,3,stride,stride, SUBNET>>>>>
    return [("con", filters, 3, stride), ("affine",), ("relu",), ("con", filters, 3, 1), ("affine",)]


def _ares(filters: int) -> list[Token]:
    # relu<add_prev1<block<N, affine, 1, tag1<SUBNET>>>>
    return [("tag", 1), *_block(filters, 1), ("add_prev", 1), ("relu",)]


def _ares_down(filters: int) -> list[Token]:
    # relu<add_prev2<avg_pool<2,2,2,2, skip1<tag2<block<N, affine, 2, tag1<SUBNET>>>>>>>
    return [("tag", 1), *_block(filters, 2), ("tag", 2), ("skip", 1), ("avg_pool", 2, 2), ("add_prev", 2), ("relu",)]


def face_resnet_type() -> list[Token]:
    """``anet_type`` of dlib's face recognition model, from the input to the 128-d output."""
    tokens: list[Token] = [("input", 150), ("con", 32, 7, 2), ("affine",), ("relu",), ("max_pool", 3, 2)]
    tokens += _ares(32) * 3  # alevel4
    tokens += _ares_down(64) + _ares(64) * 3  # alevel3
    tokens += _ares_down(128) + _ares(128) * 2  # alevel2
    tokens += _ares_down(256) + _ares(256) * 2  # alevel1
    tokens += _ares_down(256)  # alevel0
    tokens += [("avg_pool_everything",), ("fc", 128)]
    return tokens


@dataclass(frozen=True)
class Step:
    """One step of the program: ``op`` on the current tensor (``layer`` holds its parameters)."""

    index: int  # position from the input, the same in every builder's layer names
    op: str  # input, con, affine, relu, max_pool, avg_pool, global_avg_pool, fc, tag, skip, add_prev
    layer: DlibLayer
    tag: int = 0


@dataclass(frozen=True)
class FaceResNet:
    """The parsed, checked face network: its steps and input normalisation."""

    path: Path
    steps: tuple[Step, ...]
    mean_rgb: tuple[float, float, float]
    input_size: int
    output_dim: int
    parameter_count: int


def _default_padding(size: int, stride: int) -> int:
    return size // 2 if stride == 1 else 0


FACE_RESNET_NAME = "dlib's face recognition ResNet (dlib_face_recognition_resnet_model_v1)"
MMOD_DETECTOR_NAME = "dlib's CNN face detector (mmod_human_face_detector)"


def _check(token: Token, layer: DlibLayer, index: int, path: Path, network_name: str = FACE_RESNET_NAME) -> Step:
    kind = token[0]

    def refuse(found: str) -> DlibModelError:
        expected = kind + (f"{token[1:]}" if len(token) > 1 else "")
        return DlibModelError(
            f"{path} is not {network_name}: layer {index} from the input is {found}, that network has {expected} there"
        )

    if kind in ("tag", "skip"):
        if layer.kind != "tag_or_skip":
            raise refuse(layer.describe())
        return Step(index, kind, layer, token[1])
    if kind == "add_prev":
        if layer.kind != "add_prev":
            raise refuse(layer.describe())
        return Step(index, kind, layer, token[1])
    if kind == "avg_pool_everything":
        if layer.kind != "avg_pool" or layer.attributes["rows"] != 0 or layer.attributes["columns"] != 0:
            raise refuse(layer.describe())
        return Step(index, "global_avg_pool", layer)
    if layer.kind != kind:
        raise refuse(layer.describe())
    attributes = layer.attributes
    if kind == "input" and (attributes["rows"], attributes["columns"]) != (token[1], token[1]):
        raise refuse(layer.describe())
    if kind == "input_pyramid":
        return Step(index, "input", layer)
    if kind in ("con", "max_pool", "avg_pool"):
        numbers = token[1:] if kind != "con" else token[2:]
        size, stride = numbers
        window = (attributes["rows"], attributes["columns"], attributes["stride_y"], attributes["stride_x"])
        padding = (attributes["padding_y"], attributes["padding_x"])
        if window != (size, size, stride, stride) or padding != (_default_padding(size, stride),) * 2:
            raise refuse(layer.describe())
        if kind == "con" and (attributes["filters"] != token[1] or not attributes["use_bias"] or attributes.get("use_relu")):
            raise refuse(layer.describe())
    if kind == "affine" and (attributes["mode"] != 0 or attributes["disabled"]):  # CONV_MODE, enabled
        raise refuse(layer.describe())
    if kind == "relu" and attributes["disabled"]:
        raise refuse(layer.describe())
    if kind == "fc" and (attributes["outputs"] != token[1] or attributes["bias"]):
        raise refuse(layer.describe())
    return Step(index, kind, layer)


def check_face_resnet(network: DlibNetwork) -> FaceResNet:
    """``network`` checked against ``anet_type``, as steps.

    Raises:
        DlibModelError: another network (the first differing layer is named).
    """
    steps = _checked_steps(network, face_resnet_type(), "loss_metric", FACE_RESNET_NAME)
    first = network.layers[0].attributes
    return FaceResNet(
        path=network.path,
        steps=steps,
        mean_rgb=tuple(float(value) for value in first["mean_rgb"]),  # type: ignore[arg-type]
        input_size=int(first["rows"]),
        output_dim=int(steps[-1].layer.attributes["outputs"]),
        parameter_count=network.parameter_count,
    )


def _checked_steps(network: DlibNetwork, tokens: list[Token], loss_kind: str, network_name: str) -> tuple[Step, ...]:
    """``network``'s layers checked against ``tokens`` under a ``loss_kind`` loss, as steps."""
    if network.loss.kind != loss_kind or len(network.layers) != len(tokens):
        raise DlibModelError(
            f"{network.path} is not {network_name}: it has {len(network.layers)} layers under a "
            f"{network.loss.record} loss, that network {len(tokens)} under {loss_kind}"
        )
    steps = tuple(
        _check(token, layer, index, network.path, network_name) for index, (token, layer) in enumerate(zip(tokens, network.layers))
    )
    # Channel counts must chain: each con's input channels are what reaches it.
    for step, shape in zip(steps, _shapes(steps)):
        if step.op == "con" and step.layer.arrays["filters"].shape[1] != shape[0]:
            raise DlibModelError(f"{network.path}: layer {step.index} takes {step.layer.arrays['filters'].shape[1]} channels, {shape[0]} reach it")
    return steps


def read_face_resnet(path: str | Path) -> FaceResNet:
    """Read and check dlib's face recognition model file (raises :class:`DlibModelError`)."""
    return check_face_resnet(read_dlib_network(path))


def mmod_detector_type() -> list[Token]:
    """``net_type`` of dlib's CNN face detector (``tools/python/src/cnn_face_detector.cpp``), bottom up:

    ``loss_mmod<con<1,9,9,1,1, rcon5<rcon5<rcon5<downsampler<input_rgb_image_pyramid<pyramid_down<6>>>>>>>>``
    with ``downsampler`` three ``relu<affine<con5d<N>>>`` (5x5, stride 2; 16, 32, 32 filters) and
    ``rcon5`` ``relu<affine<con5<45>>>`` (5x5, stride 1). The file stores each ``affine`` as the
    ``bn_con`` it was trained as; the reader converts it as dlib does.
    """
    tokens: list[Token] = [("input_pyramid",)]
    for filters in (16, 32, 32):
        tokens += [("con", filters, 5, 2), ("affine",), ("relu",)]
    for _ in range(3):
        tokens += [("con", 45, 5, 1), ("affine",), ("relu",)]
    return tokens + [("con", 1, 9, 1)]


# pyramid_down<6>: each level of the input pyramid is 5/6 the size of the one above. The C++
# type says so, not the file.
MMOD_PYRAMID_DOWN = 6


@dataclass(frozen=True)
class MmodDetector:
    """The parsed, checked CNN face detector: its steps, input normalisation and loss options."""

    path: Path
    steps: tuple[Step, ...]
    mean_rgb: tuple[float, float, float]
    pyramid_down: int  # N of pyramid_down<N>
    pyramid_padding: int
    pyramid_outer_padding: int
    windows: tuple[tuple[int, int], ...]  # (width, height) of each detector window, in tensor pixels
    nms_iou: float  # overlaps_nms: two boxes overlap when IoU > this ...
    nms_covered: float  # ... or either covers more than this share of the other
    parameter_count: int


def check_mmod_detector(network: DlibNetwork) -> MmodDetector:
    """``network`` checked against the detector's ``net_type``.

    Raises:
        DlibModelError: another network (the recognition model, a detector of another shape...).
    """
    steps = _checked_steps(network, mmod_detector_type(), "loss_mmod", MMOD_DETECTOR_NAME)
    options = network.loss.attributes
    if options["bounding_box_regression"] or not options["assume_image_pyramid"] or len(options["windows"]) != 1:
        raise DlibModelError(
            f"{network.path}: this MMOD detector uses bounding-box regression, no image pyramid or several "
            "windows; only the single-window pyramid detector (mmod_human_face_detector.dat) is supported"
        )
    first = network.layers[0].attributes
    return MmodDetector(
        path=network.path,
        steps=steps,
        mean_rgb=tuple(float(value) for value in first["mean_rgb"]),  # type: ignore[arg-type]
        pyramid_down=MMOD_PYRAMID_DOWN,
        pyramid_padding=int(first["pyramid_padding"]),
        pyramid_outer_padding=int(first["pyramid_outer_padding"]),
        windows=tuple((int(window["width"]), int(window["height"])) for window in options["windows"]),
        nms_iou=float(options["overlaps_nms"][0]),
        nms_covered=float(options["overlaps_nms"][1]),
        parameter_count=network.parameter_count,
    )


def read_mmod_detector(path: str | Path) -> MmodDetector:
    """Read and check dlib's CNN face detector file (raises :class:`DlibModelError`)."""
    return check_mmod_detector(read_dlib_network(path))


def output_to_input(steps: tuple[Step, ...], x: float, y: float) -> tuple[float, float]:
    """Where an output pixel's window is centred in the input tensor (dlib's
    ``output_tensor_to_input_tensor``: each con and pool, top down, maps ``p`` to
    ``p * stride - padding + size // 2``)."""
    for step in reversed(steps):
        if step.op in ("con", "max_pool", "avg_pool"):
            attributes = step.layer.attributes
            x = x * attributes["stride_x"] - attributes["padding_x"] + attributes["columns"] // 2
            y = y * attributes["stride_y"] - attributes["padding_y"] + attributes["rows"] // 2
    return x, y


def _window_output(size: int, window: int, stride: int, padding: int) -> int:
    return 1 + (size + 2 * padding - window) // stride


def _shapes(steps: tuple[Step, ...]) -> list[tuple[int, int, int]]:
    """The ``(channels, rows, columns)`` each step receives (the input is 3 x size x size)."""
    received: list[tuple[int, int, int]] = []
    current: tuple[int, int, int] = (3, 0, 0)
    tags: dict[int, tuple[int, int, int]] = {}
    for step in steps:
        received.append(current)
        current, tags = _step_shape(step, current, tags)
    return received


def _step_shape(step: Step, current, tags):
    attributes = step.layer.attributes
    channels, rows, columns = current
    if step.op == "input":
        return (3, attributes.get("rows", 0), attributes.get("columns", 0)), tags
    if step.op in ("con", "max_pool", "avg_pool"):
        rows = _window_output(rows, attributes["rows"], attributes["stride_y"], attributes["padding_y"])
        columns = _window_output(columns, attributes["columns"], attributes["stride_x"], attributes["padding_x"])
        return (attributes["filters"] if step.op == "con" else channels, rows, columns), tags
    if step.op == "global_avg_pool":
        return (channels, 1, 1), tags
    if step.op == "fc":
        return (attributes["outputs"], 1, 1), tags
    if step.op == "tag":
        return current, {**tags, step.tag: current}
    if step.op == "skip":
        return tags[step.tag], tags
    if step.op == "add_prev":
        return tuple(max(a, b) for a, b in zip(current, tags[step.tag])), tags
    return current, tags  # affine, relu


def face_resnet_flops(network: FaceResNet) -> float:
    """Floating-point operations (2 per multiply-add) of one chip through the convolutions and fc."""
    total = 0.0
    shapes = _shapes(network.steps)
    for step, (channels, _, _) in zip(network.steps, shapes):
        if step.op == "con":
            out_channels, out_rows, out_columns = _step_shape(step, shapes[step.index], {})[0]
            attributes = step.layer.attributes
            total += 2.0 * out_rows * out_columns * attributes["rows"] * attributes["columns"] * channels * out_channels
        elif step.op == "fc":
            total += 2.0 * step.layer.attributes["inputs"] * step.layer.attributes["outputs"]
    return total


class GraphBuilder(Protocol[Tensor]):
    """What :func:`walk` asks of a graph library; shapes are ``(channels, rows, columns)``."""

    def input(self, step: Step, mean_rgb: tuple[float, float, float]) -> Tensor: ...
    def con(self, step: Step, x: Tensor) -> Tensor: ...
    def affine(self, step: Step, x: Tensor) -> Tensor: ...
    def relu(self, step: Step, x: Tensor) -> Tensor: ...
    def pool(self, step: Step, x: Tensor, kind: str) -> Tensor: ...
    def global_avg_pool(self, step: Step, x: Tensor) -> Tensor: ...
    def fc(self, step: Step, x: Tensor) -> Tensor: ...
    def add(self, step: Step, x: Tensor, x_shape, shortcut: Tensor, shortcut_shape, out_shape) -> Tensor: ...


def walk(network: FaceResNet | MmodDetector, builder: GraphBuilder[Tensor]) -> Tensor:
    """Run the program through ``builder``; returns the output tensor (the face network's
    ``(n, 128)`` descriptors, the detector's ``(n, 1, rows, columns)`` scores)."""
    current: Any = None
    shape: tuple[int, int, int] = (3, 0, 0)
    tags: dict[int, Any] = {}  # tag id -> the tensor it marked (its shape is in shape_tags)
    shape_tags: dict[int, tuple[int, int, int]] = {}
    operations: dict[str, Callable[[Step, Any], Any]] = {
        "con": builder.con, "affine": builder.affine, "relu": builder.relu,
        "global_avg_pool": builder.global_avg_pool, "fc": builder.fc,
    }
    for step in network.steps:
        new_shape, shape_tags = _step_shape(step, shape, shape_tags)
        if step.op == "input":
            current = builder.input(step, network.mean_rgb)
        elif step.op == "tag":
            tags[step.tag] = current
        elif step.op == "skip":
            current = tags[step.tag]
        elif step.op == "add_prev":
            current = builder.add(step, current, shape, tags[step.tag], shape_tags[step.tag], new_shape)
        elif step.op in ("max_pool", "avg_pool"):
            current = builder.pool(step, current, step.op)
        else:
            current = operations[step.op](step, current)
        shape = new_shape
    return current


def preprocess_face_resnet(chips: np.ndarray, mean_rgb: tuple[float, float, float]) -> np.ndarray:
    """dlib's input layer in NumPy: RGB ``uint8`` chips -> ``(pixel - mean) / 256`` ``float32``, NHWC.

    Every graph built here takes this (channels last, as the chips come); the ONNX graph
    transposes to channels first itself.
    """
    return (chips.astype(np.float32) - np.asarray(mean_rgb, dtype=np.float32)) / np.float32(256.0)
