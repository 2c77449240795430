"""Live identification: every face of every frame, named against the gallery.

Frames come from a :class:`~faceid.io.video.FrameSource` (a webcam, a video file or a
folder of still images). :class:`LiveIdentifier` finds, tracks, embeds and names the
faces of a stream; :func:`run_live` runs it over a source and sends the results to the
outputs of :mod:`faceid.io.writers` and the window of :mod:`faceid.io.display`.

Stopping: the end of the source, ``max_frames``, ``q`` in the window and Ctrl-C
all end the run the same orderly way: the camera or video is released, the JSON
lines written so far stay on disk (each is flushed as it is written) and the
annotated video recorded so far is finalised under its final name, because a
user who stops a live run wants what was seen up to then. Only an *error*
leaves no video behind: it is recorded under a temporary name beside the final
one and renamed into place at the end, so a crash never passes a half-written
file off as a result.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter, deque
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from faceid.detect.faces import FaceBox, default_detect_every, face_at
from faceid.detect.tracking import PENDING, FaceTracker, iou
from faceid.errors import InputError
from faceid.features.embedding import FaceEmbedder
from faceid.io.display import Window
from faceid.io.video import FALLBACK_FPS, FrameSource, ImageFolderSource
from faceid.io.writers import AnnotatedStills, AnnotatedVideo, JsonLines
from faceid.match.gallery import Gallery
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

WINDOW_NAME = "faceid"
KNOWN_COLOUR_BGR = (60, 200, 60)
UNKNOWN_COLOUR_BGR = (40, 40, 230)
PENDING_COLOUR_BGR = (160, 160, 160)
STAGES = ("decode", "detect", "track", "embed", "match")


# --------------------------------------------------------------------------------------
# Identification of one frame
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceResult:
    """One face of a frame and who it is."""

    box: FaceBox
    name: str  # the person, the gallery's unknown label, or PENDING for a new track
    score: float  # the best person's score (under the threshold when unknown)
    best_person: str  # the best-scoring person, even when rejected
    track_id: int | None = None  # the face's track across frames (None for stills)
    known: bool = False  # named (accepted): not unknown, not pending — even if the latest match disagrees
    # The face's vector when it was embedded in this frame (LiveIdentifier), else None.
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def pending(self) -> bool:
        """A new track that has not gathered enough evidence for a name yet."""
        return self.name == PENDING

    @property
    def label(self) -> str:
        """The text drawn beside the box, e.g. ``lin-manuel-miranda 0.93``."""
        return self.name if self.pending else f"{self.name} {self.score:.2f}"

    def record(self, index: int, seconds: float | None, source_name: str, stage_ms: dict[str, float]) -> dict[str, Any]:
        """The ``--jsonl`` line of this face."""
        return {
            "frame": index,
            "time": None if seconds is None else float(seconds),
            "source": source_name,
            "track": self.track_id,
            "box": [int(value) for value in self.box.as_xywh()],
            "name": self.name,
            "score": round(float(self.score), 4),
            "best_person": self.best_person,
            "ms": stage_ms,
        }


def identify_frame(embedder: FaceEmbedder, gallery: Gallery, frame_rgb: np.ndarray) -> list[FaceResult]:
    """Find, embed (one batch) and name every face of a frame, largest face first.

    Args:
        embedder: finds and embeds faces (the same one enrolment used).
        gallery: a fitted :class:`~faceid.match.gallery.Gallery`.
        frame_rgb: ``(height, width, 3) uint8`` RGB.
    """
    faces = embedder.find_faces(frame_rgb)
    if not faces:
        return []
    vectors = embedder.embed_faces(frame_rgb, faces)  # (n_faces, dim)
    return [
        FaceResult(box=face.box, name=decision.name, score=decision.score, best_person=decision.best_person,
                   known=decision.known)
        for face, decision in zip(faces, gallery.identify(vectors), strict=True)
    ]


@dataclass(frozen=True)
class LiveOptions:
    """How much work live identification does per frame (see :class:`LiveIdentifier`)."""

    # None: the detector's own default (faceid.detect.faces.default_detect_every).
    detect_every: int | None = None
    detect_width: int | None = DEFAULTS.detect_width
    reid_every: int = DEFAULTS.reid_every
    reid_iou: float = DEFAULTS.reid_iou
    vote_window: int = DEFAULTS.vote_window
    min_evidence: int = DEFAULTS.min_evidence
    switch_margin: int = DEFAULTS.switch_margin
    # Detection rounds a track survives undetected (followed by its tracker meanwhile).
    max_missed: int = DEFAULTS.max_missed
    # Mean grey-level change (0-255) between consecutive 64x36 thumbnails that counts
    # as a cut to another shot: all tracks end and detection runs at once.
    cut_threshold: float = DEFAULTS.cut_threshold

    def __post_init__(self) -> None:
        for name in ("detect_every", "reid_every", "vote_window", "min_evidence", "switch_margin"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(f"--{name} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def per_frame(cls, detect_width: int | None = None) -> "LiveOptions":
        """Detect, embed and decide every face in every frame, no vote: the reference behaviour."""
        return cls(detect_every=1, detect_width=detect_width, reid_every=1, reid_iou=1.0,
                   vote_window=1, min_evidence=1, switch_margin=1, max_missed=0)


class LiveIdentifier:
    """Per-frame live identification that does only the work a frame needs.

    * **Detect** on every ``detect_every``-th frame (downscaled to ``detect_width``),
      and **track** faces with a correlation tracker in between.
    * **Embed** a tracked face every frame until its vote has ``min_evidence``
      identifications or while its last identification disagrees with the shown
      name, otherwise every ``reid_every`` frames, or sooner when
      its box moved (overlap with the box at the last embedding under ``reid_iou``);
      all faces due in a frame go through the backbone in one batch.
    * **Match** those vectors against the gallery in one call and feed each track's
      :class:`~faceid.detect.tracking.IdentityVote`, whose steady name is what is shown.

    ``timings`` holds the milliseconds of each stage for the last frame.
    """

    def __init__(self, embedder: FaceEmbedder, gallery: Gallery, options: LiveOptions = LiveOptions()):
        self.embedder = embedder
        self.gallery = gallery
        self.options = options
        self.tracker = FaceTracker(
            vote_accepts=gallery.decision_.accepts_one, max_missed=options.max_missed,
            vote_window=options.vote_window, min_evidence=options.min_evidence,
            switch_margin=options.switch_margin, unknown_label=gallery.unknown_label,
        )
        # Same detector and settings as the embedder, searching downscaled frames.
        # Boxes only: landmarks are found for the faces due for embedding (face_at), not for every face found.
        self._detection = FaceEmbedder(embedder.extractor, replace(embedder.options, max_width=options.detect_width,
                                                                   landmarks=False))
        self.detect_every = options.detect_every or default_detect_every(embedder.options.detector)
        self.timings: dict[str, float] = {}
        self.switches: dict[int, int] = {}  # track id -> name changes after its first name
        self._frames = 0
        self._cuts = SceneCuts(self.options.cut_threshold)

    def _scene_cut(self, frame_rgb: np.ndarray) -> bool:
        """Whether this frame starts a new shot (`SceneCuts`)."""
        return self._cuts.is_cut(frame_rgb)

    def process(self, frame_rgb: np.ndarray) -> list[FaceResult]:
        """Identify the faces of the next frame of a stream (``(h, w, 3) uint8`` RGB)."""
        options = self.options
        timings = dict.fromkeys(STAGES[1:], 0.0)
        started = time.perf_counter()
        cut = self._scene_cut(frame_rgb)
        if cut:
            # A cut to another shot: every track's face is gone, whatever a
            # correlation tracker would still latch onto. Start afresh.
            self.tracker.tracks.clear()
        detected = cut or self._frames % self.detect_every == 0
        if detected:
            faces = self._detection.find_faces(frame_rgb)
            timings["detect"] = _elapsed_ms(started)
            tracks = self.tracker.update_with_detections(frame_rgb, faces)
            timings["track"] = _elapsed_ms(started) - timings["detect"]
        else:
            tracks = self.tracker.follow(frame_rgb)
            timings["track"] = _elapsed_ms(started)
        self._frames += 1

        started = time.perf_counter()
        due, due_faces = [], []
        for track in tracks:
            if track.face is None and track.missed_detections and detected:
                # Missed by this frame's detection: keep showing it, but do not
                # identify a box the detector just found no face in.
                track.frames_since_embed += 1
                continue
            if (
                # A new track is identified every frame until it has the votes to show a name.
                len(track.vote.history) < track.vote.min_evidence
                # The last identification disagreed with the shown name: gather the
                # evidence to confirm or replace it soon, not reid_every frames later
                # (but not every frame: an ambiguous face would be embedded non-stop).
                or (
                    not track.vote.settled
                    and track.frames_since_embed + 1 >= max(1, options.reid_every // 4)
                )
                or track.frames_since_embed + 1 >= options.reid_every
                or iou(track.box, track.embedded_box) < options.reid_iou
            ):
                # A face detected this frame comes as a box: its landmarks are found now, once.
                face = face_at(frame_rgb, track.box)
                if face is not None:
                    due.append(track)
                    due_faces.append(face)
                    continue
            track.frames_since_embed += 1
        vectors = self.embedder.embed_faces(frame_rgb, due_faces)
        timings["embed"] = _elapsed_ms(started)

        started = time.perf_counter()
        embedded = {track.track_id: vector for track, vector in zip(due, vectors)}
        for track, decision in zip(due, self.gallery.identify(vectors) if due else [], strict=True):
            track.vote.add(decision.best_person, decision.score)
            track.best_person = decision.best_person
            track.embedded_box = track.box
            track.frames_since_embed = 0
            self.switches[track.track_id] = track.vote.switches
        timings["match"] = _elapsed_ms(started)
        self.timings = timings
        return [
            FaceResult(box=track.box, name=track.vote.name, score=track.vote.score,
                       best_person=track.best_person, track_id=track.track_id,
                       known=track.vote.name not in (PENDING, self.gallery.unknown_label),
                       vector=embedded.get(track.track_id))
            for track in tracks
            if track.embedded_box is not None
        ]


class SceneCuts:
    """Tells, frame after frame, whether a frame starts a new shot: the mean grey-level change of a 64x36
    thumbnail from the previous frame's passes ``threshold`` (``Settings.cut_threshold``). Live
    identification and the clustering of a video's tracks end every track at a cut."""

    def __init__(self, threshold: float = DEFAULTS.cut_threshold):
        self.threshold = threshold
        self._previous: np.ndarray | None = None

    def is_cut(self, frame_rgb: np.ndarray) -> bool:
        import cv2

        thumbnail = cv2.cvtColor(cv2.resize(frame_rgb, (64, 36), interpolation=cv2.INTER_AREA),
                                 cv2.COLOR_RGB2GRAY).astype(np.float32)
        previous, self._previous = self._previous, thumbnail
        return previous is not None and float(np.abs(thumbnail - previous).mean()) > self.threshold


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def annotate(frame_rgb: np.ndarray, results: list[FaceResult], fps: float | None = None) -> np.ndarray:
    """A BGR copy of the frame (what OpenCV writes and shows) with a labelled box per face
    and, with ``fps``, the processing rate in the top-left corner.

    Returns:
        ``(height, width, 3) uint8`` BGR.
    """
    import cv2

    canvas = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    # Line and text sizes follow the frame size so labels stay legible on HD video and on 250 px stills.
    scale = max(0.4, min(frame_rgb.shape[:2]) / 720)
    thickness = max(1, round(2 * scale))
    for result in results:
        colour = PENDING_COLOUR_BGR if result.pending else KNOWN_COLOUR_BGR if result.known else UNKNOWN_COLOUR_BGR
        box = result.box
        cv2.rectangle(canvas, (box.left, box.top), (box.right - 1, box.bottom - 1), colour, thickness)
        (text_width, text_height), baseline = cv2.getTextSize(result.label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        # Label under the box, or above it when the box touches the bottom edge.
        label_height = text_height + baseline
        top = box.bottom if box.bottom + label_height < canvas.shape[0] else max(box.top - label_height, 0)
        # Shifted left when the box is near the right edge, so the name is never cut off.
        left = max(0, min(box.left, canvas.shape[1] - text_width))
        cv2.rectangle(canvas, (left, top), (left + text_width, top + label_height), colour, cv2.FILLED)
        cv2.putText(canvas, result.label, (left, top + text_height), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
    if fps is not None:
        cv2.putText(canvas, f"{fps:.1f} FPS", (8, int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
    return canvas


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


@dataclass
class LiveSummary:
    """What one live run saw (printed by test.py)."""

    source: str
    frames: int = 0  # frames read and identified
    frames_with_faces: int = 0  # frames with at least one face
    faces: int = 0
    names: Counter = field(default_factory=Counter)  # name (or unknown label) -> faces
    skipped: list[str] = field(default_factory=list)  # unreadable files of an image folder
    stopped_by: str = "end of source"  # or "max_frames", "q pressed", "interrupted"
    seconds: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)  # "video"/"images"/"jsonl" -> path written
    stage_ms: dict[str, list[float]] = field(default_factory=lambda: {stage: [] for stage in STAGES})
    frame_ms: list[float] = field(default_factory=list)  # decode + identification, per frame
    switches: dict[int, int] = field(default_factory=dict)  # track id -> name switches

    @property
    def fps(self) -> float:
        """Frames identified per second of wall-clock time."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def add_timings(self, timings: dict[str, float]) -> None:
        for stage in STAGES:
            self.stage_ms[stage].append(timings.get(stage, 0.0))
        self.frame_ms.append(sum(timings.get(stage, 0.0) for stage in STAGES))

    def timing_summary(self) -> dict[str, Any]:
        """Per-frame latency percentiles and each stage's mean milliseconds."""
        if not self.frame_ms:
            return {}
        latency = np.asarray(self.frame_ms)
        return {
            "p50_ms": round(float(np.percentile(latency, 50)), 2),
            "p95_ms": round(float(np.percentile(latency, 95)), 2),
            "mean_ms": round(float(latency.mean()), 2),
            "stage_mean_ms": {stage: round(float(np.mean(values)), 2) for stage, values in self.stage_ms.items()},
        }

    def add(self, results: list[FaceResult]) -> None:
        self.frames += 1
        self.frames_with_faces += bool(results)
        self.faces += len(results)
        self.names.update(result.name for result in results)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "frames": self.frames,
            "frames_with_faces": self.frames_with_faces,
            "faces": self.faces,
            "names": dict(self.names.most_common()),
            "skipped": self.skipped,
            "stopped_by": self.stopped_by,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 2),
            "timings": self.timing_summary(),
            "tracks": len(self.switches),
            "name_switches": sum(self.switches.values()),
            "max_switches_per_track": max(self.switches.values(), default=0),
            "outputs": self.outputs,
        }

    def report(self) -> str:
        """Human-readable lines."""
        lines = [
            f"source: {self.source} ({self.stopped_by})",
            f"frames: {self.frames}, with faces: {self.frames_with_faces}, faces: {self.faces}",
            f"time: {self.seconds:.1f} s ({self.fps:.1f} frames/s)",
        ]
        timing = self.timing_summary()
        if timing:
            stages = ", ".join(f"{stage} {value:.1f}" for stage, value in timing["stage_mean_ms"].items())
            lines.append(f"per frame: p50 {timing['p50_ms']:.1f} ms, p95 {timing['p95_ms']:.1f} ms; mean ms: {stages}")
        if self.switches:
            lines.append(
                f"tracks: {len(self.switches)}, name switches: {sum(self.switches.values())} "
                f"(at most {max(self.switches.values())} in one track)"
            )
        lines += [f"  {name}: {count}" for name, count in self.names.most_common()]
        lines += [f"skipped {entry}" for entry in self.skipped]
        lines += [f"wrote {kind}: {path}" for kind, path in self.outputs.items()]
        return "\n".join(lines)


def run_live(
    source: FrameSource,
    embedder: FaceEmbedder,
    gallery: Gallery,
    *,
    output_path: str | Path | None = None,
    jsonl_path: str | Path | None = None,
    display: bool = False,
    max_frames: int | None = None,
    progress: bool = True,
    options: LiveOptions = LiveOptions(),
) -> LiveSummary:
    """Identify every face of every frame of ``source`` (which this opens and releases).

    Args:
        source: a :class:`FrameSource`, not yet entered.
        embedder: finds and embeds faces, as enrolment did.
        gallery: a fitted gallery.
        output_path: annotated output: a video file (mp4v, the source's fps) for a
            video or camera, a folder receiving the annotated stills under their
            original names for an image folder.
        jsonl_path: one JSON object per face per frame: ``frame``, ``time``
            (seconds; ``null`` for stills), ``source`` (file name of a still, the
            video's name, or ``camera N``), ``box`` ``[x, y, w, h]``, ``name``,
            ``score`` (4 decimals) and ``best_person``.
        display: show each annotated frame in a window; ``q`` stops.
        max_frames: stop after this many frames; ``None`` reads them all.
        progress: show a tqdm bar (only when stderr is a terminal).
        options: detection/tracking/re-identification/vote schedule for video and
            camera sources (:class:`LiveOptions`); stills are always identified one by one.

    Returns:
        The :class:`LiveSummary`, also after ``q`` or Ctrl-C.

    Raises:
        InputError: the source cannot be opened, an output cannot be written, or
            ``display`` without a GUI-enabled OpenCV and a display.
    """
    from tqdm import tqdm

    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be at least 1 (or None for all frames), got {max_frames}")
    summary = LiveSummary(source=source.description)
    started = time.perf_counter()
    # Every output is checked before anything is opened or truncated.
    video = stills = None
    if output_path is not None and isinstance(source, ImageFolderSource):
        stills = AnnotatedStills(Path(output_path), source.folder)
    elif output_path is not None:
        video = AnnotatedVideo(Path(output_path))
    with ExitStack() as stack:
        window = stack.enter_context(Window(WINDOW_NAME)) if display else None
        jsonl = stack.enter_context(JsonLines(Path(jsonl_path))) if jsonl_path is not None else None
        stack.enter_context(source)
        if video is not None:
            video.fps = source.fps or FALLBACK_FPS  # known once the source is open
            stack.enter_context(video)
        total = source.frame_count
        if max_frames is not None:
            total = max_frames if total is None else min(total, max_frames)
        bar = stack.enter_context(tqdm(total=total, desc="identify", unit="frame", disable=None if progress else True))
        stills_only = source.kind == "images"
        identifier = None if stills_only else LiveIdentifier(embedder, gallery, options)
        recent_frame_ms: deque[float] = deque(maxlen=30)  # for the FPS overlay
        frames = iter(itertools.islice(source, max_frames))
        try:
            while True:
                decode_started = time.perf_counter()
                try:
                    index, seconds, frame_rgb = next(frames)
                except StopIteration:
                    break
                decode_ms = _elapsed_ms(decode_started)
                if identifier is None:
                    results = identify_frame(embedder, gallery, frame_rgb)
                    timings = {"decode": decode_ms}
                else:
                    results = identifier.process(frame_rgb)
                    timings = {"decode": decode_ms, **identifier.timings}
                    summary.switches = dict(identifier.switches)
                summary.add(results)
                summary.add_timings(timings)
                recent_frame_ms.append(summary.frame_ms[-1])
                bar.update(1)
                logger.debug("frame %d: %s", index, ", ".join(result.label for result in results) or "no face")
                if jsonl is not None:
                    stage_ms = {stage: round(value, 2) for stage, value in timings.items()}
                    jsonl.write([result.record(index, seconds, source.frame_name(index), stage_ms) for result in results])
                if video is None and stills is None and window is None:
                    continue
                fps = None if stills_only else 1000.0 / max(float(np.mean(recent_frame_ms)), 1e-3)
                frame_bgr = annotate(frame_rgb, results, fps)
                if video is not None:
                    video.write(frame_bgr)
                if stills is not None:
                    stills.write(frame_bgr, source.frame_name(index))
                # A still stays on screen until a key is pressed; video frames flow.
                if window is not None and window.show(frame_bgr, 0 if source.kind == "images" else 1) == "q":
                    summary.stopped_by = "q pressed"
                    break
            if summary.stopped_by != "q pressed" and max_frames is not None and summary.frames >= max_frames:
                summary.stopped_by = "max_frames"
        except KeyboardInterrupt:
            # Ctrl-C is how a camera run is meant to end: keep and finalise what was done.
            summary.stopped_by = "interrupted"
            logger.warning("interrupted after %d frames: keeping what was written", summary.frames)
    summary.seconds = time.perf_counter() - started
    summary.skipped = list(source.skipped)
    if video is not None and video.frames:
        summary.outputs["video"] = str(video.path)
    if stills is not None:
        summary.outputs["images"] = str(stills.folder)
    if jsonl is not None:
        summary.outputs["jsonl"] = str(jsonl.path)
    return summary
