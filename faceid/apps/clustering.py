"""Clustering the faces nobody enrolled, on disk: sources -> faces -> vectors and crops -> cluster folders.

What cluster.py (:mod:`faceid.cli.cluster`) and ``faceid.FaceID.cluster`` call. The clustering itself
(which faces belong together, stable ids, incremental additions) is :mod:`faceid.cluster.clusters`'
:class:`~faceid.cluster.clusters.Clustering`; this module finds and embeds the faces, keeps the output
folder in step with it, and turns a named cluster into an enrolment.

Sources (one per run):

* **photos** (:func:`photo_faces`): a folder, flat or one sub-folder per person (the sub-folder is
  kept as each face's ``label``, informative only). By default the largest face of each photo, as
  extraction enrols it; ``all_faces`` every face. Faces are found and embedded by
  :class:`~faceid.features.embedding.FaceEmbedder` (the pipeline's detection and alignment) and cut
  out from the same detection as enrolment crops (:func:`faceid.apps.enrol.crop_face`) with a wider
  margin (:data:`CLUSTER_CROP`), so that naming the cluster finds each face again in its crop.
* **photos through a feature cache** (:func:`cache_faces` with ``faces_path``): the folder is
  embedded into that cache first (:func:`faceid.retrieve.gallery.embed_gallery`: incremental, the
  cache mirrors the folder), then each new photo's largest face is found again to cut its crop.
* **a feature cache alone** (:func:`cache_faces`): its vectors, no crops (a cache does not record
  where its images are).
* **a video** (:func:`video_faces`): faces are detected on every frame and linked into tracks by box
  overlap (:class:`~faceid.detect.tracking.FaceTracker`; a cut to another shot ends every track);
  up to ``track_faces`` faces spread over each track are embedded and cropped. **One track is one
  face record** of the clustering: its vector is that of its most typical face (:func:`typical_face`),
  so a track can never be split across clusters, and its crops (the typical face's first) travel
  together: naming the cluster enrols all of them.

The output folder::

    OUT/clusters.json, OUT/vectors.npz      the clustering (sealed / private with a key)
    OUT/c0001/f000012.png                  a face's crop (sealed with a key), named by its face id;
    OUT/c0001/f000012-02.png               a track's further crops
    OUT/index.html                         the contact sheet (``html``; refused with a key)

Crops are named by face id, unique across clusters, so merges never collide. Every change is
committed in the same order: new crops are written under ``OUT/.incoming/``, then the clustering
is saved (atomically), then :func:`sync_folders` moves every crop to the folder of its face's
cluster and removes the folders of clusters that are gone. Each run starts with the same
:func:`sync_folders`, so an interrupted run loses nothing: crops of a saved clustering are moved
where they belong, crops of a clustering never saved are deleted with ``.incoming/``.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from faceid.apps.enrol import CropOptions, crop_face
from faceid.backbones import Extractor
from faceid.cluster.clusters import CLUSTERS_FILE, ClusterChanges, Clustering, FaceRecord
from faceid.cluster.methods import check_method, merge_thresholds
from faceid.detect.faces import NO_FACE, DetectedFace, FaceOptions, face_at
from faceid.errors import ImageReadError, InputError, ManifestMismatchError, NoFaceError
from faceid.features.embedding import ChipBatcher, FaceEmbedder
from faceid.io.images import FLAT, UNREADABLE, encode_png, image_sha256, list_photos, read_image
from faceid.io.sealed import Key
from faceid.io.store import check_output_folder, is_sealed_file, read_json, write_bytes, write_new_private
from faceid.match.fitting import GalleryOptions, fit_gallery
from faceid.match.gallery import Gallery
from faceid.match.scoring import unit_vectors
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

INCOMING_DIR = ".incoming"  # new crops, before the clustering that names them is saved
SHEET_NAME = "index.html"
CROP_SUFFIX = ".png"
# A crop file: the face id, then for a track's further crops "-NN".
_CROP_NAME = re.compile(r"^(f\d+)(?:-(\d+))?\.png$")
_CLUSTER_DIR = re.compile(r"^c\d+$")
# A cluster's crops are the enrolment crop (224 px, aligned) with a wider margin than enrolment's 0.25:
# naming a cluster finds each face again in its crop, and BlazeFace missed 3 of 120 LFW faces in 0.25
# crops, none with 0.6 (HOG: 1 and 1); the vector of a face found again in a 0.6 crop is within cosine
# 0.997 of the original's (mean 0.9994; 0.25 crops: min 0.865).
CLUSTER_CROP = CropOptions(padding=0.6)
SHEET_FACES = 12  # thumbnails per cluster row of the contact sheet
SHEET_THUMBNAIL = 96


# --------------------------------------------------------------------------------------
# Faces found in a source, before they are clustered
# --------------------------------------------------------------------------------------


@dataclass
class FaceSample:
    """One face record to cluster: its vector and its crops, written under ``.incoming/`` with
    provisional names until the clustering gives it an id (:func:`_name_crops`)."""

    record: FaceRecord
    # (dim,) float32, the extractor's own vector (not normalised: the enrolled people's gallery scores it
    # as test.py does; the clustering compares directions)
    vector: np.ndarray
    crop_files: list[Path] = field(default_factory=list)  # the main crop first


@dataclass
class FoundFaces:
    """What a source gave: the faces to add, and the sources that gave none (``source -> reason``)."""

    samples: list[FaceSample]
    skipped: dict[str, str] = field(default_factory=dict)
    already: int = 0  # sources already in the clustering: not embedded again
    tried: int = 0  # sources looked at (photos, or 1 video)
    several_faces: int = 0  # photos with more than one face (the largest clustered, unless all_faces)


class _CropWriter:
    """Writes crops under ``.incoming/`` with provisional names (``p<pid>-000001.png``), sealed with ``key``."""

    def __init__(self, output: Path, key: Key | None):
        self.folder = Path(output) / INCOMING_DIR
        self.key = key
        self._count = 0

    def write(self, crop_rgb: np.ndarray) -> Path:
        self._count += 1
        path = self.folder / f"p{os.getpid()}-{self._count:06d}{CROP_SUFFIX}"
        write_new_private(path, encode_png(crop_rgb), key=self.key)
        return path


def _record(source: str, *, frame: int | None = None, seconds: float | None = None, track: int | None = None,
            box: tuple[int, int, int, int] | None = None, label: str | None = None) -> FaceRecord:
    """A face record without an id yet (the clustering gives it one)."""
    return FaceRecord(source, frame=frame, seconds=seconds, track=track, box=box, label=label)


def _box(face: DetectedFace) -> tuple[int, int, int, int]:
    return tuple(int(value) for value in face.box.as_xywh())


def photo_faces(folder: Path, embedder: FaceEmbedder, crops: _CropWriter, *, all_faces: bool = False,
                known_sources: set[str] = frozenset(), progress: bool = True, key: Key | None = None) -> FoundFaces:
    """The faces of a folder of photos (flat or person folders) not clustered yet.

    ``known_sources``: resolved paths of photos already in the clustering (skipped, not embedded
    again). ``key``: encrypted photos (enrolment crops) open with it.
    """
    from tqdm import tqdm

    people = list_photos(folder, "`faces_path`")
    found = FoundFaces(samples=[])
    pending: list[FaceSample] = []

    def deliver(samples: list[FaceSample], vectors: np.ndarray) -> None:
        for sample, vector in zip(samples, vectors):
            sample.vector = vector
            pending.append(sample)

    files = [(person, path) for person, paths in people.items() for path in paths]
    with ChipBatcher(embedder.embed_chips, deliver) as batcher:
        for person, path in tqdm(files, desc="faces", unit="photo", disable=None if progress else True):
            found.tried += 1
            if str(path.resolve()) in known_sources:
                found.already += 1
                continue
            try:
                image = read_image(path, key)
            except ImageReadError as error:
                logger.warning("skipping %s", error)
                found.skipped[str(path)] = UNREADABLE
                continue
            faces = embedder.find_faces(image)
            if not faces:
                found.skipped[str(path)] = NO_FACE
                continue
            found.several_faces += len(faces) > 1
            faces = faces if all_faces else faces[:1]
            for face, chip in zip(faces, embedder.chips(image, faces)):
                record = _record(str(path), box=_box(face), label=None if person == FLAT else person)
                crop = crops.write(crop_face(image, face, CLUSTER_CROP))
                sample = FaceSample(record, np.zeros(0, np.float32), [crop])
                batcher.add(sample, chip)
    found.samples = pending
    return found


def _check_folder_cache(features: Path, people: dict[str, list[Path]]) -> None:
    """Refuse a cache that holds people the photo folder does not: embedding the folder into it would
    drop them (the cache mirrors the folder), e.g. an enrolment cache passed by mistake."""
    from faceid.features.cache import MANIFEST_NAME

    if not (features / MANIFEST_NAME).is_file():
        return
    cached = set(read_json(features / MANIFEST_NAME, "feature cache manifest", "pass another `features` folder")
                 .get("people", {}))
    others = sorted(cached - set(people))
    if others:
        raise InputError(f"`features` {features} holds people that are not in `faces_path` ({', '.join(others[:5])}"
                         f"{' ...' if len(others) > 5 else ''}): it is another folder's cache (an enrolment cache?), "
                         "and embedding these photos into it would remove them; pass a new folder for this one's "
                         "vectors")


def cache_faces(features: Path, extractor: Extractor, crops: _CropWriter | None, *, faces_path: Path | None = None,
                embedder: FaceEmbedder | None = None, known_sources: set[str] = frozenset(), workers: int = 0,
                progress: bool = True, key: Key | None = None) -> FoundFaces:
    """The faces of a feature cache not clustered yet: one per cached photo (its largest face).

    With ``faces_path`` the folder is embedded into the cache first (the cache then mirrors the
    folder, as a retrieval gallery's does) and each new photo's crop is cut from its largest face,
    found again by ``embedder``; without it the cache is read as it is, and no crop is made.
    Sources are the photos' paths, or ``person/file`` for a cache alone.
    """
    from faceid.features.cache import FeatureCache
    from faceid.retrieve.gallery import embed_gallery

    found = FoundFaces(samples=[])
    if faces_path is not None:
        people = list_photos(faces_path, "`faces_path`")
        _check_folder_cache(Path(features), people)
        gallery = embed_gallery(faces_path, extractor, features, embedder.options if embedder else FaceOptions(),
                                workers, progress=progress, parameter="`faces_path`", key=key)
        found.tried = len(gallery) + len(gallery.skipped)
        for name, reason in gallery.skipped.items():
            person, file_name = name.split("/", 1)
            found.skipped[str(Path(faces_path) / file_name if person == FLAT else Path(faces_path) / name)] = reason
        label_of = {path.resolve(): (None if person == FLAT else person) for person, files in people.items()
                    for path in files}
        for path, vector in zip(gallery.paths, gallery.vectors):
            if str(path.resolve()) in known_sources:
                found.already += 1
                continue
            record = _record(str(path), label=label_of.get(path.resolve()))
            sample = FaceSample(record, vector)
            if crops is not None and embedder is not None:
                try:
                    image = read_image(path, key)
                except ImageReadError:
                    image = None
                faces = embedder.find_faces(image) if image is not None else []
                if faces:
                    record.box = _box(faces[0])
                    sample.crop_files.append(crops.write(crop_face(image, faces[0], CLUSTER_CROP)))
            found.samples.append(sample)
        return found
    cache = FeatureCache.load(Path(features), extractor.manifest, key=key)
    for person, cached in sorted(cache.people.items()):
        for file_name, vector in zip(cached.files, cached.vectors):
            found.tried += 1
            source = f"{person}/{file_name}"
            if source in known_sources:
                found.already += 1
                continue
            found.samples.append(FaceSample(_record(source, label=None if person == FLAT else person), vector))
    return found


# --------------------------------------------------------------------------------------
# Video: faces linked into tracks, one record per track
# --------------------------------------------------------------------------------------


@dataclass
class _TrackFaces:
    """The faces kept of one track so far: every ``stride``-th detection, thinned to stay bounded."""

    track: int
    detections: int = 0
    stride: int = 1
    faces: list[tuple[int, float, DetectedFace, np.ndarray, np.ndarray]] = field(default_factory=list)
    # (frame, seconds, face, chip, crop)


def typical_face(vectors: np.ndarray) -> int:
    """The row of a track's most typical face: the one most like the mean direction of its faces'
    vectors ``(n, dim)``.

    Its vector stands for the track. Not the track's mean: a mean of several faces sits closer to
    every other mean than single faces do to each other, while the clustering's merge thresholds are
    calibrated on single faces. On the Hamilton clip (9 tracks) the means of up to 8 faces put 3 audience
    members with Michelle Obama and a musician with Barack Obama (10 same-cluster pairs, at least 7 wrong
    by looking); the typical faces made 4 pairs, 2 wrong (Barack with Michelle Obama, the musician with an
    audience member); Lin-Manuel Miranda's 2 tracks and one audience member's 2 were joined either way.
    """
    units = unit_vectors(vectors)
    return int(np.argmax(units @ units.sum(axis=0)))


def video_faces(video_path: Path, embedder: FaceEmbedder, crops: _CropWriter, *,
                every: int = DEFAULTS.cluster_video_every,
                track_faces: int = DEFAULTS.cluster_track_faces, min_track: int = DEFAULTS.cluster_min_track,
                detect_width: int | None = DEFAULTS.detect_width, cut_threshold: float = DEFAULTS.cut_threshold,
                max_frames: int | None = None, known_sources: set[str] = frozenset(),
                progress: bool = True) -> FoundFaces:
    """One face record per track of the video: detection on every frame, tracks by box overlap.

    ``every``: a track's faces are sampled every that many detections; ``track_faces``: at most so
    many, spread over the whole track, are embedded and cropped; ``min_track``: tracks detected in
    fewer frames are dropped (a face seen for a tenth of a second is more often a false detection
    than a person). A cut to another shot (``cut_threshold``, as live identification) ends every track.
    """
    import itertools

    from tqdm import tqdm

    from faceid.apps.live import SceneCuts
    from faceid.detect.tracking import FaceTracker
    from faceid.io.video import VideoSource

    for name, value in (("video_every", every), ("track_faces", track_faces), ("min_track", min_track),
                        ("max_frames", 1 if max_frames is None else max_frames)):
        if value < 1:
            raise InputError(f"`{name}` must be at least 1, got {value}")
    found = FoundFaces(samples=[], tried=1)
    source_name = str(video_path)
    if str(Path(video_path).resolve()) in known_sources:
        found.already = 1
        return found
    source = VideoSource(video_path)
    detection = FaceEmbedder(embedder.extractor, dataclasses.replace(embedder.options, max_width=detect_width,
                                                                    landmarks=False))
    tracker = FaceTracker(vote_accepts=lambda score: False)
    open_tracks: dict[int, _TrackFaces] = {}
    cuts = SceneCuts(cut_threshold)

    def close(entry: _TrackFaces) -> None:
        if entry.detections < min_track or not entry.faces:
            return
        keep = np.unique(np.linspace(0, len(entry.faces) - 1, min(track_faces, len(entry.faces))).round().astype(int))
        faces = [entry.faces[index] for index in keep]
        vectors = embedder.embed_chips(np.stack([chip for *_, chip, _ in faces]))
        typical = typical_face(vectors)
        # The typical face's crop first (the record's crop), then the others, largest first.
        faces = [faces[typical], *sorted(faces[:typical] + faces[typical + 1:], key=lambda kept: -kept[2].box.area)]
        frame, seconds, face, _, _ = faces[0]
        record = _record(source_name, frame=frame, seconds=round(float(seconds), 3), track=entry.track, box=_box(face))
        sample = FaceSample(record, vectors[typical], [crops.write(crop) for *_, crop in faces])
        found.samples.append(sample)

    with source:
        total = source.frame_count if max_frames is None else min(max_frames, source.frame_count or max_frames)
        frames = itertools.islice(source, max_frames)
        for index, seconds, frame in tqdm(frames, total=total, desc="frames", unit="frame",
                                          disable=None if progress else True):
            if cuts.is_cut(frame):
                tracker.tracks.clear()  # a cut: every face on screen is gone
            tracker.update_with_detections(frame, detection.find_faces(frame))
            alive = set()
            for track in tracker.tracks:
                alive.add(track.track_id)
                if track.face is None:
                    continue  # followed, not detected in this frame
                entry = open_tracks.setdefault(track.track_id, _TrackFaces(track.track_id))
                entry.detections += 1
                if (entry.detections - 1) % (every * entry.stride):
                    continue
                face = face_at(frame, track.box)
                if face is None:
                    continue
                chip = embedder.chips(frame, [face])[0]
                entry.faces.append((index, seconds, face, chip, crop_face(frame, face, CLUSTER_CROP)))
                if len(entry.faces) > 2 * track_faces:  # keep every other one: still spread over the track
                    entry.faces = entry.faces[::2]
                    entry.stride *= 2
            for track_id in sorted(set(open_tracks) - alive):
                close(open_tracks.pop(track_id))
    for track_id in sorted(open_tracks):
        close(open_tracks.pop(track_id))
    return found


# --------------------------------------------------------------------------------------
# The output folder
# --------------------------------------------------------------------------------------


def is_clustering(folder: Path) -> bool:
    return (Path(folder) / CLUSTERS_FILE).is_file()


def load_clustering(folder: Path, *, extractor: Extractor | None = None, key: Key | None = None) -> Clustering:
    """The clustering saved in ``folder``; with ``extractor``, insist it was made by that extractor.

    Raises:
        InputError: no clustering there. SealError: a wrong or missing key.
        ManifestMismatchError: made with another extractor.
    """
    folder = Path(folder)
    if not is_clustering(folder):
        raise InputError(f"`clusters` {folder} holds no clustering ({CLUSTERS_FILE}): make one with `output` first")
    if key is not None and not is_sealed_file(folder / CLUSTERS_FILE):
        raise InputError(f"the clustering in {folder} is not encrypted, but a key was given (`key`): run without one "
                         "(its crops are plaintext), or cluster into another folder with the key")
    clustering = Clustering.load(folder, key=key)
    if extractor is not None and clustering.fingerprint != extractor.fingerprint:
        raise ManifestMismatchError(
            f"the clustering in {folder} was made with extractor {clustering.fingerprint[:12]}, not with "
            f"{extractor.fingerprint[:12]} (`extractor`): its vectors cannot be compared; pass the extractor that "
            "made it, or another `output` folder")
    return clustering


def crop_files(output: Path, face_id: str, cluster_id: str) -> list[Path]:
    """The crops of one face in its cluster folder, its main crop first."""
    folder = Path(output) / cluster_id
    found = []
    for path in folder.glob(f"{face_id}*{CROP_SUFFIX}"):
        match = _CROP_NAME.match(path.name)
        if match and match.group(1) == face_id:
            found.append((int(match.group(2) or 1), path))
    return [path for _, path in sorted(found)]


def sync_folders(output: Path, clustering: Clustering) -> dict[str, int]:
    """Put every crop in the folder of its face's cluster; delete the crops of faces the (saved)
    clustering does not hold that wait in ``.incoming/``; remove the folders of clusters that are gone
    (when empty). Idempotent: run after every save and before every change. Returns counts."""
    output = Path(output)
    where = clustering.cluster_of()
    moved = dropped = 0
    folders = [path for path in output.iterdir() if path.is_dir() and _CLUSTER_DIR.match(path.name)]
    incoming = output / INCOMING_DIR
    for folder in [*folders, incoming]:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            match = _CROP_NAME.match(path.name)
            cluster_id = where.get(match.group(1)) if match else None
            if cluster_id is None:
                if folder == incoming:  # a crop of a run that never saved its clustering
                    path.unlink()
                    dropped += 1
                elif match:
                    logger.warning("%s: face %s is in no cluster of %s: left where it is", path, match.group(1), output)
                continue
            if folder.name != cluster_id:
                (output / cluster_id).mkdir(exist_ok=True)
                os.replace(path, output / cluster_id / path.name)
                moved += 1
    for cluster_id in clustering.clusters:
        (output / cluster_id).mkdir(exist_ok=True)
    removed = 0
    for folder in folders:
        if folder.name not in clustering.clusters and not any(folder.iterdir()):
            folder.rmdir()
            removed += 1
    if incoming.is_dir():
        shutil.rmtree(incoming)
    return {"moved": moved, "removed_folders": removed, "dropped": dropped}


def _name_crops(output: Path, clustering: Clustering, samples: list[FaceSample], face_ids: list[str]) -> None:
    """Give the new faces' crops their face ids as names (still in ``.incoming/``) and record them."""
    for sample, face_id in zip(samples, face_ids, strict=True):
        for number, path in enumerate(sample.crop_files, start=1):
            name = f"{face_id}{CROP_SUFFIX}" if number == 1 else f"{face_id}-{number:02d}{CROP_SUFFIX}"
            os.replace(path, path.with_name(name))
        clustering.faces[face_id].crop = f"{face_id}{CROP_SUFFIX}" if sample.crop_files else None


def _check_output(output: Path, sources: list[tuple[Path | None, str]]) -> None:
    output = Path(output)
    for source, parameter in sources:
        if source is not None and Path(source).is_dir():
            check_output_folder(output, "`output`", Path(source), parameter,
                                "its crops would be clustered again as photos on the next run")
    if output.exists() and not output.is_dir():
        raise InputError(f"`output` {output} is a file: pass a folder")
    if output.is_dir() and not is_clustering(output) and any(
            not path.name.startswith(".") for path in output.iterdir()):
        raise InputError(f"`output` {output} holds files but no clustering ({CLUSTERS_FILE}): pass a new or empty "
                         "folder, or one a previous run wrote")


# --------------------------------------------------------------------------------------
# What a run did
# --------------------------------------------------------------------------------------


@dataclass
class ClusterReport:
    """What one run of cluster.py (or one naming, merge or split) did; :meth:`as_dict` is its ``--json``."""

    command: str  # "cluster", "name", "merge" or "split"
    output: Path
    summary: dict[str, Any]  # Clustering.summary()
    changes: ClusterChanges | None = None  # None for a new clustering
    added: int = 0  # face records added by this run
    already: int = 0  # sources already clustered before, not embedded again
    skipped: dict[str, str] = field(default_factory=dict)  # source -> why it gave no face
    several_faces: int = 0
    html: Path | None = None
    enrolled: dict[str, Any] | None = None  # cluster.py name: person, faces embedded, skipped
    recluster: bool = False
    known: dict[str, int] = field(default_factory=dict)  # faces left out as enrolled people (`gallery`), by person
    clustering: Clustering | None = field(default=None, repr=False)  # the clustering as saved (not in as_dict)

    def as_dict(self) -> dict[str, Any]:
        payload = {"command": self.command, **self.summary, "output": str(self.output),
                   "html": None if self.html is None else str(self.html)}
        if self.command == "cluster":
            payload.update(added=self.added, already_clustered=self.already, skipped=len(self.skipped),
                           skipped_reasons=_count_reasons(self.skipped), several_faces=self.several_faces,
                           reclustered=self.recluster)
        if self.changes is not None:
            payload["changes"] = self.changes.as_dict()
        if self.enrolled is not None:
            payload["enrolled"] = self.enrolled
        if self.known:
            payload["left_out_known"] = dict(self.known)
        return payload

    def report(self) -> str:
        """Readable lines for the terminal."""
        summary = self.summary
        lines = [f"{self.output}: {summary.get('clusters')} clusters of {summary.get('faces')} faces "
                 f"({summary.get('singletons')} singletons)"]
        if self.command == "cluster":
            lines.append(f"  added {self.added} faces" + (f"; {self.already} sources already clustered"
                                                           if self.already else ""))
            if self.skipped:
                reasons = ", ".join(f"{reason}: {count}" for reason, count in _count_reasons(self.skipped).items())
                lines.append(f"  {len(self.skipped)} sources gave no face ({reasons}), e.g. {next(iter(self.skipped))}")
            if self.known:
                people = ", ".join(f"{person} {count}" for person, count in sorted(self.known.items()))
                lines.append(f"  left out {sum(self.known.values())} faces of enrolled people ({people})")
        if self.enrolled is not None:
            enrolled = self.enrolled
            lines.append(f"  enrolled cluster {enrolled['cluster']} as {enrolled['person']} in {enrolled['features']}: "
                         f"{enrolled['crops']} crops, {enrolled['embedded']} embedded, {enrolled['reused']} already "
                         f"there, {enrolled['skipped']} skipped (no face found again)")
        if self.changes is not None:
            lines.append(f"  {'reclustered' if self.recluster else 'changes'}: {self.changes.describe()}")
        if self.html is not None:
            lines.append(f"  contact sheet: {self.html}")
        return "\n".join(lines)


def _count_reasons(skipped: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reason in skipped.values():
        counts[reason] = counts.get(reason, 0) + 1
    return counts


# --------------------------------------------------------------------------------------
# Entry points: clustering a source, naming, merging, splitting
# --------------------------------------------------------------------------------------


def cluster_faces(
    output: str | Path,
    extractor: Extractor,
    *,
    faces_path: str | Path | None = None,
    video_path: str | Path | None = None,
    features: str | Path | None = None,
    extractor_dir: str | Path | None = None,
    face_options: FaceOptions = FaceOptions(),
    all_faces: bool = False,
    recluster: bool = False,
    method: str | None = None,
    html_path: str | Path | bool | None = None,
    video_every: int = DEFAULTS.cluster_video_every,
    track_faces: int = DEFAULTS.cluster_track_faces,
    min_track: int = DEFAULTS.cluster_min_track,
    max_frames: int | None = None,
    workers: int = DEFAULTS.workers,
    progress: bool = True,
    gallery: Gallery | None = None,
    key: Key | None = None,
) -> ClusterReport:
    """Cluster the faces of one source into ``output``: a new clustering, or new faces added to the
    one already there (untouched clusters keep their ids); ``recluster`` then re-runs the whole clustering.

    Args:
        output: the clustering's folder (:mod:`this module's docstring <faceid.apps.clustering>`).
        extractor: embeds the faces; an existing clustering must have been made with it.
        faces_path, video_path, features: the source: photos, a video, or a feature cache
            (``faces_path`` with ``features``: the folder embedded into that cache first).
        extractor_dir: the extractor's directory (its ``calibration.npz`` sets the merge thresholds).
        face_options: detection (:class:`~faceid.detect.faces.FaceOptions`).
        all_faces: photos: every face, not only the largest.
        method: a clustering method of :data:`faceid.cluster.methods.METHODS` for a new clustering
            (``None``: ``DEFAULTS.cluster_method``).
        html_path: write a contact sheet there (``True``: ``output/index.html``); refused with a ``key``.
        video_every, track_faces, min_track, max_frames: video sampling (:func:`video_faces`).
        gallery: the enrolled people (:func:`enrolled_gallery`): faces it names are left out (counted per
            person in the report), so only the faces nobody enrolled are clustered; ``None``: every face.
        key: crops, ``clusters.json`` and ``vectors.npz`` are sealed with it; encrypted photos open with it.

    Raises:
        InputError: no source or several, a missing or empty folder, an ``output`` that is not a
            clustering folder, ``html_path`` with a ``key``. NoFaceError: a new clustering and no face found.
        ManifestMismatchError: ``output`` holds a clustering made with another extractor.
        SealError: a wrong or missing key for an encrypted clustering.
    """
    output = Path(output)
    given = [name for name, value in (("faces_path", faces_path), ("video_path", video_path)) if value is not None]
    if len(given) > 1:
        raise InputError("pass one source: `faces_path` (photos) or `video_path` (a video), not both")
    if not given and features is None:
        raise InputError("nothing to cluster: pass `faces_path` (photos), `video_path` (a video) or `features` "
                         "(a feature cache)")
    if video_path is not None and features is not None:
        raise InputError("`features` goes with `faces_path` (photos embedded into that cache) or alone, not with "
                         "`video_path`")
    if all_faces and features is not None:
        raise InputError("`all_faces` cannot be used with `features`: a feature cache holds the largest face of each "
                         "photo only")
    if method is not None:
        check_method(method)
    sheet = _sheet_path(output, html_path, key)
    _check_output(output, [(faces_path and Path(faces_path), "`faces_path`")])
    clustering = None
    if is_clustering(output):
        clustering = load_clustering(output, extractor=extractor, key=key)
        sync_folders(output, clustering)  # finish what an interrupted run saved
    known = _known_sources(clustering)
    created = not output.exists()
    crops = _CropWriter(output, key)
    embedder = FaceEmbedder(extractor, face_options)
    saved = False
    try:
        if features is not None:
            found = cache_faces(Path(features), extractor, crops, faces_path=faces_path and Path(faces_path),
                                embedder=embedder, known_sources=known, workers=workers, progress=progress, key=key)
        elif video_path is not None:
            found = video_faces(Path(video_path), embedder, crops, every=video_every, track_faces=track_faces,
                                min_track=min_track, max_frames=max_frames, known_sources=known, progress=progress)
        else:
            found = photo_faces(Path(faces_path), embedder, crops, all_faces=all_faces, known_sources=known,
                                progress=progress, key=key)
        enrolled = _leave_out_known(found, gallery)
        clustering, report = _apply(output, clustering, found, extractor, extractor_dir, method, recluster, key)
        report.known = enrolled
        report.clustering = clustering
        saved = True
        sync_folders(output, clustering)
    finally:
        if not saved:  # crops of faces never saved (those of a saved clustering: moved by the next run's sync)
            shutil.rmtree(output if created else output / INCOMING_DIR, ignore_errors=True)
    if sheet is not None:
        report.html = write_contact_sheet(output, clustering, sheet)
    return report


def _known_sources(clustering: Clustering | None) -> set[str]:
    """The sources of a clustering's faces, resolved when they are files (how new ones are told apart)."""
    if clustering is None:
        return set()
    known = set()
    for record in clustering.faces.values():
        known.add(record.source)
        known.add(str(Path(record.source).resolve()))
    return known


def enrolled_gallery(features: str | Path, extractor: Extractor, extractor_dir: str | Path | None = None, *,
                     options: GalleryOptions = GalleryOptions(), key: Key | None = None) -> Gallery:
    """The gallery of the people enrolled in a feature cache, fitted as test.py fits it
    (:func:`faceid.match.fitting.fit_gallery`): what `cluster_faces` leaves out with ``gallery``.

    Raises:
        InputError: no cache at ``features``, or nobody enrolled in it. ManifestMismatchError: another extractor's.
    """
    from faceid.features.cache import FeatureCache

    cache = FeatureCache.load(Path(features), extractor.manifest, key=key)
    vectors, labels, names = cache.matrix(min_images=1)
    if not len(vectors):
        raise InputError(f"nobody is enrolled in {features} (`gallery`): enrol people first, or cluster every face")
    return fit_gallery(vectors, np.array(names)[labels], extractor.manifest, extractor_dir, options)


def _leave_out_known(found: FoundFaces, gallery: Gallery | None) -> dict[str, int]:
    """Drop the faces ``gallery`` names (their crops wait in ``.incoming/`` and are deleted with it);
    returns how many per person."""
    if gallery is None or not found.samples:
        return {}
    decisions = gallery.identify(np.stack([sample.vector for sample in found.samples]))
    known: dict[str, int] = {}
    kept = []
    for sample, decision in zip(found.samples, decisions, strict=True):
        if decision.known:
            known[decision.name] = known.get(decision.name, 0) + 1
        else:
            kept.append(sample)
    found.samples = kept
    return known


def _apply(output: Path, clustering: Clustering | None, found: FoundFaces, extractor: Extractor,
           extractor_dir: str | Path | None, method: str | None, recluster: bool,
           key: Key | None) -> tuple[Clustering, ClusterReport]:
    """Add the found faces (or create the clustering) and save it (the crops wait in ``.incoming/``)."""
    samples = found.samples
    if clustering is None and not samples:
        problems = ", ".join(f"{reason}: {count}" for reason, count in _count_reasons(found.skipped).items())
        raise NoFaceError(f"no face found in {found.tried} source(s) ({problems or 'nothing to read'}): nothing to "
                          "cluster; try `upsample` 1 or another `detector`")
    changes = None
    if samples:
        vectors = np.stack([sample.vector for sample in samples]).astype(np.float32)
        records = [sample.record for sample in samples]
        if clustering is None:
            thresholds = merge_thresholds(extractor.manifest, extractor_dir)
            options = {} if method is None else {"method": method}
            clustering = Clustering.create(vectors, records, fingerprint=extractor.fingerprint, thresholds=thresholds,
                                           **options)
        else:
            changes = clustering.add(vectors, records)
        _name_crops(output, clustering, samples, [record.id for record in records])
    elif clustering is not None:
        changes = ClusterChanges(unchanged=len(clustering.clusters))
    if recluster:
        changes = clustering.recluster()
    clustering.save(output, key=key)
    return clustering, ClusterReport("cluster", output, clustering.summary(), changes, added=len(samples),
                                     already=found.already, skipped=found.skipped, several_faces=found.several_faces,
                                     recluster=recluster)


def _sheet_path(output: Path, html_path: str | Path | bool | None, key: Key | None) -> Path | None:
    """Where the contact sheet goes: ``html_path`` (``True``: ``output/index.html``), else an earlier run's
    ``output/index.html``, kept in step with the clustering (never with a key); ``None``: no sheet."""
    if html_path is None or html_path is False:
        existing = Path(output) / SHEET_NAME
        return existing if existing.is_file() and key is None else None
    if key is not None:
        raise InputError("no contact sheet with a key (`html`): an HTML page shows its faces in plaintext, which would "
                         "undo the encryption of the crops; run without `html`, or decrypt a copy of the output first")
    return output / SHEET_NAME if html_path is True else Path(html_path)


def _changed(command: str, output: Path, clustering: Clustering, changes: ClusterChanges, key: Key | None,
             **extra: Any) -> ClusterReport:
    """Save a changed clustering, move its crops, refresh its contact sheet if it has one."""
    clustering.save(output, key=key)
    sync_folders(output, clustering)
    sheet = _sheet_path(output, None, key)
    html = None if sheet is None else write_contact_sheet(output, clustering, sheet)
    return ClusterReport(command, output, clustering.summary(), changes, html=html, clustering=clustering, **extra)


def _open(clusters_dir: str | Path, key: Key | None, extractor: Extractor | None = None) -> tuple[Path, Clustering]:
    """A saved clustering, its crops put where they belong (an interrupted run finished) before any change."""
    output = Path(clusters_dir)
    clustering = load_clustering(output, extractor=extractor, key=key)
    sync_folders(output, clustering)
    return output, clustering


def merge_clusters(clusters_dir: str | Path, source_id: str, into_id: str, *, key: Key | None = None) -> ClusterReport:
    """Merge cluster ``source_id`` into ``into_id`` (which keeps its id and name) and move its crops.

    Raises:
        InputError: no clustering there, an unknown id, or the same id twice.
    """
    output, clustering = _open(clusters_dir, key)
    changes = clustering.merge(source_id, into_id)
    return _changed("merge", output, clustering, changes, key)


def split_cluster(clusters_dir: str | Path, cluster_id: str, face_ids: list[str] | None = None, *,
                  key: Key | None = None) -> ClusterReport:
    """Split ``face_ids`` out of cluster ``cluster_id`` into a new cluster (``None``: the clustering
    splits it in two itself) and move their crops.

    Raises:
        InputError: no clustering there, an unknown cluster, faces not in that cluster, or all of them.
    """
    output, clustering = _open(clusters_dir, key)
    changes = clustering.split(cluster_id, face_ids)
    return _changed("split", output, clustering, changes, key)


def name_cluster(clusters_dir: str | Path, cluster_id: str, person: str, features: str | Path, extractor: Extractor,
                 *, face_options: FaceOptions = FaceOptions(), key: Key | None = None) -> ClusterReport:
    """Enrol cluster ``cluster_id``'s faces as ``person`` in the feature cache ``features``, then
    record the name in the clustering.

    The crops are added to the person's enrolment exactly as :meth:`faceid.FaceID.enrol` adds photos
    (:func:`faceid.features.extract.extract_features` with ``add=True``): the person's other
    photos stay, the usual manifest, encryption (``key``) and skip rules apply (a crop without a
    face found again is skipped and reported). Each crop is recorded in the cache under a name
    made from its content (``cluster_<sha256>.png``), so crops of different clusterings never
    replace each other and naming a cluster twice adds nothing twice. ``key``: the cache's, and the
    clustering's when that is encrypted (a plaintext clustering may be named into an encrypted cache).

    Raises:
        InputError: an unknown cluster, a cluster without crops (clustered from a cache alone), an
            invalid ``person``. NoFaceError: no crop gave a face and the person had none before.
        ManifestMismatchError: the clustering or the cache was made with another extractor.
    """
    from faceid.features.cache import check_person_name
    from faceid.features.extract import extract_features

    check_person_name(person, "person")
    # A plaintext clustering (of public photos, say) may be named into an encrypted cache: ``key`` is
    # then the cache's alone, and the clustering stays as it is.
    clusters_file = Path(clusters_dir) / CLUSTERS_FILE
    clustering_key = key if clusters_file.is_file() and is_sealed_file(clusters_file) else None
    output, clustering = _open(clusters_dir, clustering_key, extractor)
    cluster = clustering.get(cluster_id)
    if cluster.name not in (None, person):
        raise InputError(f"cluster {cluster_id} is already named {cluster.name!r} and its faces are enrolled as "
                         f"{cluster.name!r}: naming it {person!r} too would enrol the same faces as two people; "
                         f"if that was wrong, erase {cluster.name!r} first (forget.py, or FaceID.forget)")
    files = [path for face_id in cluster.faces for path in crop_files(output, face_id, cluster_id)]
    if not files:
        raise InputError(f"cluster {cluster_id} has no face crops in {output / cluster_id} (a clustering of a feature "
                         "cache alone has none): cluster the photos (`faces_path`) to name it")
    with tempfile.TemporaryDirectory(prefix="faceid-name-") as scratch:
        os.chmod(scratch, 0o700)
        links = {}
        for path in files:
            link = Path(scratch, f"cluster_{image_sha256(path, clustering_key)[:16]}{CROP_SUFFIX}")
            if link.name not in links:
                link.symlink_to(path.resolve())
                links[link.name] = link
        summary = extract_features(Path(features), extractor, Path(features), face_options=face_options,
                                   people_files={person: list(links.values())}, add=True, workers=0, progress=False,
                                   key=key)
    if person in summary.not_enrolled:
        problems = "; ".join(f"{len(found)} {reason}" for reason, found in sorted(summary.skipped.items()))
        raise NoFaceError(f"no face found again in the {len(links)} crops of cluster {cluster_id} ({problems}): "
                          f"{person!r} is not enrolled")
    clustering.name_cluster(cluster_id, person)
    enrolled = {"person": person, "cluster": cluster_id, "crops": len(links), "embedded": summary.embedded,
                "reused": summary.reused, "skipped": sum(len(found) for found in summary.skipped.values()),
                "features": str(features)}
    return _changed("name", output, clustering, ClusterChanges(unchanged=len(clustering.clusters)), clustering_key,
                    enrolled=enrolled)


# --------------------------------------------------------------------------------------
# The contact sheet
# --------------------------------------------------------------------------------------


def write_contact_sheet(output: Path, clustering: Clustering, path: Path) -> Path:
    """One HTML page, one row per cluster (largest first): id, size, cohesion, name, and up to
    :data:`SHEET_FACES` thumbnails, the representative first, then the faces closest to it.
    Thumbnails are embedded (:func:`faceid.retrieve.sheet.thumbnail_uri`); only for plaintext crops."""
    from faceid.retrieve.sheet import thumbnail_uri

    where = clustering.cluster_of()
    rows = []
    ordered = sorted(clustering.clusters.values(), key=lambda cluster: (-len(cluster.faces), cluster.id))
    for cluster in ordered:
        others = [face_id for face_id in cluster.faces if face_id != cluster.representative]
        if others:
            vectors = clustering.vectors_of([cluster.representative, *others])
            similarity = vectors[1:] @ vectors[0]  # the clustering's vectors are unit vectors
            order = np.argsort(-similarity, kind="stable")
            others = [others[index] for index in order]
            scores = {others[rank]: float(similarity[index]) for rank, index in enumerate(order)}
        else:
            scores = {}
        figures = []
        for face_id in [cluster.representative, *others][:SHEET_FACES]:
            files = crop_files(output, face_id, where[face_id])
            uri = thumbnail_uri(files[0], SHEET_THUMBNAIL) if files else None
            image = (f'<img src="{uri}" alt="{face_id}">' if uri else '<div class="missing">no crop</div>')
            record = clustering.faces[face_id]
            caption = face_id if face_id == cluster.representative else f"{face_id}<br>{scores[face_id]:.3f}"
            title = html.escape(record.source + ("" if record.frame is None else f" frame {record.frame}"))
            frame = "representative" if face_id == cluster.representative else "face"
            figures.append(f'<figure class="{frame}" title="{title}">{image}'
                           f'<figcaption>{caption}</figcaption></figure>')
        cohesion = "–" if cluster.cohesion is None else f"{cluster.cohesion:.3f}"
        name = f" · <b>{html.escape(cluster.name)}</b>" if cluster.name else ""
        more = f" (first {SHEET_FACES} shown)" if len(cluster.faces) > SHEET_FACES else ""
        rows.append(f'<section><h2>{cluster.id}{name}</h2><p>{len(cluster.faces)} faces{more}, cohesion {cohesion}'
                    f'</p><div class="row">{"".join(figures)}</div></section>')
    summary = clustering.summary()
    generated = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    title = f"Clusters: {output}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
.row {{ display: flex; gap: 6px; align-items: flex-start; flex-wrap: wrap; }}
figure {{ margin: 0; padding: 2px; border: 3px solid #ddd; text-align: center; font-size: 11px; }}
figure.representative {{ border-color: #333; }}
figure img {{ height: {SHEET_THUMBNAIL}px; display: block; }}
.missing {{ height: {SHEET_THUMBNAIL}px; width: {SHEET_THUMBNAIL}px; background: #eee; }}
section {{ margin-bottom: 14px; border-bottom: 1px solid #eee; padding-bottom: 8px; }}
h2 {{ font-size: 16px; margin: 0; }} section p {{ margin: 2px 0 6px; color: #555; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Generated {generated}. {summary.get('clusters')} clusters of {summary.get('faces')} faces
({summary.get('singletons')} singletons), largest first. The framed face is each cluster's representative;
the others follow by cosine similarity to it (under each). Cohesion: the mean similarity between the
cluster's faces.</p>
{"".join(rows)}
</body></html>
"""
    write_bytes(path, page.encode())
    return path
