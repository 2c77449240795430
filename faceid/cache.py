"""The per-person feature cache under ``features/``.

Layout::

    features/
      manifest.json          extractor manifest + fingerprint, people and counts
      people/<person>.npz    vectors (n, dim) float32, files, sha256 of each file,
                             skipped files with their hash and reason, fingerprint
      stats.npz, stats.json  normalisation statistics (compute_mean.py)

Every file is NumPy ``.npz`` of plain arrays or JSON, read with
``allow_pickle=False``: a cache received from someone else cannot run code.
Each person file is written atomically and carries the extractor fingerprint,
so an interrupted or mixed run never passes a stale file off as valid.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceid.backbones import Extractor
from faceid.embedding import FaceCropper, FaceEmbedder, FaceOptions
from faceid.errors import ImageReadError, InputError, ManifestMismatchError
from faceid.faces import list_people, read_image
from faceid.manifest import CORRUPT_FILE_ERRORS, atomic_path, read_json, sha256_file, write_json
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

CACHE_FORMAT = "faceid-features/1"
MANIFEST_NAME = "manifest.json"
PEOPLE_DIR = "people"

# Reasons an image is left out of the cache (also the summary's row names).
NO_FACE = "no face found"
UNREADABLE = "unreadable or not an image"


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
        with atomic_path(path) as temporary:
            np.savez(
                temporary,
                vectors=self.vectors.astype(np.float32),
                files=np.array(self.files, dtype=str),
                hashes=np.array(self.hashes, dtype=str),
                skipped_files=np.array(skipped_files, dtype=str),
                skipped_hashes=np.array([self.skipped[name][0] for name in skipped_files], dtype=str),
                skipped_reasons=np.array([self.skipped[name][1] for name in skipped_files], dtype=str),
                fingerprint=np.array(fingerprint),
            )

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
            if path.name.startswith("."):
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


@dataclass
class ExtractionSummary:
    """What one extraction run did (printed by extract_features.py)."""

    people: int = 0
    images: int = 0
    embedded: int = 0
    reused: int = 0
    removed_images: int = 0
    removed_people: list[str] = field(default_factory=list)
    several_faces: list[str] = field(default_factory=list)  # largest face used
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> files
    too_few: dict[str, int] = field(default_factory=dict)  # person -> usable images (< 2)

    def skip(self, reason: str, file: str) -> None:
        self.skipped.setdefault(reason, []).append(file)

    def report(self, examples: int = 5) -> str:
        """A readable summary, naming a few files per kind of problem."""
        lines = [
            f"people: {self.people}  images: {self.images}  embedded: {self.embedded}  reused: {self.reused}  "
            f"skipped: {sum(len(files) for files in self.skipped.values())}  removed images: {self.removed_images}"
        ]
        problems = [(reason, files) for reason, files in sorted(self.skipped.items())]
        problems.append(("several faces (largest used)", self.several_faces))
        problems.append(("removed people", self.removed_people))
        for reason, files in problems:
            if files:
                shown = ", ".join(files[:examples]) + (f", ... (+{len(files) - examples})" if len(files) > examples else "")
                lines.append(f"  {reason}: {len(files)}: {shown}")
        if self.too_few:
            names = sorted(self.too_few)
            lines.append(
                f"  people with fewer than 2 usable images (identifiable, but no same-person pair for training): "
                f"{len(names)}: " + ", ".join(f"{name} ({self.too_few[name]})" for name in names[:examples])
                + (" ..." if len(names) > examples else "")
            )
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "people": self.people,
            "images": self.images,
            "embedded": self.embedded,
            "reused": self.reused,
            "removed_images": self.removed_images,
            "removed_people": self.removed_people,
            "several_faces": len(self.several_faces),
            "skipped": {reason: len(files) for reason, files in self.skipped.items()},
            "people_with_fewer_than_2_images": self.too_few,
        }


def _open_or_start_cache(features_dir: Path, extractor: Extractor, rebuild: bool) -> dict[str, PersonFeatures]:
    """Previous per-person entries that can be reused, after checking the extractor."""
    manifest_path = features_dir / MANIFEST_NAME
    if rebuild or not manifest_path.exists():
        return {}
    cache = FeatureCache.load(features_dir, for_update=True)
    check_same_extractor(
        cache.manifest["extractor"], extractor.manifest, f"feature cache {features_dir}",
        "nothing was changed; pass --rebuild to re-embed every image with this extractor, or --features a new folder",
    )
    return cache.people


def extract_features(
    faces_root: str | Path,
    extractor: Extractor,
    features_dir: str | Path,
    *,
    face_options: FaceOptions = FaceOptions(),
    rebuild: bool = False,
    batch_size: int = DEFAULTS.batch_size,
    workers: int = DEFAULTS.workers,
    progress: bool = True,
) -> ExtractionSummary:
    """Embed every person's images into the cache, re-using what is already there.

    Only images whose content hash is new are embedded; vectors of removed files
    and folders are dropped; images that failed before (no face, unreadable) with
    the same content are not tried again. Each person's file is written as soon
    as that person is done, so an interrupted run keeps the finished people.

    Decoding, detection and alignment run in ``workers`` processes (0: in this
    process) while the backbone embeds batches of ``batch_size`` chips from any
    people here; at most a few batches of chips are in flight, so memory stays
    flat whatever the folder size. Results do not depend on ``workers``.

    Raises:
        InputError: ``faces_root`` missing or without person folders.
        ManifestMismatchError: the cache was made by another extractor and
            ``rebuild`` is False (nothing is modified then).
    """
    from tqdm import tqdm

    faces_root, features_dir = Path(faces_root), Path(features_dir)
    people_files = list_people(faces_root)
    previous = _open_or_start_cache(features_dir, extractor, rebuild)
    people_dir = features_dir / PEOPLE_DIR
    people_dir.mkdir(parents=True, exist_ok=True)
    for leftover in people_dir.glob(".*.tmp*"):
        leftover.unlink()  # temporary files of an interrupted run: never valid data
    # The manifest goes first, so person files written below are always checked
    # against the extractor that wrote them, even if this run stops half-way.
    write_json(features_dir / MANIFEST_NAME, _cache_manifest(extractor, {}))

    summary = ExtractionSummary(people=len(people_files))
    plans = {name: _plan_person(name, files, previous.get(name), summary) for name, files in people_files.items()}
    cropper = FaceEmbedder(extractor, face_options).cropper
    counts: dict[str, int] = {}

    def finish(plan: _PersonPlan) -> None:
        person = plan.result(extractor.output_dim)
        person.save(people_dir / f"{plan.name}.npz", extractor.fingerprint)
        counts[plan.name] = len(person.vectors)
        if len(person.vectors) < 2:
            summary.too_few[plan.name] = len(person.vectors)

    tasks = [(plan.name, path) for plan in plans.values() for path in plan.pending]
    pending_chips: list[tuple[_PersonPlan, str, np.ndarray]] = []

    def embed_pending() -> None:
        if not pending_chips:
            return
        vectors = extractor.embed(np.stack([chip for _, _, chip in pending_chips]), batch_size=batch_size)
        for (plan, file_name, _), vector in zip(pending_chips, vectors):
            plan.vectors[file_name] = vector
            plan.remaining -= 1
        summary.embedded += len(pending_chips)
        bar.update(len(pending_chips))
        pending_chips.clear()
        for plan in plans.values():
            if plan.remaining == 0 and not plan.written:
                finish(plan)
                plan.written = True

    with tqdm(total=len(tasks), desc="extract", unit="img", disable=None if progress else True) as bar:
        for plan in plans.values():
            if plan.remaining == 0:  # nothing new: written now, unchanged or with removals applied
                finish(plan)
                plan.written = True
        for (name, path), prepared in zip(tasks, _prepare_all(tasks, cropper, workers, batch_size)):
            plan = plans[name]
            if prepared.reason is not None:
                plan.skipped[path.name] = (plan.hashes[path.name], prepared.reason)
                plan.remaining -= 1
                summary.skip(prepared.reason, f"{name}/{path.name}")
                bar.update(1)
            else:
                if prepared.n_faces > 1:
                    # Enrolment photos often catch someone in the background: the
                    # labelled person is the largest (closest) face.
                    summary.several_faces.append(f"{name}/{path.name}")
                pending_chips.append((plan, path.name, prepared.chip))
            if len(pending_chips) >= batch_size:
                embed_pending()
            elif plan.remaining == 0 and not plan.written:
                finish(plan)
                plan.written = True
        embed_pending()
    for stale in sorted(set(previous) - set(people_files)):
        (people_dir / f"{stale}.npz").unlink(missing_ok=True)
        summary.removed_people.append(stale)
    write_json(features_dir / MANIFEST_NAME, _cache_manifest(extractor, counts))
    return summary


def _cache_manifest(extractor: Extractor, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "extractor": extractor.manifest,
        "people": counts,
        "n_vectors": int(sum(counts.values())),
    }


@dataclass
class _PersonPlan:
    """One person's images: what is reused, what was skipped before, what to embed."""

    name: str
    files: list[str]  # every file of the folder, in order
    hashes: dict[str, str]
    vectors: dict[str, np.ndarray]  # reused now, embedded as results come in
    skipped: dict[str, tuple[str, str]]
    pending: list[Path]  # files to decode, detect, align and embed
    remaining: int = 0
    written: bool = False

    def result(self, dim: int) -> PersonFeatures:
        kept = [file for file in self.files if file in self.vectors]
        return PersonFeatures(
            name=self.name,
            vectors=np.stack([self.vectors[file] for file in kept]).astype(np.float32) if kept else np.zeros((0, dim), np.float32),
            files=kept,
            hashes=[self.hashes[file] for file in kept],
            skipped=self.skipped,
        )


def _plan_person(name: str, files: list[Path], previous: PersonFeatures | None, summary: ExtractionSummary) -> _PersonPlan:
    known, known_skips = {}, {}
    if previous is not None:
        known = {file: (digest, vector) for file, digest, vector in zip(previous.files, previous.hashes, previous.vectors)}
        known_skips = previous.skipped
        summary.removed_images += len(set(previous.files) - {path.name for path in files})
    plan = _PersonPlan(name=name, files=[path.name for path in files], hashes={}, vectors={}, skipped={}, pending=[])
    for path in files:
        summary.images += 1
        digest = sha256_file(path)
        plan.hashes[path.name] = digest
        if path.name in known and known[path.name][0] == digest:
            plan.vectors[path.name] = known[path.name][1]
            summary.reused += 1
        elif path.name in known_skips and known_skips[path.name][0] == digest:
            reason = known_skips[path.name][1]
            plan.skipped[path.name] = (digest, reason)
            summary.skip(reason, f"{name}/{path.name}")
        else:
            plan.pending.append(path)
    plan.remaining = len(plan.pending)
    return plan


@dataclass(frozen=True)
class _Prepared:
    """What a worker sends back for one image: the chip of its largest face, or why not."""

    chip: np.ndarray | None
    n_faces: int = 0
    reason: str | None = None


def _prepare(path: Path, cropper: FaceCropper) -> _Prepared:
    """Decode, detect and align one image (runs in a worker process)."""
    try:
        image = read_image(path)
    except ImageReadError as error:
        logger.warning("skipping %s", error)
        return _Prepared(chip=None, reason=UNREADABLE)
    faces = cropper.find_faces(image)
    if not faces:
        logger.info("no face in %s", path)
        return _Prepared(chip=None, reason=NO_FACE)
    return _Prepared(chip=cropper.chips(image, faces[:1])[0], n_faces=len(faces))


def _spawn_can_start() -> bool:
    """Whether spawned workers can start: they re-import ``__main__`` from its file, if it has one."""
    import sys

    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or Path(main_file).is_file()


def _prepare_all(tasks: list[tuple[str, Path]], cropper: FaceCropper, workers: int, batch_size: int) -> Iterator[_Prepared]:
    """Prepared images in task order; with workers, a bounded number in flight."""
    if workers > 0 and not _spawn_can_start():
        logger.info("no importable main script (stdin or interactive session): extracting in this process")
        workers = 0
    if workers <= 0:
        for _, path in tasks:
            yield _prepare(path, cropper)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent may hold TensorFlow/ONNX Runtime threads, which fork does not copy safely.
    context = multiprocessing.get_context("spawn")
    in_flight: deque = deque()
    limit = max(4 * batch_size, 8 * workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        try:
            for _, path in tasks:
                in_flight.append(pool.submit(_prepare, path, cropper))
                if len(in_flight) >= limit:
                    yield in_flight.popleft().result()
            while in_flight:
                yield in_flight.popleft().result()
        finally:
            for future in in_flight:
                future.cancel()
