"""Events: one per track, from the moment its identity is decided until it ends.

:class:`EventRecorder` receives every identified frame of every camera
(:class:`~faceid.service.cameras.Camera`'s ``on_results``). A track becomes an event when its vote
decides (a name, or unknown): the event is written to the store at once with its first face crop
and vector, and sent to the sinks (MQTT, webhooks) as ``new``. While the track lasts the event's end
and score move on (written every ``flush_seconds``), its crop and vector are replaced by a larger
face (``crop_growth`` times the area), and a change of name is written and sent at once as
``update``. When the track ends — it left the picture, the shot changed, the source dropped, the
camera stopped — the event is closed and sent as ``end``, and ``on_closed`` (the unknown people's
clustering, `faceid.service.unknowns`) is told its id once the recorder's lock is released. After each
change of who is in front of a camera, its presence state (the people there, how many unknown faces)
goes to the sinks.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import numpy as np

from faceid.apps.live import FaceResult
from faceid.detect.faces import FaceBox
from faceid.io.images import encode_jpeg
from faceid.service.store import ServiceStore, utc_iso
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

NEW, UPDATE, END = "new", "update", "end"


class Sink(Protocol):
    """Where events go besides the store (`faceid.service.sinks`): never raises, never blocks long."""

    def publish_event(self, kind: str, event: dict[str, Any]) -> None: ...

    def publish_camera(self, camera: str, state: dict[str, Any]) -> None: ...

    def forget_camera(self, camera: str) -> None: ...


@dataclass
class _OpenEvent:
    id: int
    name: str | None
    score: float | None
    end: datetime
    crop_area: int
    flushed: float  # time.monotonic() of the last write
    corrected: bool = False  # a person corrected its name: the track's vote no longer renames it


def event_score(score: float) -> float | None:
    """A vote's score as an event keeps it: ``None`` when there is none (nobody enrolled)."""
    return round(float(score), 4) if math.isfinite(score) else None


def face_crop_jpeg(frame_rgb: np.ndarray, box: FaceBox, margin: float = DEFAULTS.event_crop_margin,
                   quality: int = DEFAULTS.event_crop_quality) -> bytes:
    """The face of ``box`` with ``margin`` (a share of the box's side) around it, as JPEG bytes."""
    height, width = frame_rgb.shape[:2]
    pad_x, pad_y = int(box.width * margin), int(box.height * margin)
    left, top = max(0, box.left - pad_x), max(0, box.top - pad_y)
    right, bottom = min(width, box.right + pad_x), min(height, box.bottom + pad_y)
    return encode_jpeg(frame_rgb[top:bottom, left:right, ::-1], quality)


class EventRecorder:
    """Turns the tracks of every camera into events in the store and the sinks (thread-safe).

    Args:
        store: where events, their crops and vectors are kept.
        sinks: MQTT, webhooks (any object with ``publish_event`` and ``publish_camera``).
        flush_seconds, crop_growth: see the module docstring (`Settings.event_flush_seconds`,
            `Settings.event_crop_growth`).
        on_closed: called with the id of each event once it is closed, outside the recorder's lock (its
            exceptions are logged, never raised into the camera).
    """

    def __init__(self, store: ServiceStore, sinks: list[Sink] = (), *,
                 flush_seconds: float = DEFAULTS.event_flush_seconds, crop_growth: float = DEFAULTS.event_crop_growth,
                 on_closed: Callable[[int], None] | None = None):
        self.store = store
        self.sinks = list(sinks)
        self.on_closed = on_closed
        self.flush_seconds = flush_seconds
        self.crop_growth = crop_growth
        self.created: dict[str, int] = {}  # camera -> events created (for /metrics)
        self._open: dict[str, dict[int, _OpenEvent]] = {}  # camera -> track -> its open event
        self._states: dict[str, str] = {}
        self._lock = threading.Lock()

    # --- what a camera reports ----------------------------------------------------------------------

    def on_results(self, camera, frame_rgb: np.ndarray | None, results: list[FaceResult], now: datetime) -> None:
        """One identified frame of ``camera`` (``frame_rgb`` ``None``: every track of it ended)."""
        closed = []
        with self._lock:
            name = camera.name
            open_events = self._open.setdefault(name, {})
            present_before = self._presence(name)
            seen = set()
            for result in results if frame_rgb is not None else []:
                if result.track_id is None or result.pending:
                    continue
                seen.add(result.track_id)
                event = open_events.get(result.track_id)
                if event is None:
                    open_events[result.track_id] = self._create(name, frame_rgb, result, now)
                else:
                    self._update(event, frame_rgb, result, now)
            for track in [track for track in open_events if track not in seen]:
                closed.append(self._close(open_events.pop(track)))
            if self._presence(name) != present_before:
                self._publish_camera(name)
        self._closed(closed)

    def on_state(self, camera, state: str) -> None:
        """A camera's state changed: its presence state goes out with it."""
        with self._lock:
            self._states[camera.name] = state
            self._publish_camera(camera.name)

    def forget_camera(self, name: str) -> None:
        """A camera was removed: nothing more is said of it."""
        with self._lock:
            self._states.pop(name, None)
            closed = [self._close(event) for event in self._open.pop(name, {}).values()]
            for sink in self.sinks:
                try:
                    sink.forget_camera(name)
                except Exception:  # noqa: BLE001 - a sink never stops the service
                    logger.exception("clearing camera %s's state failed", name)
        self._closed(closed)

    # --- an event's life ---------------------------------------------------------------------------

    def _create(self, camera: str, frame_rgb: np.ndarray, result: FaceResult, now: datetime) -> _OpenEvent:
        name = result.name if result.known else None
        score = event_score(result.score)
        event_id = self.store.insert_event(camera, result.track_id, name, score, now, now, result.vector)
        self.store.write_crop(event_id, face_crop_jpeg(frame_rgb, result.box))
        self.created[camera] = self.created.get(camera, 0) + 1
        self._publish(NEW, event_id)
        return _OpenEvent(event_id, name, score, now, result.box.area if result.vector is not None else 0,
                          time.monotonic())

    def _update(self, event: _OpenEvent, frame_rgb: np.ndarray, result: FaceResult, now: datetime) -> None:
        name = event.name if event.corrected else result.name if result.known else None
        event.end, event.score = now, event_score(result.score)
        renamed = name != event.name
        event.name = name
        better_face = result.vector is not None and result.box.area >= event.crop_area * self.crop_growth
        if better_face:
            self.store.write_crop(event.id, face_crop_jpeg(frame_rgb, result.box))
            event.crop_area = result.box.area
        if renamed or better_face or time.monotonic() - event.flushed >= self.flush_seconds:
            self.store.update_event(event.id, name=event.name, score=event.score, end=event.end,
                                    vector=result.vector if better_face else None)
            event.flushed = time.monotonic()
        if renamed:
            self._publish(UPDATE, event.id)

    def _close(self, event: _OpenEvent) -> int:
        self.store.update_event(event.id, name=event.name, score=event.score, end=event.end, closed=True)
        self._publish(END, event.id)
        return event.id

    def _closed(self, event_ids: list[int]) -> None:
        """Tell ``on_closed`` of closed events; called without the lock (clustering a face takes a while)."""
        if self.on_closed is None:
            return
        for event_id in event_ids:
            try:
                self.on_closed(event_id)
            except Exception:  # noqa: BLE001 - what follows an event never stops a camera
                logger.exception("handling closed event %d failed", event_id)

    # --- the sinks ---------------------------------------------------------------------------------

    def _presence(self, camera: str) -> tuple[tuple[str, ...], int]:
        events = self._open.get(camera, {}).values()
        return (tuple(sorted({event.name for event in events if event.name})),
                sum(event.name is None for event in events))

    def camera_state(self, camera: str) -> dict[str, Any]:
        """Who is in front of ``camera`` now: its retained MQTT state."""
        people, unknown = self._presence(camera)
        return {"camera": camera, "state": self._states.get(camera, "starting"), "people": list(people),
                "unknown": unknown, "faces": len(people) + unknown, "updated": utc_iso(_now())}

    def _publish_camera(self, camera: str) -> None:
        state = self.camera_state(camera)
        for sink in self.sinks:
            try:
                sink.publish_camera(camera, state)
            except Exception:  # noqa: BLE001 - a sink never stops a camera
                logger.exception("publishing camera %s's state failed", camera)

    def correct(self, event_id: int, name: str | None) -> bool:
        """A person corrected event ``event_id`` to ``name``: if it is still open, its track keeps that name
        until it ends (its vote no longer renames it). ``False`` when it is not open."""
        with self._lock:
            for events in self._open.values():
                for event in events.values():
                    if event.id == event_id:
                        event.name, event.corrected = name, True
                        return True
        return False

    def relabelled(self, event_ids: list[int]) -> None:
        """Events were renamed from outside a camera (a correction, a named cluster): each goes to the
        sinks as ``update``."""
        for event_id in event_ids:
            self._publish(UPDATE, event_id)

    def _publish(self, kind: str, event_id: int) -> None:
        if not self.sinks:
            return
        event = self.store.get_event(event_id)
        for sink in self.sinks:
            try:
                sink.publish_event(kind, event)
            except Exception:  # noqa: BLE001 - a sink never stops a camera
                logger.exception("publishing event %d failed", event_id)


def _now() -> datetime:
    return datetime.now(timezone.utc)
