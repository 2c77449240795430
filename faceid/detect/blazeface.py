"""MediaPipe's BlazeFace face detector on our own graph: ``--detector blazeface``.

The networks are MediaPipe's (Apache-2.0; ``faceid/detect/models/LICENSE``): small SSD-style
detectors with 6 keypoints per face, made for phone cameras. Their ``.tflite`` files ship inside
faceid (``faceid/detect/models/``, each checked against the SHA-256 recorded in :data:`MODELS`),
are read by :mod:`faceid.nets.tflite_format` and run as ONNX graphs built by
:mod:`faceid.nets.tflite_onnx` — no TensorFlow. What MediaPipe does around the network is
written here in NumPy, from its calculators:

- the input (``ImageToTensorCalculator`` with ``keep_aspect_ratio``): the frame scaled to fit the
  model's square input and padded (letterboxed), pixels mapped to ``[-1, 1]``;
- the anchors (``SsdAnchorsCalculator``): one or more per cell of each feature map, centred;
- the decoding (``TensorsToDetectionsCalculator``): box centre and keypoints are offsets from the
  anchor in input pixels, score = sigmoid of the clipped logit;
- the suppression (``NonMaxSuppressionCalculator``, ``WEIGHTED``): the best box absorbs every box
  overlapping it by more than ``MIN_SUPPRESSION_IOU``, coordinates averaged by score;
- ``DetectionLetterboxRemovalCalculator``: back to the frame's pixels, exactly (the padding and
  the per-axis scale of the resize are undone).

The chip is cut as for every detector: dlib's 5-point predictor on the BlazeFace box, then dlib's
``get_face_chip``. Landmarks carried from BlazeFace's own keypoints by a template identify as well on
LFW (``python bench.py align``: within a fold's spread), but a rigid template makes every face look
frontal to the pose check and moves with the keypoints' jitter (a resized copy of a photo is no longer
its near-duplicate); the predictor's landmarks have neither problem.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceid.errors import InputError

MODELS_DIR = Path(__file__).resolve().parent / "models"
# MediaPipe clips logits to +-100 before the sigmoid; 80 keeps exp() finite in float32.
RAW_SCORE_LIMIT = 80.0
MIN_SUPPRESSION_IOU = 0.3
# A small image is enlarged at most this much to fill the input: the networks were trained on
# camera frames, and a 92x112 photo blown up 2.3x to 256 px gives undersized or half-face boxes
# (ORL: 21 of 400 photos with the largest box under 60 px, 11 with a false second box, 3 with none;
# capped at 1.5x: none of each). LFW's 250 px photos (1.02x) are unaffected.
MAX_UPSCALE = 1.5
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear_tragion", "left_ear_tragion")
@dataclass(frozen=True)
class BlazeFaceModel:
    """One BlazeFace network and MediaPipe's options for it (``face_detection_*.pbtxt``)."""

    name: str
    file_name: str
    sha256: str
    input_size: int
    strides: tuple[int, ...]
    # 1.0: two anchors per cell for each stride (the 128/256-px models); 0.0: one (full-range).
    interpolated_scale_aspect_ratio: float
    min_score: float


MODELS = {
    # Faces that fill much of the frame (within ~2 m of a phone camera): 128 px input.
    "short": BlazeFaceModel("short", "face_detection_short_range.tflite",
                            "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
                            128, (8, 16, 16, 16), 1.0, 0.5),
    # Faces up to ~5 m: 192 px input, one dense 48x48 map.
    "full": BlazeFaceModel("full", "face_detection_full_range.tflite",
                           "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
                           192, (4,), 0.0, 0.5),
    # The "back camera" model: 256 px input, smaller faces than the short-range one.
    "back": BlazeFaceModel("back", "face_detection_back.tflite",
                           "e376cf6b168d5ece8a3cedb94acc4eb168a136aede125ccc3d903ef38f5beda8",
                           256, (16, 32, 32, 32), 1.0, 0.5),
}


@dataclass(frozen=True)
class BlazeDetection:
    """A face found by BlazeFace, in the searched image's pixels: ``box`` ``(left, top, right,
    bottom)`` float, ``keypoints`` ``(6, 2) float32`` as ``(x, y)`` in :data:`KEYPOINTS` order."""

    box: tuple[float, float, float, float]
    keypoints: np.ndarray
    score: float


def model_path(model: BlazeFaceModel) -> Path:
    """The model's ``.tflite`` file inside faceid, checked against its recorded SHA-256."""
    path = MODELS_DIR / model.file_name
    if not path.is_file():
        raise InputError(f"BlazeFace model {path} is missing: reinstall faceid (the file ships inside the package)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != model.sha256:
        raise InputError(f"BlazeFace model {path} has SHA-256 {digest[:16]}…, not MediaPipe's {model.sha256[:16]}…: "
                         "reinstall faceid")
    return path


def anchors(model: BlazeFaceModel) -> np.ndarray:
    """Anchor centres ``(n_anchors, 2) float32``, normalised, in the network's output order
    (MediaPipe's ``SsdAnchorsCalculator`` with fixed-size anchors)."""
    centres = []
    layer = 0
    while layer < len(model.strides):
        # Consecutive layers of the same stride share one feature map.
        last = layer
        per_cell = 0
        while last < len(model.strides) and model.strides[last] == model.strides[layer]:
            per_cell += 2 if model.interpolated_scale_aspect_ratio == 1.0 else 1
            last += 1
        cells = model.input_size // model.strides[layer]
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        y, x = np.meshgrid(grid, grid, indexing="ij")
        centres.append(np.repeat(np.stack([x.ravel(), y.ravel()], axis=1), per_cell, axis=0))
        layer = last
    return np.concatenate(centres).astype(np.float32)


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the square input: scale per axis and the padding before it."""

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """Input-pixel ``(..., 2)`` points back in frame pixels."""
        return (points - np.array([self.pad_x, self.pad_y], np.float32)) / np.array([self.scale_x, self.scale_y], np.float32)


def letterbox(image_rgb: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """``image_rgb`` scaled to fit a ``size`` square (enlarged at most :data:`MAX_UPSCALE` times),
    centred on black, as the network's input ``(1, size, size, 3) float32`` in ``[-1, 1]``."""
    import cv2

    height, width = image_rgb.shape[:2]
    scale = min(MAX_UPSCALE, size / max(height, width))
    new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image_rgb, (new_width, new_height), interpolation=interpolation)
    pad_x, pad_y = (size - new_width) // 2, (size - new_height) // 2
    # Padding is black in pixels (-1 after normalisation), as MediaPipe's letterbox.
    canvas = cv2.copyMakeBorder(resized, pad_y, size - new_height - pad_y, pad_x, size - new_width - pad_x,
                                cv2.BORDER_CONSTANT, value=(0, 0, 0))
    batch = canvas[None].astype(np.float32)
    batch *= 1.0 / 127.5
    batch -= 1.0
    return batch, Letterbox(new_width / width, new_height / height, pad_x, pad_y)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, model: BlazeFaceModel,
           anchor_centres: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and keypoints of every anchor scoring at least ``min_score``.

    Returns ``points (n, 8, 2)`` in input pixels — rows 0-1 the box's top-left and bottom-right
    corners, rows 2-7 the keypoints — and ``scores (n,)``.
    """
    logits = np.clip(raw_scores.reshape(-1), -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = scores >= min_score
    regressions = raw_boxes.reshape(len(anchor_centres), -1)[keep]
    anchor_pixels = anchor_centres[keep] * model.input_size
    centre = regressions[:, 0:2] + anchor_pixels
    half = regressions[:, 2:4] / 2.0
    keypoints = regressions[:, 4:16].reshape(-1, 6, 2) + anchor_pixels[:, None, :]
    points = np.concatenate([(centre - half)[:, None], (centre + half)[:, None], keypoints], axis=1)
    valid = (half > 0).all(axis=1)
    return points[valid].astype(np.float32), scores[keep][valid].astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``(2, 2)`` corner box with ``(n, 2, 2)`` boxes."""
    top_left = np.maximum(box[0], boxes[:, 0])
    bottom_right = np.minimum(box[1], boxes[:, 1])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
    areas = np.prod(boxes[:, 1] - boxes[:, 0], axis=1)
    union = np.prod(box[1] - box[0]) + areas - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1e-12), 0.0)


def weighted_nms(points: np.ndarray, scores: np.ndarray, iou: float = MIN_SUPPRESSION_IOU) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression: the best remaining detection and every one
    overlapping it by more than ``iou`` become one, its box and keypoints the score-weighted mean
    of theirs and its score the best one's. Returns ``(points (8, 2), score)`` best first."""
    order = np.argsort(-scores, kind="stable")
    points, scores = points[order], scores[order]
    remaining = np.arange(len(scores))
    merged = []
    while remaining.size:
        in_group = _iou(points[remaining[0], :2], points[remaining, :2]) > iou
        in_group[0] = True  # the best one, even when degenerate
        group = remaining[in_group]
        weights = scores[group]
        merged.append(((points[group] * weights[:, None, None]).sum(axis=0) / weights.sum(), float(scores[group[0]])))
        remaining = remaining[~in_group]
    return merged


class BlazeFace:
    """One BlazeFace network on ONNX Runtime with MediaPipe's pre- and post-processing.

    ``detect(image_rgb)`` returns every face of ``(height, width, 3) uint8`` RGB, best first.
    """

    def __init__(self, model: str = "back", threads: int | None = None, min_score: float | None = None):
        if model not in MODELS:
            raise InputError(f"unknown BlazeFace `model` {model!r}: choose one of {', '.join(MODELS)}")
        from faceid.nets.onnx_session import OnnxModel
        from faceid.nets.tflite_format import read_tflite
        from faceid.nets.tflite_onnx import tflite_onnx_bytes

        self.model = MODELS[model]
        path = model_path(self.model)
        self.network = OnnxModel(tflite_onnx_bytes(read_tflite(path)), threads=threads, name=str(path))
        self.anchors = anchors(self.model)
        self.min_score = self.model.min_score if min_score is None else min_score

    def raw_outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's ``regressors (1, n_anchors, 16)`` and ``classificators (1, n_anchors, 1)``."""
        regressors, classificators = self.network.run_all(batch)
        return regressors, classificators

    def candidates(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every anchor's box and keypoints scoring at least ``min_score``, before suppression:
        ``points (n, 8, 2)`` in ``image_rgb``'s pixels and ``scores (n,)``."""
        batch, fitted = letterbox(image_rgb, self.model.input_size)
        points, scores = decode(*self.raw_outputs(batch), self.model, self.anchors, self.min_score)
        return fitted.to_frame(points), scores

    def detect(self, image_rgb: np.ndarray, upsample: int = 0) -> list[BlazeDetection]:
        """Every face, best first (:func:`find_faces` with this network alone)."""
        return find_faces(image_rgb, [self], upsample)


def find_faces(image_rgb: np.ndarray, networks: list[BlazeFace], upsample: int = 0) -> list[BlazeDetection]:
    """Every face ``networks`` find in ``image_rgb``, best first.

    ``upsample`` 0 searches the whole image once, fitted into each network's square input, which
    sees faces down to ~1/16 of the image's longer side. Each step of ``upsample`` also searches
    a grid of overlapping squares twice as fine (2x2, then 4x4, ...), finding faces half as
    small at about 4 more network runs each. The candidates of every network and every square are
    suppressed together, so a face seen twice is one detection.
    """
    height, width = image_rgb.shape[:2]
    passes = []
    for network in networks:
        passes.append(network.candidates(image_rgb))
        for level in range(1, upsample + 1):
            for top, left, side in _tiles(height, width, 2**level):
                points, scores = network.candidates(image_rgb[top : top + side, left : left + side])
                passes.append((points + np.array([left, top], np.float32), scores))
    points = np.concatenate([points for points, _ in passes])
    scores = np.concatenate([scores for _, scores in passes])
    return [BlazeDetection(tuple(float(value) for value in merged[:2].ravel()), merged[2:].astype(np.float32), score)
            for merged, score in weighted_nms(points, scores)]


def _tiles(height: int, width: int, per_side: int) -> list[tuple[int, int, int]]:
    """``(top, left, side)`` of overlapping squares, ``per_side`` along the longer side, that cover
    the image (a square reaching past a shorter side is cut there): each is a quarter larger than
    the plain grid cell, so a face on a seam lies whole in one of them."""
    side = int(np.ceil(max(height, width) / per_side * 1.25))

    def starts(length: int) -> list[int]:
        if length <= side:
            return [0]
        count = int(np.ceil((length - side) / (side * 0.8))) + 1
        return sorted({round(index * (length - side) / (count - 1)) for index in range(count)})

    return [(top, left, side) for top in starts(height) for left in starts(width)]


@functools.lru_cache(maxsize=None)
def blazeface(model: str = "back", min_score: float | None = None) -> BlazeFace:
    """The process's :class:`BlazeFace` for ``model``, built once (reading the file and building
    the graph take ~50 ms)."""
    return BlazeFace(model, min_score=min_score)


def parse_models(spec: str) -> list[tuple[str, float | None]]:
    """``"back"``, ``"back:0.45+full"``: the networks of a detection and their minimum scores
    (``None``: MediaPipe's for that model)."""
    networks = []
    for item in spec.split("+"):
        name, _, score = item.strip().partition(":")
        if name not in MODELS:
            raise InputError(f"unknown BlazeFace model {name!r} in {spec!r}: choose among {', '.join(MODELS)}, "
                             "joined by '+', each optionally with ':min_score'")
        networks.append((name, float(score) if score else None))
    return networks


def detect(image_rgb: np.ndarray, models: str = "back", upsample: int = 0,
           min_score: float | None = None) -> list[BlazeDetection]:
    """Every face in ``image_rgb`` found by the networks ``models`` names (:func:`parse_models`),
    each keeping candidates scoring at least its own ``:min_score``, else ``min_score``, else
    MediaPipe's for that model."""
    networks = [blazeface(name, min_score if score is None else score) for name, score in parse_models(models)]
    return find_faces(image_rgb, networks, upsample)
