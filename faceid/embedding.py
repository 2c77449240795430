"""From an image to face vectors: detection, alignment and the backbone.

:class:`FaceCropper` finds and aligns faces (no model beyond dlib's detector and
landmarks, so it is cheap to copy into worker processes); :class:`FaceEmbedder`
adds the backbone. Enrolment, evaluation and live identification all use them,
so a face is found, aligned and embedded the same way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceid.backbones import Extractor
from faceid.faces import DetectedFace, align_face, detect_faces, whole_image_face
from faceid.settings import DEFAULTS


@dataclass(frozen=True)
class FaceOptions:
    """How faces are found before embedding."""

    # False: every image already is a face crop (--no_detect); it is resized, not searched.
    detect: bool = True
    upsample: int = DEFAULTS.upsample
    detector: str = "hog"
    # Frames wider than this are searched downscaled (live video); None searches full size.
    max_width: int | None = None


@dataclass(frozen=True)
class FaceCropper:
    """Finds faces and cuts out the aligned chips a backbone takes."""

    options: FaceOptions
    chip_size: int  # side of the aligned chip, the backbone's input size
    padding: float  # margin around the aligned face, as a share of its size

    def find_faces(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        """All faces in ``image_rgb``, largest first (the whole image with ``detect=False``)."""
        if not self.options.detect:
            return [whole_image_face(image_rgb)]
        return detect_faces(
            image_rgb, upsample=self.options.upsample, detector=self.options.detector, max_width=self.options.max_width
        )

    def chips(self, image_rgb: np.ndarray, faces: list[DetectedFace]) -> np.ndarray:
        """Aligned chips of ``faces``: ``(n_faces, size, size, 3) uint8``."""
        if not faces:
            return np.zeros((0, self.chip_size, self.chip_size, 3), dtype=np.uint8)
        return np.stack([align_face(image_rgb, face, self.chip_size, self.padding) for face in faces])


class FaceEmbedder:
    """Finds faces in images and embeds them with one extractor."""

    def __init__(self, extractor: Extractor, options: FaceOptions = FaceOptions()):
        self.extractor = extractor
        self.options = options
        self.cropper = FaceCropper(options, extractor.chip_size, extractor.align_padding)

    def find_faces(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        """All faces in ``image_rgb``, largest first (the whole image with ``detect=False``)."""
        return self.cropper.find_faces(image_rgb)

    def chips(self, image_rgb: np.ndarray, faces: list[DetectedFace]) -> np.ndarray:
        """Aligned chips of ``faces``: ``(n_faces, size, size, 3) uint8``."""
        return self.cropper.chips(image_rgb, faces)

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """``(n, size, size, 3) uint8`` chips -> ``(n, dim) float32`` vectors."""
        return self.extractor.embed(chips)

    def embed_faces(self, image_rgb: np.ndarray, faces: list[DetectedFace]) -> np.ndarray:
        """Vectors of ``faces`` in one backbone batch: ``(n_faces, dim) float32``."""
        return self.embed_chips(self.chips(image_rgb, faces))
