"""The Python API: enrol people, then identify and verify faces in images and video.

```python
import faceid

fid = faceid.FaceID(features="features")          # dlib's face model, no set-up step
fid.enrol("alice", ["alice_1.jpg", "alice_2.jpg"])
for face in fid.identify("group.jpg"):
    print(face.name or "unknown", round(face.score, 3), face.box)
```

Everything here is the same code the scripts run: enrolment goes through the feature cache of
``extract_features.py`` (manifest, content hashes, encryption, the same skip rules), the gallery
is fitted and its open-set threshold derived for the people enrolled exactly as ``test.py`` does
(`faceid.match.fitting.fit_gallery`), video goes through the live identifier (detection,
tracking and a vote per track), and clustering the faces nobody enrolled is ``cluster.py``'s
(`faceid.apps.clustering`).

An *image* is a path to an image file, an RGB ``uint8`` NumPy array of shape ``(height, width, 3)``
or a PIL image. Errors are `faceid.errors` exceptions whose messages name the parameter to fix.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from faceid.errors import ImageReadError, InputError, NoFaceError
from faceid.settings import DEFAULTS

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from faceid.apps.clustering import ClusterReport
    from faceid.apps.live import LiveIdentifier
    from faceid.backbones.registry import Extractor
    from faceid.features.cache import FeatureCache
    from faceid.features.embedding import FaceEmbedder
    from faceid.io.sealed import Key
    from faceid.match.gallery import Gallery

logger = logging.getLogger(__name__)

#: What the API accepts as an image.
ImageLike = Union[str, os.PathLike, np.ndarray, "PILImage"]

__all__ = ["FaceID", "Face", "Verification", "Frame", "embed", "load_image", "ImageLike"]


@dataclass(frozen=True)
class Face:
    """One face found in an image or a video frame, and who it is.

    Attributes:
        box: ``(x, y, width, height)`` in pixels of the image given.
        name: the enrolled person, or ``None`` when the face is unknown (or, in video, not yet decided).
        score: the decision statistic of the best-matching person (higher = more alike).
        threshold: the score a face must reach to be named, derived for the people enrolled.
        known: ``True`` when ``name`` is an enrolled person.
        best_person: the best-matching enrolled person even when the face was not accepted.
        track: in video, the id of the track this face belongs to; ``None`` for still images.
    """

    box: tuple[int, int, int, int]
    name: str | None
    score: float
    threshold: float
    known: bool
    best_person: str | None = None
    track: int | None = None


@dataclass(frozen=True)
class Verification:
    """Whether two images show the same person (their largest faces).

    Attributes:
        same: ``True`` when ``score`` reaches ``threshold``.
        score: the similarity of the two faces under the decision's scorer (higher = more alike).
        threshold: the threshold of a one-person gallery at the ``target_fpir`` asked for, i.e. the
            share of different-person pairs that would be called the same.
    """

    same: bool
    score: float
    threshold: float


@dataclass(frozen=True)
class Frame:
    """The faces of one video frame.

    Attributes:
        index: the frame's number, from 0.
        seconds: its time in the video (since the first frame for cameras and streams; ``None`` for stills).
        faces: one `Face` per tracked face.
    """

    index: int
    seconds: float | None
    faces: list[Face]


def load_image(image: ImageLike, *, key: Key | None = None) -> np.ndarray:
    """An image as ``(height, width, 3) uint8`` RGB.

    Args:
        image: a path to an image file (EXIF orientation applied; an encrypted enrolment crop is
            opened with ``key``), an RGB ``uint8`` array ``(height, width, 3)`` (used as it is), or a
            PIL image (converted to RGB).
        key: the key encrypted image files open with.

    Raises:
        ImageReadError: the file is missing or not a readable image.
        InputError: an array of the wrong shape or type, or an object that is not an image.
    """
    from faceid.io.images import read_image

    if isinstance(image, (str, os.PathLike)):
        return read_image(Path(image), key=key)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"an image array must be RGB uint8 of shape (height, width, 3), got {image.dtype} of "
                             f"shape {image.shape}: convert it first (e.g. a BGR OpenCV frame with "
                             "cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))")
        if image.shape[0] < 2 or image.shape[1] < 2:
            raise ImageReadError(f"an image array of shape {image.shape} has no usable pixels")
        return np.ascontiguousarray(image)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a core dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    raise InputError(f"an image is a path, an RGB uint8 array or a PIL image, not a {type(image).__name__}")


def _default_extractor() -> Extractor:
    """dlib's face model, built once per process (nothing is written to disk)."""
    global _DEFAULT_EXTRACTOR
    if _DEFAULT_EXTRACTOR is None:
        from faceid.backbones import create_extractor

        _DEFAULT_EXTRACTOR = create_extractor("dlib")
    return _DEFAULT_EXTRACTOR


_DEFAULT_EXTRACTOR: Extractor | None = None


def _extractor(model: str | os.PathLike | None) -> Extractor:
    if model is None:
        return _default_extractor()
    from faceid.backbones import load_extractor

    return load_extractor(Path(model))


def _face_options(detector: str | None, live: bool = False):
    from faceid.detect.faces import FaceOptions

    if live:
        detector = detector or DEFAULTS.live_detector
        return FaceOptions.live(detector)
    return FaceOptions(detector=detector or DEFAULTS.detector)


def _box(face_box) -> tuple[int, int, int, int]:
    x, y, width, height = face_box.as_xywh()
    return int(x), int(y), int(width), int(height)


def embed(image: ImageLike, model: str | os.PathLike | None = None, *, detector: str | None = None) -> np.ndarray:
    """The vectors of every face in an image, largest face first.

    Args:
        image: a path, an RGB ``uint8`` array ``(height, width, 3)`` or a PIL image.
        model: an extractor directory (``network.py --output``); ``None``: dlib's face model (128-d).
        detector: ``blazeface`` (default), ``hog``, ``cnn`` or ``cnn-dlib`` (see `faceid.detect.faces`).

    Returns:
        ``(n_faces, dim) float32``; ``(0, dim)`` when the image holds no face.

    Raises:
        ImageReadError: the image cannot be read. InputError: not an image, or an unknown ``detector``.
    """
    from faceid.features.embedding import FaceEmbedder

    embedder = FaceEmbedder(_extractor(model), _face_options(detector))
    image_rgb = load_image(image)
    return embedder.embed_faces(image_rgb, embedder.find_faces(image_rgb))


class FaceID:
    """Enrol people and recognise them: the whole toolkit behind one object.

    Args:
        model: an extractor directory made by ``network.py`` (or ``train_siamese.py``); ``None``:
            dlib's face model, built in memory (no set-up step).
        features: the feature cache directory of the enrolled people (``extract_features.py``
            writes the same format); created by the first `enrol`. ``None``: a temporary
            cache that lives as long as this object (nothing is kept).
        detector: ``blazeface`` (default; MediaPipe's BlazeFace: turned faces, profiles and small faces in a
            few milliseconds), ``hog`` (dlib's, frontal faces), ``cnn`` (dlib's CNN: turned faces, slower) or
            ``cnn-dlib``.
        scorer: ``euclidean``, ``cosine`` or ``head`` (a trained similarity head); ``None``: what
            the model or the backbone's calibration recommends.
        target_fpir: share of strangers that may be given a name, whatever the number of people
            enrolled; the threshold is derived for the people enrolled. Lower = fewer wrong names,
            more unknowns.
        key: the encryption key of the cache and of encrypted enrolment crops: a
            `faceid.io.sealed.Key`, or the path of a key file (``keys.py new``). ``None``:
            ``$FACEID_KEY`` when set, else no encryption.
        classification: a similarity model directory (``train.py``); ``None``: the extractor's
            own ``head/`` when it has one, else ``models/similarity`` when it exists (as ``test.py``),
            else the backbone alone.
        threshold: a fixed decision threshold instead of the one derived from ``target_fpir``.

    The gallery is fitted lazily, on the first identification after the people changed.

    Example:
        ```python
        fid = FaceID(features="features")
        fid.enrol("alice", ["alice_1.jpg", "alice_2.jpg"])
        fid.identify("group.jpg")
        ```
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        features: str | os.PathLike | None = None,
        *,
        detector: str | None = None,
        scorer: str | None = None,
        target_fpir: float = DEFAULTS.target_fpir,
        key: Key | str | os.PathLike | None = None,
        classification: str | os.PathLike | None = None,
        threshold: float | None = None,
    ):
        from faceid.detect.faces import DETECTORS
        from faceid.match.openset import check_target_fpir
        from faceid.match.scoring import SCORERS

        if detector is not None and detector not in DETECTORS:
            raise InputError(f"unknown `detector` {detector!r}: choose one of {', '.join(DETECTORS)}")
        if scorer is not None and scorer not in SCORERS:
            raise InputError(f"unknown `scorer` {scorer!r}: choose one of {', '.join(SCORERS)}")
        check_target_fpir(target_fpir)
        self.model = None if model is None else Path(model)
        self._temporary = None
        if features is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="faceid-features-")
            features = self._temporary.name
        self.features = Path(features)
        self.detector = detector
        self.scorer = scorer
        self.target_fpir = target_fpir
        self.classification = None if classification is None else Path(classification)
        self.threshold = threshold
        self.key = _resolve_key(key)
        self.extractor = _extractor(self.model)
        self._cache: FeatureCache | None = None
        self._gallery: Gallery | None = None
        self._embedder: FaceEmbedder | None = None

    def __repr__(self) -> str:
        model = "dlib" if self.model is None else str(self.model)
        return f"FaceID(model={model!r}, features={str(self.features)!r}, people={len(self.people)})"

    # --- the enrolled people --------------------------------------------------------------

    def _load_cache(self) -> FeatureCache | None:
        """The cache, checked against this model (``None`` while nobody was ever enrolled)."""
        from faceid.features.cache import MANIFEST_NAME, FeatureCache
        from faceid.io.store import read_json

        manifest_path = self.features / MANIFEST_NAME
        if self._cache is None and manifest_path.is_file():
            # After the last person was forgotten the cache is empty, which is no error here.
            if not read_json(manifest_path, "feature cache manifest", "").get("people"):
                return None
            self._cache = FeatureCache.load(self.features, self.extractor.manifest, key=self.key)
        return self._cache

    @property
    def people(self) -> list[str]:
        """The enrolled people (those with at least one usable face), sorted."""
        return list(self.face_counts())

    def face_counts(self) -> dict[str, int]:
        """How many usable faces each enrolled person has (by name, sorted)."""
        cache = self._load_cache()
        if cache is None:
            return {}
        return {name: len(cache.people[name].vectors) for name in sorted(cache.people) if len(cache.people[name].vectors)}

    def images(self, name: str) -> list[str]:
        """The file names of ``name``'s images that gave a face (those the gallery holds), as enrolled;
        empty for someone not enrolled."""
        cache = self._load_cache()
        person = None if cache is None else cache.people.get(name)
        return [] if person is None else list(person.files)

    @property
    def not_enrolled(self) -> list[str]:
        """People the cache lists but who have no usable face (every image failed), sorted."""
        cache = self._load_cache()
        return [] if cache is None else cache.not_enrolled

    def enrol(self, name: str, images: Iterable[ImageLike]) -> int:
        """Add a person's photos (or more photos of someone enrolled) to the cache.

        The largest face of each image is embedded once and cached (an image already in the
        cache with the same content is not embedded again); images with no face or that cannot
        be read are skipped with a warning, as ``extract_features.py`` skips them. Files are
        recorded by name: an image with the name of one already enrolled for this person
        replaces it.

        Args:
            name: the person, as it will be reported (a plain folder-like name: no ``/``).
            images: paths, RGB ``uint8`` arrays or PIL images (arrays and PIL images are stored
                in the cache under a name made from their content).

        Returns:
            How many faces were added.

        Raises:
            InputError: an empty or invalid ``name``, no images, two images with the same file name.
            NoFaceError: none of the images gave a face and the person had none before
                (nothing is enrolled).
        """
        from faceid.features.extract import extract_features
        from faceid.io.images import encode_png

        _check_name(name)
        images = list(images)
        if not images:
            raise InputError(f"`images` is empty: give at least one photo of {name!r}")
        with tempfile.TemporaryDirectory(prefix="faceid-enrol-") as scratch:
            os.chmod(scratch, 0o700)  # decoded faces never readable by others, even for a moment
            paths = []
            for image in images:
                if isinstance(image, (str, os.PathLike)):
                    path = Path(image)
                    if not path.is_file():
                        raise ImageReadError(f"{path}: no such file")
                else:
                    png = encode_png(load_image(image))
                    path = Path(scratch, f"image_{hashlib.sha256(png).hexdigest()[:16]}.png")
                    path.write_bytes(png)
                paths.append(path)
            names = [path.name for path in paths]
            repeated = sorted({file for file in names if names.count(file) > 1})
            if repeated:
                raise InputError(f"several images are named {', '.join(repeated)}: files are recorded by name, so "
                                 "rename them (or pass them in separate calls if one should replace the other)")
            summary = extract_features(
                self.features, self.extractor, self.features, face_options=_face_options(self.detector),
                people_files={name: paths}, add=True, workers=0, progress=False, key=self.key,
            )
        self._cache = self._gallery = None
        for reason, files in sorted(summary.skipped.items()):
            logger.warning("%s: %s skipped: %s", name, ", ".join(files), reason)
        if name in self.not_enrolled:
            problems = "; ".join(f"{', '.join(files)}: {reason}" for reason, files in sorted(summary.skipped.items()))
            raise NoFaceError(f"no usable face in the {len(images)} image(s) given for {name!r} ({problems}): "
                              f"{name!r} is not enrolled; give photos where the face is visible and large enough")
        return summary.embedded

    def remove_images(self, name: str, file_names: Iterable[str]) -> int:
        """Remove some of a person's images from the cache, by the file names they were enrolled under
        (their vectors leave the gallery; the person's other images stay). A person left with no
        image is no longer enrolled.

        Returns:
            How many vectors were removed.

        Raises:
            InputError: ``name`` is not in the cache.
        """
        from faceid.features.extract import remove_images

        _check_name(name)
        if self._load_cache() is None:
            raise InputError(f"no person {name!r}: nobody is enrolled in {self.features}")
        removed = remove_images(self.features, self.extractor, name, list(file_names), key=self.key)
        self._cache = self._gallery = None
        return removed

    def forget(self, name: str, *, faces_path: str | os.PathLike | None = None) -> None:
        """Erase a person from the cache (their vectors, their file names, their counts).

        Args:
            name: the person, as enrolled.
            faces_path: an enrolment folder of person folders: ``<faces_path>/<name>/`` is erased too.

        Raises:
            InputError: ``name`` is not enrolled (nothing is changed).
        """
        from faceid.apps.forget import forget_person

        _check_name(name)
        if self._load_cache() is None:
            raise InputError(f"no person {name!r}: nobody is enrolled in {self.features}")
        forget_person(name, self.features, None if faces_path is None else Path(faces_path), key=self.key)
        self._cache = self._gallery = None

    # --- identification --------------------------------------------------------------------

    def gallery(self) -> Gallery:
        """The fitted gallery of the people enrolled (refitted after `enrol` and `forget`).

        Raises:
            InputError: nobody is enrolled.
        """
        from faceid.match.fitting import fit_gallery

        if self._gallery is None:
            cache = self._load_cache()
            if cache is None or not self.people:
                raise InputError(f"nobody is enrolled in {self.features}: call enrol(name, images) first")
            if self.not_enrolled:
                logger.warning("left out (no usable face): %s", ", ".join(self.not_enrolled))
            vectors, labels, names = cache.matrix(min_images=1)
            self._gallery = fit_gallery(vectors, np.array(names)[labels], self.extractor.manifest, self.model,
                                        self._gallery_options())
        return self._gallery

    def _gallery_options(self):
        """What this object's parameters say about deciding (identification and verification alike)."""
        from faceid.match.fitting import GalleryOptions

        return GalleryOptions(classification=self.classification, scorer=self.scorer,
                              target_fpir=self.target_fpir, threshold=self.threshold)

    def _face_embedder(self) -> FaceEmbedder:
        from faceid.features.embedding import FaceEmbedder

        if self._embedder is None:
            self._embedder = FaceEmbedder(self.extractor, _face_options(self.detector))
        return self._embedder

    def identify(self, image: ImageLike) -> list[Face]:
        """Every face of an image and who it is, largest face first.

        Args:
            image: a path, an RGB ``uint8`` array ``(height, width, 3)`` or a PIL image.

        Returns:
            One `Face` per face found (empty when there is none).

        Raises:
            InputError: nobody is enrolled, or the image is not an image. ImageReadError: unreadable file.
        """
        gallery = self.gallery()
        embedder = self._face_embedder()
        image_rgb = load_image(image, key=self.key)
        faces = embedder.find_faces(image_rgb)
        if not faces:
            return []
        decisions = gallery.identify(embedder.embed_faces(image_rgb, faces))
        threshold = float(gallery.threshold_)
        return [
            Face(box=_box(face.box), name=decision.name if decision.known else None, score=decision.score,
                 threshold=threshold, known=decision.known, best_person=decision.best_person)
            for face, decision in zip(faces, decisions, strict=True)
        ]

    def embed(self, image: ImageLike) -> np.ndarray:
        """Vectors of every face of an image with this object's model and detector, largest face first.

        Args:
            image: a path, an RGB ``uint8`` array ``(height, width, 3)`` or a PIL image.

        Returns:
            ``(n_faces, dim) float32``.
        """
        embedder = self._face_embedder()
        image_rgb = load_image(image, key=self.key)
        return embedder.embed_faces(image_rgb, embedder.find_faces(image_rgb))

    def verify(self, image_a: ImageLike, image_b: ImageLike) -> Verification:
        """Whether the largest faces of two images are the same person.

        Needs nobody enrolled: the first face is a one-person gallery, and the second is
        identified against it with the same scorer and decision as `identify`, the
        threshold derived for one person at ``target_fpir``.

        Args:
            image_a: a path, an RGB ``uint8`` array ``(height, width, 3)`` or a PIL image.
            image_b: the same, for the other face.

        Returns:
            A `Verification`: ``same``, ``score`` and ``threshold``.

        Raises:
            NoFaceError: an image holds no face (the message says which).
        """
        from faceid.match.fitting import fit_gallery

        embedder = self._face_embedder()
        vectors = []
        for which, image in (("image_a", image_a), ("image_b", image_b)):
            image_rgb = load_image(image, key=self.key)
            faces = embedder.find_faces(image_rgb)
            if not faces:
                described = str(image) if isinstance(image, (str, os.PathLike)) else "the image given"
                raise NoFaceError(f"no face found in `{which}` ({described}): give a photo where the face is visible "
                                  "and large enough, or try another `detector` ('cnn', 'hog')")
            vectors.append(embedder.embed_faces(image_rgb, faces[:1]))  # only the largest face is compared
        gallery = fit_gallery(vectors[0], ["a"], self.extractor.manifest, self.model, self._gallery_options())
        decision = gallery.identify(vectors[1])[0]
        return Verification(same=bool(decision.known), score=float(decision.score), threshold=float(gallery.threshold_))

    # --- the faces nobody enrolled ---------------------------------------------------------------

    def cluster(
        self,
        source: str | os.PathLike,
        output: str | os.PathLike,
        *,
        all_faces: bool = False,
        leave_out_enrolled: bool = True,
        recluster: bool = False,
        method: str | None = None,
        html: bool = False,
    ) -> ClusterReport:
        """Group the faces of a folder of photos or of a video into clusters, one per person, saved in ``output``.

        The same code as ``cluster.py``: each cluster gets a folder of face crops (encrypted with this
        object's key) and the clustering is saved as ``output/clusters.json``. Calling it again with the
        same ``output`` adds the new faces: they join existing clusters or start new ones, and clusters
        they do not touch keep their ids. Faces of a video are tracked first; a track is clustered as one.

        Args:
            source: a folder of photos (flat, or one sub-folder per person) or a video file.
            output: the clustering's folder (new, or one an earlier call wrote).
            all_faces: photos: every face, not only the largest.
            leave_out_enrolled: leave out the faces `identify` would name as an enrolled person, so only
                the faces nobody enrolled are clustered (when nobody is enrolled, every face is clustered).
            recluster: cluster every face again and report what changed (ids kept where clusters overlap most).
            method: a method of `faceid.cluster.methods.METHODS` for a new clustering (``None``: the default).
            html: write the contact sheet ``output/index.html`` (refused with a key).

        Returns:
            A `faceid.apps.clustering.ClusterReport`: ``clustering`` (the `faceid.cluster.clusters.Clustering`:
            its ``clusters`` with ids, faces, representative face and cohesion), ``changes``, ``known`` (faces
            left out as enrolled people), ``skipped``; ``as_dict()`` is cluster.py's ``--json``.

        Raises:
            InputError: ``source`` is missing or neither a folder nor a file; no face at all (`NoFaceError`).
        """
        from faceid.apps.clustering import cluster_faces

        source = Path(source)
        if not source.exists():
            raise InputError(f"`source` {source} does not exist: give a folder of photos or a video file")
        gallery = self.gallery() if leave_out_enrolled and self.people else None
        return cluster_faces(
            output, self.extractor, faces_path=source if source.is_dir() else None,
            video_path=None if source.is_dir() else source, extractor_dir=self.model,
            face_options=_face_options(self.detector), all_faces=all_faces,
            recluster=recluster, method=method, html_path=True if html else None, workers=0, progress=False,
            gallery=gallery, key=self.key,
        )

    def name_cluster(self, output: str | os.PathLike, cluster_id: str, name: str) -> ClusterReport:
        """Enrol a cluster's faces as a person (then `identify` names them) and record the name.

        The cluster's crops go through the cache exactly as `enrol` adds photos (a crop in which no face
        is found again is skipped).

        Args:
            output: the clustering's folder (`cluster`'s ``output``).
            cluster_id: the cluster (``c0003``).
            name: the person, as it will be reported.

        Raises:
            InputError: an unknown cluster, an invalid ``name``, a cluster already named as someone else.
            NoFaceError: no crop gave a face (nothing is enrolled).
        """
        from faceid.apps.clustering import name_cluster

        _check_name(name)
        report = name_cluster(output, cluster_id, name, self.features, self.extractor,
                              face_options=_face_options(self.detector), key=self.key)
        self._cache = self._gallery = None
        return report

    def merge_clusters(self, output: str | os.PathLike, source_id: str, into_id: str) -> ClusterReport:
        """Move every face of cluster ``source_id`` into ``into_id`` (which keeps its id and name)."""
        from faceid.apps.clustering import merge_clusters

        return merge_clusters(output, source_id, into_id, key=self.key)

    def split_cluster(self, output: str | os.PathLike, cluster_id: str,
                      face_ids: list[str] | None = None) -> ClusterReport:
        """Split ``face_ids`` (``None``: the clustering's own two-way split) out of a cluster into a new one."""
        from faceid.apps.clustering import split_cluster

        return split_cluster(output, cluster_id, face_ids, key=self.key)

    def live_identifier(self, *, every_frame: bool = False) -> LiveIdentifier:
        """A fresh live identifier of a stream's frames (`faceid.apps.live.LiveIdentifier`: detection,
        tracking and a vote per track) against the people enrolled now, with this object's model and
        detector (its live settings). With nobody enrolled, every face is unknown
        (`faceid.match.gallery.EmptyGallery`): a camera records strangers before the first enrolment.

        Args:
            every_frame: detect, embed and decide every face of every frame, no tracking or vote.
        """
        from faceid.apps.live import LiveIdentifier, LiveOptions
        from faceid.match.gallery import EmptyGallery

        gallery = self.gallery() if self.people else EmptyGallery()
        return LiveIdentifier(self._live_embedder(), gallery, LiveOptions.per_frame() if every_frame else LiveOptions())

    def _live_embedder(self) -> FaceEmbedder:
        """A face embedder with this object's model and its detector's live settings (video, cameras)."""
        from faceid.features.embedding import FaceEmbedder

        return FaceEmbedder(self.extractor, _face_options(self.detector, live=True))

    def identify_video(
        self, source: int | str | os.PathLike, *, max_frames: int | None = None, every_frame: bool = False
    ) -> Iterator[Frame]:
        """Identify the faces of a camera, a video file, a stream or a folder of images, frame by frame.

        Faces are detected every few frames and tracked in between; each track's name is
        decided by a vote over its recent identifications (the live identifier of
        ``test.py``), so a name is steady and shows only once there is evidence for it
        (until then a face has ``name`` ``None`` and ``known`` ``False``).

        Args:
            source: a camera number (``0``), a video file, a stream URL (``rtsp://...``,
                ``http://...``) or a folder of images (each identified on its own).
            max_frames: stop after this many frames (``None``: until the source ends).
            every_frame: detect, embed and decide every face of every frame, no tracking or vote.

        Yields:
            One `Frame` per frame read. The source is released when the iteration ends
            or the iterator is closed.

        Raises:
            InputError: the source cannot be opened.
        """
        from faceid.apps.live import identify_frame
        from faceid.io.video import open_source

        if max_frames is not None and max_frames < 1:
            raise InputError(f"`max_frames` must be at least 1 (or None for every frame), got {max_frames}")
        gallery = self.gallery()
        frames = open_source(source if isinstance(source, (int, str)) else Path(source))
        # Stills are identified one by one; a stream is tracked and voted on.
        identifier = None if frames.kind == "images" else self.live_identifier(every_frame=every_frame)
        embedder = identifier.embedder if identifier else self._live_embedder()
        threshold = float(gallery.threshold_)
        with frames:
            for count, (index, seconds, frame_rgb) in enumerate(frames):
                if max_frames is not None and count >= max_frames:
                    break
                results = identify_frame(embedder, gallery, frame_rgb) if identifier is None else identifier.process(frame_rgb)
                yield Frame(index=index, seconds=seconds, faces=[
                    Face(box=_box(result.box), name=result.name if result.known else None, score=float(result.score),
                         threshold=threshold, known=bool(result.known), best_person=result.best_person,
                         track=result.track_id)
                    for result in results
                ])


def _check_name(name: Any) -> None:
    from faceid.features.cache import check_person_name

    check_person_name(name, "name")


def _resolve_key(key: Key | str | os.PathLike | None) -> Key | None:
    """The API's boundary for keys: a `Key`, a key file, else ``$FACEID_KEY``, else none."""
    from faceid.io.sealed import KEY_ENV, Key, key_from_text, read_key_file

    if isinstance(key, Key):
        return key
    if key is not None:
        return read_key_file(Path(key))
    text = os.environ.get(KEY_ENV)
    return key_from_text(text, f"${KEY_ENV}") if text else None
