"""Enrolling from folders of photos: one aligned face crop per photo (selfies2face.py)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceid.apps.enrol import CROP_SUFFIX, DEFAULT_CROP, CropOptions, crop_face, find_faces
from faceid.errors import ImageReadError, InputError
from faceid.io.images import encode_png, list_people, read_image
from faceid.io.sealed import Key
from faceid.io.store import check_output_folder, write_new_private

logger = logging.getLogger(__name__)

# A photo with several faces: skip it (reported), or save its largest face.
MULTI_CHOICES = ("skip", "largest")


# --------------------------------------------------------------------------------------
# Selfies: one folder per person in, face crops out
# --------------------------------------------------------------------------------------

# What happened to each selfie: the table's columns and the JSON keys of selfies2face.py.
# (Outcomes of one photo, not the cache's skip reasons faceid.detect.faces.NO_FACE and
# faceid.io.images.UNREADABLE, hence their own names.)
SAVED = "saved"
ALREADY_DONE = "already done"
NO_FACE_OUTCOME = "no face"
SEVERAL_FACES_OUTCOME = "several faces"
UNREADABLE_OUTCOME = "unreadable"
OUTCOMES = (SAVED, ALREADY_DONE, NO_FACE_OUTCOME, SEVERAL_FACES_OUTCOME, UNREADABLE_OUTCOME)


@dataclass
class SelfiesSummary:
    """What selfies_to_faces did, per person (printed by selfies2face.py)."""

    multi: str = "skip"
    counts: dict[str, Counter] = field(default_factory=dict)  # person -> outcome -> files
    problems: dict[str, list[str]] = field(default_factory=dict)  # outcome -> "person/file" (or with reason)
    largest_of_several: list[str] = field(default_factory=list)  # saved with --multi largest

    def add(self, person: str, outcome: str, entry: str | None = None) -> None:
        self.counts.setdefault(person, Counter())[outcome] += 1
        if entry is not None:
            self.problems.setdefault(outcome, []).append(entry)

    def total(self, outcome: str) -> int:
        return sum(counts[outcome] for counts in self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "multi": self.multi,
            "people": {
                person: {outcome: counts[outcome] for outcome in OUTCOMES} for person, counts in self.counts.items()
            },
            "totals": {outcome: self.total(outcome) for outcome in OUTCOMES},
            "files": self.problems,
            "largest_of_several": self.largest_of_several,
        }

    def report(self) -> str:
        """A table per person, then the files behind each problem."""
        width = max([len("person"), len("total")] + [len(person) for person in self.counts])
        header = f"{'person':<{width}}  " + "  ".join(f"{outcome:>13}" for outcome in OUTCOMES)
        lines = [header]
        for person, counts in self.counts.items():
            lines.append(f"{person:<{width}}  " + "  ".join(f"{counts[outcome]:>13}" for outcome in OUTCOMES))
        lines.append(f"{'total':<{width}}  " + "  ".join(f"{self.total(outcome):>13}" for outcome in OUTCOMES))
        notes = {
            NO_FACE_OUTCOME: "no face (try upsample 2 or the cnn detector)",
            SEVERAL_FACES_OUTCOME: "several faces, skipped (multi 'largest' saves the largest)",
            UNREADABLE_OUTCOME: "unreadable or not an image",
        }
        for outcome, note in notes.items():
            for entry in self.problems.get(outcome, []):
                lines.append(f"{note}: {entry}")
        lines += [f"several faces, largest saved: {entry}" for entry in self.largest_of_several]
        return "\n".join(lines)


def crop_names(files: list[Path]) -> dict[Path, str]:
    """The crop file name of each source file: ``IMG_1.jpg`` -> ``IMG_1.png``.

    When two sources share a stem (``a.jpg``, ``a.heic``) both keep their
    suffix in the name (``a_jpg.png``, ``a_heic.png``), so names never depend on
    which file was processed first and a re-run finds the same names.
    """
    stems = Counter(path.stem for path in files)
    return {
        path: f"{path.stem}{CROP_SUFFIX}"
        if stems[path.stem] == 1
        else f"{path.stem}_{path.suffix.lstrip('.')}{CROP_SUFFIX}"
        for path in files
    }


def _check_selfie_folders(selfies_root: Path, faces_root: Path) -> None:
    check_output_folder(
        faces_root, "`faces_root`", selfies_root, "`selfies_root`", "the crops would be read as selfies next time"
    )


def selfies_to_faces(
    selfies_root: str | Path,
    faces_root: str | Path,
    *,
    crop: CropOptions = DEFAULT_CROP,
    multi: str = "skip",
    progress: bool = True,
    key: Key | None = None,
) -> SelfiesSummary:
    """Cut the face out of every photo of ``<selfies_root>/<person>/`` into ``<faces_root>/<person>/``.

    Each photo gives one crop (:func:`crop_face`), named after the photo
    (:func:`crop_names`). A crop that already exists is left alone and counted
    as already done, so re-running only does what is new (and retries photos
    that failed, e.g. with other detector options). EXIF orientation is
    applied by :func:`faceid.io.images.read_image`.

    Args:
        multi: a photo with several faces is ``"skip"``-ped (reported) or its
            ``"largest"`` face is saved.
        key: the crops are sealed with it (:mod:`faceid.io.sealed`), and encrypted
            photos open with it; ``None``: plaintext crops.

    Raises:
        InputError: ``selfies_root`` is missing or has no person folders, or
            ``faces_root`` is inside it or is a file.
    """
    from tqdm import tqdm

    if multi not in MULTI_CHOICES:
        raise InputError(f"unknown `multi` {multi!r}: choose one of {', '.join(MULTI_CHOICES)}")
    selfies_root, faces_root = Path(selfies_root), Path(faces_root)
    if not selfies_root.is_dir():
        raise InputError(
            f"selfies folder {selfies_root} does not exist or is not a folder: "
            "pass `selfies_root`, a folder with one sub-folder of photos per person"
        )
    people = list_people(selfies_root)
    _check_selfie_folders(selfies_root, faces_root)
    summary = SelfiesSummary(multi=multi)
    total = sum(len(files) for files in people.values())
    with tqdm(total=total, desc="selfies", unit="img", disable=None if progress else True) as bar:
        for person, files in people.items():
            summary.counts[person] = Counter()
            names = crop_names(files)
            for path in files:
                bar.update(1)
                entry = f"{person}/{path.name}"
                destination = faces_root / person / names[path]
                if destination.exists():
                    summary.add(person, ALREADY_DONE)
                    continue
                try:
                    image = read_image(path, key)
                except ImageReadError as error:
                    logger.info("skipping %s", error)
                    summary.add(person, UNREADABLE_OUTCOME, entry)
                    continue
                faces = find_faces(image, crop)
                if not faces:
                    summary.add(person, NO_FACE_OUTCOME, entry)
                    continue
                if len(faces) > 1 and multi == "skip":
                    summary.add(person, SEVERAL_FACES_OUTCOME, f"{entry} ({len(faces)} faces)")
                    continue
                try:
                    write_new_private(destination, encode_png(crop_face(image, faces[0], crop)), key=key)
                except FileExistsError:
                    summary.add(person, ALREADY_DONE)
                    continue
                summary.add(person, SAVED)
                if len(faces) > 1:
                    summary.largest_of_several.append(f"{entry} ({len(faces)} faces) -> {destination.name}")
    return summary
