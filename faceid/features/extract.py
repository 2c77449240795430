"""Filling the feature cache: every enrolled image embedded once, incrementally.

:func:`extract_features` plans per person what is new (by content hash, through
:meth:`faceid.features.cache.PersonFeatures.lookup`), has an extraction engine
decode, detect and align it (:mod:`faceid.features.engine`), embeds the chips in
backbone batches (:class:`faceid.features.embedding.ChipBatcher`) and writes each
person's file as soon as that person is complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceid.backbones import Extractor
from faceid.detect.faces import FaceCropper, FaceOptions
from faceid.features.cache import (
    MANIFEST_NAME,
    PEOPLE_DIR,
    FeatureCache,
    PersonFeatures,
    cache_manifest,
    check_key_matches,
    check_same_extractor,
    write_manifest,
)
from faceid.features.engine import ExtractionEngine, LocalEngine
from faceid.io.images import image_sha256, list_people
from faceid.io.sealed import Key
from faceid.io.store import read_json, remove_leftovers
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)


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
    too_few: dict[str, int] = field(default_factory=dict)  # person -> usable images (1: no pair for training)
    not_enrolled: list[str] = field(default_factory=list)  # people with no usable image: not identifiable

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
        for reason, unordered in problems:
            files = sorted(unordered)  # the same text whatever order an engine returned results in
            if files:
                shown = ", ".join(files[:examples]) + (f", ... (+{len(files) - examples})" if len(files) > examples else "")
                lines.append(f"  {reason}: {len(files)}: {shown}")
        if self.not_enrolled:
            names = sorted(self.not_enrolled)
            lines.append(f"  not enrolled (no usable image, so never identified): {len(names)}: "
                         + ", ".join(names[:examples]) + (" ..." if len(names) > examples else ""))
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
            "not_enrolled": sorted(self.not_enrolled),
        }


def _open_or_start_cache(features_dir: Path, extractor: Extractor, rebuild: bool,
                         key: Key | None) -> dict[str, PersonFeatures]:
    """Previous per-person entries that can be reused, after checking the extractor and the key."""
    manifest_path = features_dir / MANIFEST_NAME
    if not manifest_path.exists():
        return {}
    check_key_matches(features_dir, read_json(manifest_path, "feature cache manifest", "pass `rebuild`, or another "
                                              "`features_dir` folder"), key=key)
    if rebuild:
        return {}
    cache = FeatureCache.load(features_dir, for_update=True, key=key)
    check_same_extractor(
        cache.manifest["extractor"], extractor.manifest, f"feature cache {features_dir}",
        "nothing was changed; pass `rebuild` to re-embed every image with this extractor, or `features_dir` a new folder",
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
    engine: ExtractionEngine | None = None,
    progress: bool = True,
    people_files: dict[str, list[Path]] | None = None,
    add: bool = False,
    key: Key | None = None,
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
    ``engine`` replaces that local engine (:mod:`faceid.features.engine`; a Ray
    cluster: :class:`faceid.features.ray_engine.RayEngine`): only the images planned
    here (new or changed) are sent to it, and this process writes every file.
    ``people_files`` replaces the listing of ``faces_root`` (a retrieval gallery's layout).
    ``key`` (:class:`faceid.io.sealed.Key`): a new cache is encrypted with it, an existing one must
    be encrypted with it, and encrypted crops among the images are opened with it; ``None``: the
    cache is plaintext (and must be). Nothing here reads a key from the environment.
    ``add`` (with ``people_files``; :meth:`faceid.FaceID.enrol`): the images listed are added to
    what the cache holds: people not listed and images not listed are kept, not removed.

    Raises:
        InputError: ``faces_root`` missing or without person folders.
        ManifestMismatchError: the cache was made by another extractor and
            ``rebuild`` is False (nothing is modified then).
    """
    from tqdm import tqdm

    faces_root, features_dir = Path(faces_root), Path(features_dir)
    people_files = list_people(faces_root) if people_files is None else people_files
    previous = _open_or_start_cache(features_dir, extractor, rebuild, key)
    # Hashing every image first: an encrypted crop without its key stops the run before anything is written.
    summary = ExtractionSummary(people=len(people_files))
    plans = {name: _plan_person(name, files, previous.get(name), summary, add, key)
             for name, files in people_files.items()}
    people_dir = features_dir / PEOPLE_DIR
    people_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(people_dir)  # temporary files of an interrupted run: never valid data
    # The manifest goes first, so person files written below are always checked
    # against the extractor that wrote them, even if this run stops half-way.
    write_manifest(features_dir, cache_manifest(extractor.manifest, {}), key, table=False)
    cropper = FaceCropper(face_options, extractor.chip_size, extractor.align_padding)
    counts: dict[str, int] = {}

    def finish(plan: _PersonPlan) -> None:
        """Write a person's file once all their images are done (at most once)."""
        if plan.remaining or plan.written:
            return
        person = plan.result(extractor.output_dim)
        person.save(people_dir / f"{plan.name}.npz", extractor.fingerprint, key=key)
        plan.written = True
        counts[plan.name] = len(person.vectors)
        if len(person.vectors) == 0:
            summary.not_enrolled.append(plan.name)
            logger.warning("%s is not enrolled: no usable image (%d file(s))", plan.name, len(plan.files))
        elif len(person.vectors) < 2:
            summary.too_few[plan.name] = len(person.vectors)

    tasks = [(plan.name, path) for plan in plans.values() for path in plan.pending]
    engine = engine or LocalEngine(workers=workers, batch_size=batch_size)
    with tqdm(total=len(tasks), desc="extract", unit="img", disable=None if progress else True) as bar:
        for plan in plans.values():  # people with nothing new: unchanged, or with removals applied
            finish(plan)
        for results in engine.extract([path for _, path in tasks], cropper, extractor, batch_size, key=key):
            touched: dict[str, _PersonPlan] = {}
            for result in results:
                name, path = tasks[result.index]
                plan = touched[name] = plans[name]
                plan.remaining -= 1
                if result.reason is not None:
                    plan.skipped[path.name] = (plan.hashes[path.name], result.reason)
                    summary.skip(result.reason, f"{name}/{path.name}")
                else:
                    if result.n_faces > 1:
                        # Enrolment photos often catch someone in the background: the
                        # labelled person is the largest (closest) face.
                        summary.several_faces.append(f"{name}/{path.name}")
                    plan.vectors[path.name] = result.vector
                    summary.embedded += 1
            bar.update(len(results))
            for plan in touched.values():  # only these people can have just been completed
                finish(plan)
    for stale in sorted(set(previous) - set(people_files)):
        if add:  # kept as they are
            counts[stale] = len(previous[stale].vectors)
            continue
        (people_dir / f"{stale}.npz").unlink(missing_ok=True)
        summary.removed_people.append(stale)
    write_manifest(features_dir, cache_manifest(extractor.manifest, counts), key)
    return summary


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


def _plan_person(name: str, files: list[Path], previous: PersonFeatures | None, summary: ExtractionSummary,
                 add: bool = False, key: Key | None = None) -> _PersonPlan:
    plan = _PersonPlan(name=name, files=[path.name for path in files], hashes={}, vectors={}, skipped={}, pending=[])
    if previous is not None and add:
        # Adding: what the person already has stays, unless a listed file of the same name replaces it.
        listed = set(plan.files)
        kept = [file for file in previous.files if file not in listed]
        rows = {file: row for row, file in enumerate(previous.files)}
        plan.files = kept + plan.files
        for file in kept:
            plan.vectors[file] = previous.vectors[rows[file]]
            plan.hashes[file] = previous.hashes[rows[file]]
        plan.skipped.update({file: record for file, record in previous.skipped.items() if file not in listed})
    elif previous is not None:
        summary.removed_images += len(set(previous.files) - {path.name for path in files})
    for path in files:
        summary.images += 1
        digest = image_sha256(path, key)
        plan.hashes[path.name] = digest
        known = None if previous is None else previous.lookup(path.name, digest)
        if isinstance(known, np.ndarray):
            plan.vectors[path.name] = known
            summary.reused += 1
        elif known is not None:  # failed before with these very bytes: not tried again
            plan.skipped[path.name] = (digest, known)
            summary.skip(known, f"{name}/{path.name}")
        else:
            plan.pending.append(path)
    plan.remaining = len(plan.pending)
    return plan




def remove_images(features_dir: str | Path, extractor: Extractor, person: str, file_names: list[str], *,
                  key: Key | None = None) -> int:
    """Drop images from a person's entry in the cache (their vectors and skip records), by the file names
    they were cached under; the rest of the cache is untouched. A person left with nothing leaves the cache.

    Returns:
        How many vectors were removed.

    Raises:
        InputError: ``person`` is not in the cache. ManifestMismatchError: a cache of another extractor.
    """
    features_dir = Path(features_dir)
    people = _open_or_start_cache(features_dir, extractor, False, key)
    if person not in people:
        raise InputError(f"no person {person!r} in the feature cache {features_dir}")
    before, dropped = people[person], set(file_names)
    keep = [row for row, file in enumerate(before.files) if file not in dropped]
    after = PersonFeatures(name=person, vectors=before.vectors[keep], files=[before.files[row] for row in keep],
                           hashes=[before.hashes[row] for row in keep],
                           skipped={file: record for file, record in before.skipped.items() if file not in dropped})
    counts = {name: len(entry.vectors) for name, entry in people.items()}
    person_file = features_dir / PEOPLE_DIR / f"{person}.npz"
    if len(after.files) or after.skipped:
        after.save(person_file, extractor.fingerprint, key=key)
        counts[person] = len(after.vectors)
    else:
        person_file.unlink(missing_ok=True)
        del counts[person]
    write_manifest(features_dir, cache_manifest(extractor.manifest, counts), key)
    return len(before.files) - len(keep)
