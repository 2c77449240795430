"""The service store: real SQLite files and real crop files in a temporary folder — tokens, keys,
events and their filters, retention, erasure, start-up after a crash, and a process killed mid-write."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from conftest import LFW, REPO, SUBPROCESS_TIMEOUT_S
from faceid.errors import InputError, KeyRequiredError, SealError, WrongKeyError
from faceid.io import sealed
from faceid.service.store import SCHEMA_VERSION, ServiceStore, parse_time, utc_iso

T0 = datetime(2026, 12, 7, 7, 30, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def face_jpeg() -> bytes:
    """The bytes of a real face photo (an LFW JPEG), standing in for an event's crop."""
    return sorted(LFW.rglob("*.jpg"))[0].read_bytes()


@pytest.fixture
def store(tmp_path):
    with ServiceStore(tmp_path / "data") as opened:
        yield opened


def database_bytes(data_dir: Path) -> bytes:
    """Everything SQLite keeps on disk for the store: the database, its WAL and shared-memory files."""
    return b"".join(path.read_bytes() for path in sorted(data_dir.glob("faceid.db*")))


def add_event(store: ServiceStore, camera="door", name=None, start=T0, minutes=1.0, track=1, vector=None) -> int:
    return store.insert_event(camera, track, name, 0.5, start, start + timedelta(minutes=minutes), vector)


# -- times --------------------------------------------------------------------------------------------

def test_utc_iso_writes_milliseconds_and_z_and_sorts_like_time():
    assert utc_iso(datetime(2026, 12, 7, 8, 30, 0, 123456, tzinfo=timezone(timedelta(hours=1)))) == \
        "2026-12-07T07:30:00.123Z"
    assert utc_iso(datetime(2026, 12, 7, 7, 30)) == "2026-12-07T07:30:00.000Z"
    moments = [T0 + timedelta(milliseconds=step) for step in (0, 7, 999, 1000, 86_400_000, 400 * 86_400_000)]
    assert sorted(utc_iso(moment) for moment in reversed(moments)) == [utc_iso(moment) for moment in moments]


@pytest.mark.parametrize("text", ["2026-12-07T07:30:00Z", "2026-12-07T08:30:00+01:00", "2026-12-07T07:30:00",
                                  "2026-12-07T07:30:00.000Z"])
def test_parse_time_accepts_z_offsets_and_naive_as_utc(text):
    moment = parse_time(text)
    assert moment == T0 and moment.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["yesterday", "", "2026-13-07T00:00:00Z", None, 12])
def test_parse_time_rejects_what_is_not_a_time_naming_the_parameter(text):
    with pytest.raises(InputError, match="`since`"):
        parse_time(text, "since")


# -- the database -------------------------------------------------------------------------------------

def test_the_database_is_wal_with_schema_version_and_event_indexes(store):
    with sqlite3.connect(store.database_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        meta = dict(raw.execute("SELECT name, value FROM meta"))
        indexes = {row[0]: row[1] for row in raw.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"
                                                         " AND tbl_name = 'events' AND sql IS NOT NULL")}
    assert meta["schema"] == str(SCHEMA_VERSION) and meta["key_id"] == ""
    assert sorted(sql.split("(")[1].rstrip(")") for sql in indexes.values()) == \
        ["camera, started", "name, started", "started"]
    assert store.integrity() == "ok"


def test_reopening_keeps_everything_and_creates_nothing_twice(tmp_path):
    with ServiceStore(tmp_path) as first:
        first.upsert_camera("door", "0", loop=False)
        event_id = add_event(first, name="alice")
    with ServiceStore(tmp_path) as second:
        assert [camera["name"] for camera in second.list_cameras()] == ["door"]
        assert second.get_event(event_id)["name"] == "alice"
        assert add_event(second) == event_id + 1


def test_a_file_that_is_not_a_database_is_an_input_error(tmp_path):
    (tmp_path / "faceid.db").write_bytes(b"not a database at all, just text" * 100)
    with pytest.raises(InputError, match="not a faceid service database"):
        ServiceStore(tmp_path)


def test_a_store_from_a_newer_faceid_is_refused(tmp_path):
    ServiceStore(tmp_path).close()
    with sqlite3.connect(tmp_path / "faceid.db") as raw:
        raw.execute("UPDATE meta SET value = ? WHERE name = 'schema'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(InputError, match="newer faceid"):
        ServiceStore(tmp_path)


def test_a_closed_store_says_so(store):
    store.close()
    with pytest.raises(InputError, match="closed"):
        store.list_events()


# -- tokens -------------------------------------------------------------------------------------------

def test_a_created_token_checks_until_it_is_revoked(store):
    token_id, token = store.create_token("laptop")
    other_id, other = store.create_token()
    assert len(token_id) == 8 and int(token_id, 16) >= 0 and len(token) >= 43 and token_id != other_id
    assert store.check_token(token) == token_id and store.check_token(other) == other_id
    assert store.check_token(token + "x") is None and store.check_token("") is None
    assert store.revoke_token(token_id) is True
    assert store.check_token(token) is None and store.check_token(other) == other_id
    assert store.revoke_token(token_id) is False  # already revoked
    assert store.revoke_token(other) is True  # by the token itself
    assert store.check_token(other) is None and store.revoke_token("deadbeef") is False
    listed = {row["id"]: row for row in store.list_tokens()}
    assert listed[token_id]["label"] == "laptop" and listed[other_id]["label"] is None
    assert all(row["revoked"] and row["last_used"] for row in listed.values())
    assert store.counts()["tokens"] == 0


def test_the_token_itself_is_never_in_the_database_files(tmp_path):
    with ServiceStore(tmp_path) as store:
        _, token = store.create_token("door")
        store.check_token(token)
        during = database_bytes(tmp_path)
    after = database_bytes(tmp_path)
    assert token.encode() not in during and token.encode() not in after
    assert hashlib.sha256(token.encode()).hexdigest().encode() in during + after  # what is stored instead


def test_check_token_writes_last_used_at_most_once_a_minute(store):
    token_id, token = store.create_token()
    store.check_token(token)
    first = store.list_tokens()[0]["last_used"]
    store.check_token(token)
    assert store.list_tokens()[0]["last_used"] == first
    with sqlite3.connect(store.database_path) as raw:  # as if the last use were two minutes ago
        raw.execute("UPDATE tokens SET last_used = ?", (utc_iso(parse_time(first) - timedelta(minutes=2)),))
    assert store.check_token(token) == token_id
    assert store.list_tokens()[0]["last_used"] >= first


# -- keys ---------------------------------------------------------------------------------------------

def test_a_keyed_store_seals_vectors_and_crops_and_opens_only_with_its_key(tmp_path, face_jpeg):
    key, other = sealed.new_key(), sealed.new_key()
    vector = np.linspace(-1, 1, 128, dtype=np.float32)
    with ServiceStore(tmp_path, key=key) as store:
        event_id = add_event(store, name="alice", vector=vector)
        assert store.write_crop(event_id, face_jpeg)
        on_disk = store.crop_path(event_id).read_bytes()
        assert store.read_crop(event_id) == face_jpeg
        np.testing.assert_array_equal(store.event_vector(event_id), vector)
    assert on_disk[:2] != b"\xff\xd8" and face_jpeg not in on_disk and sealed.sealed_key_id(on_disk) == key.id
    assert vector.tobytes() not in database_bytes(tmp_path)
    with sqlite3.connect(tmp_path / "faceid.db") as raw:
        blob = raw.execute("SELECT vector FROM events").fetchone()[0]
    assert sealed.sealed_key_id(blob) == key.id
    with pytest.raises(WrongKeyError):
        sealed.unseal(blob, "events", other, "events.vector")
    with pytest.raises(KeyRequiredError, match="`key`"):
        ServiceStore(tmp_path)
    with pytest.raises(WrongKeyError, match="`key`"):
        ServiceStore(tmp_path, key=other)


def test_a_plaintext_store_keeps_plain_vectors_and_refuses_a_key(tmp_path, face_jpeg):
    vector = np.linspace(-1, 1, 128, dtype=np.float32)
    with ServiceStore(tmp_path) as store:
        event_id = add_event(store, vector=vector)
        store.write_crop(event_id, face_jpeg)
        assert store.crop_path(event_id).read_bytes() == face_jpeg
    assert vector.tobytes() in database_bytes(tmp_path)  # the check above would catch a plain vector
    with pytest.raises(InputError, match="not encrypted.*`key`") as raised:
        ServiceStore(tmp_path, key=sealed.new_key())
    assert not isinstance(raised.value, SealError)


# -- cameras and people -------------------------------------------------------------------------------

def test_cameras_are_added_changed_listed_and_deleted(store):
    store.upsert_camera("door", "0", loop=False)
    created = store.list_cameras()[0]["created"]
    store.upsert_camera("door", "rtsp://127.0.0.1:8554/door", loop=True)
    store.upsert_camera("lab", "clip.mp4", loop=True)
    assert store.list_cameras() == [
        {"name": "door", "source": "rtsp://127.0.0.1:8554/door", "loop": True, "created": created},
        {"name": "lab", "source": "clip.mp4", "loop": True, "created": store.list_cameras()[1]["created"]}]
    assert store.delete_camera("door") is True and store.delete_camera("door") is False
    assert [camera["name"] for camera in store.list_cameras()] == ["lab"]
    with pytest.raises(InputError, match="`name`"):
        store.upsert_camera("", "0", loop=False)


def test_people_are_touched_listed_and_deleted(store):
    store.touch_person("bob", 2)
    store.touch_person("alice", 1)
    store.touch_person("alice", 3)
    people = store.list_people()
    assert [(person["name"], person["faces"]) for person in people] == [("alice", 3), ("bob", 2)]
    assert people[0]["updated"] >= people[0]["created"]
    assert store.delete_person("alice") is True and store.delete_person("alice") is False
    assert store.counts()["people"] == 1


# -- events -------------------------------------------------------------------------------------------

def test_an_event_is_inserted_updated_and_read_as_the_public_dict(store):
    vector = np.arange(8, dtype=np.float32)
    event_id = store.insert_event("door", 7, None, 0.123456, T0, T0, vector)
    assert store.get_event(event_id) == {
        "id": event_id, "camera": "door", "track": 7, "name": None, "score": 0.1235,
        "start": "2026-12-07T07:30:00.000Z", "end": "2026-12-07T07:30:00.000Z", "closed": False, "face": None, "corrected": False}
    assert store.update_event(event_id, name="alice", score=0.9, end=T0 + timedelta(seconds=5)) is True
    np.testing.assert_array_equal(store.event_vector(event_id), vector)  # vector=None keeps it
    store.update_event(event_id, name="alice", score=0.95, end=T0 + timedelta(seconds=9), vector=vector * 2,
                       closed=True)
    store.update_event(event_id, name="alice", score=0.95, end=T0 + timedelta(seconds=9))
    event = store.get_event(event_id)
    assert (event["name"], event["score"], event["end"], event["closed"]) == \
        ("alice", 0.95, "2026-12-07T07:30:09.000Z", True)  # closed stays closed
    np.testing.assert_array_equal(store.event_vector(event_id), vector * 2)
    assert store.get_event(event_id + 1) is None and store.event_vector(event_id + 1) is None
    assert store.update_event(event_id + 1, name=None, score=0.1, end=T0) is False


def test_an_event_without_a_vector_or_with_a_bad_one(store):
    event_id = add_event(store)
    assert store.event_vector(event_id) is None
    with pytest.raises(InputError, match="`vector`"):
        add_event(store, vector=np.zeros((2, 3)))
    with pytest.raises(InputError, match="`score`"):
        store.insert_event("door", 1, None, float("nan"), T0, T0, None)


def test_list_events_filters_by_camera_person_unknown_and_time(store):
    ids = {}
    for minute, (camera, name) in enumerate([("door", "alice"), ("door", None), ("lab", "alice"),
                                             ("lab", "bob"), ("door", "bob"), ("lab", None)]):
        ids[minute] = add_event(store, camera=camera, name=name, start=T0 + timedelta(minutes=minute))

    def listed(**filters):
        return [event["id"] for event in store.list_events(**filters)]

    assert listed() == [ids[minute] for minute in (5, 4, 3, 2, 1, 0)]  # newest start first
    assert listed(camera="door") == [ids[4], ids[1], ids[0]]
    assert listed(person="alice") == [ids[2], ids[0]]
    assert listed(unknown=True) == [ids[5], ids[1]]
    assert listed(unknown=False, camera="lab") == [ids[3], ids[2]]
    assert listed(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4)) == [ids[3], ids[2]]
    assert listed(since=parse_time("2026-12-07T08:34:00+01:00")) == [ids[5], ids[4]]  # an offset is a time
    assert listed(limit=2) == [ids[5], ids[4]]
    assert listed(camera="door", person="bob", until=T0 + timedelta(minutes=4)) == []
    for limit in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="`limit`"):
            store.list_events(limit=limit)


def test_crops_are_written_then_named_and_read_back(store, face_jpeg):
    event_id = add_event(store)
    assert store.read_crop(event_id) is None
    assert store.write_crop(event_id, face_jpeg) is True
    assert store.get_event(event_id)["face"] == f"/events/{event_id}/face.jpg"
    assert store.read_crop(event_id) == face_jpeg
    store.write_crop(event_id, face_jpeg[:1000])
    assert store.read_crop(event_id) == face_jpeg[:1000]
    assert sorted(path.name for path in store.crops_dir.iterdir()) == [f"{event_id}.jpg"]  # no temporary left


def test_a_crop_for_an_event_that_is_gone_leaves_no_file(store, face_jpeg):
    event_id = add_event(store, name="alice")
    store.forget_person("alice")
    assert store.write_crop(event_id, face_jpeg) is False
    assert list(store.crops_dir.iterdir()) == [] and store.read_crop(event_id) is None


def test_purge_deletes_closed_events_past_retention_with_their_crops(store, face_jpeg):
    old = add_event(store, start=T0 - timedelta(days=10))
    old_open = add_event(store, start=T0 - timedelta(days=10))
    recent = add_event(store, start=T0 - timedelta(days=1))
    for event_id in (old, recent):
        store.update_event(event_id, name=None, score=0.5, end=T0 - timedelta(days=10 if event_id == old else 1),
                           closed=True)
    for event_id in (old, old_open, recent):
        store.write_crop(event_id, face_jpeg)
    assert store.purge(retention_days=7, now=T0) == 1
    assert store.get_event(old) is None and not store.crop_path(old).exists()
    assert store.get_event(old_open) is not None and store.read_crop(recent) == face_jpeg
    assert store.purge(retention_days=0.5, now=T0) == 1 and store.get_event(recent) is None
    assert add_event(store) > recent  # ids are never reused: a URL never names another event
    for retention in (0, -1, float("nan"), "7"):
        with pytest.raises(InputError, match="`retention_days`"):
            store.purge(retention)


def test_forget_person_deletes_their_events_and_crops_only(store, face_jpeg):
    alice = [add_event(store, name="alice", track=track) for track in range(3)]
    bob = add_event(store, name="bob")
    unknown = add_event(store)
    for event_id in (*alice, bob, unknown):
        store.write_crop(event_id, face_jpeg)
    assert store.forget_person("alice") == 3
    assert [store.get_event(event_id) for event_id in alice] == [None] * 3
    assert all(not store.crop_path(event_id).exists() for event_id in alice)
    assert store.read_crop(bob) == face_jpeg and store.read_crop(unknown) == face_jpeg
    assert store.forget_person("alice") == 0 and store.counts()["events"] == 2


def test_close_open_events_closes_what_a_crash_left_and_sweeps_orphan_crops(store, face_jpeg):
    open_event, kept, lost = add_event(store), add_event(store), add_event(store)
    store.update_event(kept, name="alice", score=0.8, end=T0 + timedelta(minutes=3), closed=True)
    for event_id in (kept, lost):
        store.write_crop(event_id, face_jpeg)
    store.crop_path(lost).unlink()  # deleted behind the store's back
    (store.crops_dir / "999.jpg").write_bytes(face_jpeg)  # a crash between a crop and its row
    (store.crops_dir / f".{open_event}.123.abcd.tmp.jpg").write_bytes(face_jpeg[:10])  # a killed write
    (store.crops_dir / "notes.txt").write_text("not ours")
    assert store.close_open_events() == 2
    assert [store.get_event(event_id)["closed"] for event_id in (open_event, kept, lost)] == [True] * 3
    assert store.get_event(open_event)["end"] == utc_iso(T0 + timedelta(minutes=1))  # the end is kept
    assert sorted(path.name for path in store.crops_dir.iterdir()) == [f"{kept}.jpg", "notes.txt"]
    assert store.get_event(lost)["face"] is None and store.read_crop(kept) == face_jpeg
    assert store.counts()["open_events"] == 0 and store.close_open_events() == 0
    assert store.sweep_orphan_crops() == 0


def test_writers_on_several_threads_lose_nothing(store, face_jpeg):
    def write(camera: str) -> None:
        for track in range(25):
            event_id = add_event(store, camera=camera, track=track)
            store.write_crop(event_id, face_jpeg[:500])
            store.update_event(event_id, name=camera, score=0.7, end=T0, closed=True)

    threads = [threading.Thread(target=write, args=(f"camera{index}",)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SUBPROCESS_TIMEOUT_S)
    assert store.counts()["events"] == 100 and store.counts()["open_events"] == 0
    assert len(store.list_events(camera="camera2", person="camera2", limit=1000)) == 25
    assert store.sweep_orphan_crops() == 0 and store.integrity() == "ok"


# -- a process killed mid-write -----------------------------------------------------------------------

CHILD = """
import sys
from datetime import datetime, timezone
import numpy as np
from faceid.service.store import ServiceStore

store = ServiceStore(sys.argv[1])
jpeg = open(sys.argv[2], "rb").read()
track = 0
while True:
    now = datetime.now(timezone.utc)
    event_id = store.insert_event("door", track, None, 0.5, now, now, np.full(128, track, dtype=np.float32))
    store.write_crop(event_id, jpeg)
    store.update_event(event_id, name="alice" if track % 2 else None, score=0.75, end=now, closed=track % 3 == 0)
    print(event_id, track, flush=True)
    track += 1
"""


def test_a_store_killed_mid_write_reopens_clean_with_every_committed_event(tmp_path, face_jpeg):
    photo = sorted(LFW.rglob("*.jpg"))[0]
    committed = 150
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), str(photo)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(SUBPROCESS_TIMEOUT_S, child.kill)  # a hang becomes a failure, not a stuck run
    watchdog.start()
    printed = []
    try:
        while len(printed) < committed:
            line = child.stdout.readline()
            if not line.endswith("\n"):
                pytest.fail(f"the writer stopped after {len(printed)} events: {child.stderr.read()}")
            printed.append(tuple(map(int, line.split())))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=SUBPROCESS_TIMEOUT_S)
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    with ServiceStore(tmp_path) as store:
        assert store.integrity() == "ok"
        for event_id, track in printed:
            event = store.get_event(event_id)
            assert event is not None, f"event {event_id} was committed before the kill and is lost"
            assert (event["track"], event["name"], event["closed"], event["face"]) == \
                (track, "alice" if track % 2 else None, track % 3 == 0, f"/events/{event_id}/face.jpg")
            assert store.read_crop(event_id) == face_jpeg
        np.testing.assert_array_equal(store.event_vector(printed[-1][0]), np.full(128, printed[-1][1]))
        store.close_open_events()
        assert store.counts()["open_events"] == 0
        named = {event["id"] for event in store.list_events(limit=100_000) if event["face"]}
        on_disk = {int(path.stem) for path in store.crops_dir.iterdir()}
        assert on_disk == named  # after the sweep: no orphan, no temporary, no row naming a missing file
