"""Cameras that keep running: each a reader and an identifier of its own, retried when they fail.

A camera is a name and a source — a webcam number, a video file (played at its own frame rate,
from the start again with ``loop``) or a network stream URL (RTSP, HTTP/MJPEG, ... read by
OpenCV's FFmpeg backend; :func:`faceid.io.video.open_source`). :class:`Camera` runs two threads:

* the **reader** takes frames from the source as they come and keeps only the latest one: a
  camera whose frames take longer to identify than they take to arrive drops the old ones
  (counted) instead of falling behind;
* the **worker** identifies the latest frame with a :class:`~faceid.apps.live.LiveIdentifier`
  (detection, tracking, a vote per track) and hands the results to ``on_results`` (the service's
  :class:`~faceid.service.events.EventRecorder`).

A source that cannot be opened, or that stops delivering frames, is opened again after a wait that
doubles from ``retry_min`` to ``retry_max`` seconds; meanwhile the camera's state is
``reconnecting`` and nothing else is affected. A video file without ``loop`` ends (``ended``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from faceid.apps.live import FaceResult, LiveIdentifier, annotate
from faceid.errors import InputError
from faceid.io.images import encode_jpeg
from faceid.io.video import FALLBACK_FPS, FrameSource, is_url, open_source
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

#: A camera's states, as ``GET /cameras`` and ``/health`` show them.
STARTING, RUNNING, RECONNECTING, ENDED, STOPPED = "starting", "running", "reconnecting", "ended", "stopped"
STATES = (STARTING, RUNNING, RECONNECTING, ENDED, STOPPED)
CAMERA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_camera_name(name: Any) -> str:
    """A camera's name: 1-64 letters, digits, ``_``, ``.`` or ``-``, starting with a letter or digit
    (it is an MQTT topic level and a URL path segment)."""
    if not isinstance(name, str) or not CAMERA_NAME.match(name):
        raise InputError(f"invalid camera `name` {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
                         "starting with a letter or digit")
    return name


def parse_source(source: Any) -> int | str:
    """What a camera's ``source`` names: a webcam number (``"0"``), a stream URL (``scheme://...``) or
    an existing video file.

    Raises:
        InputError: empty, or a file that does not exist.
    """
    if isinstance(source, bool) or not isinstance(source, (int, str)):
        raise InputError(f"a camera `source` is a webcam number, a stream URL or a video file, not {source!r}")
    text = str(source).strip()
    if not text:
        raise InputError("a camera `source` is empty: give a webcam number, a stream URL or a video file")
    if text.isdigit():
        return int(text)
    if is_url(text):
        return text
    if not Path(text).is_file():
        raise InputError(f"camera `source` {text!r} is not a webcam number, a stream URL (scheme://...) "
                         "or an existing video file")
    return str(Path(text).resolve())  # kept in the store: the same file whatever the next start's directory


def shown_source(source: int | str) -> str:
    """A source as it may be shown (``GET /cameras``, logs): a URL without its user and password."""
    if isinstance(source, str) and is_url(source):
        scheme, _, rest = source.partition("://")
        host, slash, path = rest.partition("/")
        return f"{scheme}://{host.rpartition('@')[2]}{slash}{path}"
    return str(source)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class CameraConfig:
    """A camera as configured: its name, its source, and whether a video file plays in a loop."""

    name: str
    source: int | str
    loop: bool = False

    @classmethod
    def parse(cls, name: Any, source: Any, loop: bool = False) -> CameraConfig:
        """Checked: a valid name and an openable kind of source (the file exists)."""
        return cls(check_camera_name(name), parse_source(source), bool(loop))


@dataclass
class CameraStats:
    """What a camera did so far (``GET /cameras``, ``/metrics``)."""

    frames_read: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    faces: int = 0
    reconnects: int = 0
    processing_seconds: float = 0.0  # sum over processed frames
    started: float = field(default_factory=time.monotonic)

    def observe(self, seconds: float, faces: int) -> None:
        self.frames_processed += 1
        self.faces += faces
        self.processing_seconds += seconds


class Camera:
    """One camera: a reader thread keeping the latest frame, a worker thread identifying it.

    Args:
        config: name, source, loop.
        make_identifier: returns a fresh `LiveIdentifier` for the people enrolled now
            (``FaceID.live_identifier``); called at every (re)start and when ``gallery_version``
            changes, so a new enrolment is used within a frame.
        gallery_version: returns a number that changes whenever the people enrolled change.
        on_results: ``(camera, frame_rgb, results, now)`` after each identified frame; ``(camera,
            None, [], now)`` when the tracks end (the source ended or dropped, a gallery change).
        on_state: ``(camera, state)`` when the state changes.
        retry_min, retry_max: the first and the longest wait before opening a failed source again.
    """

    def __init__(
        self,
        config: CameraConfig,
        *,
        make_identifier: Callable[[], LiveIdentifier],
        gallery_version: Callable[[], int],
        on_results: Callable[[Camera, np.ndarray | None, list[FaceResult], datetime], None],
        on_state: Callable[[Camera, str], None] = lambda camera, state: None,
        retry_min: float = DEFAULTS.camera_retry_min,
        retry_max: float = DEFAULTS.camera_retry_max,
    ):
        self.config = config
        self.name = config.name
        self.stats = CameraStats()
        self.state = STARTING
        self.error: str | None = None  # why it is reconnecting (no credentials: sources are shown redacted)
        self._make_identifier = make_identifier
        self._gallery_version = gallery_version
        self._on_results = on_results
        self._on_state = on_state
        self.retry_min, self.retry_max = retry_min, retry_max
        self._stop = threading.Event()
        self._latest: tuple[np.ndarray, datetime] | None = None
        self._source_done = False
        self._condition = threading.Condition()
        # The live view: the latest identified frame with its results, numbered; its JPEG made once, when asked.
        self._view: tuple[int, np.ndarray, list[FaceResult]] | None = None
        self._view_jpeg: tuple[int, bytes] | None = None
        self._view_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)

    # --- life ----------------------------------------------------------------------------

    def start(self) -> Camera:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading, finish the frame being identified, end the tracks (``on_results`` with no
        frame), and wait for the threads up to ``timeout`` seconds."""
        self._stop.set()
        with self._condition:
            self._condition.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        self._set_state(STOPPED)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def info(self) -> dict[str, Any]:
        """The camera as ``GET /cameras`` shows it (the source without credentials)."""
        stats = self.stats
        elapsed = max(time.monotonic() - stats.started, 1e-9)
        return {
            "name": self.name,
            "source": shown_source(self.config.source),
            "loop": self.config.loop,
            "state": self.state,
            "error": self.error,
            "frames_read": stats.frames_read,
            "frames_processed": stats.frames_processed,
            "frames_dropped": stats.frames_dropped,
            "faces": stats.faces,
            "reconnects": stats.reconnects,
            "fps": round(stats.frames_processed / elapsed, 2),
        }

    def view_jpeg(self, after: int = -1) -> tuple[int, bytes] | None:
        """The latest identified frame with a box and a name on each face, as ``(its number, JPEG bytes)``;
        ``None`` before the first frame, or when the latest is still number ``after`` (nothing new)."""
        view = self._view
        if view is None or view[0] == after:
            return None
        with self._view_lock:
            if self._view_jpeg is None or self._view_jpeg[0] != view[0]:
                self._view_jpeg = (view[0], encode_jpeg(annotate(view[1], view[2]), DEFAULTS.event_crop_quality))
            return self._view_jpeg

    def _set_state(self, state: str, error: str | None = None) -> None:
        if state == self.state and error == self.error:
            return
        if state == STOPPED and self.state == STOPPED:
            return
        self.state, self.error = state, error
        if error:
            logger.warning("camera %s: %s (%s)", self.name, state, error)
        else:
            logger.info("camera %s: %s", self.name, state)
        try:
            self._on_state(self, state)
        except Exception:  # a sink's failure never stops a camera
            logger.exception("camera %s: state listener failed", self.name)

    # --- the worker: open, read, identify, retry -----------------------------------------------------

    def _run(self) -> None:
        wait = self.retry_min
        while not self._stop.is_set():
            try:
                source = open_source(self.config.source)
                source.open()
            except Exception as error:  # noqa: BLE001 - any failure to open is a reason to retry
                self._retry_later(f"cannot open: {_reason(error)}", wait)
                wait = min(wait * 2, self.retry_max)
                continue
            processed = self.stats.frames_processed
            try:
                outcome = self._identify(source)
            except Exception as error:  # noqa: BLE001 - a failing camera is retried, never fatal
                logger.exception("camera %s: identification failed", self.name)
                outcome = f"failed: {_reason(error)}"
            finally:
                source.close()
                self._end_tracks()
            if self._stop.is_set():
                break
            if outcome == ENDED:
                self._set_state(ENDED)
                return
            if self.stats.frames_processed > processed:  # it ran: start again quickly after a drop
                wait = self.retry_min
            self._retry_later(outcome or "the source stopped sending frames", wait)
            wait = min(wait * 2, self.retry_max)
        self._set_state(STOPPED)

    def _retry_later(self, why: str, wait: float) -> None:
        self.stats.reconnects += 1
        self._set_state(RECONNECTING, f"{why}; retrying in {wait:g} s")
        self._stop.wait(wait)

    def _identify(self, source: FrameSource) -> str | None:
        """Read and identify until the source ends, fails or the camera stops. Returns ``ENDED`` for
        a video that ended (without loop), a reason when the source failed, ``None`` after a drop."""
        self._latest, self._source_done = None, False
        reader_error: list[str] = []
        reader = threading.Thread(target=self._read, args=(source, reader_error), name=f"reader-{self.name}",
                                  daemon=True)
        reader.start()
        version = self._gallery_version()
        identifier = self._make_identifier()
        self._set_state(RUNNING)
        try:
            while not self._stop.is_set():
                with self._condition:
                    while self._latest is None and not self._source_done and not self._stop.is_set():
                        self._condition.wait(1.0)
                    latest, self._latest = self._latest, None
                    done = self._source_done
                if latest is None:
                    if done:
                        break
                    continue
                if self._gallery_version() != version:
                    # Someone was enrolled or forgotten: identify with the new gallery from now on.
                    self._end_tracks()
                    version = self._gallery_version()
                    identifier = self._make_identifier()
                frame_rgb, captured = latest
                started = time.perf_counter()
                results = identifier.process(frame_rgb)
                self.stats.observe(time.perf_counter() - started, len(results))
                self._view = (self.stats.frames_processed, frame_rgb, results)
                self._on_results(self, frame_rgb, results, captured)
        finally:
            self._stop_reader(reader)
        if reader_error:
            return reader_error[0]
        if source.kind == "video" and not self.config.loop:
            return ENDED
        return None

    def _stop_reader(self, reader: threading.Thread) -> None:
        with self._condition:
            self._source_done = True
            self._condition.notify_all()
        reader.join(5.0)

    def _end_tracks(self) -> None:
        try:
            self._on_results(self, None, [], utc_now())
        except Exception:
            logger.exception("camera %s: ending its tracks failed", self.name)

    # --- the reader: the latest frame only -------------------------------------------------

    def _read(self, source: FrameSource, errors: list[str]) -> None:
        """Put each frame in the one-frame slot (a frame not taken yet is dropped). A video file plays
        at its own rate, from the start again with ``loop``; cameras and streams deliver at theirs."""
        paced = source.kind == "video"
        fps = (source.fps or FALLBACK_FPS) if paced else None
        try:
            while not self._stop.is_set():
                started, count = time.monotonic(), 0
                for _index, _seconds, frame_rgb in source:
                    if self._stop.is_set() or self._source_done:
                        return
                    if paced:
                        delay = started + count / fps - time.monotonic()
                        if delay > 0:
                            self._stop.wait(delay)
                        count += 1
                    self._offer(frame_rgb)
                if not (paced and self.config.loop) or self._source_done:
                    return
                source.close()  # the loop: the same file from its first frame
                source.open()
        except Exception as error:  # noqa: BLE001 - reported as the reason to reconnect
            errors.append(f"reading failed: {_reason(error)}")
        finally:
            with self._condition:
                self._source_done = True
                self._condition.notify_all()

    def _offer(self, frame_rgb: np.ndarray) -> None:
        with self._condition:
            if self._latest is not None:
                self.stats.frames_dropped += 1
            self._latest = (frame_rgb, utc_now())
            self.stats.frames_read += 1
            self._condition.notify_all()


def _reason(error: BaseException) -> str:
    """An exception as a short reason (its class for exceptions of no message)."""
    return str(error) or type(error).__name__
