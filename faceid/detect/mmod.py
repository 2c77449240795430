"""dlib's CNN face detector (``mmod_human_face_detector.dat``) on our own graph: ``--detector cnn``.

The network is read by :mod:`faceid.nets.dlib_format`, checked against its C++ type by
:func:`faceid.nets.dlib_graph.read_mmod_detector`, and run as an ONNX graph by ONNX Runtime
(:func:`faceid.nets.dlib_onnx.mmod_detector_onnx_bytes`). What dlib does around the network
is written here in NumPy, from dlib's sources:

- the input (``input_rgb_image_pyramid<pyramid_down<6>>``, ``dlib/dnn/input.h``): the image,
  ``(pixel - mean) / 256``, and every 5/6-smaller level down to 5 rows, each resized from the
  one above with dlib's bilinear ``resize_image`` (corners aligned), tiled into one zero-padded
  image (``compute_tiled_image_pyramid_details``, ``dlib/image_transforms/image_pyramid.h``);
- the decoding (``loss_mmod_::to_label``, ``dlib/dnn/loss.h``): every output pixel scoring above 0
  is an 80x80 window centred where the network maps it in the tiled image, mapped back to the
  level it lies in (``tiled_pyramid_to_image``: ``p * 6/5 + 0.3`` per level), rounded, sorted by
  score and kept unless it overlaps a kept box (``test_box_overlap`` with the stored thresholds:
  intersection over the *bounding box* of the pair, and share covered);
- ``upsample`` (``cnn_face_detection_model_v1``, ``tools/python/src/cnn_face_detector.cpp``): the
  image is first enlarged with ``pyramid_up`` and boxes come back with ``pyramid_down<2>``'s
  ``rect_down``.

The result is the boxes dlib's own ``cnn_face_detection_model_v1`` returns (tested on LFW photos
and clip frames: same count, IoU >= 0.9) in a fraction of its time (``bench.py live``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceid.nets.dlib_graph import MmodDetector, output_to_input, read_mmod_detector

# A level is kept while it has at least this many rows (dlib's min_height).
MIN_LEVEL_ROWS = 5


@dataclass(frozen=True)
class Rect:
    """dlib's ``rectangle``: inclusive corners. Kept apart from :class:`faceid.detect.faces.FaceBox`
    (exclusive corners) so the pyramid and overlap arithmetic reads as dlib's does; boxes leave
    this module as plain corners that ``detect_faces`` turns into ``FaceBox``."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left + 1

    @property
    def height(self) -> int:
        return self.bottom - self.top + 1

    @property
    def area(self) -> int:
        return max(self.width, 0) * max(self.height, 0)

    def intersect(self, other: Rect) -> Rect:
        return Rect(max(self.left, other.left), max(self.top, other.top), min(self.right, other.right), min(self.bottom, other.bottom))

    def union_box(self, other: Rect) -> Rect:
        """The bounding box of both (dlib's ``rectangle + rectangle``)."""
        return Rect(min(self.left, other.left), min(self.top, other.top), max(self.right, other.right), max(self.bottom, other.bottom))

    def contains(self, x: int, y: int) -> bool:
        return self.left <= x <= self.right and self.top <= y <= self.bottom


@dataclass(frozen=True)
class PyramidLayout:
    """Where each level of the tiled pyramid lies, and the tiled image's size."""

    levels: tuple[Rect, ...]
    rows: int
    columns: int


def _lround(value: float) -> int:
    """C's ``lround``: halves away from zero (Python's ``round`` rounds them to even)."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def pyramid_layout(rows: int, columns: int, down: int, padding: int, outer_padding: int) -> PyramidLayout:
    """dlib's ``compute_tiled_image_pyramid_details`` for ``pyramid_down<down>``."""
    if rows * columns == 0:
        return PyramidLayout((), 0, 0)
    rate = (down - 1.0) / down
    sizes = [(rows, columns)]
    while True:
        rows, columns = math.floor(rate * rows), math.floor(rate * columns)
        if rows * columns == 0 or rows < MIN_LEVEL_ROWS:
            break
        sizes.append((rows, columns))
    first_rows, first_columns = sizes[0]
    total_height = sum(level_rows + padding for level_rows, _ in sizes) - 2 * padding
    height = previous_width = 0
    for level_rows, level_columns in sizes:
        # The first column of levels goes down until the next fits beside the previous one.
        if level_columns <= first_columns - previous_width - padding and (height - first_rows) * 2 >= total_height - first_rows:
            break
        height += level_rows + padding
        previous_width = level_columns
    height -= padding
    width = first_columns
    levels: list[Rect] = []
    y = outer_padding
    index = 0
    while y < height + outer_padding and index < len(sizes):
        level_rows, level_columns = sizes[index]
        levels.append(Rect(outer_padding, y, outer_padding + level_columns - 1, y + level_rows - 1))
        y += level_rows + padding
        index += 1
    y -= padding
    while index < len(sizes):
        # The rest go back up the right-hand side, bottom-right corners at (right edge, y - 1).
        level_rows, level_columns = sizes[index]
        right, bottom = outer_padding + width - 1, y - 1
        rect = Rect(right - (level_columns - 1), bottom - (level_rows - 1), right, bottom)
        if rect.intersect(levels[0]).area > 0:
            break  # it would cover the full-size image: drop it and the levels after it
        levels.append(rect)
        y -= level_rows + padding
        index += 1
    return PyramidLayout(tuple(levels), height + 2 * outer_padding, width + 2 * outer_padding)


def _resize_rows(source: np.ndarray, rows: int) -> np.ndarray:
    """Bilinear along axis 0 with dlib's mapping: output row ``r`` samples ``r * (R - 1) / (rows - 1)``,
    its lower neighbour clamped to the last row."""
    size_in = source.shape[0]
    position = np.arange(rows, dtype=np.float64) * ((size_in - 1) / max(rows - 1, 1))
    low = np.floor(position).astype(np.intp)
    fraction = (position - low).astype(np.float32).reshape((-1,) + (1,) * (source.ndim - 1))
    upper = source[np.minimum(low + 1, size_in - 1)]
    lower = source[low]
    upper -= lower
    upper *= fraction
    upper += lower
    return upper


def resize_bilinear(source: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """dlib's bilinear ``resize_image``: output pixel ``(r, c)`` samples the source at
    ``(r * (R - 1) / (rows - 1), c * (C - 1) / (columns - 1))`` (corners aligned), the far
    neighbour clamped to the last row/column. ``source`` is ``(R, C, 3) float32``.

    Separable: rows, then (transposed, as gathering whole rows is what NumPy does fast) columns.
    """
    import cv2

    blended = _resize_rows(source, rows)
    return cv2.transpose(_resize_rows(cv2.transpose(blended), columns))


def pyramid_up(image_rgb: np.ndarray) -> np.ndarray:
    """dlib's ``pyramid_up(image, pyramid_down<2>)``: about twice the size (``2 * rows + 1`` by
    ``2 * columns + 2``: ``pyramid_down<2>::rect_up`` of the image's rectangle), bilinear, ``uint8``."""
    rows, columns = image_rgb.shape[:2]
    # rect_up maps (x, y) to ((x + 1.25) * 2, (y + 0.75) * 2); the output ends at the image's far corner.
    out_columns = _lround((columns - 1 + 1.25) * 2) + 1
    out_rows = _lround((rows - 1 + 0.75) * 2) + 1
    enlarged = resize_bilinear(image_rgb.astype(np.float32), out_rows, out_columns)
    return np.clip(np.floor(enlarged + 0.5), 0, 255).astype(np.uint8)


def tiled_pyramid(image_rgb: np.ndarray, detector: MmodDetector) -> tuple[np.ndarray, PyramidLayout]:
    """The detector's input for one ``(rows, columns, 3) uint8`` RGB image: ``(1, R, C, 3) float32``."""
    rows, columns = image_rgb.shape[:2]
    layout = pyramid_layout(rows, columns, detector.pyramid_down, detector.pyramid_padding, detector.pyramid_outer_padding)
    tiled = np.zeros((1, layout.rows, layout.columns, 3), dtype=np.float32)
    if not layout.levels:
        return tiled, layout
    mean = np.asarray(detector.mean_rgb, dtype=np.float32)
    previous = (image_rgb.astype(np.float32) - mean) / np.float32(256.0)
    for index, level in enumerate(layout.levels):
        if index:
            previous = resize_bilinear(previous, level.height, level.width)
        tiled[0, level.top : level.bottom + 1, level.left : level.right + 1] = previous
    return tiled, layout


def _nearest_level(levels: tuple[Rect, ...], x: float, y: float) -> int:
    """dlib's ``nearest_rect`` for the point rounded to integers (``floor(v + 0.5)``)."""
    px, py = math.floor(x + 0.5), math.floor(y + 0.5)
    best, best_distance = 0, math.inf
    for index, level in enumerate(levels):
        if level.contains(px, py):
            return index
        nearest_x = min(max(px, level.left), level.right)
        nearest_y = min(max(py, level.top), level.bottom)
        distance = math.hypot(nearest_x - px, nearest_y - py)
        if distance < best_distance:
            best, best_distance = index, distance
    return best


def _overlaps(a: Rect, b: Rect, iou: float, covered: float) -> bool:
    """dlib's ``test_box_overlap``: intersection over the pair's bounding box, or share covered."""
    inner_area = a.intersect(b).area
    if inner_area == 0:
        return False
    return inner_area / a.union_box(b).area > iou or inner_area / a.area > covered or inner_area / b.area > covered


def decode(
    scores: np.ndarray, layout: PyramidLayout, detector: MmodDetector, threshold: float = 0.0
) -> list[tuple[Rect, float]]:
    """``loss_mmod_::to_label``: boxes in the (possibly enlarged) image, best first, overlaps removed.

    Args:
        scores: the network's output for one image, ``(windows, out_rows, out_columns)``.
    """
    candidates: list[tuple[float, Rect]] = []
    down = detector.pyramid_down
    for window, (window_width, window_height) in enumerate(detector.windows):
        half_width, half_height = (window_width - 1) / 2, (window_height - 1) / 2  # centered_drect
        rows, columns = np.nonzero(scores[window] > threshold)
        for r, c in zip(rows.tolist(), columns.tolist()):
            x, y = output_to_input(detector.steps, c, r)
            level = _nearest_level(layout.levels, x, y)
            origin = layout.levels[level]
            corners = [x - half_width - origin.left, y - half_height - origin.top, x + half_width - origin.left, y + half_height - origin.top]
            for _ in range(level):  # pyramid_down<N>::point_up, once per level
                corners = [value * down / (down - 1.0) + 0.3 for value in corners]
            candidates.append((float(scores[window, r, c]), Rect(*(_lround(value) for value in corners))))
    candidates.sort(key=lambda candidate: candidate[0], reverse=True)
    kept: list[tuple[Rect, float]] = []
    for score, rect in candidates:
        if not any(_overlaps(other, rect, detector.nms_iou, detector.nms_covered) for other, _ in kept):
            kept.append((rect, score))
    return kept


def rect_down_upsampled(rect: Rect, times: int) -> Rect:
    """``pyramid_down<2>::rect_down(rect, times)``: a box found on an image enlarged ``times`` times
    by :func:`pyramid_up`, in the original image's pixels."""
    corners = [float(rect.left), float(rect.top), float(rect.right), float(rect.bottom)]
    for _ in range(times):
        corners = [corners[0] / 2 - 1.25, corners[1] / 2 - 0.75, corners[2] / 2 - 1.25, corners[3] / 2 - 0.75]
    return Rect(*(_lround(value) for value in corners))


class CnnFaceDetector:
    """The CNN face detector, run by ONNX Runtime: ``detect(image, upsample) -> [(Rect, score)]``."""

    def __init__(self, path: str | Path, threads: int | None = None):
        from faceid.nets.dlib_onnx import mmod_detector_onnx_bytes
        from faceid.nets.onnx_session import OnnxModel

        self.network = read_mmod_detector(path)
        self.model = OnnxModel(mmod_detector_onnx_bytes(self.network), threads=threads, name=str(path))

    def scores(self, image_rgb: np.ndarray) -> tuple[np.ndarray, PyramidLayout]:
        """The raw score map for one image and the pyramid it was computed on."""
        tiled, layout = tiled_pyramid(image_rgb, self.network)
        return self.model.run(tiled)[0], layout

    def detect(self, image_rgb: np.ndarray, upsample: int = 0) -> list[tuple[Rect, float]]:
        """Faces in a ``(rows, columns, 3) uint8`` RGB image, best score first (dlib's order)."""
        for _ in range(upsample):
            image_rgb = pyramid_up(image_rgb)
        if min(image_rgb.shape[:2]) < MIN_LEVEL_ROWS:
            return []
        scores, layout = self.scores(image_rgb)
        found = decode(scores, layout, self.network)
        return [(rect_down_upsampled(rect, upsample), score) for rect, score in found]


@functools.lru_cache(maxsize=None)
def cnn_detector(path: str) -> CnnFaceDetector:
    """One detector per model file and process (building the graph takes a fraction of a second)."""
    return CnnFaceDetector(path)
