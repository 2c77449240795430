"""A photo gallery searched by a query image (a sketch): its layout, its cached vectors, the ranking.

A gallery folder holds photos flat (``photos/NN.png``: each photo is its own identity, named by
its file-name stem) or one sub-folder per person (``photos/<person>/<photo>``), or both. Its
vectors live in an ordinary feature cache (:func:`faceid.features.extract.extract_features`):
embedded once, then only new or changed photos are embedded again, removed ones dropped; photos
without a face or unreadable are recorded and reported, not retried. Flat photos are cached
under the pseudo-person :data:`FLAT`.

A cross-domain extractor embeds the gallery on its gallery side and the query on its query side
(:meth:`faceid.backbones.registry.Extractor.for_domain`); any other extractor embeds both alike.
Ranking is exact cosine similarity over every cached vector (:func:`faceid.match.retrieval.top_matches`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceid.backbones import Extractor
from faceid.detect.faces import FaceCropper, FaceOptions
from faceid.errors import ImageReadError, InputError
from faceid.features.cache import FeatureCache
from faceid.features.extract import ExtractionSummary, extract_features
from faceid.io.images import FLAT, list_photos, read_image
from faceid.io.sealed import Key
from faceid.match.retrieval import top_matches
from faceid.match.scoring import unit_vectors
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

def gallery_layout(folder: Path, parameter: str = "`gallery`") -> dict[str, list[Path]]:
    """``{person: files}`` of a gallery folder: flat photos under :data:`FLAT`, each sub-folder a person.

    ``parameter``: how messages name the folder (the caller's parameter, in backticks)."""
    return list_photos(folder, parameter)


def identity(person: str, file_name: str) -> str:
    """Who a gallery photo shows: its person folder, or for a flat photo its file-name stem."""
    return Path(file_name).stem if person == FLAT else person


def default_cache(gallery: Path) -> Path:
    """Where a gallery's vectors are cached unless ``--features`` says: one folder per gallery path."""
    resolved = Path(gallery).resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:10]
    return Path(DEFAULTS.features_path) / "galleries" / f"{resolved.name}-{digest}"


def gallery_side(extractor: Extractor) -> Extractor:
    return extractor.for_domain(extractor.domains[-1]) if extractor.domains else extractor


def query_side(extractor: Extractor) -> Extractor:
    return extractor.for_domain(extractor.domains[0]) if extractor.domains else extractor


@dataclass
class Gallery:
    """Every usable gallery photo: unit vectors, where each came from, who it shows."""

    vectors: np.ndarray  # (n, dim) float32, unit length
    paths: list[Path]
    identities: list[str]
    summary: ExtractionSummary | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # "person/file" -> reason

    def __len__(self) -> int:
        return len(self.paths)

    def rank(self, queries: np.ndarray, top: int) -> list[list[tuple[int, float]]]:
        """Per query, the ``top`` best identities as ``(row, score)``: each identity once, at its best photo."""
        most_photos = max(Counter(self.identities).values(), default=1)
        rows, scores = top_matches(queries, self.vectors, min(len(self), top * most_photos))
        ranked = []
        for query_rows, query_scores in zip(rows, scores):
            seen: set[str] = set()
            best: list[tuple[int, float]] = []
            for row, score in zip(query_rows, query_scores):
                if self.identities[row] not in seen:
                    seen.add(self.identities[row])
                    best.append((int(row), float(score)))
                if len(best) == top:
                    break
            ranked.append(best)
        return ranked


def embed_gallery(folder: Path, extractor: Extractor, features: Path | None = None,
                  face_options: FaceOptions = FaceOptions(), workers: int = DEFAULTS.workers, rebuild: bool = False,
                  progress: bool = True, parameter: str = "`gallery`", *, key: Key | None = None) -> Gallery:
    """The gallery's vectors through its feature cache (incremental); raises when no photo gave a face.

    ``key``: the cache is encrypted with it, and encrypted photos open with it (``None``: plaintext).
    """
    folder = Path(folder)
    people = gallery_layout(folder, parameter)
    features = Path(features) if features is not None else default_cache(folder)
    side = gallery_side(extractor)
    summary = extract_features(folder, side, features, face_options=face_options, rebuild=rebuild, workers=workers,
                               progress=progress, people_files=people, key=key)
    cache = FeatureCache.load(features, side.manifest, key=key)
    vectors, paths, identities, skipped = [], [], [], {}
    for person in people:
        cached = cache.people.get(person)
        if cached is None:
            continue
        base = folder if person == FLAT else folder / person
        vectors.append(cached.vectors)
        paths += [base / name for name in cached.files]
        identities += [identity(person, name) for name in cached.files]
        skipped.update({f"{person}/{name}": reason for name, (_, reason) in cached.skipped.items()})
    if not paths:
        raise InputError(f"{parameter} {folder}: no photo gave a face ({len(skipped)} tried: {summary.report()})")
    return Gallery(unit_vectors(np.concatenate(vectors)), paths, identities, summary, skipped)


def query_chip(path: Path, cropper: FaceCropper, key: Key | None = None) -> tuple[np.ndarray, int]:
    """The aligned chip of the largest face in a query image and how many faces it holds
    (searched again one upsampling step finer when none is found).

    Raises:
        InputError: unreadable file, or no face found.
    """
    try:
        image = read_image(path, key)
    except ImageReadError as error:
        raise InputError(f"query {path}: {error}") from error
    faces = cropper.find_faces(image)
    if not faces and cropper.options.detect:
        # A search has few queries and each matters: look once more for a smaller face.
        retry = dataclasses.replace(cropper.options, upsample=cropper.options.effective_upsample + 1)
        faces = dataclasses.replace(cropper, options=retry).find_faces(image)
    if not faces:
        raise InputError(f"no face found in query {path}: crop it closer to the face, try `upsample` 2 or "
                         "`detector` cnn, or skip detection if it already is a face crop (`detect`)")
    return cropper.chips(image, faces[:1])[0], len(faces)


def embed_queries(paths: list[Path], extractor: Extractor, face_options: FaceOptions,
                  strict: bool = True, *, key: Key | None = None) -> tuple[np.ndarray, list[int], dict[int, str]]:
    """Query-side vectors of ``paths``: ``(vectors, rows embedded, {row: why not})``. ``strict``
    raises on the first query without a face; otherwise such queries are reported and left out.
    ``key``: encrypted query images open with it."""
    side = query_side(extractor)
    cropper = FaceCropper(face_options, side.chip_size, side.align_padding)
    chips, kept, failed = [], [], {}
    for row, path in enumerate(paths):
        try:
            chip, count = query_chip(Path(path), cropper, key)
        except InputError as error:
            if strict:
                raise
            failed[row] = str(error)
            continue
        if count > 1:
            logger.warning("query %s holds %d faces: using the largest", path, count)
        chips.append(chip)
        kept.append(row)
    if not chips:
        return np.zeros((0, side.output_dim), dtype=np.float32), kept, failed
    return unit_vectors(side.embed(np.stack(chips))), kept, failed
