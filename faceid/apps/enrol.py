"""Enrolment crops: what capture.py (:mod:`.capture`) and selfies2face.py (:mod:`.selfies`) share.

Every crop saved here is the aligned chip the pipeline embeds:
:func:`faceid.detect.faces.align_face` on dlib's 5 landmarks with padding
``DEFAULTS.align_padding`` (0.25), at ``size`` pixels (224 by default). dlib's
chip (150 px) and ResNet50's (224 px) use that same padding, so the chip's
geometry does not depend on its size: ``extract_features.py --no_detect`` on
these crops resizes them and embeds the same face the detector path would
(dlib vectors of a 224 px crop resized to 150 px lie 0.02 from those of a
150 px chip cut directly; same-person distances are ~0.3-0.5). Detection also
still works on a crop (the face fills ~80 % of it), so a folder of crops can be
fed to ``extract_features.py`` with or without ``--no_detect``.

Crops are saved as PNG: lossless, so the pixels embedded later are exactly the
pixels checked for quality here, and a crop re-saved or re-cropped never
accumulates JPEG artefacts. A 224 px crop is ~60-90 KB.

Nothing is ever overwritten: a file is written under a temporary name and
hard-linked to its final name, which fails if that name exists (then the next
free name is tried), so an interrupted save leaves no half-written crop and two
captures into one folder cannot clobber each other.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceid.detect.faces import DetectedFace, FaceCropper, FaceOptions
from faceid.io.images import encode_png
from faceid.io.sealed import Key
from faceid.io.store import write_new_private
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

# Side of the saved crops: ResNet50's native input. dlib's 150 px chip is the
# same crop scaled down, so one crop size serves both backbones.
CROP_SIZE = 224
CROP_SUFFIX = ".png"
# capture.py --save_frames puts each full frame here, inside the person's folder,
# under the crop's name; extraction reads only the files directly in a person's
# folder, so the frames are kept but never embedded.
FRAMES_DIR = "frames"


@dataclass(frozen=True)
class CropOptions:
    """How faces are found and cut out for enrolment."""

    # Saved crop side in pixels (see the module docstring: any size is the same crop).
    size: int = CROP_SIZE
    padding: float = DEFAULTS.align_padding
    # None: the detector's own default (faceid.detect.faces.default_upsample).
    upsample: int | None = None
    detector: str = DEFAULTS.detector
    # Photos wider than this are searched for faces downscaled to this width; the crop
    # is still cut from the full-resolution image. 0 searches at full size. The same
    # default as extraction's, so enrolment, the audit and the cache agree on "no face".
    max_width: int = DEFAULTS.max_search_width

    def cropper(self) -> FaceCropper:
        """The pipeline's own face finder and aligner, with these settings."""
        return FaceCropper(
            FaceOptions(upsample=self.upsample, detector=self.detector, max_width=self.max_width or None),
            chip_size=self.size,
            padding=self.padding,
        )


DEFAULT_CROP = CropOptions()


def find_faces(image_rgb: np.ndarray, options: CropOptions = DEFAULT_CROP) -> list[DetectedFace]:
    """Every face of an image, largest first, in the image's own pixel coordinates.

    The search runs on a copy shrunk to ``options.max_width`` when the image is
    wider; faces are mapped back to the full-size image.
    """
    return options.cropper().find_faces(image_rgb)


def crop_face(image_rgb: np.ndarray, face: DetectedFace, options: CropOptions = DEFAULT_CROP) -> np.ndarray:
    """The aligned crop enrolment saves: ``(size, size, 3) uint8`` RGB (the pipeline's chip)."""
    return options.cropper().chips(image_rgb, [face])[0]


# --------------------------------------------------------------------------------------
# Numbered crops that never overwrite (faceid.io.store.write_new_file)
# --------------------------------------------------------------------------------------


def next_free_number(folder: Path, prefix: str) -> int:
    """One more than the largest ``N`` of the files ``<prefix>_<N>.<suffix>`` in ``folder`` (1 if none)."""
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)\.[^.]+$")
    numbers = [
        int(match.group(1))
        for path in (folder.iterdir() if folder.is_dir() else [])
        if (match := pattern.match(path.name))
    ]
    return max(numbers, default=0) + 1


def save_new_image(folder: Path, prefix: str, image_rgb: np.ndarray, *, key: Key | None = None) -> Path:
    """Save a PNG as ``<folder>/<prefix>_<NNNN>.png`` with the next free number (sealed with ``key``
    when given); returns its path."""
    data = encode_png(image_rgb)
    number = next_free_number(folder, prefix)
    while True:
        path = folder / f"{prefix}_{number:04d}{CROP_SUFFIX}"
        try:
            write_new_private(path, data, key=key)
            return path
        except FileExistsError:
            number += 1  # taken since we looked (another capture into the same folder)
