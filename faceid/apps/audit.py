"""The enrolment audit: what in a folder of people would hurt recognition, file by file.

:func:`audit_faces` reads every file of ``<root>/<person>/`` once and reports

* files that are not readable images, images with no face or several faces
  (the largest is what extraction embeds), faces too small or too blurry
  (:class:`faceid.detect.quality.QualityThresholds`);
* exact duplicates (same bytes, also across people) and near duplicates (the
  same picture re-encoded, resized or re-cropped: thumbnails of the aligned
  chips, :func:`faceid.detect.quality.near_duplicate_pairs`); the first copy in
  ``person/file`` order is kept, the others are flagged;
* people with too few usable images;
* with an extractor, likely mislabelled images: each image is compared with
  its own person's centre (the mean vector of that person's *other* images)
  and with every other person's centre; it is flagged when the nearest other
  centre is closer than ``mislabel_ratio`` times its own.

Faces are found and cut exactly as enrolment does (:func:`faceid.apps.enrol.find_faces`,
:func:`faceid.apps.enrol.crop_face`, the same search width as extraction) and embedded as
extraction does (:class:`faceid.features.embedding.FaceEmbedder`, :class:`~faceid.features.embedding.ChipBatcher`). An existing feature cache can lend
its vectors (read only, matched by file hash), so a big folder is not
re-embedded.

:func:`quarantine` moves the flagged files aside; nothing is ever deleted or
overwritten.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceid.apps.enrol import DEFAULT_CROP, CropOptions, crop_face, find_faces
from faceid.detect.quality import DEFAULT_THRESHOLDS, QualityThresholds, measure_face, near_duplicate_pairs, thumbnail
from faceid.errors import ImageReadError, InputError
from faceid.features.embedding import ChipBatcher
from faceid.io.images import image_sha256, list_people, read_image
from faceid.io.sealed import Key
from faceid.io.store import check_output_folder
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

# Kind of finding -> what it means (the table's words). The order is the report's.
KINDS: dict[str, str] = {
    "unreadable": "unreadable or not an image",
    "no_face": "no face found",
    "several_faces": "several faces (the largest is embedded)",
    "too_small": "face too small",
    "too_blurry": "face too blurry",
    "exact_duplicate": "exact duplicate (same bytes)",
    "near_duplicate": "near duplicate (same picture)",
    "mislabelled": "likely mislabelled",
    "too_few_images": "person with too few usable images",
}
# An image with one of these gives nothing useful to enrolment. "several faces"
# is not one of them: extraction still embeds the largest face.
UNUSABLE_KINDS = frozenset(
    {"unreadable", "no_face", "too_small", "too_blurry", "exact_duplicate", "near_duplicate", "mislabelled"}
)


@dataclass(frozen=True)
class Finding:
    """One problem: with a person's file, or (``file`` None) with a person."""

    kind: str  # a key of KINDS
    person: str
    file: str | None
    detail: str
    related: str | None = None  # the other "person/file" or person the finding points at

    @property
    def where(self) -> str:
        return self.person if self.file is None else f"{self.person}/{self.file}"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "person": self.person, "file": self.file, "detail": self.detail,
                "related": self.related}


@dataclass
class AuditReport:
    """Everything :func:`audit_faces` found (printed by check_faces.py)."""

    root: str
    people: int = 0
    files: int = 0
    findings: list[Finding] = field(default_factory=list)
    extractor: str | None = None  # backbone used for the mislabel check; None: not checked
    embedded: int = 0  # vectors computed now
    reused: int = 0  # vectors taken from the feature cache
    ignored: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        counts = {kind: 0 for kind in KINDS if kind not in self.ignored}
        for finding in self.findings:
            counts[finding.kind] += 1
        return counts

    def flagged_files(self) -> list[tuple[str, str]]:
        """``(person, file)`` of every file with at least one finding, in report order, once each."""
        seen: dict[tuple[str, str], None] = {}
        for finding in self.findings:
            if finding.file is not None:
                seen.setdefault((finding.person, finding.file), None)
        return list(seen)

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "people": self.people,
            "files": self.files,
            "flagged_files": len(self.flagged_files()),
            "counts": self.counts(),
            "mislabel_check": self.extractor,
            "embedded": self.embedded,
            "reused": self.reused,
            "findings": [finding.as_dict() for finding in self.findings],
        }

    def table(self) -> str:
        """One row per finding (kind, file, detail), then the count of each kind."""
        lines = [f"{self.root}: {self.people} people, {self.files} files"]
        if self.findings:
            where_width = min(max(len(finding.where) for finding in self.findings), 60)
            kind_width = max(len(finding.kind) for finding in self.findings)
            lines.append(f"{'kind':<{kind_width}}  {'file':<{where_width}}  detail")
            lines += [
                f"{finding.kind:<{kind_width}}  {finding.where:<{where_width}}  {finding.detail}"
                for finding in self.findings
            ]
        lines.append("")
        lines.append(f"{'count':>6}  kind")
        for kind, count in self.counts().items():
            note = ""
            if kind == "mislabelled" and self.extractor is None:
                note = "  (not checked: it needs the extractor)"
            lines.append(f"{count:>6}  {kind}: {KINDS[kind]}{note}")
        lines.append(f"{len(self.flagged_files()):>6}  files flagged of {self.files}")
        if self.extractor is not None:
            lines.append(
                f"vectors: {self.reused} from the feature cache, {self.embedded} embedded now ({self.extractor})"
            )
        return "\n".join(lines)


@dataclass
class _Image:
    """What the audit learnt about one file."""

    person: str
    file: str
    sha256: str
    readable: bool = True
    faces: int = 0
    thumbnail: np.ndarray | None = None  # (1024,) float32, for near-duplicates
    vector: np.ndarray | None = None  # (dim,) float32, for the mislabel check

    @property
    def where(self) -> str:
        return f"{self.person}/{self.file}"


def _inspect_images(
    people: dict[str, list[Path]],
    crop: CropOptions,
    thresholds: QualityThresholds,
    embedder,
    cache,
    report: AuditReport,
    progress: bool,
    key: Key | None = None,
) -> list[_Image]:
    """Read, detect, measure (and embed) every file once (encrypted ones opened with ``key``); per-file
    findings go into ``report``."""
    from tqdm import tqdm

    images: list[_Image] = []

    def deliver(embedded: list[_Image], vectors: np.ndarray) -> None:
        for image, vector in zip(embedded, vectors):
            image.vector = vector
        report.embedded += len(embedded)

    embed = embedder.embed_chips if embedder is not None else None
    total = sum(len(files) for files in people.values())
    with tqdm(total=total, desc="audit", unit="img", disable=None if progress else True) as bar, \
            ChipBatcher(embed, deliver, DEFAULTS.batch_size) as batcher:
        for person, files in people.items():
            for path in files:
                bar.update(1)
                image = _Image(person=person, file=path.name, sha256=image_sha256(path, key))
                images.append(image)
                try:
                    pixels = read_image(path, key)
                except ImageReadError as error:
                    image.readable = False
                    report.findings.append(Finding("unreadable", person, path.name, str(error).split(": ", 1)[-1]))
                    continue
                faces = find_faces(pixels, crop)
                image.faces = len(faces)
                if not faces:
                    report.findings.append(Finding("no_face", person, path.name, f"{crop.detector} detector, "
                                                   f"upsample {crop.cropper().options.effective_upsample}: try a larger upsample or the "
                                                   "blazeface detector"))
                    continue
                face = faces[0]
                if len(faces) > 1:
                    report.findings.append(Finding(
                        "several_faces", person, path.name,
                        f"{len(faces)} faces; largest {face.box.width} px wide, next {faces[1].box.width} px"))
                chip = crop_face(pixels, face, crop)
                quality = measure_face(face, chip)
                if quality.face_size < thresholds.min_face_size:
                    report.findings.append(Finding(
                        "too_small", person, path.name,
                        f"face {quality.face_size} px wide (min {thresholds.min_face_size})"))
                if quality.sharpness < thresholds.min_sharpness:
                    report.findings.append(Finding(
                        "too_blurry", person, path.name,
                        f"sharpness {quality.sharpness:.1f} (min {thresholds.min_sharpness:g})"))
                image.thumbnail = thumbnail(chip)
                if embedder is None:
                    continue
                hit = None if cache is None else cache.lookup(person, path.name, image.sha256)
                if isinstance(hit, np.ndarray):
                    image.vector = hit
                    report.reused += 1
                    continue
                batcher.add(image, embedder.chips(pixels, [face])[0])
    return images


def _duplicates(images: list[_Image], thresholds: QualityThresholds, report: AuditReport) -> set[int]:
    """Flag exact and near duplicates; returns the indices of the extra copies."""
    extra: set[int] = set()
    first_with_hash: dict[str, int] = {}
    for index, image in enumerate(images):
        original = first_with_hash.setdefault(image.sha256, index)
        if original != index:
            extra.add(index)
            other = images[original]
            across = "" if other.person == image.person else f" (filed under another person, {other.person})"
            report.findings.append(Finding("exact_duplicate", image.person, image.file,
                                           f"same bytes as {other.where}{across}", related=other.where))
    candidates = [index for index, image in enumerate(images) if image.thumbnail is not None and index not in extra]
    if not candidates:
        return extra
    thumbnails = np.stack([images[index].thumbnail for index in candidates])
    close: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for later, earlier, distance in near_duplicate_pairs(thumbnails, thresholds.near_duplicate):
        close[candidates[later]].append((candidates[earlier], distance))
    # Greedy in file order: an image is a copy of the closest earlier image that was kept.
    for index in sorted(close):
        kept = [(distance, earlier) for earlier, distance in close[index] if earlier not in extra]
        if not kept:
            continue
        distance, earlier = min(kept)
        extra.add(index)
        image, other = images[index], images[earlier]
        across = "" if other.person == image.person else f", filed under another person ({other.person})"
        report.findings.append(Finding(
            "near_duplicate", image.person, image.file,
            f"same picture as {other.where} (distance {distance:.3f} <= {thresholds.near_duplicate:g}{across})",
            related=other.where))
    return extra


def _mislabelled(images: list[_Image], skip: set[int], thresholds: QualityThresholds, report: AuditReport) -> None:
    """Flag images much closer to another person's centre than to their own (leave-one-out).

    Each image's own centre is the mean of its person's *other* images; the
    other people's centres use all their images. Within a person the most
    convincing image is flagged first and the rest are measured again without
    it: with two images, a wrong one would otherwise drag the right one's own
    distance up and both would be flagged.
    """
    members = [index for index, image in enumerate(images) if image.vector is not None and index not in skip]
    names = sorted({images[index].person for index in members})
    if len(names) < 2:
        return  # no other person to be confused with
    label_of = {name: position for position, name in enumerate(names)}
    vectors = np.stack([images[index].vector for index in members]).astype(np.float64)  # (n, dim)
    labels = np.array([label_of[images[index].person] for index in members])
    counts = np.bincount(labels, minlength=len(names))
    sums = np.zeros((len(names), vectors.shape[1]))
    np.add.at(sums, labels, vectors)
    centres = sums / counts[:, None]  # (people, dim)
    centre_norms = (centres**2).sum(axis=1)
    other_distance = np.empty(len(members))
    nearest_other = np.empty(len(members), dtype=np.int64)
    own_distance = np.empty(len(members))
    for start in range(0, len(members), 1024):
        block, block_labels = vectors[start : start + 1024], labels[start : start + 1024]
        squared = (block**2).sum(axis=1)[:, None] - 2 * block @ centres.T + centre_norms[None, :]
        to_centres = np.sqrt(np.maximum(squared, 0.0))  # (block, people)
        to_centres[np.arange(len(block)), block_labels] = np.inf
        nearest_other[start : start + 1024] = to_centres.argmin(axis=1)
        other_distance[start : start + 1024] = to_centres.min(axis=1)
        own_centre = (sums[block_labels] - block) / np.maximum(counts[block_labels] - 1, 1)[:, None]
        own_distance[start : start + 1024] = np.linalg.norm(block - own_centre, axis=1)
    suspects = (counts[labels] >= 2) & (other_distance < thresholds.mislabel_ratio * own_distance)
    for label in np.unique(labels[suspects]):
        remaining = list(np.nonzero(labels == label)[0])
        while len(remaining) >= 2:
            rows = np.array(remaining)
            own_sum = vectors[rows].sum(axis=0)
            own = np.linalg.norm(vectors[rows] - (own_sum - vectors[rows]) / (len(rows) - 1), axis=1)
            ratios = other_distance[rows] / np.maximum(own, 1e-12)
            worst = int(np.argmin(ratios))
            if ratios[worst] >= thresholds.mislabel_ratio:
                break
            row = int(rows[worst])
            image, other = images[members[row]], names[int(nearest_other[row])]
            report.findings.append(Finding(
                "mislabelled", image.person, image.file,
                f"{own[worst]:.3f} from {image.person}'s centre, {other_distance[row]:.3f} from {other}'s "
                f"(ratio {ratios[worst]:.2f} < {thresholds.mislabel_ratio:g})",
                related=other))
            remaining.remove(row)


def audit_faces(
    faces_root: str | Path,
    *,
    crop: CropOptions = DEFAULT_CROP,
    thresholds: QualityThresholds = DEFAULT_THRESHOLDS,
    extractor=None,
    features_dir: str | Path | None = None,
    ignore: tuple[str, ...] = (),
    progress: bool = True,
    key: Key | None = None,
) -> AuditReport:
    """Inspect every file of ``<faces_root>/<person>/`` and report what is wrong.

    Args:
        crop: detection options (as extraction will use them) and the crop measured.
        thresholds: size, sharpness, near-duplicate, minimum images, mislabel ratio.
        extractor: a loaded :class:`faceid.backbones.Extractor` enables the
            mislabel check; ``None`` skips it.
        features_dir: a feature cache made by ``extractor``; its vectors are
            reused for files whose hash matches, and it is never modified.
        ignore: kinds (keys of :data:`KINDS`) to leave out of the report; an
            ignored kind does not make an image unusable either.
        key: what an encrypted cache and encrypted crops open with (:mod:`faceid.io.sealed`).

    Raises:
        InputError: a missing or empty folder, an unknown kind, or a cache
            without an extractor.
        ManifestMismatchError: the cache was made by another extractor.
    """
    from faceid.features.cache import FeatureCache
    from faceid.features.embedding import FaceEmbedder

    unknown = sorted(set(ignore) - set(KINDS))
    if unknown:
        raise InputError(f"unknown kind(s) {', '.join(unknown)}: choose from {', '.join(KINDS)}")
    if features_dir is not None and extractor is None:
        raise InputError("a feature cache is only used for the mislabel check: pass `extractor` with it")
    faces_root = Path(faces_root)
    people = list_people(faces_root)
    # Read only: its vectors stand in for files with the same bytes (FeatureCache.lookup).
    cache = FeatureCache.load(features_dir, extractor.manifest, key=key) if features_dir is not None else None
    report = AuditReport(
        root=str(faces_root), people=len(people), files=sum(len(files) for files in people.values()),
        extractor=None if extractor is None else extractor.name, ignored=tuple(ignore),
    )
    embedder = None if extractor is None else FaceEmbedder(extractor)
    images = _inspect_images(people, crop, thresholds, embedder, cache, report, progress, key)
    extra_copies = _duplicates(images, thresholds, report)
    if extractor is not None:
        _mislabelled(images, extra_copies, thresholds, report)
    report.findings = [finding for finding in report.findings if finding.kind not in ignore]
    if "too_few_images" not in ignore:
        unusable = {(finding.person, finding.file) for finding in report.findings if finding.kind in UNUSABLE_KINDS}
        usable = Counter(
            image.person for image in images if image.faces > 0 and (image.person, image.file) not in unusable
        )
        for person, files in people.items():
            if usable[person] < thresholds.min_images:
                report.findings.append(Finding(
                    "too_few_images", person, None,
                    f"{usable[person]} usable of {len(files)} files (min {thresholds.min_images})"))
    order = {kind: position for position, kind in enumerate(KINDS)}
    report.findings.sort(key=lambda finding: (order[finding.kind], finding.person, finding.file or ""))
    return report


# --------------------------------------------------------------------------------------
# Quarantine
# --------------------------------------------------------------------------------------


def move_without_overwrite(source: Path, folder: Path) -> Path:
    """Move a file into ``folder`` under its name, or ``<stem>.<n><suffix>`` when that is taken.

    A hard link claims the new name (failing, never replacing, if it exists) and
    then the old name is removed; across file systems the file is copied into a
    name created exclusively. Returns the new path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for attempt in range(10_000):
        target = folder / (source.name if attempt == 0 else f"{source.stem}.{attempt}{source.suffix}")
        try:
            os.link(source, target)
        except FileExistsError:
            continue
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            try:
                with open(source, "rb") as reader, open(target, "xb") as writer:
                    shutil.copyfileobj(reader, writer)
            except FileExistsError:
                continue
            shutil.copystat(source, target)
        source.unlink()
        return target
    raise InputError(f"no free name for {source.name} in {folder}: empty the quarantine folder")


def quarantine(report: AuditReport, faces_root: str | Path, destination: str | Path) -> list[tuple[Path, Path]]:
    """Move every flagged file to ``<destination>/<person>/<file>``; returns ``(from, to)`` pairs.

    Raises:
        InputError: ``destination`` is inside ``faces_root`` (it would become a person).
    """
    faces_root, destination = Path(faces_root), Path(destination)
    check_output_folder(destination, "`destination`", faces_root, "`faces_root`", "it would be read as a person")
    moves = []
    for person, file in report.flagged_files():
        source = faces_root / person / file
        if not source.is_file():
            logger.warning("%s is gone: not moved", source)
            continue
        moves.append((source, move_without_overwrite(source, destination / person)))
    return moves
