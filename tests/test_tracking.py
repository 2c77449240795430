"""Tracking faces across frames of the clip, and the per-track identity vote."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import KNOWN, VIDEO

from faceid.apps.live import LiveIdentifier, LiveOptions
from faceid.detect.faces import FaceBox
from faceid.detect.tracking import PENDING, FaceTracker, IdentityVote, iou
from faceid.features.cache import FeatureCache
from faceid.features.embedding import FaceEmbedder
from faceid.features.extract import extract_features
from faceid.io.video import VideoSource
from faceid.match.decision import Decision
from faceid.match.gallery import Gallery
from faceid.settings import DEFAULTS

MIRANDA = "lin-manuel-miranda"
# A track is named when its mean score reaches 0.5 (the gallery's decision in live use).
AT_HALF = Decision(0.5).accepts_one


def test_vote_is_pending_until_min_evidence():
    vote = IdentityVote(window=5, min_evidence=3, switch_margin=2, accepts=AT_HALF)
    assert vote.add("ann", 0.9) == PENDING
    assert vote.add("ann", 0.8) == PENDING
    assert vote.add("ann", 0.7) == "ann"
    assert vote.score == pytest.approx(0.8)


def test_vote_ignores_a_single_odd_identification():
    vote = IdentityVote(window=5, min_evidence=1, switch_margin=2, accepts=AT_HALF)
    for person, score in [("ann", 0.9), ("ann", 0.9), ("bob", 0.9), ("ann", 0.9), ("ann", 0.2)]:
        shown = vote.add(person, score)
    assert shown == "ann" and vote.switches == 0


def test_vote_decides_on_the_mean_score_not_one_borderline_frame():
    vote = IdentityVote(window=5, min_evidence=2, switch_margin=2, accepts=AT_HALF)
    vote.add("ann", 0.45)  # alone, this would be rejected (threshold 0.5)
    assert vote.add("ann", 0.65) == "ann" and vote.score == pytest.approx(0.55)
    low = IdentityVote(window=5, min_evidence=2, switch_margin=2, accepts=AT_HALF)
    low.add("ann", 0.55)
    assert low.add("ann", 0.35) == "unknown"


def test_vote_switches_only_after_the_configured_margin():
    vote = IdentityVote(window=6, min_evidence=1, switch_margin=2, accepts=AT_HALF)
    vote.add("ann", 0.9)
    vote.add("ann", 0.9)
    shown = [vote.add("bob", 0.9) for _ in range(4)]
    # bob leads the window from his 3rd identification; he must stay ahead twice in a row.
    assert shown == ["ann", "ann", "ann", "bob"]
    assert vote.switches == 1


def test_shown_score_belongs_to_the_shown_name_during_hysteresis():
    vote = IdentityVote(window=5, min_evidence=1, switch_margin=2, accepts=AT_HALF)
    for person, score in [("ann", 0.7), ("ann", 0.9), ("bob", 0.95), ("bob", 0.97)]:
        vote.add(person, score)
    # bob now leads the window (3 to 2) for the first time: ann stays shown until he wins twice.
    assert vote.add("bob", 0.96) == "ann" and vote.candidate == "bob"
    assert vote.score == pytest.approx(0.8)  # ann's mean, not bob's 0.96
    assert vote.candidate_score == pytest.approx(0.96)


def test_tracker_defaults_come_from_settings():
    tracker = FaceTracker(vote_accepts=AT_HALF)
    vote = tracker.new_vote()
    assert (vote.window, vote.min_evidence, vote.switch_margin) == (
        DEFAULTS.vote_window, DEFAULTS.min_evidence, DEFAULTS.switch_margin)
    assert tracker.max_missed == DEFAULTS.max_missed


def test_iou_of_boxes():
    assert iou(FaceBox(0, 0, 10, 10), FaceBox(0, 0, 10, 10)) == 1.0
    assert iou(FaceBox(0, 0, 10, 10), FaceBox(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou(FaceBox(0, 0, 10, 10), FaceBox(20, 20, 30, 30)) == 0.0


@pytest.fixture(scope="module")
def known_gallery(tmp_path_factory, dlib_extractor):
    features = tmp_path_factory.mktemp("known_features")
    extract_features(KNOWN, dlib_extractor, features, progress=False)
    vectors, labels, names = FeatureCache.load(features).matrix()
    # Head-free gallery (minus Euclidean distance; dlib's usual 0.6): the tracker is under test here.
    return Gallery(threshold=-0.6).fit(vectors, np.array(names)[labels])


def run_frames(identifier: LiveIdentifier, first: int, last: int) -> dict[int, list]:
    results = {}
    with VideoSource(VIDEO) as source:
        for index, _, frame in itertools.islice(source, last + 1):
            if index >= first:
                results[index] = identifier.process(frame)
    return results


def test_face_keeps_its_track_id_across_consecutive_frames(dlib_extractor, known_gallery):
    identifier = LiveIdentifier(FaceEmbedder(dlib_extractor), known_gallery, LiveOptions(detect_every=5))
    results = run_frames(identifier, 82, 140)  # Miranda close up, one shot
    track_ids = [faces[0].track_id for faces in results.values() if faces]
    assert len(track_ids) >= 50
    assert len(set(track_ids)) == 1
    # Between detections the tracker moves the box with the face (he walks across the stage).
    boxes = [faces[0].box for faces in results.values() if faces]
    assert max(box.left for box in boxes) - min(box.left for box in boxes) > 20
    assert sum(faces[0].name == MIRANDA for faces in results.values() if faces) >= 0.9 * len(track_ids)


def test_scene_cut_ends_tracks(dlib_extractor, known_gallery):
    identifier = LiveIdentifier(FaceEmbedder(dlib_extractor), known_gallery, LiveOptions(detect_every=5))
    results = run_frames(identifier, 0, 25)  # the shot changes at frame 20
    before = {face.track_id for index in range(0, 20) for face in results[index]}
    after = {face.track_id for index in range(20, 26) for face in results[index]}
    assert before and not (before & after)


def test_tracking_does_less_work_than_per_frame(dlib_extractor, known_gallery, monkeypatch):
    calls = {"detect": 0, "embedded": 0}
    embedder = FaceEmbedder(dlib_extractor)
    original_find, original_embed = FaceEmbedder.find_faces, FaceEmbedder.embed_faces

    def counting_find(self, image):
        calls["detect"] += 1
        return original_find(self, image)

    def counting_embed(self, image, faces):
        calls["embedded"] += len(faces)
        return original_embed(self, image, faces)

    monkeypatch.setattr(FaceEmbedder, "find_faces", counting_find)
    monkeypatch.setattr(FaceEmbedder, "embed_faces", counting_embed)
    run_frames(LiveIdentifier(embedder, known_gallery, LiveOptions(detect_every=5, reid_every=10)), 82, 121)
    tracked = dict(calls)
    calls.update(detect=0, embedded=0)
    run_frames(LiveIdentifier(embedder, known_gallery, LiveOptions.per_frame()), 82, 121)
    assert tracked["detect"] <= 9 and calls["detect"] == 40
    assert tracked["embedded"] <= 10 and calls["embedded"] >= 35
