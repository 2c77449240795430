"""Is a face good enough to enrol? Size, sharpness, pose and near-duplicates.

Every check works on what enrolment keeps: a detected face (its box and 5
landmarks) and its aligned chip from :func:`faceid.detect.faces.align_face`. The
thresholds live in one place, :class:`QualityThresholds`; ``capture.py`` and
``check_faces.py`` take their option defaults from it.

The numbers quoted in the comments were measured with dlib's HOG detector
(upsample 1) on a random 600–1,500 images of ``lfw_devtrain`` and on every
frame of ``video/hamilton_clip.mp4``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceid.detect.faces import DetectedFace

# Sharpness is measured on the chip resized to this side, so it does not depend
# on the crop size the user saves (--size): a small face blown up to a big chip
# stays blurry, and an equally sharp face scores the same at 150 or 224 px.
SHARPNESS_SIDE = 128
# Only the middle of the chip is measured: the padding around the face holds
# background (text, edges of furniture) that would make a blurred face look sharp.
SHARPNESS_MARGIN = 0.2
# Side of the grey thumbnail compared for near-duplicates: coarse enough to
# ignore re-encoding and a few pixels of shift, fine enough to tell two
# different aligned faces apart.
THUMBNAIL_SIDE = 32


@dataclass(frozen=True)
class QualityThresholds:
    """Every quality threshold of capture and the audit, with how it was chosen."""

    # Smallest face box width, in pixels of the original image. HOG at upsample 1
    # finds ~40 px faces, but under ~60 px a 224 px crop is mostly interpolation.
    # Measured: the clip's far shot of Miranda 44-53 px, close-up 76-108 px;
    # LFW's 250 px images 75-130 px (none under 60).
    min_face_size: int = 60
    # Variance of the Laplacian of the grey chip (at 128 px, central 60 %).
    # Measured: LFW 0.5 % under 19, 5 % under 31, median 74; the clip's Miranda
    # 36-300; the clip's out-of-focus audience member 3-5. At 15 the LFW images
    # flagged are visibly soft (upscaled thumbnails); raise it for crisper crops.
    min_sharpness: float = 15.0
    # |yaw|: the nose tip's sideways offset from the middle of the eyes, over the
    # distance between the eyes (0 = frontal; ~0.23 at 30 degrees, ~0.4 at 45 for
    # an average head). LFW: 95 % under 0.24, 99 % under 0.35. Used by capture only:
    # in existing folders a turned face is variety, not an error.
    max_yaw: float = 0.3
    # Two chips are near-duplicates (the same picture) when 1 - correlation of
    # their 32x32 grey thumbnails is at most this. LFW DevTrain, the 94 pairs under
    # 0.08 of its 22 million, checked by eye: the same photo (re-scaled, re-cropped)
    # <= 0.032, different photos >= 0.043 (same pose and light, or two people).
    # Re-encoded copies (JPEG q40 at 0.6x): 95 % <= 0.024. In the clip, Miranda
    # talking 1/6 s apart: 0.17-0.84. Raise it (capture.py) for more varied crops.
    near_duplicate: float = 0.04
    # A person with fewer usable images than this is reported by the audit
    # (training needs two images of a person to form one same-person pair).
    min_images: int = 2
    # With an extractor, an image is likely mislabelled when the nearest other
    # person's centre is closer than this share of the distance to its own
    # person's centre (leave-one-out). Scale-free, so it suits any backbone.
    # LFW DevTrain with dlib, checked by eye: 28 flagged at 0.8, 18 of them real
    # (a bystander's face is the largest, or a wrong name); all 12 under 0.7 real.
    # Lower it for fewer, surer findings.
    mislabel_ratio: float = 0.8


DEFAULT_THRESHOLDS = QualityThresholds()


def _grey(chip: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(chip), cv2.COLOR_RGB2GRAY) if chip.ndim == 3 else chip


def _resized(grey: np.ndarray, side: int) -> np.ndarray:
    import cv2

    interpolation = cv2.INTER_AREA if min(grey.shape[:2]) > side else cv2.INTER_LINEAR
    return cv2.resize(grey, (side, side), interpolation=interpolation)


def sharpness(chip: np.ndarray) -> float:
    """Variance of the Laplacian of the chip's centre, at a fixed 128 px scale.

    Args:
        chip: ``(size, size, 3) uint8`` RGB aligned chip (any size).

    Returns:
        Higher is sharper; see :attr:`QualityThresholds.min_sharpness` for typical values.
    """
    import cv2

    grey = _resized(_grey(chip), SHARPNESS_SIDE)
    margin = round(SHARPNESS_SIDE * SHARPNESS_MARGIN)
    centre = grey[margin : SHARPNESS_SIDE - margin, margin : SHARPNESS_SIDE - margin]
    return float(cv2.Laplacian(centre, cv2.CV_64F).var())


def yaw_ratio(landmarks: np.ndarray) -> float:
    """How far the head is turned, from dlib's 5 landmarks; 0 is frontal, sign = direction.

    dlib's 5-point model gives, in image coordinates, the outer and inner corner
    of the eye on the image's right (points 0, 1), then of the eye on the image's
    left (2, 3), then the base of the nose (4). The nose's offset from the
    eyes' midpoint is measured along the line through the eyes, so a tilted
    (rolled) but frontal head still scores 0.

    Args:
        landmarks: ``(5, 2) float32`` ``(x, y)`` points.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (5, 2):
        raise ValueError(f"yaw needs dlib's 5 landmarks, got shape {landmarks.shape}")
    return _nose_offset(landmarks[0:2].mean(axis=0), landmarks[2:4].mean(axis=0), landmarks[4])


def _nose_offset(image_right_eye: np.ndarray, image_left_eye: np.ndarray, nose: np.ndarray) -> float:
    """The nose's offset from the eyes' midpoint along the line through the eyes, over the squared
    distance between the eyes (so a rolled but frontal head scores 0)."""
    eye_axis = image_right_eye - image_left_eye
    eye_distance = float(np.linalg.norm(eye_axis))
    if eye_distance < 1e-6:
        return float("inf")
    middle = (image_right_eye + image_left_eye) / 2
    return float(np.dot(nose - middle, eye_axis) / eye_distance**2)


# BlazeFace's keypoint yaw (nose *tip*, which stands further out than dlib's nose base) times this
# is on dlib's scale, so one max_yaw serves both: the least-squares fit of dlib's yaw (HOG box) on it
# over 399 LFW photos (correlation 0.90). On Lacamoire's profile (clip frames 30-40) it reads
# 0.4-0.8, where dlib's predictor on the same box reads under 0.3: the predictor fits a frontal shape.
KEYPOINT_YAW_SCALE = 0.534


def keypoint_yaw(keypoints: np.ndarray) -> float:
    """How far the head is turned, from BlazeFace's keypoints (eyes, nose tip), on the scale of
    :func:`yaw_ratio`; same sign convention.

    Args:
        keypoints: ``(6, 2)`` BlazeFace keypoints ``(x, y)``: eye on the image's left, on its right,
            nose tip, mouth, ear tragions.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    return KEYPOINT_YAW_SCALE * _nose_offset(keypoints[1], keypoints[0], keypoints[2])


@dataclass(frozen=True)
class FaceQuality:
    """The measurements of one face; :meth:`problems` compares them with thresholds."""

    face_size: int  # box width in pixels of the original image
    sharpness: float
    yaw: float  # signed, see :func:`yaw_ratio`; nan when the face has no landmarks

    def problems(self, thresholds: QualityThresholds = DEFAULT_THRESHOLDS, check_pose: bool = True) -> list[str]:
        """Short reasons the face fails, empty when it passes: ``too small``, ``too blurry``, ``turned away``."""
        reasons = []
        if self.face_size < thresholds.min_face_size:
            reasons.append("too small")
        if self.sharpness < thresholds.min_sharpness:
            reasons.append("too blurry")
        if check_pose and np.isfinite(self.yaw) and abs(self.yaw) > thresholds.max_yaw:
            reasons.append("turned away")
        return reasons


def measure_face(face: DetectedFace, chip: np.ndarray) -> FaceQuality:
    """Size, sharpness and yaw of a detected face and its aligned chip."""
    if face.keypoints is not None:
        yaw = keypoint_yaw(face.keypoints)
    else:
        yaw = yaw_ratio(face.landmarks) if len(face.landmarks) == 5 else float("nan")
    return FaceQuality(face_size=int(face.box.width), sharpness=sharpness(chip), yaw=yaw)


def thumbnail(chip: np.ndarray) -> np.ndarray:
    """The chip as a zero-mean, unit-length ``(1024,) float32`` grey 32x32 thumbnail.

    The dot product of two thumbnails is their pixel correlation, which ignores
    brightness and contrast changes (re-encoding, another exposure).
    """
    values = _resized(_grey(chip), THUMBNAIL_SIDE).astype(np.float32).ravel()
    values -= values.mean()
    norm = float(np.linalg.norm(values))
    return values / norm if norm > 1e-6 else values


def thumbnail_distance(first: np.ndarray, second: np.ndarray) -> float:
    """``1 - correlation`` of two thumbnails: 0 for the same picture, ~1 for unrelated ones."""
    return float(1.0 - np.dot(first, second))


class NearDuplicateIndex:
    """Thumbnails of the crops kept so far; says whether a new one looks like any of them."""

    def __init__(self, max_distance: float = DEFAULT_THRESHOLDS.near_duplicate):
        self.max_distance = max_distance
        self.names: list[str] = []
        self._thumbnails: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.names)

    def add(self, name: str, chip_thumbnail: np.ndarray) -> None:
        self.names.append(name)
        self._thumbnails.append(chip_thumbnail)

    def nearest(self, chip_thumbnail: np.ndarray) -> tuple[str | None, float]:
        """The closest kept crop and its distance (``None, inf`` when the index is empty)."""
        if not self._thumbnails:
            return None, float("inf")
        distances = 1.0 - np.stack(self._thumbnails) @ chip_thumbnail
        best = int(np.argmin(distances))
        return self.names[best], float(distances[best])

    def duplicate_of(self, chip_thumbnail: np.ndarray) -> tuple[str, float] | None:
        """``(name, distance)`` of a kept crop within ``max_distance``, else ``None``."""
        name, distance = self.nearest(chip_thumbnail)
        return (name, distance) if name is not None and distance <= self.max_distance else None


def near_duplicate_pairs(
    thumbnails: np.ndarray, max_distance: float, block: int = 1024
) -> list[tuple[int, int, float]]:
    """Every pair ``(i, j, distance)`` with ``j < i`` whose thumbnails are within ``max_distance``.

    Args:
        thumbnails: ``(n, 1024) float32`` from :func:`thumbnail`.

    Computed in blocks of rows, so 10,000 images need ~40 MB, not the full n x n matrix.
    """
    pairs = []
    thumbnails = np.asarray(thumbnails, dtype=np.float32)
    for start in range(0, len(thumbnails), block):
        distances = 1.0 - thumbnails[start : start + block] @ thumbnails.T  # (block, n)
        rows, columns = np.nonzero(distances <= max_distance)
        for row, column in zip(rows, columns):
            index = start + int(row)
            if int(column) < index:
                pairs.append((index, int(column), float(distances[row, column])))
    return pairs
