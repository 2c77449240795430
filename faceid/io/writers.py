"""Where live results go: an annotated video, a folder of annotated stills, JSON lines.

Writes go through :mod:`faceid.io.store`'s temporary names: an annotated video is
recorded under a hidden name and renamed at the end (a crash never passes a
half-written file off as a result); JSON lines are flushed one by one, so an
interrupted run keeps what it did.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from faceid.errors import InputError
from faceid.io.store import commit, temporary_beside
from faceid.io.video import FALLBACK_FPS

if TYPE_CHECKING:  # annotations only: typing.Self needs Python 3.11
    from typing_extensions import Self

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv"})
# OpenCV writes these formats as single-channel images only.
GREY_ONLY_SUFFIXES = frozenset({".pgm"})


class AnnotatedVideo:
    """Annotated frames to a video file, recorded under a temporary name and renamed at the end."""

    def __init__(self, path: Path, fps: float = FALLBACK_FPS):
        if path.is_dir():
            raise InputError(f"`output_path` {path} is a folder: for a video or camera pass a file name such as out.mp4")
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise InputError(
                f"`output_path` {path}: for a video or camera pass a video file name ending in "
                f"{', '.join(sorted(VIDEO_SUFFIXES))} (e.g. out.mp4)"
            )
        self.path = path
        self.fps = fps
        self.temporary = temporary_beside(path)
        self.frames = 0
        self._writer = None

    def write(self, frame_bgr: np.ndarray) -> None:
        import cv2

        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            height, width = frame_bgr.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            self._writer = cv2.VideoWriter(str(self.temporary), fourcc, self.fps, (width, height))
            if not self._writer.isOpened():
                raise InputError(
                    f"cannot write video {self.path}: OpenCV has no mp4v writer for {self.path.suffix} here; try .mp4"
                )
        self._writer.write(frame_bgr)
        self.frames += 1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if self._writer is not None:
            self._writer.release()  # writes the container index: the file is playable from here on
            self._writer = None
        if exc_type is None and self.frames:
            commit(self.temporary, self.path)
            logger.info("wrote %d annotated frames to %s", self.frames, self.path)
        else:
            self.temporary.unlink(missing_ok=True)


class AnnotatedStills:
    """Annotated stills into a folder, under their original names."""

    def __init__(self, folder: Path, source_folder: Path):
        if folder.exists() and not folder.is_dir():
            raise InputError(
                f"`output_path` {folder} is a file: for a folder of images pass a folder to write the annotated "
                "images to"
            )
        if folder.resolve() == source_folder.resolve():
            raise InputError(
                f"`output_path` {folder} is the input folder: the originals would be overwritten; pass another folder"
            )
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.written = 0

    def write(self, frame_bgr: np.ndarray, name: str) -> None:
        import cv2

        path = self.folder / name
        if path.suffix.lower() in GREY_ONLY_SUFFIXES:
            frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
        temporary = temporary_beside(path)
        try:
            written = cv2.imwrite(str(temporary), frame_bgr)
        except cv2.error as error:
            written = False
            logger.debug("imwrite %s: %s", temporary, error)
        if not written:
            temporary.unlink(missing_ok=True)
            logger.warning("annotated %s not written: OpenCV cannot write %s files", name, path.suffix or "suffix-less")
            return
        commit(temporary, path)
        self.written += 1


class JsonLines:
    """One JSON object per face, flushed line by line so an interrupted run keeps what it did."""

    def __init__(self, path: Path):
        if path.is_dir():
            raise InputError(f"`jsonl_path` {path} is a folder: pass a file name such as faces.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Open for the whole run (closed by __exit__): each face is one line, flushed as it comes.
        self._handle: IO[str] = open(path, "w", encoding="utf-8")  # noqa: SIM115

    def write(self, records: list[dict[str, Any]]) -> None:
        """One JSON object per line, flushed at once."""
        for record in records:
            self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self._handle.close()
