"""Building enrolment folders: face crops from a camera, a video or a folder of selfies.

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

import itertools
import logging
import re
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceid.detect.faces import DetectedFace, FaceCropper, FaceOptions
from faceid.detect.quality import DEFAULT_THRESHOLDS, NearDuplicateIndex, QualityThresholds, measure_face, thumbnail
from faceid.errors import ImageReadError, InputError
from faceid.io.display import Window
from faceid.io.images import encode_png, list_image_files, list_people, read_image
from faceid.io.store import check_output_folder, write_new_file
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
MULTI_CHOICES = ("skip", "largest")
WINDOW_NAME = "faceid capture"
GOOD_COLOUR_BGR = (60, 200, 60)
BAD_COLOUR_BGR = (40, 40, 230)


@dataclass(frozen=True)
class CropOptions:
    """How faces are found and cut out for enrolment."""

    # Saved crop side in pixels (see the module docstring: any size is the same crop).
    size: int = CROP_SIZE
    padding: float = DEFAULTS.align_padding
    upsample: int = DEFAULTS.upsample
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


def save_new_image(folder: Path, prefix: str, image_rgb: np.ndarray) -> Path:
    """Save a PNG as ``<folder>/<prefix>_<NNNN>.png`` with the next free number; returns its path."""
    data = encode_png(image_rgb)
    number = next_free_number(folder, prefix)
    while True:
        path = folder / f"{prefix}_{number:04d}{CROP_SUFFIX}"
        try:
            write_new_file(path, data)
            return path
        except FileExistsError:
            number += 1  # taken since we looked (another capture into the same folder)


# --------------------------------------------------------------------------------------
# Capture from a camera or a video
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptureOptions:
    """What capture.py does with the frames."""

    # False: the user saves with the s key (needs a window). True: faces that pass
    # every quality check are saved on their own.
    auto: bool = False
    # Auto mode looks at one frame in `every` (5 = six times a second at 30 fps):
    # consecutive frames are nearly identical, and each look costs a detection.
    every: int = 5
    # Auto mode stops after saving this many crops; 10-20 varied crops make a
    # good enrolment, more mostly repeats.
    max_crops: int = 20
    # Also keep the full frame of each saved crop, in <folder>/frames/.
    save_frames: bool = False
    # Stop after this many frames (None: the whole video, or until q / Ctrl-C).
    max_frames: int | None = None


DEFAULT_CAPTURE = CaptureOptions()


@dataclass
class CaptureSummary:
    """What one capture run did (printed by capture.py)."""

    source: str
    folder: str
    existing: int = 0  # images already in the folder (new crops must not duplicate them)
    frames: int = 0  # frames read
    checked: int = 0  # frames auto mode examined
    saved: list[str] = field(default_factory=list)  # new crop paths, in order
    rejected: Counter = field(default_factory=Counter)  # reason -> checked frames (a frame may fail several)
    stopped_by: str = "end of source"
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "folder": self.folder,
            "existing": self.existing,
            "frames": self.frames,
            "checked": self.checked,
            "saved": self.saved,
            "rejected": dict(self.rejected.most_common()),
            "stopped_by": self.stopped_by,
            "seconds": round(self.seconds, 3),
        }

    def report(self) -> str:
        lines = [
            f"source: {self.source} ({self.stopped_by}), {self.frames} frames in {self.seconds:.1f} s",
            f"folder: {self.folder}: {self.existing} images before, {len(self.saved)} saved now",
        ]
        if self.checked:
            lines.append(f"checked {self.checked} frames; not saved because:")
            lines += [f"  {reason}: {count}" for reason, count in self.rejected.most_common()]
        lines += [f"saved {path}" for path in self.saved]
        return "\n".join(lines)


def _existing_index(folder: Path, max_distance: float) -> NearDuplicateIndex:
    """Thumbnails of the images already in the folder, so new crops do not repeat them."""
    index = NearDuplicateIndex(max_distance)
    for path in list_image_files(folder) if folder.is_dir() else []:
        try:
            index.add(path.name, thumbnail(read_image(path)))
        except ImageReadError as error:
            logger.warning("ignoring %s", error)
    return index


def _auto_decision(
    frame_rgb: np.ndarray,
    faces: list[DetectedFace],
    crop: CropOptions,
    thresholds: QualityThresholds,
    index: NearDuplicateIndex,
) -> tuple[DetectedFace, np.ndarray, np.ndarray] | list[str]:
    """``(face, crop, thumbnail)`` to save, or the reasons not to.

    Faces smaller than ``min_face_size`` do not count as "in view" (a distant
    passer-by does not spoil a close-up); two or more big enough faces do.
    """
    if not faces:
        return ["no face"]
    candidates = [face for face in faces if face.box.width >= thresholds.min_face_size]
    if not candidates:
        return ["too small"]
    if len(candidates) > 1:
        return ["several faces"]
    face = candidates[0]
    chip = crop_face(frame_rgb, face, crop)
    problems = measure_face(face, chip).problems(thresholds)
    if problems:
        return problems
    chip_thumbnail = thumbnail(chip)
    duplicate = index.duplicate_of(chip_thumbnail)
    if duplicate is not None:
        logger.debug("near duplicate of %s (distance %.3f)", *duplicate)
        return ["near duplicate"]
    return face, chip, chip_thumbnail


_NO_WINDOW = (
    "saving with the s key needs a window, and there is no display here (or --no_display was given): "
    "pass --auto to save good faces on their own (with --no_display it runs headless, e.g. on --video_path), "
    "or run where a display is available with opencv-python (GUI) installed"
)


def _overlay(
    frame_rgb: np.ndarray, faces: list[DetectedFace], crop: CropOptions, thresholds: QualityThresholds,
    auto: bool, saved: int,
) -> np.ndarray:
    """A BGR copy of the frame with each face's box and what stops it being saved."""
    import cv2

    canvas = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    scale = max(0.4, min(frame_rgb.shape[:2]) / 720)
    thickness = max(1, round(2 * scale))
    for face in faces:
        problems = measure_face(face, crop_face(frame_rgb, face, crop)).problems(thresholds)
        if len(faces) > 1:
            problems.append("several faces")
        colour = BAD_COLOUR_BGR if problems else GOOD_COLOUR_BGR
        box = face.box
        cv2.rectangle(canvas, (box.left, box.top), (box.right - 1, box.bottom - 1), colour, thickness)
        label = ", ".join(problems) or "ok"
        cv2.putText(canvas, label, (box.left, min(box.bottom + int(20 * scale), canvas.shape[0] - 4)),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
    status = f"saved {saved}   {'auto   ' if auto else ''}s: save   q: quit"
    cv2.putText(canvas, status, (8, int(24 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thickness, cv2.LINE_AA)
    return canvas


def _person_folder(folder: Path) -> tuple[Path, str]:
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--output {folder} is a file: pass the person's folder, e.g. faces/<person>")
    person = folder.resolve().name
    if not person:
        raise InputError(f"--output {folder} has no name to use for the person: pass faces/<person>")
    return folder, person


def capture_faces(
    source,
    folder: str | Path,
    *,
    options: CaptureOptions = DEFAULT_CAPTURE,
    crop: CropOptions = DEFAULT_CROP,
    thresholds: QualityThresholds = DEFAULT_THRESHOLDS,
    display: bool = False,
    progress: bool = True,
) -> CaptureSummary:
    """Save aligned face crops from a camera or video into one person's folder.

    Crops are named ``<person>_<NNNN>.png`` after the folder (the person),
    continuing after the highest number already there.

    Args:
        source: a :class:`faceid.io.video.FrameSource` (camera or video), not yet entered;
            it is opened here and always released, also on ``q`` or Ctrl-C.
        folder: the person's folder, created if missing; existing files stay.
        options: auto or manual, how often, how many (see :class:`CaptureOptions`).
        display: show a window; ``s`` saves the face in view when there is exactly
            one, ``q`` stops. Without it only ``options.auto`` makes sense.

    Raises:
        InputError: manual mode without a window, a bad folder, or a source that
            cannot be opened.
    """
    from tqdm import tqdm

    if options.every < 1 or options.max_crops < 1:
        raise InputError(f"every and max must be at least 1 (got {options.every} and {options.max_crops})")
    if not options.auto and not display:
        raise InputError(_NO_WINDOW)
    folder, person = _person_folder(Path(folder))
    started = time.perf_counter()
    index = _existing_index(folder, thresholds.near_duplicate)
    summary = CaptureSummary(source=source.description, folder=str(folder), existing=len(index))

    def save(frame_rgb: np.ndarray, chip: np.ndarray) -> Path:
        path = save_new_image(folder, person, chip)
        if options.save_frames:
            try:
                write_new_file(folder / FRAMES_DIR / f"{path.stem}{CROP_SUFFIX}", encode_png(frame_rgb))
            except FileExistsError:
                logger.warning("frame for %s not saved: %s/%s exists", path.name, FRAMES_DIR, path.name)
        summary.saved.append(str(path))
        logger.info("saved %s", path)
        return path

    with ExitStack() as stack:
        window = stack.enter_context(Window(WINDOW_NAME, _NO_WINDOW)) if display else None
        stack.enter_context(source)
        total = source.frame_count
        if options.max_frames is not None:
            total = options.max_frames if total is None else min(total, options.max_frames)
        bar = stack.enter_context(tqdm(total=total, desc="capture", unit="frame", disable=None if progress else True))
        try:
            for frame_index, _, frame_rgb in itertools.islice(source, options.max_frames):
                summary.frames += 1
                bar.update(1)
                due = options.auto and frame_index % options.every == 0
                # With a window every frame is searched, so the boxes follow the face.
                faces = find_faces(frame_rgb, crop) if due or window is not None else []
                if due:
                    summary.checked += 1
                    decision = _auto_decision(frame_rgb, faces, crop, thresholds, index)
                    if isinstance(decision, list):
                        summary.rejected.update(decision)
                    else:
                        _, chip, chip_thumbnail = decision
                        index.add(save(frame_rgb, chip).name, chip_thumbnail)
                        bar.set_postfix(saved=len(summary.saved))
                if window is not None:
                    key = window.show(_overlay(frame_rgb, faces, crop, thresholds, options.auto, len(summary.saved)))
                    if key == "q":
                        summary.stopped_by = "q pressed"
                        break
                    if key == "s":
                        if len(faces) == 1:
                            chip = crop_face(frame_rgb, faces[0], crop)
                            index.add(save(frame_rgb, chip).name, thumbnail(chip))
                        else:
                            logger.warning("not saved: %d faces in view (s saves only when there is exactly one)",
                                           len(faces))
                if options.auto and len(summary.saved) >= options.max_crops:
                    summary.stopped_by = f"saved --max {options.max_crops}"
                    break
            else:
                if options.max_frames is not None and summary.frames >= options.max_frames:
                    summary.stopped_by = "max_frames"
        except KeyboardInterrupt:
            summary.stopped_by = "interrupted"
            logger.warning("interrupted: the %d crops saved are kept", len(summary.saved))
    summary.seconds = time.perf_counter() - started
    return summary


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
            NO_FACE_OUTCOME: "no face (try --upsample 2 or --detector cnn)",
            SEVERAL_FACES_OUTCOME: "several faces, skipped (--multi largest saves the largest)",
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
        faces_root, "--faces_path", selfies_root, "--face_selfies", "the crops would be read as selfies next time"
    )


def selfies_to_faces(
    selfies_root: str | Path,
    faces_root: str | Path,
    *,
    crop: CropOptions = DEFAULT_CROP,
    multi: str = "skip",
    progress: bool = True,
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

    Raises:
        InputError: ``selfies_root`` is missing or has no person folders, or
            ``faces_root`` is inside it or is a file.
    """
    from tqdm import tqdm

    if multi not in MULTI_CHOICES:
        raise InputError(f"unknown --multi {multi!r}: choose one of {', '.join(MULTI_CHOICES)}")
    selfies_root, faces_root = Path(selfies_root), Path(faces_root)
    if not selfies_root.is_dir():
        raise InputError(
            f"selfies folder {selfies_root} does not exist or is not a folder: "
            "pass --face_selfies DIR with one sub-folder of photos per person"
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
                    image = read_image(path)
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
                    write_new_file(destination, encode_png(crop_face(image, faces[0], crop)))
                except FileExistsError:
                    summary.add(person, ALREADY_DONE)
                    continue
                summary.add(person, SAVED)
                if len(faces) > 1:
                    summary.largest_of_several.append(f"{entry} ({len(faces)} faces) -> {destination.name}")
    return summary
