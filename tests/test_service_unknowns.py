"""The service's unknown people (faceid/service/unknowns.py) on real LFW faces: events of a real store,
clustered as they close, listed, merged, split, dismissed, left by the events that get a name, kept in
step with the events table and kept across restarts, sealed with the service's key; and off when the
extractor gives no clustering thresholds."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from conftest import LFW
from faceid import FaceID
from faceid.apps.live import FaceResult
from faceid.cluster.clusters import CLUSTERS_FILE, VECTORS_FILE
from faceid.cluster.methods import merge_thresholds
from faceid.detect.faces import FaceBox
from faceid.errors import ConflictError, InputError, NotFoundError, SealError
from faceid.io.sealed import new_key
from faceid.service.events import EventRecorder
from faceid.service.store import ServiceStore
from faceid.service.unknowns import DISMISSED_FILE, DisabledUnknownPeople, UnknownPeople

PEOPLE = ("Al_Gore", "Alejandro_Toledo", "Andre_Agassi", "Andy_Roddick")
IMAGES_PER_PERSON = 4
T0 = datetime(2026, 12, 7, 8, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """Four LFW people, four photos each: ``{person: [(vector, jpeg bytes)]}``, the extractor's fingerprint and
    its clustering thresholds (as `FaceID.cluster` derives them)."""
    face_id = FaceID(None, tmp_path_factory.mktemp("unknowns") / "features")
    embedded = {}
    for person in PEOPLE:
        embedded[person] = []
        for image in sorted((LFW / person).iterdir())[:IMAGES_PER_PERSON]:
            vectors = face_id.embed(image)
            ok, jpeg = cv2.imencode(".jpg", cv2.resize(cv2.imread(str(image)), (64, 64)))
            assert len(vectors) and ok
            embedded[person].append((vectors[0], jpeg.tobytes()))
    return SimpleNamespace(by_person=embedded, fingerprint=face_id.extractor.fingerprint,
                           thresholds=merge_thresholds(face_id.extractor.manifest, face_id.model))


@pytest.fixture
def store(tmp_path):
    with ServiceStore(tmp_path / "data") as opened:
        yield opened


def unknown_people(store, faces, key=None, fingerprint=None) -> UnknownPeople:
    return UnknownPeople(store.data_dir / "unknowns", store, fingerprint=fingerprint or faces.fingerprint,
                         thresholds=faces.thresholds, key=key)


def record_event(store, faces, person: str, index: int, minute: float, *, camera: str = "door",
                 name: str | None = None, closed: bool = True) -> int:
    """An event of ``person``'s photo ``index`` that started at ``minute`` past T0 and lasted 30 seconds."""
    vector, jpeg = faces.by_person[person][index]
    start = T0 + timedelta(minutes=minute)
    event_id = store.insert_event(camera, int(minute * 10), name, None if name is None else 0.9, start, start, vector)
    assert store.write_crop(event_id, jpeg)
    store.update_event(event_id, name=name, score=None if name is None else 0.9, end=start + timedelta(seconds=30),
                       closed=closed)
    return event_id


def record_people(store, faces, counts: dict[str, int], first_minute: float = 0.0) -> dict[str, list[int]]:
    """Events round-robin over the people (``counts``: how many each), one a minute: ``{person: [event ids]}``."""
    events: dict[str, list[int]] = {person: [] for person in counts}
    minute = first_minute
    for index in range(max(counts.values())):
        for person, count in counts.items():
            if index < count:
                events[person].append(record_event(store, faces, person, index, minute))
                minute += 1
    return events


def test_closed_unknown_events_cluster_by_person_as_they_close(store, faces):
    unknowns = unknown_people(store, faces)
    events = record_people(store, faces, dict.fromkeys(PEOPLE, IMAGES_PER_PERSON))
    first_ids = {}
    for index in range(IMAGES_PER_PERSON):
        for person in PEOPLE:
            cluster_id = unknowns.add_event(events[person][index])
            # a cluster keeps the id it got with its first face while others join
            assert first_ids.setdefault(person, cluster_id) == cluster_id
    assert len(set(first_ids.values())) == len(PEOPLE)
    for person in PEOPLE:
        assert unknowns.events_of(first_ids[person]) == sorted(events[person])
        assert all(unknowns.cluster_of_event(event_id) == first_ids[person] for event_id in events[person])
    assert unknowns.add_event(events[PEOPLE[0]][0]) == first_ids[PEOPLE[0]]  # once only
    assert unknowns.summary()["faces"] == len(PEOPLE) * IMAGES_PER_PERSON

    still_open = record_event(store, faces, PEOPLE[0], 0, 60, closed=False)
    named = record_event(store, faces, PEOPLE[1], 0, 61, name="someone")
    assert unknowns.add_event(still_open) is None and unknowns.add_event(named) is None
    assert unknowns.add_event(987654) is None
    assert unknowns.cluster_of_event(still_open) is None


def test_the_list_is_largest_first_then_most_recently_seen(store, faces):
    unknowns = unknown_people(store, faces)
    big, older, newer = PEOPLE[0], PEOPLE[1], PEOPLE[2]
    events = record_people(store, faces, {big: 4, older: 2})
    events.update(record_people(store, faces, {newer: 2}, first_minute=100))
    events[newer].append(record_event(store, faces, newer, 2, 101.5, camera="yard"))
    events.update(record_people(store, faces, {PEOPLE[3]: 3}, first_minute=50))
    for event_ids in events.values():
        for event_id in event_ids:
            unknowns.add_event(event_id)
    rows = unknowns.list()
    clusters = {person: unknowns.cluster_of_event(ids[0]) for person, ids in events.items()}
    # 4 faces; then the two of 3 faces, the one seen last first; then 2 faces
    assert [row["id"] for row in rows] == [clusters[big], clusters[newer], clusters[PEOPLE[3]], clusters[older]]
    row = rows[1]
    assert set(row) == {"id", "faces", "events", "first_seen", "last_seen", "cameras", "representative", "sample"}
    assert row["faces"] == row["events"] == 3
    assert row["first_seen"] == "2026-12-07T09:40:00.000Z"  # minute 100's start
    assert row["last_seen"] == "2026-12-07T09:42:00.000Z"  # minute 101.5 + 30 s
    assert row["cameras"] == ["door", "yard"]
    assert sorted(row["sample"]) == sorted(events[newer])
    assert row["representative"] == row["sample"][0]

    detail = unknowns.get(clusters[newer])
    assert detail["event_ids"] == row["sample"] and {**detail, "event_ids": None} == {**row, "event_ids": None}
    units = np.stack([store.event_vector(event_id) for event_id in detail["event_ids"]])
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    typicality = units @ units.sum(axis=0)
    assert list(typicality) == sorted(typicality, reverse=True)  # most typical first
    assert unknowns.best_events(clusters[big], 2) == unknowns.get(clusters[big])["sample"][:2]
    with pytest.raises(NotFoundError, match="no unknown cluster 'c0099': no such id"):
        unknowns.get("c0099")


def test_merge_split_and_dismiss_change_what_is_listed(store, faces):
    unknowns = unknown_people(store, faces)
    a, b, c, d = PEOPLE
    events = record_people(store, faces, {a: 3, b: 3, c: 2, d: 2})
    for event_ids in events.values():
        for event_id in event_ids:
            unknowns.add_event(event_id)
    cluster = {person: unknowns.cluster_of_event(ids[0]) for person, ids in events.items()}

    merged = unknowns.merge(cluster[b], cluster[a])
    assert merged == {"id": cluster[b], "into": cluster[a], "faces": 6}
    assert cluster[b] not in [row["id"] for row in unknowns.list()]
    assert unknowns.events_of(cluster[a]) == sorted(events[a] + events[b])
    with pytest.raises(NotFoundError, match="no such id"):  # merged away
        unknowns.get(cluster[b])
    with pytest.raises(InputError, match="into itself"):
        unknowns.merge(cluster[a], cluster[a])

    split = unknowns.split(cluster[a], events[b])
    assert split["id"] == cluster[a] and split["new"] not in cluster.values()  # a new id, never an old one
    assert unknowns.events_of(split["new"]) == sorted(events[b])
    assert unknowns.events_of(cluster[a]) == sorted(events[a])
    with pytest.raises(InputError, match="not in cluster"):
        unknowns.split(cluster[a], [events[c][0]])
    automatic = unknowns.split(cluster[c])  # two faces: one each
    assert len(unknowns.events_of(cluster[c])) == len(unknowns.events_of(automatic["new"])) == 1

    assert unknowns.dismiss(cluster[d]) == {"id": cluster[d], "dismissed": True}
    assert unknowns.dismiss(cluster[d])["dismissed"]  # twice is no error
    assert cluster[d] not in [row["id"] for row in unknowns.list()]
    with pytest.raises(NotFoundError, match=f"no unknown cluster '{cluster[d]}': it was dismissed"):
        unknowns.get(cluster[d])
    with pytest.raises(ConflictError, match="dismissed"):
        unknowns.merge(cluster[c], cluster[d])
    with pytest.raises(ConflictError, match="dismissed"):
        unknowns.split(cluster[d])
    assert unknowns.events_of(cluster[d]) == sorted(events[d])  # still clustered, only hidden
    # a later face of the dismissed person joins the dismissed cluster and stays hidden
    later = record_event(store, faces, d, 2, 200)
    assert unknowns.add_event(later) == cluster[d]
    assert cluster[d] not in [row["id"] for row in unknowns.list()]
    assert json.loads((unknowns.folder / DISMISSED_FILE).read_text())["dismissed"] == [cluster[d]]
    assert unknowns.summary() == {"faces": 11, "clusters": 5, "listed": 4, "dismissed": 1}


def test_sync_follows_purges_deletions_corrections_and_new_events(store, faces):
    unknowns = unknown_people(store, faces)
    a, b, c, _ = PEOPLE
    old = record_people(store, faces, {a: 2, b: 2})
    for event_ids in old.values():
        for event_id in event_ids:
            unknowns.add_event(event_id)
    cluster_a = unknowns.cluster_of_event(old[a][0])
    days_later = 60 * 24 * 5
    recent = {a: [record_event(store, faces, a, 2, days_later), record_event(store, faces, a, 3, days_later + 1)],
              c: [record_event(store, faces, c, 0, days_later + 2)]}
    # not clustered yet (closed while nothing listened): the sync adds them
    assert unknowns.sync() == {"added": 3, "removed": 0}
    assert [unknowns.cluster_of_event(event_id) for event_id in recent[a]] == [cluster_a, cluster_a]
    assert unknowns.cluster_of_event(recent[c][0]) not in (None, cluster_a)

    # a correction names one of a's events: it leaves the cluster
    assert store.relabel_events([recent[a][0]], "Al") == 1
    # retention: the first four events ended days before; purged, they leave the clustering at the next sync
    assert store.purge(retention_days=2, now=T0 + timedelta(days=5)) == 4
    assert unknowns.sync() == {"added": 0, "removed": 5}
    for event_id in (*old[a], *old[b], recent[a][0]):
        assert unknowns.cluster_of_event(event_id) is None
    assert unknowns.events_of(cluster_a) == recent[a][1:]
    saved = json.loads((unknowns.folder / CLUSTERS_FILE).read_text())
    assert {face["track"] for face in saved["faces"]} == {recent[a][1], recent[c][0]}  # no vector outlives its event

    # an event corrected back to unknown is clustered again; deleted events (a person forgotten) leave
    assert store.relabel_events([recent[a][0]], None) == 1
    assert unknowns.sync() == {"added": 1, "removed": 0}
    assert unknowns.cluster_of_event(recent[a][0]) == cluster_a
    cluster_c = unknowns.cluster_of_event(recent[c][0])
    store.relabel_events([recent[c][0]], "Andre")
    store.forget_person("Andre")
    assert unknowns.sync() == {"added": 0, "removed": 1}
    with pytest.raises(NotFoundError):
        unknowns.events_of(cluster_c)
    assert [row["id"] for row in unknowns.list()] == [cluster_a]


def test_remove_events_takes_them_out_and_ids_are_not_reused(store, faces):
    unknowns = unknown_people(store, faces)
    events = record_people(store, faces, {PEOPLE[0]: 2})[PEOPLE[0]]
    for event_id in events:
        unknowns.add_event(event_id)
    first = unknowns.cluster_of_event(events[0])
    assert unknowns.remove_events([events[0], 424242]) == 1
    assert unknowns.events_of(first) == [events[1]]
    assert unknowns.remove_events(events) == 1
    assert unknowns.list() == []
    restarted = unknown_people(store, faces)  # an emptied clustering is kept with the ids it gave
    assert restarted.summary()["faces"] == 0
    again = record_event(store, faces, PEOPLE[0], 3, 30)
    assert restarted.add_event(again) not in (None, first)


def test_the_clusters_survive_a_restart(store, faces):
    unknowns = unknown_people(store, faces)
    events = record_people(store, faces, {PEOPLE[0]: 3, PEOPLE[1]: 2, PEOPLE[2]: 2})
    for event_ids in events.values():
        for event_id in event_ids:
            unknowns.add_event(event_id)
    dismissed = unknowns.cluster_of_event(events[PEOPLE[1]][0])
    unknowns.dismiss(dismissed)
    split = unknowns.split(unknowns.cluster_of_event(events[PEOPLE[0]][0]), [events[PEOPLE[0]][0]])
    listed = unknowns.list()
    assert sorted(row["faces"] for row in listed) == [1, 2, 2]

    again = unknown_people(store, faces)
    assert again.list() == listed
    assert again.sync() == {"added": 0, "removed": 0}
    with pytest.raises(NotFoundError, match="dismissed"):
        again.get(dismissed)
    assert again.events_of(split["new"]) == [events[PEOPLE[0]][0]]
    assert again.events_of(split["id"]) == events[PEOPLE[0]][1:]
    later = record_event(store, faces, PEOPLE[0], 3, 40)
    assert again.add_event(later) in (split["id"], split["new"])  # the same person's clusters, kept


def test_a_clustering_of_another_extractor_is_rebuilt_from_the_events(store, faces, caplog):
    unknowns = unknown_people(store, faces, fingerprint="0" * 32)
    events = record_people(store, faces, {PEOPLE[0]: 2, PEOPLE[1]: 2})
    for event_ids in events.values():
        for event_id in event_ids:
            unknowns.add_event(event_id)
    unknowns.dismiss(unknowns.cluster_of_event(events[PEOPLE[1]][0]))
    with caplog.at_level(logging.WARNING, logger="faceid.service.unknowns"):
        rebuilt = unknown_people(store, faces)
    assert "rebuilt from the events" in caplog.text
    assert rebuilt.list() == [] and not (rebuilt.folder / DISMISSED_FILE).exists()
    assert rebuilt.sync()["added"] == 4
    assert sorted(len(row["sample"]) for row in rebuilt.list()) == [2, 2]  # dismissals of the old one are gone


def test_an_encrypted_clustering_needs_its_key(tmp_path, faces):
    key = new_key()
    with ServiceStore(tmp_path / "data", key=key) as store:
        unknowns = unknown_people(store, faces, key=key)
        events = record_people(store, faces, {PEOPLE[0]: 2})[PEOPLE[0]]
        for event_id in events:
            unknowns.add_event(event_id)
        for name in (CLUSTERS_FILE, VECTORS_FILE):
            assert b"event:" not in (unknowns.folder / name).read_bytes()
            assert b"door" not in (unknowns.folder / name).read_bytes()
        assert unknown_people(store, faces, key=key).list() == unknowns.list()
        with pytest.raises(SealError):
            unknown_people(store, faces, key=new_key())
        with pytest.raises(SealError):
            unknown_people(store, faces)
        assert unknown_people(store, faces, key=key).events_of(unknowns.list()[0]["id"]) == events  # not set aside
    assert oct((tmp_path / "data" / "unknowns").stat().st_mode & 0o777) == "0o700"


def test_the_recorder_clusters_unknown_events_as_they_close(store, faces):
    unknowns = unknown_people(store, faces)
    failures = []

    def on_closed(event_id: int) -> None:
        unknowns.add_event(event_id)
        failures.append(event_id)
        raise RuntimeError("a failing hook never reaches the camera")

    recorder = EventRecorder(store, on_closed=on_closed)
    camera = SimpleNamespace(name="door")
    frame = np.zeros((120, 160, 3), np.uint8)
    box = FaceBox(40, 30, 100, 90)
    for track, (person, index) in enumerate([(PEOPLE[0], 0), (PEOPLE[0], 1), (PEOPLE[1], 0)]):
        vector = faces.by_person[person][index][0]
        unknown = FaceResult(box, "unknown", 0.2, "somebody", track_id=track, known=False, vector=vector)
        recorder.on_results(camera, frame, [unknown], T0 + timedelta(seconds=track))
        assert unknowns.summary()["faces"] == track  # the event is clustered once it closes, not before
    recorder.on_results(camera, None, [], T0 + timedelta(seconds=5))
    assert len(failures) == 3
    rows = unknowns.list()
    assert [row["faces"] for row in rows] == [2, 1]
    assert rows[0]["cameras"] == ["door"]


def test_a_split_must_leave_events_on_both_sides(store, faces):
    unknowns = unknown_people(store, faces)
    events = record_people(store, faces, {PEOPLE[0]: 3})[PEOPLE[0]]
    cluster_ids = {unknowns.add_event(event_id) for event_id in events}
    assert len(cluster_ids) == 1
    cluster_id = cluster_ids.pop()
    for wrong in ([], events):
        with pytest.raises(InputError, match="some, not all"):
            unknowns.split(cluster_id, wrong)
    with pytest.raises(NotFoundError, match="no unknown cluster 'c0042'"):
        unknowns.split("c0042", None)
    assert unknowns.events_of(cluster_id) == events


def test_a_named_clusters_events_leave_and_an_emptied_cluster_is_no_longer_listed(store, faces):
    """Naming is the service's: it relabels the cluster's events, then calls `remove_events` (or a `sync` finds
    them named); the cluster's faces leave and the emptied cluster goes, its id never given again."""
    unknowns = unknown_people(store, faces)
    a, b, c, _ = PEOPLE
    events = record_people(store, faces, {a: 3, b: 2, c: 2})
    for event_ids in events.values():
        for event_id in event_ids:
            unknowns.add_event(event_id)
    cluster = {person: unknowns.cluster_of_event(ids[0]) for person, ids in events.items()}
    assert len(unknowns.list()) == 3

    # one event relabelled to a name (a correction) leaves at the next sync; its cluster stays
    assert store.relabel_events([events[a][0]], "Al") == 1
    assert unknowns.sync() == {"added": 0, "removed": 1}
    assert unknowns.cluster_of_event(events[a][0]) is None
    assert unknowns.get(cluster[a])["event_ids"] and unknowns.events_of(cluster[a]) == events[a][1:]

    # a cluster named as the service names it: relabelled, then removed
    assert store.relabel_events(unknowns.get(cluster[b])["event_ids"], "Alejandro") == 2
    assert unknowns.remove_events(events[b]) == 2
    assert [row["id"] for row in unknowns.list()] == [cluster[a], cluster[c]]
    with pytest.raises(NotFoundError, match=f"no unknown cluster '{cluster[b]}': no such id"):
        unknowns.get(cluster[b])
    assert unknowns.sync() == {"added": 0, "removed": 0}  # nothing named is left to leave
    assert unknowns.remove_events(events[b]) == 0

    # a cluster whose events were all relabelled empties at the sync too
    store.relabel_events(events[c], "Andre")
    assert unknowns.sync() == {"added": 0, "removed": 2}
    assert [row["id"] for row in unknowns.list()] == [cluster[a]]
    assert unknowns.summary() == {"faces": 2, "clusters": 1, "listed": 1, "dismissed": 0}
    # a later unknown face of a named person forms a new cluster, under a new id
    later = record_event(store, faces, b, 3, 50)
    assert unknowns.add_event(later) not in (None, *cluster.values())
    assert unknown_people(store, faces).list() == unknowns.list()  # as saved


def test_off_unknown_people_follow_nothing_and_refuse_with_the_reason(store, faces):
    with pytest.raises(InputError) as error:
        merge_thresholds({"fingerprint": "f" * 32})  # an extractor without a cosine calibration
    reason = str(error.value)
    unknowns = UnknownPeople.disabled(reason)
    event_id = record_event(store, faces, PEOPLE[0], 0, 0)
    assert unknowns.add_event(event_id) is None
    assert unknowns.sync() == {"added": 0, "removed": 0}
    assert unknowns.remove_events([event_id]) == 0
    assert unknowns.cluster_of_event(event_id) is None
    assert unknowns.summary()["faces"] == 0
    with pytest.raises(ConflictError) as refused:
        unknowns.list()
    assert str(refused.value) == f"unknown people are off: {reason}" and "no cosine open-set calibration" in reason
    for call in (lambda: unknowns.get("c0001"), lambda: unknowns.events_of("c0001"),
                 lambda: unknowns.best_events("c0001", 3), lambda: unknowns.merge("c0001", "c0002"),
                 lambda: unknowns.split("c0001"), lambda: unknowns.dismiss("c0001")):
        with pytest.raises(ConflictError, match="unknown people are off: extractor ffffffffffff"):
            call()
    assert not (store.data_dir / "unknowns").exists()  # nothing written


def test_off_unknown_people_have_every_public_method_of_the_real_ones():
    def public(cls) -> set[str]:
        return {name for name, value in vars(cls).items() if callable(value) and not name.startswith("_")}

    assert public(DisabledUnknownPeople) == public(UnknownPeople) - {"disabled"}


def test_an_open_event_corrected_keeps_the_corrected_name_until_it_closes_then_is_clustered(store, faces):
    """A correction of an event still going on: the track's vote no longer renames it, and "not a known person"
    takes it among the unknown people when it ends."""
    unknowns = unknown_people(store, faces)
    recorder = EventRecorder(store, on_closed=unknowns.add_event, flush_seconds=0.0)
    camera = SimpleNamespace(name="door")
    frame = np.zeros((120, 160, 3), np.uint8)
    box = FaceBox(40, 30, 100, 90)
    vector = faces.by_person[PEOPLE[0]][0][0]
    named = FaceResult(box, PEOPLE[1], 0.9, PEOPLE[1], track_id=7, known=True, vector=vector)
    recorder.on_results(camera, frame, [named], T0)
    event_id = store.list_events()[0]["id"]
    assert store.get_event(event_id)["name"] == PEOPLE[1]
    assert recorder.correct(event_id, None) is True
    store.correct_event(event_id, None)
    recorder.on_results(camera, frame, [named], T0 + timedelta(seconds=1))  # the vote still says PEOPLE[1]
    assert store.get_event(event_id)["name"] is None and store.get_event(event_id)["corrected"] is True
    assert unknowns.summary()["faces"] == 0  # open: not clustered yet
    recorder.on_results(camera, None, [], T0 + timedelta(seconds=2))
    assert store.get_event(event_id)["name"] is None and store.get_event(event_id)["closed"] is True
    assert unknowns.cluster_of_event(event_id) is not None
    assert recorder.correct(event_id, PEOPLE[0]) is False  # closed: the store's correction is all there is
