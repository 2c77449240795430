"""The unknown people of ``faceid serve``: the unknown events grouped into clusters, one per person.

Which events, and when: an event is clustered once it is **closed**, **unknown** (no name) and has a
face vector — the vector of its best (largest) face, which the store keeps with its crop. The
`faceid.service.events.EventRecorder` calls `UnknownPeople.add_event` as each event closes, and
`UnknownPeople.sync` makes the clustering follow the events table at start-up, after a purge and
after a person is forgotten. Faces join clusters by `faceid.cluster.clusters.Clustering.add`: an
existing cluster keeps its id as it grows, and clusters are never joined or split except by a
person (`merge`, `split`).

Each clustered face is one event: its `FaceRecord` is ``source="event:<id>"``, ``track=<id>``,
``label=<camera>``; the event id <-> face id map is read back from the records.

The clusters are of unknown faces only. Naming a cluster is the caller's: the service enrols its best
faces (`best_events`), relabels its events, then calls `remove_events` with them, so the named
cluster's faces leave and the emptied cluster is gone. An event corrected to a name leaves the same
way (`remove_events`); one corrected to "unknown" is clustered again (`add_event`).

What is listed (`list`, ``GET /unknowns``): every cluster that is not dismissed (`dismiss`). A
dismissed cluster stays in the clustering, so a later face that joins it stays hidden too.

What leaves, when: a face whose event was purged, forgotten or given a name leaves at the next `sync`
(no vector outlives its event by more than that), or at once through `remove_events`; a cluster whose
last face left is removed, and its id is never given again.

Files, in ``folder`` (``<data>/unknowns``, mode 0700): ``clusters.json`` and ``vectors.npz`` (the
`Clustering`: private files, sealed with the service's key), saved after every change, so all of it
survives a restart; ``dismissed.json`` (the ids of the dismissed clusters only: nothing private).
A clustering of another extractor, or one that cannot be read, is deleted with a warning and rebuilt
from the events by the next `sync` (the events and their vectors are the source of truth: what is
lost is the merges, splits and dismissals); a missing or wrong key raises.

Off: an extractor without a cosine calibration gives no clustering thresholds
(`faceid.cluster.methods.merge_thresholds` raises); `UnknownPeople.disabled` then stands in, writes
nothing, follows no event and refuses every request with a `ConflictError` that says why.

Thread-safe: one lock guards the clustering; nothing here calls the event recorder.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceid.cluster.clusters import CLUSTERS_FILE, VECTORS_FILE, Cluster, Clustering, FaceRecord
from faceid.cluster.linkage import MergeThresholds
from faceid.errors import ConflictError, InputError, NotFoundError, SealError
from faceid.io.store import read_json, write_json
from faceid.service.store import ServiceStore

if TYPE_CHECKING:
    from faceid.io.sealed import Key

logger = logging.getLogger(__name__)

DISMISSED_FILE = "dismissed.json"
DISMISSED_FORMAT = "faceid-unknowns-dismissed/1"
SAMPLE_SIZE = 8  # event ids in a listed cluster's ``sample``
SOURCE_PREFIX = "event:"


class UnknownPeople:
    """The clusters of the unknown events of a `ServiceStore` (see the module's description).

    Args:
        folder: where the clustering is kept (``<data>/unknowns``; created, mode 0700).
        store: the events.
        fingerprint: the service extractor's fingerprint (``FaceID.extractor.fingerprint``).
        thresholds: `faceid.cluster.methods.merge_thresholds` for that extractor.
        key: the service's key (the clustering is sealed with it).

    Raises:
        SealError: the saved clustering is encrypted and ``key`` is missing or another one.
    """

    def __init__(self, folder: str | Path, store: ServiceStore, *, fingerprint: str, thresholds: MergeThresholds,
                 key: Key | None = None):
        self.folder = Path(folder)
        self.store = store
        self.fingerprint = fingerprint
        self.thresholds = thresholds
        self.key = key
        self._lock = threading.RLock()
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        self._clustering: Clustering | None = self._load()
        self._dismissed: set[str] = self._load_dismissed()
        self._face_of_event: dict[int, str] = {}
        self._event_of_face: dict[str, int] = {}
        self._cluster_of_face: dict[str, str] = {}
        self._index()

    @classmethod
    def disabled(cls, reason: str) -> DisabledUnknownPeople:
        """The stand-in for a service whose extractor gives no clustering thresholds: it follows no event,
        writes nothing, and its requests raise ConflictError ``"unknown people are off: <reason>"``."""
        return DisabledUnknownPeople(reason)

    # --- loading and saving ----------------------------------------------------------------------

    def _load(self) -> Clustering | None:
        if not (self.folder / CLUSTERS_FILE).exists():
            self._set_aside()  # a dismissed list without its clustering names nothing
            return None
        try:
            return Clustering.load(self.folder, key=self.key, fingerprint=self.fingerprint)
        except SealError:
            raise
        except InputError as error:
            logger.warning("the unknown people's clustering in %s is set aside and rebuilt from the events: %s",
                           self.folder, error)
            self._set_aside()
            return None

    def _set_aside(self) -> None:
        # Deleted, not kept: it holds vectors, and the events' own vectors rebuild it.
        for name in (CLUSTERS_FILE, VECTORS_FILE, DISMISSED_FILE):
            (self.folder / name).unlink(missing_ok=True)

    def _load_dismissed(self) -> set[str]:
        path = self.folder / DISMISSED_FILE
        if self._clustering is None or not path.exists():
            return set()
        try:
            payload = read_json(path, "the dismissed unknown clusters", "it is rewritten at the next dismissal")
        except InputError as error:
            logger.warning("%s", error)
            return set()
        return {str(cluster_id) for cluster_id in payload.get("dismissed", [])} & self._clustering.clusters.keys()

    def _save(self) -> None:
        if self._clustering is not None:
            self._clustering.save(self.folder, key=self.key)
        self._dismissed &= set(self._clustering.clusters) if self._clustering is not None else set()
        write_json(self.folder / DISMISSED_FILE, {"format": DISMISSED_FORMAT, "dismissed": sorted(self._dismissed)})

    def _index(self) -> None:
        """Rebuild the event <-> face <-> cluster maps from the clustering."""
        clustering = self._clustering
        faces = {} if clustering is None else clustering.faces
        self._event_of_face = {face_id: int(record.track) for face_id, record in faces.items()}
        self._face_of_event = {event_id: face_id for face_id, event_id in self._event_of_face.items()}
        self._cluster_of_face = {} if clustering is None else clustering.cluster_of()

    # --- following the events --------------------------------------------------------------------

    def add_event(self, event_id: int) -> str | None:
        """Cluster a closed unknown event with a vector (once); returns its cluster's id, ``None`` when the
        event is not one to cluster (open, named, without a vector, gone)."""
        with self._lock:
            event_id = int(event_id)
            if event_id in self._face_of_event:
                return self._cluster_of_face[self._face_of_event[event_id]]
            event = self.store.get_event(event_id)
            if event is None or not event["closed"] or event["name"] is not None:
                return None
            vector = self.store.event_vector(event_id)
            if vector is None:
                return None
            self._add([event], vector[None, :])
            self._save()
            return self._cluster_of_face[self._face_of_event[event_id]]

    def _add(self, events: list[dict[str, Any]], vectors: np.ndarray) -> None:
        records = [FaceRecord(source=f"{SOURCE_PREFIX}{event['id']}", track=int(event["id"]), label=event["camera"])
                   for event in events]
        if self._clustering is None:
            self._clustering = Clustering.create(vectors, records, fingerprint=self.fingerprint,
                                                 thresholds=self.thresholds)
        else:
            self._clustering.add(vectors, records)
        self._index()

    def sync(self) -> dict[str, int]:
        """Make the clustering follow the events table (at start, after a purge, after forgetting a person).

        A face leaves when its event is gone or has a name; closed unknown events with a vector that are not
        clustered are added (oldest first).

        Returns:
            ``{"added": faces added, "removed": faces removed}``.
        """
        with self._lock:
            events = self.store.events_by_ids(self._face_of_event)
            leaving = [event_id for event_id in self._face_of_event
                       if event_id not in events or events[event_id]["name"] is not None]
            removed = self._remove(leaving)
            new_ids = [event_id for event_id in self.store.unknown_event_ids(closed=True)
                       if event_id not in self._face_of_event]
            new_events, vectors = [], []
            found = self.store.events_by_ids(new_ids)
            for event in (found[event_id] for event_id in sorted(found)):
                vector = self.store.event_vector(event["id"])
                if vector is not None:
                    new_events.append(event)
                    vectors.append(vector)
            if new_events:
                self._add(new_events, np.stack(vectors))
            if removed or new_events:
                self._save()
                logger.info("unknown people: %d faces added, %d removed", len(new_events), removed)
            return {"added": len(new_events), "removed": removed}

    def remove_events(self, event_ids: Iterable[int]) -> int:
        """Take these events out of the clustering (a named cluster's events, a correction to a name, a
        deletion); a cluster left empty is removed; ids not clustered are ignored. Returns how many faces left."""
        with self._lock:
            removed = self._remove(event_ids)
            if removed:
                self._save()
            return removed

    def _remove(self, event_ids: Iterable[int]) -> int:
        face_ids = [self._face_of_event[int(event_id)] for event_id in event_ids
                    if int(event_id) in self._face_of_event]
        if face_ids:
            self._clustering.remove(face_ids)
            self._index()
        return len(face_ids)

    # --- reading ---------------------------------------------------------------------------------

    def _typical_faces(self, cluster: Cluster) -> list[str]:
        """The cluster's faces, most typical first (cosine to the cluster's mean direction; ties by id)."""
        units = self._clustering.vectors_of(cluster.faces)
        similarity = units @ units.sum(axis=0)
        order = sorted(range(len(cluster.faces)), key=lambda row: (-float(similarity[row]), cluster.faces[row]))
        return [cluster.faces[row] for row in order]

    def _row(self, cluster: Cluster, events: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
        """A cluster as ``GET /unknowns`` lists it (its events that still exist); ``None`` when none do."""
        typical = [self._event_of_face[face] for face in self._typical_faces(cluster)]
        present = [event_id for event_id in typical if event_id in events]
        if not present:
            return None
        representative = self._event_of_face[cluster.representative]
        return {
            "id": cluster.id,
            "faces": len(cluster.faces),
            "events": len(present),
            "first_seen": min(events[event_id]["start"] for event_id in present),
            "last_seen": max(events[event_id]["end"] for event_id in present),
            "cameras": sorted({events[event_id]["camera"] for event_id in present}),
            "representative": representative if representative in events else present[0],
            "sample": present[:SAMPLE_SIZE],
            "event_ids": present,
        }

    def list(self) -> list[dict[str, Any]]:
        """The clusters not dismissed as ``GET /unknowns`` rows: ``id``, ``faces``, ``events``, ``first_seen``,
        ``last_seen``, ``cameras``, ``representative`` (event id), ``sample`` (up to 8 event ids, most typical
        first); largest first, then the most recently seen, then by id. A cluster whose events are all gone
        (purged, not yet synced) is left out."""
        with self._lock:
            if self._clustering is None:
                return []
            listed = [cluster for cluster in self._clustering.clusters.values() if cluster.id not in self._dismissed]
            events = self.store.events_by_ids(self._event_of_face[face] for cluster in listed for face in cluster.faces)
            rows = [row for row in (self._row(cluster, events) for cluster in listed) if row is not None]
        for row in rows:
            del row["event_ids"]
        rows.sort(key=lambda row: row["id"])
        rows.sort(key=lambda row: row["last_seen"], reverse=True)
        rows.sort(key=lambda row: -row["faces"])
        return rows

    def get(self, cluster_id: str) -> dict[str, Any]:
        """A listed cluster's row (`list`) with ``event_ids``: all its events that exist, most typical first.

        Raises:
            NotFoundError: no such cluster (never made, emptied, or merged into another), it was dismissed,
            or its events are gone; the message says which.
        """
        with self._lock:
            cluster = self._cluster(cluster_id)
            if cluster.id in self._dismissed:
                raise NotFoundError(f"no unknown cluster {cluster.id!r}: it was dismissed")
            row = self._row(cluster, self.store.events_by_ids(self.events_of(cluster.id)))
            if row is None:
                raise NotFoundError(f"no unknown cluster {cluster.id!r}: its events are gone")
            return row

    def _cluster(self, cluster_id: str) -> Cluster:
        """Any cluster (dismissed or not). Raises NotFoundError for an id that is not one."""
        cluster = None if self._clustering is None else self._clustering.clusters.get(str(cluster_id))
        if cluster is None:
            raise NotFoundError(f"no unknown cluster {cluster_id!r}: no such id (never given, emptied, merged into "
                                "another or named); GET /unknowns lists them")
        return cluster

    def _listed(self, cluster_id: str, parameter: str) -> Cluster:
        """A cluster that is not dismissed. Raises NotFoundError (no such cluster), ConflictError (dismissed)."""
        cluster = self._cluster(cluster_id)
        if cluster.id in self._dismissed:
            raise ConflictError(f"cluster {cluster.id} (`{parameter}`) was dismissed: pick a listed cluster")
        return cluster

    def events_of(self, cluster_id: str) -> list[int]:
        """The event ids of a cluster (dismissed or not), in increasing order. Raises NotFoundError."""
        with self._lock:
            return sorted(self._event_of_face[face] for face in self._cluster(cluster_id).faces)

    def best_events(self, cluster_id: str, count: int) -> list[int]:
        """Up to ``count`` event ids of a cluster (dismissed or not), most typical first: the faces to enrol
        when it is named. Raises NotFoundError."""
        with self._lock:
            return [self._event_of_face[face] for face in self._typical_faces(self._cluster(cluster_id))][:count]

    def cluster_of_event(self, event_id: int) -> str | None:
        """The id of the cluster holding ``event_id`` (dismissed or not), or ``None``."""
        with self._lock:
            face_id = self._face_of_event.get(int(event_id))
            return None if face_id is None else self._cluster_of_face[face_id]

    # --- a person's decisions --------------------------------------------------------------------

    def merge(self, source_id: str, into_id: str) -> dict[str, Any]:
        """Move every face of cluster ``source_id`` into cluster ``into_id`` (which keeps its id); the source id
        is gone after.

        Returns:
            ``{"id": source_id, "into": into_id, "faces": faces of into_id now}``.

        Raises:
            NotFoundError: no such cluster; ConflictError: either one is dismissed; InputError: the same id twice.
        """
        with self._lock:
            source, into = self._listed(source_id, "id"), self._listed(into_id, "into")
            if source.id == into.id:
                raise InputError(f"cannot merge cluster {source.id} into itself: pass another cluster as `into`")
            self._clustering.merge(source.id, into.id)
            self._index()
            self._save()
            return {"id": source.id, "into": into.id, "faces": len(self._clustering.clusters[into.id].faces)}

    def split(self, cluster_id: str, event_ids: list[int] | None = None) -> dict[str, Any]:
        """Move events of a cluster into a new cluster (``None``: split it in two automatically).

        Messages name the REST API's fields (`id`, `events`), as `merge`'s do (`id`, `into`).

        Returns:
            ``{"id": cluster_id, "new": the new cluster's id}``.

        Raises:
            NotFoundError: no such cluster; ConflictError: it is dismissed; InputError: events not in it, all or
            none of its events, or a one-face cluster split automatically.
        """
        with self._lock:
            cluster = self._listed(cluster_id, "id")
            face_ids = None
            if event_ids is not None:
                members = set(cluster.faces)
                wanted = list(dict.fromkeys(int(event_id) for event_id in event_ids))
                outside = [event_id for event_id in wanted if self._face_of_event.get(event_id) not in members]
                if outside:
                    raise InputError(f"events {', '.join(map(str, outside))} are not in cluster {cluster.id} "
                                     f"(`events`): GET /unknowns/{cluster.id} lists its events")
                if not wanted or len(wanted) == len(members):
                    raise InputError(f"`events` must name some, not all, of cluster {cluster.id}'s {len(members)} "
                                     "events (or none at all: split it in two automatically)")
                face_ids = [self._face_of_event[event_id] for event_id in wanted]
            changes = self._clustering.split(cluster.id, face_ids)
            self._index()
            self._save()
            return {"id": cluster.id, "new": changes.split[cluster.id][0]}

    def dismiss(self, cluster_id: str) -> dict[str, Any]:
        """Hide a cluster (not a person to name); later faces that join it stay hidden too. Dismissing one twice
        is no error.

        Raises:
            NotFoundError: no such cluster.
        """
        with self._lock:
            cluster = self._cluster(cluster_id)
            if cluster.id not in self._dismissed:
                self._dismissed.add(cluster.id)
                self._save()
            return {"id": cluster.id, "dismissed": True}

    def summary(self) -> dict[str, int]:
        """Counts: ``faces``, ``clusters``, ``listed``, ``dismissed``."""
        with self._lock:
            clusters = set() if self._clustering is None else set(self._clustering.clusters)
            return {"faces": len(self._face_of_event), "clusters": len(clusters),
                    "listed": len(clusters - self._dismissed), "dismissed": len(clusters & self._dismissed)}


class DisabledUnknownPeople:
    """`UnknownPeople` when they are off (`UnknownPeople.disabled`): the same methods; those that follow the
    events do nothing, the others raise ConflictError ``"unknown people are off: <reason>"``. Writes nothing."""

    def __init__(self, reason: str):
        self.reason = reason

    def _off(self) -> ConflictError:
        return ConflictError(f"unknown people are off: {self.reason}")

    def add_event(self, event_id: int) -> None:
        return None

    def sync(self) -> dict[str, int]:
        return {"added": 0, "removed": 0}

    def remove_events(self, event_ids: Iterable[int]) -> int:
        return 0

    def cluster_of_event(self, event_id: int) -> None:
        return None

    def summary(self) -> dict[str, int]:
        return {"faces": 0, "clusters": 0, "listed": 0, "dismissed": 0}

    def list(self) -> list[dict[str, Any]]:
        raise self._off()

    def get(self, cluster_id: str) -> dict[str, Any]:
        raise self._off()

    def events_of(self, cluster_id: str) -> list[int]:
        raise self._off()

    def best_events(self, cluster_id: str, count: int) -> list[int]:
        raise self._off()

    def merge(self, source_id: str, into_id: str) -> dict[str, Any]:
        raise self._off()

    def split(self, cluster_id: str, event_ids: list[int] | None = None) -> dict[str, Any]:
        raise self._off()

    def dismiss(self, cluster_id: str) -> dict[str, Any]:
        raise self._off()
