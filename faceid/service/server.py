"""The service: the people, the cameras, the events and the sinks of one data directory, in one process.

`Service` owns everything ``faceid serve`` runs — a `faceid.FaceID` over ``<data>/features``
(enrolment photos kept, sealed with the key when one is given, in ``<data>/faces/<person>/``), the
store (``<data>/faceid.db`` and the events' crops), the cameras and the sinks — and is what the REST
API (`faceid.service.app`) calls. `Service.run` serves it with uvicorn; SIGTERM and Ctrl-C stop the
cameras (their open events are closed), flush the sinks and close the store before the process
exits.

Thread safety: the cameras run in threads of their own; requests run in uvicorn's thread pool. What
changes the people enrolled (enrol, forget) and what reads them (identify, verify, a camera's new
gallery) take the one `Service.people_lock`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceid.errors import ConflictError, InputError, NoFaceError, NotFoundError
from faceid.io.sealed import Key
from faceid.service.cameras import Camera, CameraConfig, check_camera_name
from faceid.service.events import EventRecorder
from faceid.service.store import ServiceStore
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

FEATURES_DIR = "features"
FACES_DIR = "faces"
LOCK_FILE = "serve.lock"
UNKNOWNS_DIR = "unknowns"
# Names no person may have: `unknown` is how events, /events?person= and MQTT topics say "not enrolled";
# `<prefix>/<camera>/state` is a camera's retained presence topic beside its people's topics.
RESERVED_NAMES = ("unknown", "state")
IMAGE_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif"}
#: How an enrolment photo is served back: by the suffix its decoded format gave it, never by what was uploaded.
MEDIA_TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".bmp": "image/bmp",
               ".tif": "image/tiff", ".gif": "image/gif"}


@dataclass
class ServiceOptions:
    """What ``faceid serve`` was told, besides its data directory (see `Service`)."""

    model: Path | None = None  # an extractor directory; None: dlib's face model
    detector: str | None = None
    key: Key | None = None
    mqtt: str | None = None  # mqtt://[user:pass@]host[:port]
    mqtt_prefix: str = "faceid"
    webhooks: list[str] = field(default_factory=list)
    webhook_secret: bytes | None = None
    retention_days: float = DEFAULTS.retention_days
    max_upload_bytes: int = DEFAULTS.max_upload_bytes
    max_image_pixels: int = DEFAULTS.max_image_pixels
    docs: bool = True  # serve /docs and /openapi.json (no data in them, so without a token)
    retry_min: float = DEFAULTS.camera_retry_min
    retry_max: float = DEFAULTS.camera_retry_max

    def __post_init__(self) -> None:
        if not self.retention_days > 0:
            raise InputError(f"`retention_days` must be positive, got {self.retention_days}")
        if self.max_upload_bytes < 1024 or self.max_image_pixels < 10_000:
            raise InputError("`max_upload_bytes` must be at least 1024 and `max_image_pixels` at least 10000")


class Service:
    """One data directory's people, cameras, events and sinks (``faceid serve``).

    Args:
        data: the data directory (created if missing): ``features/`` (the feature cache),
            ``faces/<person>/`` (the enrolment photos), ``faceid.db`` (people, cameras, tokens,
            events: SQLite in WAL mode), ``events/<id>.jpg`` (the events' face crops).
        options: model, detector, key, sinks, retention, upload limits.
        cameras: cameras to add (or update) at start; the store keeps them, so they run again
            at the next start, with those added through the API.
    """

    def __init__(self, data: str | Path, options: ServiceOptions = ServiceOptions(), cameras: list[CameraConfig] = ()):
        from faceid.api import FaceID

        self.data = Path(data)
        # Only its owner reads what the service keeps (faces, events, camera addresses with their passwords).
        self.data.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.data, 0o700)
        self._lock = _lock_directory(self.data)
        self.options = options
        self.store = ServiceStore(self.data, key=options.key)
        self.faceid = FaceID(options.model, self.data / FEATURES_DIR, detector=options.detector, key=options.key)
        self.people_lock = threading.RLock()
        self._people_version = 0
        self.sinks = self._make_sinks()
        self.unknowns = self._make_unknowns()
        self.events = EventRecorder(self.store, self.sinks,
                                    on_closed=self.unknowns.add_event)
        self.cameras: dict[str, Camera] = {}
        self._cameras_lock = threading.Lock()
        self.closing = threading.Event()  # set when the service stops (its live views end then)
        self._janitor = threading.Thread(target=self._purge_hourly, name="retention", daemon=True)
        self.started = time.monotonic()
        for camera in cameras:
            self.store.upsert_camera(camera.name, str(camera.source), camera.loop)

    def _make_unknowns(self):
        """The clusters of the unknown events (`faceid.service.unknowns.UnknownPeople`), in ``<data>/unknowns``."""
        from faceid.cluster.methods import merge_thresholds
        from faceid.service.unknowns import UnknownPeople

        extractor = self.faceid.extractor
        try:
            thresholds = merge_thresholds(extractor.manifest, self.options.model)
        except InputError as error:  # a model without a cosine calibration: everything else still runs
            logger.warning("unknown people are off: %s", error)
            return UnknownPeople.disabled(str(error))
        return UnknownPeople(self.data / UNKNOWNS_DIR, self.store, fingerprint=extractor.fingerprint,
                             thresholds=thresholds, key=self.options.key)

    def _make_sinks(self) -> list:
        sinks = []
        if self.options.mqtt:
            from faceid.service.sinks import MqttSink

            sinks.append(MqttSink(self.options.mqtt, prefix=self.options.mqtt_prefix))
        if self.options.webhooks:
            from faceid.service.sinks import WebhookSink

            sinks.append(WebhookSink(self.options.webhooks, secret=self.options.webhook_secret))
        return sinks

    # --- life ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Recover from an interrupted run (events left open are closed, orphan crops removed), apply
        the retention, start every camera the store lists."""
        self.store.close_open_events()  # and sweeps the crops no event names (it logs what it did)
        self.purge()
        for row in self.store.list_cameras():
            try:
                self._start_camera(CameraConfig.parse(row["name"], row["source"], row["loop"]))
            except InputError as error:
                logger.warning("camera %s not started: %s", row["name"], error)
        self._janitor.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the cameras (their open events closed), flush the sinks, close the store."""
        self.closing.set()
        with self._cameras_lock:
            cameras = list(self.cameras.values())
        for camera in cameras:
            camera.stop(timeout)
        for sink in self.sinks:
            try:
                sink.close(timeout=5.0)
            except Exception:  # noqa: BLE001 - closing the others matters more
                logger.exception("closing a sink failed")
        self.store.close()
        if self._lock is not None:
            self._lock.close()  # releases the lock
            self._lock = None

    def purge(self) -> int:
        """Delete the closed events older than the retention (rows and crops), and their faces from the
        unknown people."""
        removed = self.store.purge(self.options.retention_days)  # it logs what it deleted
        self.unknowns.sync()
        return removed

    def _purge_hourly(self) -> None:
        while not self.closing.wait(3600.0):
            try:
                self.purge()
            except Exception:  # noqa: BLE001 - tried again in an hour
                logger.exception("retention purge failed")

    # --- people ------------------------------------------------------------------------------------

    def people(self) -> list[dict[str, Any]]:
        """The enrolled people with how many faces each has, and when they were enrolled."""
        with self.people_lock:
            counts = self.faceid.face_counts()
            photos = {name: len(self._photo_files(name)) for name in counts}
        rows = {row["name"]: row for row in self.store.list_people()}
        events, corrections = self.store.event_counts(), self.store.correction_counts()
        return [{"name": name, "faces": counts[name], "photos": photos[name], "events": events.get(name, 0),
                 "corrections": corrections.get(name, 0), "created": rows.get(name, {}).get("created"),
                 "updated": rows.get(name, {}).get("updated")}
                for name in counts]

    def enrol(self, name: str, images: list[bytes], *, source: str = "upload",
              events: list[int | None] | None = None) -> dict[str, Any]:
        """Keep the photos in ``faces/<name>/`` (sealed with the key) and enrol them.

        Args:
            images: encoded photos (JPEG, PNG, ...); each is stored under a name made from its content,
                so the same photo sent twice is one photo.
            source: where they come from (``upload``, ``cluster``, ``correction``: `store.PHOTO_SOURCES`),
                recorded with each new photo, and ``events``: the event each one is the face of (so a
                correction of that event can take it back).

        A photo in which no face is found is not kept (``photos`` lists those kept, ``added`` counts them).

        Raises:
            NoFaceError: none gave a face and ``name`` had none before (the photos are not kept).
        """
        from faceid.io.store import write_private

        self._check_new_name(name)
        folder = self.data / FACES_DIR / name
        with self.people_lock:
            folder.mkdir(parents=True, exist_ok=True)
            paths, new = [], []
            for data in images:
                path = folder / f"{hashlib.sha256(data).hexdigest()[:16]}{_image_suffix(data)}"
                if not path.exists():
                    write_private(path, data, key=self.options.key)
                    new.append(path)
                paths.append(path)
            try:
                added = self.faceid.enrol(name, sorted(set(paths)))
            except NoFaceError:
                for path in new:
                    path.unlink(missing_ok=True)
                if not any(folder.iterdir()):
                    folder.rmdir()
                raise
            # A photo that gave no face is not kept: the person's photos are the faces the gallery holds.
            held = set(self.faceid.images(name))
            for path in new:
                if path.name not in held:
                    path.unlink(missing_ok=True)
            self._people_version += 1
            faces = self.faceid.face_counts().get(name, 0)
            self.store.touch_person(name, faces)
            kept = [(path, event) for path, event in zip(paths, events or [None] * len(paths)) if path.name in held]
            for path, event in kept:
                self.store.record_photo(name, path.name, source, event)
        return {"name": name, "added": added, "faces": faces, "images": len(images),
                "photos": [path.name for path, _ in kept]}

    def forget(self, name: str) -> dict[str, Any]:
        """Erase a person: the cache, the enrolment photos, their events (rows and crops).

        Raises:
            NotFoundError: not enrolled.
        """
        from faceid.features.cache import check_person_name

        check_person_name(name, "name")
        with self.people_lock:
            if name not in self.faceid.people and name not in self.faceid.not_enrolled:
                raise NotFoundError(f"no person {name!r} is enrolled")
            self.faceid.forget(name, faces_path=self.data / FACES_DIR)
            self._people_version += 1
            self.store.delete_person(name)
        events = self.store.forget_person(name)
        self.unknowns.sync()
        return {"name": name, "forgotten": True, "events_removed": events}

    # --- a person's photos ---------------------------------------------------------------------------

    def _photo_files(self, name: str) -> list[Path]:
        folder = self.data / FACES_DIR / name
        return sorted(path for path in folder.iterdir() if _is_photo(path)) if folder.is_dir() else []

    def _enrolled(self, name: str) -> None:
        from faceid.features.cache import check_person_name

        check_person_name(name, "name")
        if name not in self.faceid.face_counts():
            raise NotFoundError(f"no person {name!r} is enrolled")

    def photos(self, name: str) -> list[dict[str, Any]]:
        """A person's enrolment photos: ``id`` (the file name), ``url``, ``source``, ``event``.

        Raises:
            NotFoundError: not enrolled.
        """
        from urllib.parse import quote

        with self.people_lock:
            self._enrolled(name)
            files = self._photo_files(name)
        sources = self.store.photo_sources(name)
        return [{"id": path.name, "url": f"/people/{quote(name, safe='')}/faces/{path.name}",
                 "source": sources.get(path.name, {}).get("source", "upload"),
                 "event": sources.get(path.name, {}).get("event")} for path in files]

    def photo(self, name: str, photo: str) -> tuple[bytes, str]:
        """The bytes and media type of one enrolment photo (only the raster formats enrolment accepts).

        Raises:
            NotFoundError: no such person or photo.
        """
        from faceid.io.store import read_private

        path = self._photo_path(name, photo)
        data = read_private(path, "an enrolment photo", "it was deleted outside faceid", key=self.options.key,
                            encrypted=self.options.key is not None)
        return data, MEDIA_TYPES[path.suffix]

    def _photo_path(self, name: str, photo: str) -> Path:
        from faceid.features.cache import check_person_name

        check_person_name(name, "name")
        path = self.data / FACES_DIR / name / photo
        if "/" in photo or not _is_photo(path):
            raise NotFoundError(f"no photo {photo!r} of {name!r}")
        return path

    def remove_photo(self, name: str, photo: str, *, last: bool = False) -> dict[str, Any]:
        """Remove one enrolment photo: its file and its vector in the gallery.

        Args:
            last: allow removing the person's last photo (they are then no longer enrolled).

        Raises:
            NotFoundError: no such person or photo. ConflictError: the last photo, without ``last``.
        """
        with self.people_lock:
            path = self._photo_path(name, photo)
            if not last and len(self._photo_files(name)) == 1:
                raise ConflictError(f"{photo!r} is the last photo of {name!r}: delete the person instead")
            if name in self.faceid.face_counts() or name in self.faceid.not_enrolled:
                self.faceid.remove_images(name, [photo])
            path.unlink()
            self.store.delete_photo(name, photo)
            self._people_version += 1
            faces = self.faceid.face_counts().get(name, 0)
            if faces:
                self.store.touch_person(name, faces)
            else:
                self.store.delete_person(name)
        return {"name": name, "removed": photo, "faces": faces}

    # --- corrections and the unknown people ----------------------------------------------------------

    def correct(self, event_id: int, name: str | None, token_id: str | None = None) -> dict[str, Any]:
        """"This is not NAME" (``name`` ``None``) / "this is OTHER": relabel the event, take its face out of
        the enrolment of the person it was wrongly enrolled under (when it was: a named cluster, an earlier
        correction), enrol it as ``name`` (when a face is found in its crop), record the correction.

        An event still going on is corrected too: its track keeps the corrected name until it ends.

        Raises:
            NotFoundError: no such event. InputError: an invalid or reserved ``name``.
        """
        if name is not None:
            self._check_new_name(name)
        with self.people_lock:
            if self.store.get_event(event_id) is None:
                raise NotFoundError(f"no event {event_id}")
            # An event still going on keeps the corrected name until its track ends (first in memory, so a
            # write of the track in between cannot put the old name back).
            self.events.correct(event_id, name)
            correction, previous = self.store.correct_event(event_id, name, token_id)
            removed_from = None
            for person, photo in self.store.photos_of_event(event_id):
                if person != name and (self.data / FACES_DIR / person / photo).is_file():
                    self.remove_photo(person, photo, last=True)
                    removed_from = person
            enrolled = False
            crop = self.store.read_crop(event_id) if name is not None else None
            if crop is not None:
                try:
                    self.enrol(name, [crop], source="correction", events=[event_id])
                    enrolled = True
                except NoFaceError:
                    logger.info("event %d corrected: no face found again in its crop, nothing enrolled", event_id)
        if name is None:  # unknown now: it joins the unknown people's clusters
            self.unknowns.add_event(event_id)
        else:
            self.unknowns.remove_events([event_id])
        self.events.relabelled([event_id])
        logger.info("event %d corrected (correction %d)", event_id, correction)
        return {"event": self.store.get_event(event_id), "previous": previous, "removed_from": removed_from,
                "enrolled": enrolled, "correction": correction}

    def _check_new_name(self, name: str) -> None:
        from faceid.features.cache import check_person_name

        check_person_name(name, "name")
        if name.lower() in RESERVED_NAMES:
            raise InputError(f"`name` {name!r} is reserved (events of unknown faces and a camera's state use it): "
                             "choose another name")

    def name_unknown(self, cluster_id: str, name: str) -> dict[str, Any]:
        """Enrol an unknown cluster as ``name``: its `Settings.unknown_enrol_faces` most typical faces are
        enrolled (each photo remembers its event), all its events are relabelled ``name``, and its faces
        leave the unknown people (the clusters are of unknown faces only).

        Raises:
            NotFoundError: no such cluster. NoFaceError: no face found again in its crops.
        """
        self._check_new_name(name)
        with self.people_lock:
            events = self.unknowns.get(cluster_id)["event_ids"]  # a 404 for a dismissed cluster too
            best = self.unknowns.best_events(cluster_id, DEFAULTS.unknown_enrol_faces)
            crops = [(event, crop) for event in best if (crop := self.store.read_crop(event)) is not None]
            if not crops:
                raise NotFoundError(f"cluster {cluster_id}'s events have no face crops left to enrol")
            enrolled = self.enrol(name, [crop for _, crop in crops], source="cluster",
                                  events=[event for event, _ in crops])
            relabelled = self.store.relabel_events(events, name)
            self.unknowns.remove_events(events)  # known now: the cluster leaves the unknown people
        self.events.relabelled(events)
        logger.info("unknown cluster %s named (%d events)", cluster_id, relabelled)
        return {"id": cluster_id, "name": name, "enrolled": enrolled["added"], "photos": len(enrolled["photos"]),
                "tried": len(crops), "events": relabelled}

    def identify(self, image_rgb) -> dict[str, Any]:
        """Every face of an image and who it is (``POST /identify``).

        Raises:
            ConflictError: nobody is enrolled.
        """
        with self.people_lock:
            if not self.faceid.people:
                raise ConflictError("nobody is enrolled: POST /people/{name}/faces first")
            faces = self.faceid.identify(image_rgb)
        return {"faces": [{"box": list(face.box), "name": face.name, "score": round(face.score, 4),
                           "threshold": round(face.threshold, 4)} for face in faces]}

    def verify(self, image_a, image_b) -> dict[str, Any]:
        with self.people_lock:
            result = self.faceid.verify(image_a, image_b)
        return {"same": result.same, "score": round(result.score, 4), "threshold": round(result.threshold, 4)}

    def _live_identifier(self):
        with self.people_lock:
            return self.faceid.live_identifier()

    # --- cameras -----------------------------------------------------------------------------------

    def _start_camera(self, config: CameraConfig) -> Camera:
        camera = Camera(config, make_identifier=self._live_identifier, gallery_version=lambda: self._people_version,
                        on_results=self.events.on_results, on_state=self.events.on_state,
                        retry_min=self.options.retry_min, retry_max=self.options.retry_max)
        with self._cameras_lock:
            self.cameras[config.name] = camera
        return camera.start()

    def add_camera(self, config: CameraConfig) -> dict[str, Any]:
        """Add a camera and start it; the store keeps it for the next start.

        Raises:
            ConflictError: a camera of that name exists.
        """
        with self._cameras_lock:
            if config.name in self.cameras:
                raise ConflictError(f"a camera named {config.name!r} exists: delete it first or choose another name")
        self.store.upsert_camera(config.name, str(config.source), config.loop)
        return self._start_camera(config).info()

    def remove_camera(self, name: str) -> dict[str, Any]:
        """Stop a camera (its open events are closed) and forget it.

        Raises:
            NotFoundError: no such camera.
        """
        check_camera_name(name)
        with self._cameras_lock:
            camera = self.cameras.pop(name, None)
        if camera is None:
            raise NotFoundError(f"no camera named {name!r}")
        camera.stop()
        self.events.forget_camera(name)
        self.store.delete_camera(name)
        return {"name": name, "removed": True}

    def camera(self, name: str) -> Camera:
        """The running camera ``name``.

        Raises:
            NotFoundError: no such camera.
        """
        check_camera_name(name)
        with self._cameras_lock:
            camera = self.cameras.get(name)
        if camera is None:
            raise NotFoundError(f"no camera named {name!r}")
        return camera

    def camera_list(self) -> list[dict[str, Any]]:
        with self._cameras_lock:
            cameras = list(self.cameras.values())
        return [dict(camera.info(), events=self.events.created.get(camera.name, 0)) for camera in cameras]

    def health(self) -> dict[str, Any]:
        from faceid import __version__

        with self._cameras_lock:
            cameras = [{"name": camera.name, "state": camera.state} for camera in self.cameras.values()]
        return {"status": "ok", "version": __version__, "uptime_seconds": round(time.monotonic() - self.started, 1),
                "cameras": cameras}


def _lock_directory(data: Path):
    """An exclusive lock on ``<data>/serve.lock`` for as long as the service runs: a second service on the
    same directory would close the first one's open events as if it had crashed.

    Raises:
        ConflictError: another process holds it.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one service per directory is then the user's care
        return None
    handle = open(data / LOCK_FILE, "a+")  # noqa: SIM115 - held until stop()
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ConflictError(f"another faceid serve uses {data}: stop it first, or pass another `data_dir`") from None
    return handle


def _is_photo(path: Path) -> bool:
    """A file enrol wrote in a person's folder: a visible file with the suffix of a format served back
    (anything else there, put by hand, is neither listed nor served nor removed)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix in MEDIA_TYPES


def _image_suffix(data: bytes) -> str:
    """The file suffix of encoded image bytes, from their format (what the upload's name says is not trusted)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return IMAGE_SUFFIXES.get(image.format or "", ".png" if image.format is None else f".{image.format.lower()}")
