"""Frames to identify: a webcam, a video file or a folder of still images.

Each :class:`FrameSource` yields ``(frame_index, time_seconds, frame_rgb)`` with
OpenCV's BGR already converted to RGB, once, here.
"""

from __future__ import annotations

import itertools
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faceid.errors import ImageReadError, InputError
from faceid.io.images import list_image_files, read_image
from faceid.io.sealed import Key

if TYPE_CHECKING:  # annotations only: typing.Self needs Python 3.11
    from typing_extensions import Self

logger = logging.getLogger(__name__)

Frame = tuple[int, float | None, np.ndarray]  # (frame index from 0, seconds or None, (h, w, 3) uint8 RGB)

# Used when a video or camera reports no frame rate (some webcams and containers report 0).
FALLBACK_FPS = 30.0


class FrameSource(ABC):
    """Frames to identify, as a context manager: ``with source: for index, seconds, rgb in source: ...``.

    Cheap checks (a missing file or folder) happen in the constructor, so a
    script can report a wrong path before it loads any model; the device or file
    is opened by ``__enter__`` and always released by ``__exit__``.
    """

    #: "camera", "video" or "images": what ``--output`` means depends on it.
    kind: str = ""
    #: "file: reason" of each input file that was not a readable image (image folders only).
    skipped: list[str] | tuple[str, ...] = ()

    @property
    @abstractmethod
    def description(self) -> str:
        """The source in words, for logs and the summary."""

    @property
    def fps(self) -> float | None:
        """Frames per second of a video or camera; ``None`` for stills."""
        return None

    @property
    def frame_count(self) -> int | None:
        """Number of frames when known in advance (progress bar total)."""
        return None

    def frame_name(self, index: int) -> str:
        """The name recorded as ``source`` for frame ``index`` (the file name for stills)."""
        return self.description

    def open(self) -> None:
        """Acquire the device or file (``__enter__`` calls it)."""

    def close(self) -> None:
        """Release the device or file; safe to call twice."""

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        """Yield ``(frame_index, time_seconds, frame_rgb (h, w, 3) uint8)``, indices from 0."""


class _CaptureSource(FrameSource):
    """What a webcam and a video file share: an OpenCV ``VideoCapture``."""

    def __init__(self) -> None:
        self._capture = None
        self._fps: float | None = None

    def _open_capture(self, target: int | str, failure: str) -> None:
        import cv2

        capture = cv2.VideoCapture(target)
        if not capture.isOpened():
            capture.release()
            raise InputError(failure)
        self._capture = capture
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if not np.isfinite(fps) or fps <= 0:
            logger.warning("%s reports no frame rate: assuming %g fps", self.description, FALLBACK_FPS)
            fps = FALLBACK_FPS
        self._fps = fps

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def is_open(self) -> bool:
        return self._capture is not None

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def _read_rgb(self) -> np.ndarray | None:
        import cv2

        if self._capture is None:
            raise InputError(f"{self.description} is not open: use it inside a 'with' block (run_live does)")
        ok, frame_bgr = self._capture.read()
        if not ok or frame_bgr is None:
            return None
        # The one BGR -> RGB conversion of the live path: everything downstream is RGB.
        return cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)


class CameraSource(_CaptureSource):
    """A webcam by OpenCV device number; ``time`` is seconds since the first frame."""

    kind = "camera"

    def __init__(self, device: int = 0):
        super().__init__()
        self.device = int(device)

    @property
    def description(self) -> str:
        return f"camera {self.device}"

    def open(self) -> None:
        self._open_capture(
            self.device,
            f"cannot open camera {self.device}: check that it is connected and not used by another program, "
            "try another `camera` number, or pass `video_path` to read a video file instead",
        )

    def __iter__(self) -> Iterator[Frame]:
        started = None
        for index in itertools.count():
            frame_rgb = self._read_rgb()
            if frame_rgb is None:
                if index == 0:
                    raise InputError(f"{self.description} opened but delivered no frame: is another program using it?")
                logger.warning("%s stopped delivering frames after %d frames", self.description, index)
                return
            now = time.monotonic()
            started = now if started is None else started
            yield index, now - started, frame_rgb


class VideoSource(_CaptureSource):
    """A video file; ``time`` is ``frame_index / fps`` (the frame's position in the video)."""

    kind = "video"

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"video file {self.path} does not exist: pass `video_path`, an existing video file")
        if not self.path.is_file():
            raise InputError(f"{self.path} is not a file: `video_path` takes a video file (use `images` for a folder)")
        self._frame_count: int | None = None

    @property
    def description(self) -> str:
        return self.path.name

    @property
    def frame_count(self) -> int | None:
        return self._frame_count

    def open(self) -> None:
        import cv2

        self._open_capture(
            str(self.path),
            f"cannot open video {self.path}: OpenCV cannot decode it (not a video, corrupt, or a codec "
            "this OpenCV build lacks); convert it to H.264 .mp4, e.g. with ffmpeg",
        )
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._frame_count = count if count > 0 else None

    def __iter__(self) -> Iterator[Frame]:
        for index in itertools.count():
            frame_rgb = self._read_rgb()
            if frame_rgb is None:
                return
            yield index, index / self._fps, frame_rgb


class ImageFolderSource(FrameSource):
    """Every file of a folder, sorted by name, as one frame each; ``time`` is ``None``.

    Files that are not readable images are reported (a warning, and
    :attr:`skipped`) and left out; frame indices count the images yielded.
    Encrypted images (enrolment crops) are opened with ``key``.
    """

    kind = "images"

    def __init__(self, folder: str | Path, key: Key | None = None):
        self.folder = Path(folder)
        self.key = key
        if not self.folder.exists():
            raise InputError(
                f"image folder {self.folder} does not exist: pass `images`, a folder with the photos to identify"
            )
        if not self.folder.is_dir():
            raise InputError(f"{self.folder} is not a folder: `images` takes a folder (use `video_path` for a video)")
        self.files = list_image_files(self.folder)
        if not self.files:
            raise InputError(f"image folder {self.folder} is empty: put the photos to identify in it")
        self.skipped: list[str] = []  # "file: reason" of every file that was not an image
        self._names: list[str] = []  # file name of each yielded frame

    @property
    def description(self) -> str:
        return str(self.folder)

    @property
    def frame_count(self) -> int | None:
        return len(self.files)

    def frame_name(self, index: int) -> str:
        return self._names[index]

    def __iter__(self) -> Iterator[Frame]:
        self.skipped, self._names = [], []
        for path in self.files:
            try:
                image_rgb = read_image(path, self.key)
            except ImageReadError as error:
                logger.warning("skipping %s", error)
                self.skipped.append(f"{path.name}: {error}")
                continue
            self._names.append(path.name)
            yield len(self._names) - 1, None, image_rgb


def frame_source(
    *, camera: int = 0, video_path: str | Path | None = None, images: str | Path | None = None,
    key: Key | None = None,
) -> FrameSource:
    """The source a script's options name: ``images`` (encrypted ones opened with ``key``), else
    ``video_path``, else the ``camera``."""
    if images is not None and video_path is not None:
        raise InputError("pass either a video file or an image folder, not both")
    if images is not None:
        return ImageFolderSource(images, key)
    if video_path is not None:
        return VideoSource(video_path)
    return CameraSource(camera)


class StreamSource(CameraSource):
    """A network stream (``rtsp://``, ``http://``, ``udp://``, ...) read by OpenCV's FFmpeg backend.

    Like a camera: ``time`` is seconds since the first frame, and a stream that stops
    delivering frames ends the run with a warning. The URL's user and password are never
    shown (the description keeps the scheme, host and path).
    """

    kind = "stream"

    def __init__(self, url: str):
        super().__init__()
        self.url = str(url)

    @property
    def description(self) -> str:
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"

    def open(self) -> None:
        self._open_capture(
            self.url,
            f"cannot open stream {self.description}: check the address, that the sender is running and reachable, "
            "and that this OpenCV build has FFmpeg (opencv-python does)",
        )


def is_url(target: str | Path) -> bool:
    """Whether ``target`` names a network stream rather than a file (``scheme://...``)."""
    return isinstance(target, str) and "://" in target


def open_source(target: int | str | Path) -> FrameSource:
    """A frame source for ``target``: a camera number, a stream URL, a folder of images or a video file."""
    if isinstance(target, bool) or not isinstance(target, (int, str, Path)):
        raise InputError(f"a video source is a camera number, a stream URL, a video file or an image folder, "
                         f"not a {type(target).__name__}")
    if isinstance(target, int):
        return CameraSource(target)
    if is_url(target):
        return StreamSource(str(target))
    if Path(target).is_dir():
        return ImageFolderSource(target)
    return VideoSource(target)
