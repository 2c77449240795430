"""Following faces between detections, and voting a steady name per face.

Live identification does not need to detect and embed every face in every
frame: a person does not change between two frames 33 ms apart. The
:class:`FaceTracker` detects every few frames and follows each face in between
with dlib's correlation tracker (~3 ms a face at 640x360, against ~70 ms for a
full-frame detection); :class:`IdentityVote` turns a track's recent
identifications into one name that does not flicker.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from faceid.detect.faces import DetectedFace, FaceBox, clip_box
from faceid.settings import DEFAULTS

# Shown for a track that has not gathered enough evidence for a name yet.
PENDING = "…"


def iou(first: FaceBox, second: FaceBox) -> float:
    """Intersection over union of two boxes (0 when disjoint, 1 when equal)."""
    width = min(first.right, second.right) - max(first.left, second.left)
    height = min(first.bottom, second.bottom) - max(first.top, second.top)
    if width <= 0 or height <= 0:
        return 0.0
    overlap = width * height
    return overlap / float(first.area + second.area - overlap)


class IdentityVote:
    """A track's identity, decided over its last ``window`` identifications.

    Each identification brings the best-matching person and their score. The
    candidate is the person who was best most often in the window, accepted if
    the *mean* of their scores there passes the gallery's threshold (``accepts``),
    else ``unknown_label``: one borderline frame neither names nor rejects a face.
    A new track shows :data:`PENDING` until it has ``min_evidence``
    identifications; after that a different candidate replaces the shown name only
    once it has won ``switch_margin`` identifications in a row (hysteresis).
    """

    def __init__(
        self,
        window: int,
        min_evidence: int,
        switch_margin: int,
        accepts: Callable[[float], bool],
        unknown_label: str = "unknown",
    ):
        if window < 1 or min_evidence < 1 or switch_margin < 1:
            raise ValueError("window, min_evidence and switch_margin must be at least 1")
        self.window = window
        self.min_evidence = min(min_evidence, window)
        self.switch_margin = switch_margin
        self.accepts = accepts
        self.unknown_label = unknown_label
        self.history: deque[tuple[str, float]] = deque(maxlen=window)  # (best person, score)
        self.name = PENDING
        self.candidate = PENDING  # what the window says now
        self.switches = 0  # changes of the shown name after the first one
        self.candidate_score = 0.0  # mean score of the candidate's identifications in the window
        self.score = 0.0  # mean score of the *shown* name's identifications in the window
        self._streak = 0

    def add(self, best_person: str, score: float) -> str:
        """Record one identification; returns the name to show now."""
        self.history.append((best_person, float(score)))
        if len(self.history) < self.min_evidence:
            return self.name
        counts = Counter(person for person, _ in self.history)
        leader = max(counts, key=lambda person: (counts[person], person == self.name))
        self.candidate_score = self._mean_score(leader)
        self.candidate = leader if bool(self.accepts(self.candidate_score)) else self.unknown_label
        if self.name == PENDING:
            self.name = self.candidate
        elif self.candidate == self.name:
            self._streak = 0
        else:
            self._streak += 1
            if self._streak >= self.switch_margin:
                self.name = self.candidate
                self.switches += 1
                self._streak = 0
        # The score shown is the shown name's: during hysteresis a challenger's score beside
        # the old name would contradict it. "unknown" shows the best candidate's score.
        shown_score = None if self.name in (PENDING, self.unknown_label) else self._mean_score(self.name)
        self.score = self.candidate_score if shown_score is None else shown_score
        return self.name

    def _mean_score(self, person: str) -> float | None:
        values = [value for best, value in self.history if best == person]
        return float(np.mean(values)) if values else None

    @property
    def settled(self) -> bool:
        """Whether the latest identifications agree with the shown name."""
        return self.candidate == self.name and self.name != PENDING


@dataclass
class Track:
    """One face followed across frames."""

    track_id: int
    box: FaceBox
    vote: IdentityVote
    correlation: object = None  # dlib.correlation_tracker following the face, started when first needed
    # The frame and box of the last detection, from which the correlation tracker starts when the
    # track has to be followed (a frame without detection, or a missed detection).
    detected_in: np.ndarray | None = None
    face: DetectedFace | None = None  # the detection of this frame (with landmarks), if any
    embedded_box: FaceBox | None = None  # where the face was when last embedded
    frames_since_embed: int = 0
    missed_detections: int = 0
    best_person: str = ""


@dataclass
class FaceTracker:
    """Associates detections with tracks and follows the tracks between detections.

    Args:
        match_iou: a detection continues a track when their boxes overlap at least this much.
        vote_window, min_evidence, switch_margin: see :class:`IdentityVote`.
        max_missed: a track survives this many detection rounds without a matching detection
            (faces turn away for a moment), then it is dropped.
        min_tracking_quality: dlib's peak-to-side-lobe ratio under which the
            correlation tracker has lost the face.
    """

    # The gallery's decision for a track's mean score (Gallery.decision_.accepts_one).
    vote_accepts: Callable[[float], bool]
    match_iou: float = 0.3
    max_missed: int = DEFAULTS.max_missed
    min_tracking_quality: float = 5.0
    # IdentityVote settings of each new track.
    vote_window: int = DEFAULTS.vote_window
    min_evidence: int = DEFAULTS.min_evidence
    switch_margin: int = DEFAULTS.switch_margin
    unknown_label: str = "unknown"
    tracks: list[Track] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def new_vote(self) -> IdentityVote:
        return IdentityVote(
            self.vote_window, self.min_evidence, self.switch_margin, self.vote_accepts, self.unknown_label
        )

    def update_with_detections(self, frame_rgb: np.ndarray, faces: list[DetectedFace]) -> list[Track]:
        """A detection frame: match faces to tracks (greedy by IoU), start new tracks, follow the rest.

        A detected track's correlation tracker is started only when the track must be followed
        (dlib's start costs as much as an update, ~3-4 ms a face): with a detector cheap enough to
        run on every frame, tracks that keep being detected are never correlation-tracked."""
        # The frame a detected track's tracker would start from; a copy, as the caller may draw on it.
        frame_rgb = frame_rgb.copy() if faces else frame_rgb
        pairs = sorted(
            ((iou(track.box, face.box), track_index, face_index)
             for track_index, track in enumerate(self.tracks) for face_index, face in enumerate(faces)),
            reverse=True,
        )
        matched_tracks: set[int] = set()
        matched_faces: set[int] = set()
        for overlap, track_index, face_index in pairs:
            if overlap < self.match_iou:
                break
            if track_index in matched_tracks or face_index in matched_faces:
                continue
            matched_tracks.add(track_index)
            matched_faces.add(face_index)
            self._restart(self.tracks[track_index], frame_rgb, faces[face_index])
        kept = []
        for track_index, track in enumerate(self.tracks):
            if track_index in matched_tracks:
                kept.append(track)
                continue
            # Not detected this time (turned away, blurred): keep following it for
            # up to max_missed detection rounds before giving up.
            track.missed_detections += 1
            if track.missed_detections <= self.max_missed and self._follow(track, frame_rgb):
                kept.append(track)
        self.tracks = kept
        for face_index, face in enumerate(faces):
            if face_index not in matched_faces:
                track = Track(track_id=next(self._ids), box=face.box, vote=self.new_vote())
                self._restart(track, frame_rgb, face)
                self.tracks.append(track)
        return self.tracks

    def follow(self, frame_rgb: np.ndarray) -> list[Track]:
        """A frame without detection: move every track with its correlation tracker."""
        self.tracks = [track for track in self.tracks if self._follow(track, frame_rgb)]
        return self.tracks

    def _follow(self, track: Track, frame_rgb: np.ndarray) -> bool:
        """Move ``track`` with its correlation tracker; False when the face is lost."""
        height, width = frame_rgb.shape[:2]
        if track.correlation is None:
            import dlib

            box = track.box
            track.correlation = dlib.correlation_tracker()
            track.correlation.start_track(track.detected_in, dlib.rectangle(box.left, box.top, box.right - 1, box.bottom - 1))
            track.detected_in = None
        quality = track.correlation.update(frame_rgb)
        position = track.correlation.get_position()
        box = clip_box(
            FaceBox(
                int(round(position.left())),
                int(round(position.top())),
                int(round(position.right())) + 1,
                int(round(position.bottom())) + 1,
            ),
            width,
            height,
        )
        track.face = None
        if quality < self.min_tracking_quality or box.width < 8 or box.height < 8:
            return False  # lost: the next detection round starts a new track if the face is still there
        track.box = box
        return True

    @staticmethod
    def _restart(track: Track, frame_rgb: np.ndarray, face: DetectedFace) -> None:
        """The track is where ``face`` was detected; its correlation tracker restarts there if it is
        followed (:meth:`_follow`)."""
        track.box = face.box
        track.face = face
        track.missed_detections = 0
        track.correlation = None
        track.detected_in = frame_rgb
