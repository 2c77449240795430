"""The per-person feature cache under ``features/``.

Layout::

    features/
      manifest.json          extractor manifest + fingerprint, people and counts
      people/<person>.npz    vectors (n, dim) float32, files, sha256 of each file,
                             skipped files with their hash and reason, fingerprint
      stats.npz, stats.json  normalisation statistics (compute_mean.py)

Every file is NumPy ``.npz`` of plain arrays or JSON, read with
``allow_pickle=False``: a cache received from someone else cannot run code.
Each person file is written atomically (:mod:`faceid.io.store`) and carries the
extractor fingerprint, so an interrupted or mixed run never passes a stale file off
as valid. This module only stores and reads; :mod:`faceid.features.extract` fills it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceid.errors import InputError, ManifestMismatchError
from faceid.io.store import CORRUPT_FILE_ERRORS, TEMPORARY_GLOB, read_json, save_npz

logger = logging.getLogger(__name__)

CACHE_FORMAT = "faceid-features/1"
MANIFEST_NAME = "manifest.json"
PEOPLE_DIR = "people"


@dataclass
class PersonFeatures:
    """One person's cached vectors and the files they came from."""

    name: str
    vectors: np.ndarray  # (n_images, dim) float32
    files: list[str]  # file names inside the person's folder, one per vector
    hashes: list[str]  # sha256 of each file's bytes
    skipped: dict[str, tuple[str, str]] = field(default_factory=dict)  # file -> (sha256, reason)

    def save(self, path: Path, fingerprint: str) -> None:
        skipped_files = sorted(self.skipped)
        save_npz(
            path,
            vectors=self.vectors.astype(np.float32),
            files=np.array(self.files, dtype=str),
            hashes=np.array(self.hashes, dtype=str),
            skipped_files=np.array(skipped_files, dtype=str),
            skipped_hashes=np.array([self.skipped[name][0] for name in skipped_files], dtype=str),
            skipped_reasons=np.array([self.skipped[name][1] for name in skipped_files], dtype=str),
            fingerprint=np.array(fingerprint),
        )

    def lookup(self, file_name: str, sha256: str) -> np.ndarray | str | None:
        """The vector of ``file_name`` (or why it was skipped) if cached with this content, else ``None``."""
        row = self._rows.get(file_name)
        if row is not None and self.hashes[row] == sha256:
            return self.vectors[row]
        skipped = self.skipped.get(file_name)
        if skipped is not None and skipped[0] == sha256:
            return skipped[1]
        return None

    @functools.cached_property
    def _rows(self) -> dict[str, int]:
        return {name: row for row, name in enumerate(self.files)}

    @classmethod
    def load(cls, path: Path) -> tuple["PersonFeatures", str]:
        """Read a person file; returns it and the fingerprint it was made with."""
        try:
            with np.load(path, allow_pickle=False) as data:
                vectors = data["vectors"].astype(np.float32)
                files = [str(name) for name in data["files"]]
                hashes = [str(digest) for digest in data["hashes"]]
                skipped = {
                    str(name): (str(digest), str(reason))
                    for name, digest, reason in zip(data["skipped_files"], data["skipped_hashes"], data["skipped_reasons"])
                }
                fingerprint = str(data["fingerprint"])
        except CORRUPT_FILE_ERRORS as error:
            raise InputError(
                f"feature file {path} is unreadable or corrupt ({error}): re-run extract_features.py to rebuild it"
            ) from error
        if vectors.ndim != 2 or len(vectors) != len(files) or len(files) != len(hashes):
            raise InputError(f"feature file {path} is inconsistent: re-run extract_features.py --rebuild")
        return cls(path.stem, vectors, files, hashes, skipped), fingerprint


def describe_extractor(manifest: dict[str, Any]) -> str:
    """One line naming an extractor, for mismatch messages."""
    return (
        f"{manifest.get('backbone')} layer {manifest.get('layer')} {manifest.get('input_size')}px "
        f"pooling {manifest.get('pooling')} weights {manifest.get('weights')} "
        f"(fingerprint {str(manifest.get('fingerprint'))[:12]})"
    )


class FeatureCache:
    """The cached vectors of every enrolled person, as written by :func:`extract_features`."""

    def __init__(self, directory: Path, manifest: dict[str, Any], people: dict[str, PersonFeatures]):
        self.directory = directory
        self.manifest = manifest
        self.people = people

    @property
    def fingerprint(self) -> str:
        return self.manifest["extractor"]["fingerprint"]

    @property
    def dim(self) -> int:
        return int(self.manifest["extractor"]["output_dim"])

    @classmethod
    def load(
        cls, directory: str | Path, extractor_manifest: dict[str, Any] | None = None, for_update: bool = False
    ) -> "FeatureCache":
        """Open a cache; with ``extractor_manifest``, insist it was made by that extractor.

        ``for_update`` (extraction re-opening its own cache) accepts an empty cache
        and leaves out person files from another extractor, to be re-embedded.

        Raises:
            InputError: no cache there, or a corrupt file.
            ManifestMismatchError: the cache was made by another extractor.
        """
        directory = Path(directory)
        manifest = read_json(
            directory / MANIFEST_NAME,
            "feature cache manifest",
            "run extract_features.py --faces_path DIR --model_path EXTRACTOR --features "
            f"{directory} first",
        )
        if manifest.get("format") != CACHE_FORMAT:
            raise InputError(f"{directory} is not a faceid feature cache (format {manifest.get('format')!r})")
        if extractor_manifest is not None:
            check_same_extractor(
                manifest["extractor"], extractor_manifest, f"feature cache {directory}",
                f"pass the extractor that made it, or rebuild the cache with extract_features.py --features {directory} --rebuild",
            )
        people = {}
        for path in sorted((directory / PEOPLE_DIR).glob("*.npz")):
            if path.match(TEMPORARY_GLOB) or path.name.startswith("."):
                continue  # a temporary file from an interrupted write
            person, fingerprint = PersonFeatures.load(path)
            if fingerprint != manifest["extractor"]["fingerprint"]:
                if for_update:
                    logger.info("%s comes from another extractor: re-embedding it", path)
                    continue
                raise ManifestMismatchError(
                    f"{path} was embedded by extractor {fingerprint[:12]}, the cache's manifest says "
                    f"{manifest['extractor']['fingerprint'][:12]} (an interrupted run?): re-run extract_features.py"
                )
            people[person.name] = person
        if not people and not for_update:
            raise InputError(f"feature cache {directory} holds no people: run extract_features.py")
        return cls(directory, manifest, people)

    def matrix(self, min_images: int = 1) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """All vectors stacked, for people with at least ``min_images`` vectors.

        Returns:
            ``(vectors (n, dim) float32, labels (n,) int64, names)`` where
            ``names[labels[i]]`` is the person of row ``i``.
        """
        names = [name for name, person in sorted(self.people.items()) if len(person.vectors) >= min_images]
        if not names:
            raise InputError(f"no person in {self.directory} has {min_images} or more usable images")
        vectors = np.concatenate([self.people[name].vectors for name in names]).astype(np.float32)
        labels = np.concatenate(
            [np.full(len(self.people[name].vectors), index, dtype=np.int64) for index, name in enumerate(names)]
        )
        return vectors, labels, names

    def lookup(self, person: str, file_name: str, sha256: str) -> np.ndarray | str | None:
        """What the cache knows about ``person/file_name`` with exactly these bytes.

        The one cache look-up (extraction, evaluation and the audit use it): the file's
        ``(dim,) float32`` vector, or the reason it was skipped (e.g. no face), or ``None``
        when the cache has not seen these bytes under that name.
        """
        person_features = self.people.get(person)
        if person_features is None:
            return None
        return person_features.lookup(file_name, sha256)

    def content_digest(self) -> str:
        """Hash of what the cache holds (extractor + every person's file hashes)."""
        digest = hashlib.sha256(self.fingerprint.encode())
        for name in sorted(self.people):
            digest.update(name.encode() + b"\0" + "\0".join(self.people[name].hashes).encode() + b"\n")
        return digest.hexdigest()[:32]


def check_same_extractor(found: dict[str, Any], expected: dict[str, Any], found_from: str, fix: str) -> None:
    """Stop when two artefacts come from different extractors, naming both and the fix."""
    if found.get("fingerprint") != expected.get("fingerprint"):
        raise ManifestMismatchError(
            f"{found_from} was made by {describe_extractor(found)}, but the extractor given is "
            f"{describe_extractor(expected)}: {fix}"
        )


def cache_manifest(extractor_manifest: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    """The cache's ``manifest.json``: format, the extractor's manifest, people and counts."""
    return {
        "format": CACHE_FORMAT,
        "extractor": extractor_manifest,
        "people": counts,
        "n_vectors": int(sum(counts.values())),
    }
