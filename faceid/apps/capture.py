"""Enrolling one person from a webcam or a video: good, varied face crops saved as they come (capture.py)."""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceid.apps.enrol import (
    CROP_SUFFIX,
    DEFAULT_CROP,
    FRAMES_DIR,
    CropOptions,
    crop_face,
    find_faces,
    save_new_image,
)
from faceid.detect.faces import DetectedFace
from faceid.detect.quality import DEFAULT_THRESHOLDS, NearDuplicateIndex, QualityThresholds, measure_face, thumbnail
from faceid.errors import ImageReadError, InputError
from faceid.io.display import Window, no_window_reason
from faceid.io.images import encode_png, list_image_files, read_image
from faceid.io.sealed import Key
from faceid.io.store import write_new_private

logger = logging.getLogger(__name__)

WINDOW_NAME = "faceid capture"
GOOD_COLOUR_BGR = (60, 200, 60)
BAD_COLOUR_BGR = (40, 40, 230)


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


def _existing_index(folder: Path, max_distance: float, key: Key | None) -> NearDuplicateIndex:
    """Thumbnails of the images already in the folder (encrypted ones opened with ``key``), so new
    crops do not repeat them."""
    index = NearDuplicateIndex(max_distance)
    for path in list_image_files(folder) if folder.is_dir() else []:
        try:
            index.add(path.name, thumbnail(read_image(path, key)))
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
    "saving with the s key needs a window: set `auto` to save good faces on their own (that also runs without a "
    "window, e.g. on a video file)"
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
        raise InputError(f"`folder` {folder} is a file: pass the person's folder, e.g. faces/<person>")
    person = folder.resolve().name
    if not person:
        raise InputError(f"`folder` {folder} has no name to use for the person: pass faces/<person>")
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
    key: Key | None = None,
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
        key: crops and frames are sealed with it (:mod:`faceid.io.sealed`), and the
            folder's encrypted crops open with it; ``None``: plaintext.

    Raises:
        InputError: manual mode without a window, a bad folder, or a source that
            cannot be opened.
    """
    from tqdm import tqdm

    if options.every < 1 or options.max_crops < 1:
        raise InputError(f"every and max must be at least 1 (got {options.every} and {options.max_crops})")
    if not options.auto and not display:
        raise InputError(f"no window ({no_window_reason() or 'none was asked for'}); {_NO_WINDOW}")
    folder, person = _person_folder(Path(folder))
    started = time.perf_counter()
    index = _existing_index(folder, thresholds.near_duplicate, key)
    summary = CaptureSummary(source=source.description, folder=str(folder), existing=len(index))

    def save(frame_rgb: np.ndarray, chip: np.ndarray) -> Path:
        path = save_new_image(folder, person, chip, key=key)
        if options.save_frames:
            try:
                write_new_private(folder / FRAMES_DIR / f"{path.stem}{CROP_SUFFIX}", encode_png(frame_rgb), key=key)
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
                    pressed = window.show(_overlay(frame_rgb, faces, crop, thresholds, options.auto, len(summary.saved)))
                    if pressed == "q":
                        summary.stopped_by = "q pressed"
                        break
                    if pressed == "s":
                        if len(faces) == 1:
                            chip = crop_face(frame_rgb, faces[0], crop)
                            index.add(save(frame_rgb, chip).name, thumbnail(chip))
                        else:
                            logger.warning("not saved: %d faces in view (s saves only when there is exactly one)",
                                           len(faces))
                if options.auto and len(summary.saved) >= options.max_crops:
                    summary.stopped_by = f"saved the maximum, {options.max_crops} crops"
                    break
            else:
                if options.max_frames is not None and summary.frames >= options.max_frames:
                    summary.stopped_by = "max_frames"
        except KeyboardInterrupt:
            summary.stopped_by = "interrupted"
            logger.warning("interrupted: the %d crops saved are kept", len(summary.saved))
    summary.seconds = time.perf_counter() - started
    return summary
