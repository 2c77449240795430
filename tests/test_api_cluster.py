"""faceid.FaceID.cluster and naming: the strangers among enrolled people are clustered, a named cluster is enrolled."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import LFW, VIDEO, lfw_people

import faceid
from faceid.errors import InputError

ENROLLED = lfw_people(min_images=8, count=2, skip=10)
STRANGERS = lfw_people(min_images=8, count=3, skip=12)


def link(folder: Path, people: list[str], numbers: range) -> Path:
    for person in people:
        (folder / person).mkdir(parents=True, exist_ok=True)
        for photo in sorted((LFW / person).iterdir())[numbers.start:numbers.stop]:
            (folder / person / photo.name).symlink_to(photo)
    return folder


def test_strangers_are_clustered_the_enrolled_left_out_and_a_named_cluster_is_recognised(tmp_path, dlib_extractor_dir):
    fid = faceid.FaceID(dlib_extractor_dir, tmp_path / "features")
    for person in ENROLLED:
        fid.enrol(person, sorted((LFW / person).iterdir())[:3])
    # New photos: more of the enrolled people, and three people nobody enrolled.
    photos = link(tmp_path / "photos", ENROLLED + STRANGERS, range(3, 7))
    report = fid.cluster(photos, tmp_path / "clusters")
    assert sum(report.known.values()) >= 6 and set(report.known) <= set(ENROLLED)  # most enrolled faces left out
    clustering = report.clustering
    labels = {clustering.faces[face].label for cluster in clustering.clusters.values() for face in cluster.faces}
    assert labels <= set(STRANGERS) | set(ENROLLED) and labels & set(STRANGERS) == set(STRANGERS)
    # The largest cluster is one stranger's four photos.
    biggest = clustering.ordered()[0]
    people = {clustering.faces[face].label for face in biggest.faces}
    assert len(biggest.faces) >= 3 and len(people) == 1
    stranger = people.pop()
    assert stranger in STRANGERS

    named = fid.name_cluster(tmp_path / "clusters", biggest.id, "the-stranger")
    assert named.enrolled["person"] == "the-stranger" and named.clustering.clusters[biggest.id].name == "the-stranger"
    assert "the-stranger" in fid.people
    held_out = sorted((LFW / stranger).iterdir())[7]
    assert fid.identify(held_out)[0].name == "the-stranger"
    # Calling it again adds nothing new and changes nothing.
    again = fid.cluster(photos, tmp_path / "clusters")
    assert again.added == 0 and again.changes.unchanged == len(again.clustering.clusters)


def test_a_video_is_clustered_by_track_and_merges_and_splits_go_through(tmp_path, dlib_extractor_dir):
    fid = faceid.FaceID(dlib_extractor_dir, tmp_path / "features")
    report = fid.cluster(VIDEO, tmp_path / "clip")
    clustering = report.clustering
    assert all(face.track is not None and face.frame is not None for face in clustering.faces.values())
    first, second = [cluster.id for cluster in clustering.ordered()[:2]]
    merged = fid.merge_clusters(tmp_path / "clip", second, first)
    assert second not in merged.clustering.clusters
    split = fid.split_cluster(tmp_path / "clip", first)
    assert split.changes.split and len(split.clustering.clusters) == len(clustering.clusters)
    with pytest.raises(InputError, match="does not exist"):
        fid.cluster(tmp_path / "nothing", tmp_path / "clip")
