"""`Clustering`: the clusters of a set of faces, with ids that stay put as faces are added and named.

A clustering is saved in a folder as ``clusters.json`` (faces, their sources, clusters, names, the
method and thresholds; sealed when a key is given, like a feature cache's manifest) and ``vectors.npz``
(one vector per face: a private file, sealed with the key). Face ids (``f000001``) and cluster ids
(``c0001``) are never reused. Clusters of a first run are numbered by size, largest first.

- `Clustering.add`: new faces join existing clusters or form new ones by the linkage rule
  (faceid/cluster/linkage.py) with the existing clusters frozen: no existing cluster is split or joined
  to another, and a cluster no new face joins keeps its id and faces.
- `Clustering.recluster`: everything again with the clustering's method; each new cluster takes the id
  of the old cluster it shares most faces with (each old id once, names follow ids), and the changes
  say which ids were kept, changed, created and removed.
- `Clustering.merge`, `Clustering.split`, `Clustering.name_cluster`: a person's corrections.
- `Clustering.remove`: faces leave (their source was deleted or corrected); emptied clusters go, ids are not reused.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceid.cluster.linkage import MergeThresholds, average_linkage
from faceid.cluster.methods import check_method, cluster_labels
from faceid.errors import InputError
from faceid.io.store import json_bytes, load_npz, read_private, save_npz, write_private
from faceid.match.scoring import unit_vectors
from faceid.settings import DEFAULTS

if TYPE_CHECKING:
    from faceid.io.sealed import Key

FORMAT = "faceid-clusters/1"
CLUSTERS_FILE = "clusters.json"
VECTORS_FILE = "vectors.npz"


@dataclass
class FaceRecord:
    """One clustered face and where it came from.

    Attributes:
        source: the image file (as given), or the video file.
        id: ``f000001`` ..., given by the `Clustering` (leave empty).
        frame: the video frame it was seen in; ``None`` for photos.
        seconds: the frame's time in the video.
        track: the video track it belongs to (a track's faces are one person).
        box: ``(x, y, width, height)`` in the source, when known.
        crop: the file name of its crop in its cluster's folder, when one was written.
        label: the person folder it came from, when the photos were in person folders (informative).
    """

    source: str
    id: str = ""
    frame: int | None = None
    seconds: float | None = None
    track: int | None = None
    box: tuple[int, int, int, int] | None = None
    crop: str | None = None
    label: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: (list(value) if name == "box" and value is not None else value)
                for name, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaceRecord:
        box = data.get("box")
        return cls(source=str(data["source"]), id=str(data["id"]), frame=data.get("frame"), seconds=data.get("seconds"),
                   track=data.get("track"), box=None if box is None else tuple(int(v) for v in box),
                   crop=data.get("crop"), label=data.get("label"))


@dataclass
class Cluster:
    """A group of faces taken to be one person.

    Attributes:
        id: ``c0001`` ...; kept while the cluster exists.
        faces: its faces' ids, in the order they joined.
        representative: the face most like the rest (highest similarity to the cluster's mean direction).
        cohesion: the mean cosine similarity between its faces; ``None`` for a single face.
        name: the person it was named as (`Clustering.name_cluster`), else ``None``.
    """

    id: str
    faces: list[str]
    representative: str = ""
    cohesion: float | None = None
    name: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClusterChanges:
    """What an operation did to the clusters.

    Attributes:
        created: ids of new clusters.
        changed: ``{id: {"added": a, "removed": r}}`` for kept ids whose faces changed.
        merged: ``{into: [ids merged into it]}``.
        split: ``{id: [ids of the clusters split off it]}``.
        removed: ids that no longer exist (merged away, or gone in a recluster).
        unchanged: clusters with the same id and faces as before.
    """

    created: list[str] = field(default_factory=list)
    changed: dict[str, dict[str, int]] = field(default_factory=dict)
    merged: dict[str, list[str]] = field(default_factory=dict)
    split: dict[str, list[str]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for people: what changed."""
        parts = []
        if self.created:
            parts.append(f"{len(self.created)} new")
        if self.changed:
            parts.append(f"{len(self.changed)} changed")
        for into, sources in self.merged.items():
            parts.append(f"{', '.join(sources)} merged into {into}")
        for source, new in self.split.items():
            parts.append(f"{source} split into {source}, {', '.join(new)}")
        if self.removed and not self.merged:
            parts.append(f"{len(self.removed)} removed")
        parts.append(f"{self.unchanged} unchanged")
        return "; ".join(parts)


def _cluster_stats(units: np.ndarray) -> tuple[int, float | None]:
    """The row of the representative face and the cohesion of a cluster's unit vectors."""
    total = units.sum(axis=0)
    representative = int(np.argmax(units @ total))
    count = len(units)
    if count < 2:
        return representative, None
    cohesion = (float(total @ total) - float(np.square(units).sum())) / (count * (count - 1))
    return representative, round(cohesion, 4)


class Clustering:
    """The clusters of a set of faces (see the module's description). Build one with `Clustering.create`."""

    def __init__(self, *, fingerprint: str, thresholds: MergeThresholds, method: str, faces: list[FaceRecord],
                 vectors: np.ndarray, clusters: list[Cluster], next_face: int, next_cluster: int):
        check_method(method)
        self.fingerprint = fingerprint
        self.thresholds = thresholds
        self.method = method
        self.faces: dict[str, FaceRecord] = {face.id: face for face in faces}
        self._rows = {face.id: row for row, face in enumerate(faces)}
        self._units = unit_vectors(np.asarray(vectors, dtype=np.float32))
        self.clusters: dict[str, Cluster] = {cluster.id: cluster for cluster in clusters}
        self._next_face = next_face
        self._next_cluster = next_cluster

    # --- building ------------------------------------------------------------------------------

    @classmethod
    def create(cls, vectors: np.ndarray, records: list[FaceRecord], *, fingerprint: str, thresholds: MergeThresholds,
               method: str = DEFAULTS.cluster_method) -> Clustering:
        """Cluster faces from scratch.

        Args:
            vectors: ``(n, dim)`` one vector per face, from one extractor.
            records: one `FaceRecord` per face (ids are given here).
            fingerprint: the extractor's fingerprint (later additions must come from the same one).
            thresholds: `faceid.cluster.methods.merge_thresholds` for that extractor.
            method: one of `faceid.cluster.methods.METHODS`.

        Raises:
            InputError: no faces, or vectors and records that do not pair up.
        """
        vectors = _check_vectors(vectors, records, None)
        if not len(records):
            raise InputError("no faces to cluster: `vectors` is empty")
        clustering = cls(fingerprint=fingerprint, thresholds=thresholds, method=method, faces=[],
                         vectors=np.zeros((0, vectors.shape[1]), np.float32), clusters=[], next_face=1, next_cluster=1)
        clustering._append_faces(vectors, records)
        labels = cluster_labels(clustering._units, method, thresholds=thresholds)
        groups = _groups(labels)
        # Largest first, then by first face: c0001 is the biggest group.
        for rows in sorted(groups, key=lambda rows: (-len(rows), rows[0])):
            clustering._new_cluster([records[row].id for row in rows])
        return clustering

    def _append_faces(self, vectors: np.ndarray, records: list[FaceRecord]) -> list[str]:
        ids = []
        for record in records:
            record.id = f"f{self._next_face:06d}"
            self._next_face += 1
            self._rows[record.id] = len(self._rows)
            self.faces[record.id] = record
            ids.append(record.id)
        self._units = np.concatenate([self._units, unit_vectors(vectors)]) if len(self._units) else unit_vectors(vectors)
        return ids

    def _new_cluster(self, faces: list[str], name: str | None = None) -> str:
        cluster_id = f"c{self._next_cluster:04d}"
        self._next_cluster += 1
        self.clusters[cluster_id] = Cluster(cluster_id, list(faces), name=name)
        self._refresh(cluster_id)
        return cluster_id

    def _refresh(self, cluster_id: str) -> None:
        cluster = self.clusters[cluster_id]
        row, cohesion = _cluster_stats(self.vectors_of(cluster.faces))
        cluster.representative = cluster.faces[row]
        cluster.cohesion = cohesion

    # --- reading -------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self._units.shape[1])

    def vectors_of(self, face_ids: list[str]) -> np.ndarray:
        """The unit vectors of these faces, ``(len(face_ids), dim)``."""
        try:
            return self._units[[self._rows[face] for face in face_ids]]
        except KeyError as error:
            raise InputError(f"no face {error.args[0]!r} in this clustering") from None

    def cluster_of(self) -> dict[str, str]:
        """``{face id: cluster id}``."""
        return {face: cluster.id for cluster in self.clusters.values() for face in cluster.faces}

    def get(self, cluster_id: str, parameter: str = "cluster_id") -> Cluster:
        """The cluster with this id (``parameter``: the argument it came in, named by the error).

        Raises:
            InputError: there is none (the message lists a few that exist).
        """
        if cluster_id not in self.clusters:
            known = sorted(self.clusters)
            shown = ", ".join(known[:8]) + (f", ... ({len(known)} in all)" if len(known) > 8 else "")
            raise InputError(f"no cluster {cluster_id!r} (`{parameter}`): its clusters are {shown}")
        return self.clusters[cluster_id]

    def ordered(self) -> list[Cluster]:
        """Clusters largest first (then by id)."""
        return sorted(self.clusters.values(), key=lambda cluster: (-len(cluster.faces), cluster.id))

    def summary(self) -> dict[str, Any]:
        """Counts and the largest clusters, ready for JSON."""
        sizes = [len(cluster.faces) for cluster in self.clusters.values()]
        return {
            "clusters": len(self.clusters),
            "faces": len(self.faces),
            "singletons": sum(1 for size in sizes if size == 1),
            "named": sum(1 for cluster in self.clusters.values() if cluster.name),
            "largest": max(sizes, default=0),
            "method": self.method,
            "thresholds": {"pair": self.thresholds.pair, "group": self.thresholds.group},
        }

    # --- changing ------------------------------------------------------------------------------

    def add(self, vectors: np.ndarray, records: list[FaceRecord]) -> ClusterChanges:
        """Add faces: each joins an existing cluster or a new one; untouched clusters keep id and faces.

        The linkage rule decides (whatever the clustering's method: the existing clusters are frozen
        groups that faces may join, never joined to each other).

        Raises:
            InputError: vectors of another dimension than the clustering's, or that do not pair with records.
        """
        vectors = _check_vectors(vectors, records, self.dim)
        changes = ClusterChanges()
        if not len(records):
            changes.unchanged = len(self.clusters)
            return changes
        order = list(self.clusters)
        groups = np.full(len(self._rows) + len(records), -1, np.int64)
        for index, cluster_id in enumerate(order):
            groups[[self._rows[face] for face in self.clusters[cluster_id].faces]] = index
        new_ids = self._append_faces(vectors, records)
        labels = average_linkage(self._units, self.thresholds, groups=groups, frozen=len(order))
        new_rows = np.array([self._rows[face] for face in new_ids])
        # A frozen group's label is its first face's row; map each label to the cluster it holds.
        cluster_by_label = {int(labels[self._rows[self.clusters[c].faces[0]]]): c for c in order}
        added: dict[str, list[str]] = {}
        fresh: dict[int, list[str]] = {}
        for face, row in zip(new_ids, new_rows.tolist()):
            label = int(labels[row])
            if label in cluster_by_label:
                added.setdefault(cluster_by_label[label], []).append(face)
            else:
                fresh.setdefault(label, []).append(face)
        for cluster_id, faces in added.items():
            self.clusters[cluster_id].faces.extend(faces)
            self._refresh(cluster_id)
            changes.changed[cluster_id] = {"added": len(faces), "removed": 0}
        for label in sorted(fresh, key=lambda label: (-len(fresh[label]), label)):
            changes.created.append(self._new_cluster(fresh[label]))
        changes.unchanged = len(order) - len(added)
        return changes

    def recluster(self, method: str | None = None) -> ClusterChanges:
        """Cluster every face again from scratch (with ``method``, else the clustering's own).

        Each new cluster takes the id of the old cluster it shares the most faces with (pairs with the
        largest overlap first, each old id at most once), with that cluster's name; the others get new ids.
        """
        if method is not None:
            check_method(method)
            self.method = method
        old = {cluster_id: set(cluster.faces) for cluster_id, cluster in self.clusters.items()}
        old_names = {cluster_id: cluster.name for cluster_id, cluster in self.clusters.items()}
        face_of_row = [None] * len(self._rows)
        for face, row in self._rows.items():
            face_of_row[row] = face
        groups = [[face_of_row[row] for row in rows] for rows in _groups(cluster_labels(self._units, self.method,
                                                                                           thresholds=self.thresholds))]
        cluster_of = self.cluster_of()
        overlaps = []
        for index, faces in enumerate(groups):
            counts: dict[str, int] = {}
            for face in faces:
                counts[cluster_of[face]] = counts.get(cluster_of[face], 0) + 1
            overlaps.extend((-count, old_id, index) for old_id, count in counts.items())
        taken_old, assigned = set(), {}
        for _, old_id, index in sorted(overlaps):
            if old_id not in taken_old and index not in assigned:
                taken_old.add(old_id)
                assigned[index] = old_id
        changes = ClusterChanges()
        self.clusters = {}
        for index in sorted(range(len(groups)), key=lambda index: (-len(groups[index]), index)):
            faces = groups[index]
            if index in assigned:
                old_id = assigned[index]
                self.clusters[old_id] = Cluster(old_id, faces, name=old_names[old_id])
                self._refresh(old_id)
                added, removed = len(set(faces) - old[old_id]), len(old[old_id] - set(faces))
                if added or removed:
                    changes.changed[old_id] = {"added": added, "removed": removed}
                else:
                    changes.unchanged += 1
            else:
                changes.created.append(self._new_cluster(faces))
        changes.removed = sorted(set(old) - taken_old)
        return changes

    def merge(self, source_id: str, into_id: str) -> ClusterChanges:
        """Move every face of cluster ``source_id`` into ``into_id`` (which keeps its id and name).

        Raises:
            InputError: an unknown id, the same id twice, or two clusters named as different people.
        """
        if source_id == into_id:
            raise InputError(f"cannot merge cluster {source_id} into itself: pass two different clusters "
                             "(`source_id`, `into_id`)")
        source, into = self.get(source_id, "source_id"), self.get(into_id, "into_id")
        if source.name and into.name and source.name != into.name:
            raise InputError(f"cluster {source_id} is named {source.name!r} and {into_id} {into.name!r}: rename one "
                             "first, or split the faces that are wrong")
        into.faces.extend(source.faces)
        into.name = into.name or source.name
        del self.clusters[source_id]
        self._refresh(into_id)
        unchanged = len(self.clusters) - 1
        return ClusterChanges(changed={into_id: {"added": len(source.faces), "removed": 0}},
                              merged={into_id: [source_id]}, removed=[source_id], unchanged=unchanged)

    def split(self, cluster_id: str, face_ids: list[str] | None = None) -> ClusterChanges:
        """Split faces off a cluster into a new one.

        Args:
            cluster_id: the cluster.
            face_ids: the faces to move out; ``None``: split it in two around its two most different
                faces (each face goes to the side whose mean it is closer to, refined a few times).

        Raises:
            InputError: an unknown id, faces not in the cluster, or nothing that can be split off.
        """
        cluster = self.get(cluster_id)
        if face_ids is None:
            if len(cluster.faces) < 2:
                raise InputError(f"cluster {cluster_id} holds one face: nothing to split")
            face_ids = _two_way_split(cluster.faces, self.vectors_of(cluster.faces))
        face_ids = list(dict.fromkeys(face_ids))
        members = set(cluster.faces)
        outside = [face for face in face_ids if face not in members]
        if outside:
            raise InputError(f"faces {', '.join(outside)} are not in cluster {cluster_id} (`face_ids`): its faces "
                             f"are {', '.join(sorted(members)[:12])}{' ...' if len(members) > 12 else ''}")
        if not face_ids or len(face_ids) == len(members):
            raise InputError(f"`face_ids` must name some, not all, of cluster {cluster_id}'s {len(members)} faces")
        moving = set(face_ids)
        cluster.faces = [face for face in cluster.faces if face not in moving]
        self._refresh(cluster_id)
        new_id = self._new_cluster(face_ids)
        return ClusterChanges(created=[new_id], changed={cluster_id: {"added": 0, "removed": len(face_ids)}},
                              split={cluster_id: [new_id]}, unchanged=len(self.clusters) - 2)

    def remove(self, face_ids: list[str]) -> ClusterChanges:
        """Drop faces, their vectors and records: a cluster left empty is removed, the others keep their id
        and name (representative and cohesion recomputed). Ids are never given again.

        Raises:
            InputError: a face that is not in this clustering.
        """
        gone = set(face_ids)
        missing = sorted(gone - self.faces.keys())
        if missing:
            raise InputError(f"faces {', '.join(missing[:12])} are not in this clustering (`face_ids`)")
        changes = ClusterChanges()
        shrunk = []
        for cluster_id in list(self.clusters):
            cluster = self.clusters[cluster_id]
            kept = [face for face in cluster.faces if face not in gone]
            if len(kept) == len(cluster.faces):
                changes.unchanged += 1
            elif not kept:
                del self.clusters[cluster_id]
                changes.removed.append(cluster_id)
            else:
                changes.changed[cluster_id] = {"added": 0, "removed": len(cluster.faces) - len(kept)}
                cluster.faces = kept
                shrunk.append(cluster_id)
        if gone:
            kept_faces = [face for face in sorted(self._rows, key=self._rows.get) if face not in gone]
            self._units = self._units[[self._rows[face] for face in kept_faces]].reshape(len(kept_faces), self.dim)
            self._rows = {face: row for row, face in enumerate(kept_faces)}
            for face in gone:
                del self.faces[face]
        for cluster_id in shrunk:
            self._refresh(cluster_id)
        return changes

    def name_cluster(self, cluster_id: str, person: str | None) -> None:
        """Record that a cluster is ``person`` (``None``: forget the name). Enrolling its faces is the caller's."""
        self.get(cluster_id).name = person

    # --- storage -------------------------------------------------------------------------------

    def save(self, directory: str | Path, *, key: Key | None = None) -> None:
        """Write ``clusters.json`` and ``vectors.npz`` into ``directory`` (each atomically; sealed with ``key``)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        order = sorted(self._rows, key=self._rows.get)
        save_npz(directory / VECTORS_FILE, VECTORS_FILE, key=key, vectors=self._units.astype(np.float32),
                 faces=np.array(order, dtype=str))
        payload = {
            "format": FORMAT,
            "extractor_fingerprint": self.fingerprint,
            "method": self.method,
            "thresholds": self.thresholds.as_dict(),
            "encrypted": key is not None,
            "next_face": self._next_face,
            "next_cluster": self._next_cluster,
            "summary": self.summary(),
            "clusters": [cluster.as_dict() for cluster in self.ordered()],
            "faces": [self.faces[face].as_dict() for face in order],
        }
        write_private(directory / CLUSTERS_FILE, json_bytes(payload), CLUSTERS_FILE, key=key)

    @classmethod
    def load(cls, directory: str | Path, *, key: Key | None = None, fingerprint: str | None = None) -> Clustering:
        """Read a clustering saved by `save`.

        Args:
            directory: the folder holding ``clusters.json`` and ``vectors.npz``.
            key: the key it was sealed with.
            fingerprint: the extractor that will add faces; a clustering of another extractor is refused.

        Raises:
            InputError: missing, corrupt, of another format, or of another extractor.
            SealError: a wrong or missing key (`faceid.errors.KeyRequiredError`, `WrongKeyError`, ...).
        """
        directory = Path(directory)
        fix = "cluster the faces again into a new folder"
        raw = read_private(directory / CLUSTERS_FILE, "clustering", fix, CLUSTERS_FILE, key=key)
        try:
            payload = json.loads(raw)
        except ValueError as error:
            raise InputError(f"{directory / CLUSTERS_FILE} is not valid JSON ({error}): {fix}") from error
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise InputError(f"{directory / CLUSTERS_FILE} is not a faceid clustering ({FORMAT}): {fix}")
        if fingerprint is not None and payload["extractor_fingerprint"] != fingerprint:
            raise InputError(
                f"{directory} was clustered with extractor {payload['extractor_fingerprint'][:12]}, not this one "
                f"({fingerprint[:12]}): vectors of two extractors cannot be compared; use that extractor, or {fix}")
        arrays = load_npz(directory / VECTORS_FILE, "clustering vectors", fix, VECTORS_FILE,
                          bool(payload.get("encrypted")), key=key)
        faces = [FaceRecord.from_dict(face) for face in payload["faces"]]
        if [face.id for face in faces] != [str(face) for face in arrays["faces"]]:
            raise InputError(f"{directory / VECTORS_FILE} does not belong to {directory / CLUSTERS_FILE}: {fix}")
        thresholds = payload["thresholds"]
        clusters = [Cluster(id=c["id"], faces=list(c["faces"]), representative=c["representative"],
                            cohesion=c["cohesion"], name=c.get("name")) for c in payload["clusters"]]
        return cls(fingerprint=payload["extractor_fingerprint"],
                   thresholds=MergeThresholds(thresholds["pair"], thresholds["group"], dict(thresholds.get("baselines", {}))),
                   method=payload["method"], faces=faces, vectors=arrays["vectors"], clusters=clusters,
                   next_face=int(payload["next_face"]), next_cluster=int(payload["next_cluster"]))


def _check_vectors(vectors: np.ndarray, records: list[FaceRecord], dim: int | None) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(records):
        raise InputError(f"`vectors` ({vectors.shape}) must hold one row per record ({len(records)})")
    if dim is not None and len(vectors) and vectors.shape[1] != dim:
        raise InputError(f"these vectors are {vectors.shape[1]}-d but the clustering's are {dim}-d: "
                         "they come from another extractor")
    if not np.isfinite(vectors).all():
        raise InputError("`vectors` holds NaN or infinite values")
    return vectors


def _groups(labels: np.ndarray) -> list[list[int]]:
    """Rows grouped by label, each group in row order, groups by first row."""
    order = np.argsort(labels, kind="stable")
    _, starts = np.unique(labels[order], return_index=True)
    return sorted((rows.tolist() for rows in np.split(order, starts[1:])), key=lambda rows: rows[0])


def _two_way_split(faces: list[str], units: np.ndarray, rounds: int = 10) -> list[str]:
    """The faces of the side of a two-way split that does not hold the first face's side's seed."""
    mean = units.mean(axis=0)
    first = int(np.argmin(units @ mean))  # the face least like the cluster
    second = int(np.argmin(units @ units[first]))  # the face least like that one
    centres = units[[first, second]]
    side = np.zeros(len(faces), bool)
    for _ in range(rounds):
        side = (units @ centres[1]) > (units @ centres[0])
        if side.all() or not side.any():
            side[second], side[first] = True, False
        centres = np.stack([units[~side].mean(axis=0), units[side].mean(axis=0)])
    moved = [face for face, other in zip(faces, side) if other]
    return moved if len(moved) <= len(faces) / 2 or math.isclose(len(moved), len(faces) / 2) else \
        [face for face, other in zip(faces, side) if not other]
