"""Vectors of the images an evaluation needs: from the feature cache when it holds the same bytes, else embedded."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceid.backbones import Extractor
from faceid.detect.faces import NO_FACE, DetectedFace, FaceBox, face_at
from faceid.errors import ImageReadError, InputError
from faceid.evaluate.pairlist import ImageKey
from faceid.features.cache import FeatureCache, describe_extractor
from faceid.features.embedding import ChipBatcher, FaceEmbedder
from faceid.io.images import UNREADABLE, image_sha256, read_image
from faceid.io.sealed import Key
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

NO_FACE_POLICIES = ("centre", "skip")
# Which detected face is the labelled one: the largest (what extraction and live
# identification use) or the one at the image centre (LFW's definition of its label).
FACE_CHOICES = ("largest", "centre")

# Where dlib's HOG detector puts the face in LFW's deep-funnelled 250x250 photos (median
# box over 60 random DevTrain images: 109 px wide, centred at (121, 134)), as shares of
# the image. Used only when the detector finds nothing (no_face="centre").
CENTRE_BOX_SIDE = 0.44
CENTRE_BOX_X = 0.486
CENTRE_BOX_Y = 0.536

# Image states after embedding. Only the first two give a vector.
DETECTED, CENTRE, SKIPPED, MISSING = "detected", "centre", "no face (skipped)", "missing"


@dataclass
class EmbeddedImages:
    """Vectors of a set of images and what happened to each."""

    vectors: dict[ImageKey, np.ndarray]
    status: dict[ImageKey, str]  # DETECTED, CENTRE, SKIPPED, MISSING or UNREADABLE
    from_cache: int = 0
    embedded: int = 0
    several_faces: int = 0  # among the images detected in this run (cached ones are not detected again)
    off_centre: int = 0  # faces found, none at the centre (face_choice="centre"): counted as no face

    def counts(self) -> dict[str, Any]:
        """The ``images`` block of the summary."""
        states = list(self.status.values())
        found = sum(state not in (MISSING, UNREADABLE) for state in states)
        no_face = sum(state in (CENTRE, SKIPPED) for state in states)
        return {
            "total": len(states),
            "from_cache": self.from_cache,
            "embedded": self.embedded,
            "no_face": no_face,
            "no_face_centre_crop": states.count(CENTRE),
            "no_face_skipped": states.count(SKIPPED),
            "no_face_share": no_face / found if found else 0.0,
            "several_faces": self.several_faces,
            "off_centre_faces_only": self.off_centre,
            "missing": states.count(MISSING),
            "unreadable": states.count(UNREADABLE),
        }


def open_cache(features: Path | None, extractor: Extractor, *,
               key: Key | None = None) -> tuple[FeatureCache | None, dict[str, Any]]:
    """The feature cache to take vectors from, if it was made by ``extractor`` (opened with ``key`` when
    encrypted); and what the summary says of it."""
    if features is None:
        return None, {"path": None, "used": False}
    cache = FeatureCache.load(features, key=key)
    if cache.fingerprint != extractor.fingerprint:
        logger.warning(
            "feature cache %s was made by %s, not by the extractor given (%s): ignoring it and embedding every image",
            features,
            describe_extractor(cache.manifest["extractor"]),
            describe_extractor(extractor.manifest),
        )
        return None, {"path": str(features), "used": False, "reason": "made by another extractor"}
    return cache, {"path": str(features), "used": True}


def centre_face(image_rgb: np.ndarray) -> DetectedFace | None:
    """A face where LFW's deep-funnelled photos have it, with landmarks found inside that box.

    For images the detector missed: dlib's 5-point predictor still places the eyes and
    nose inside a box given to it, so the chip is aligned like a detected face's.
    ``None`` when the image is too small to hold a face there.
    """
    height, width = image_rgb.shape[:2]
    side = CENTRE_BOX_SIDE * min(height, width)
    centre_x, centre_y = CENTRE_BOX_X * width, CENTRE_BOX_Y * height
    box = FaceBox(
        left=round(centre_x - side / 2),
        top=round(centre_y - side / 2),
        right=round(centre_x + side / 2),
        bottom=round(centre_y + side / 2),
    )
    return face_at(image_rgb, box)


def centred_face(faces: Sequence[DetectedFace], image_shape: tuple[int, ...]) -> int | None:
    """Index of the face whose box holds the image centre, nearest first; None when no box does.

    LFW labels the face at the centre of each photo; it is usually, not always, the largest.
    """
    height, width = image_shape[:2]
    centre_x, centre_y = width / 2, height / 2
    holding = [
        (
            math.hypot(
                (face.box.left + face.box.right) / 2 - centre_x, (face.box.top + face.box.bottom) / 2 - centre_y
            ),
            index,
        )
        for index, face in enumerate(faces)
        if face.box.left <= centre_x < face.box.right and face.box.top <= centre_y < face.box.bottom
    ]
    return min(holding)[1] if holding else None


def embed_images(
    keys: Sequence[ImageKey],
    root: Path,
    embedder: FaceEmbedder,
    cache: FeatureCache | None,
    *,
    no_face: str = "centre",
    face_choice: str = "largest",
    batch_size: int = DEFAULTS.batch_size,
    progress: bool = True,
    key: Key | None = None,
) -> EmbeddedImages:
    """Vectors of ``root/person/file`` for every key: from the cache when it holds the same bytes, else embedded.

    Detection and alignment are those of extraction. ``face_choice="largest"`` takes the
    largest face, as extraction does, so a cached vector is used without detecting again;
    ``"centre"`` takes the face at the image centre (LFW's labelled face), which needs
    detection for every image: the cached vector is reused only when that face is also
    the largest, and an image whose faces all lie off-centre counts as having no face.
    With ``no_face="centre"`` an image without a (centred) face is embedded from
    :func:`centre_face`; with ``"skip"`` it gets no vector. ``key``: encrypted images open with it.
    """
    from tqdm import tqdm

    if no_face not in NO_FACE_POLICIES:
        raise InputError(f"unknown no-face policy {no_face!r}: choose one of {', '.join(NO_FACE_POLICIES)}")
    if face_choice not in FACE_CHOICES:
        raise InputError(f"unknown face choice {face_choice!r}: choose one of {', '.join(FACE_CHOICES)}")
    result = EmbeddedImages(vectors={}, status={})
    sealing_key = key  # below, ``key`` is each image's (person, file)

    def deliver(embedded_keys: list[ImageKey], vectors: np.ndarray) -> None:
        result.vectors.update(zip(embedded_keys, vectors))
        result.embedded += len(embedded_keys)

    with tqdm(keys, desc="embed", unit="img", disable=None if progress else True) as bar, \
            ChipBatcher(embedder.embed_chips, deliver, batch_size) as batcher:
        for key in bar:
            path = root / key[0] / key[1]
            if not path.is_file():
                result.status[key] = MISSING
                continue
            cached = None if cache is None else cache.lookup(key[0], key[1], image_sha256(path, sealing_key))
            cached_vector, known_reason = None, None
            if isinstance(cached, np.ndarray):
                cached_vector = cached
            elif cached is not None:
                known_reason = cached  # the cache already knows this exact file failed
            if cached_vector is not None and face_choice == "largest":
                result.vectors[key] = cached_vector
                result.status[key] = DETECTED
                result.from_cache += 1
                continue
            if known_reason == UNREADABLE:
                result.status[key] = UNREADABLE
                continue
            try:
                image = read_image(path, sealing_key)
            except ImageReadError as error:
                logger.warning("skipping %s", error)
                result.status[key] = UNREADABLE
                continue
            faces = [] if known_reason == NO_FACE else embedder.find_faces(image)
            if len(faces) > 1:
                result.several_faces += 1
            chosen = (0 if faces else None) if face_choice == "largest" else centred_face(faces, image.shape)
            if faces and chosen is None:
                result.off_centre += 1
            if chosen is not None:
                result.status[key] = DETECTED
                if chosen == 0 and cached_vector is not None:
                    result.vectors[key] = cached_vector
                    result.from_cache += 1
                    continue
                face = faces[chosen]
            elif no_face == "centre" and (face := centre_face(image)) is not None:
                logger.info("no %sface found in %s/%s: using the centre crop", "centred " * bool(faces), *key)
                result.status[key] = CENTRE
            else:
                logger.info("no %sface found in %s/%s: skipped", "centred " * bool(faces), *key)
                result.status[key] = SKIPPED
                continue
            batcher.add(key, embedder.chips(image, [face])[0])
    return result
