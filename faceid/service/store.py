"""The service's memory: one SQLite database and the face crops of its events, in one data folder.

``data_dir/faceid.db`` holds people, cameras, API tokens and events; ``data_dir/events/<id>.jpg``
holds the best face crop of each event. SQLite (the standard library's ``sqlite3``) runs in WAL mode
with ``synchronous=NORMAL``: every write is one transaction, a committed one survives the process
being killed (``kill -9``), and a power cut may lose the last commits but never leaves the database
broken. A ``meta`` table records the schema version and the id of the key the store was created
with (never the key).

Biometric data at rest follows the rest of the toolkit (``ARCHITECTURE.md``): with a ``key``, each
event's vector (float32 bytes, context ``events.vector``) is sealed before it reaches the database,
and each crop is a private file of :mod:`faceid.io.store` (atomic, sealed, context
``events/<id>.jpg``). A crop file is written before its row names it, and rows are deleted before
their files, so a crash leaves at worst a file no row names, which :meth:`ServiceStore.sweep_orphan_crops`
removes at start-up; never a row naming a missing file.

API tokens are stored as the SHA-256 of the token (256 random bits: no salt or slow hash needed);
the token itself is returned once by :meth:`ServiceStore.create_token` and never stored or logged.

Every time stored is ISO 8601 UTC with milliseconds and a ``Z`` (:func:`utc_iso`), so comparing the
text compares the times. One process owns a data folder while it serves; a second one (``faceid
serve token create``) may open it to manage tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import numbers
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from faceid.errors import InputError, KeyRequiredError, NotFoundError, WrongKeyError
from faceid.io import sealed
from faceid.io.store import TEMPORARY_GLOB, read_private, write_private

logger = logging.getLogger(__name__)

# 2: sessions, corrections, photos, events.corrected (a schema-1 database is upgraded in place).
SCHEMA_VERSION = 2
DATABASE_NAME = "faceid.db"
CROPS_FOLDER = "events"
VECTOR_CONTEXT = "events.vector"
# check_token records last_used at most this often: one write per token a minute, not one per request.
LAST_USED_EVERY = timedelta(minutes=1)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, label TEXT,"
    " created TEXT NOT NULL, revoked TEXT, last_used TEXT)",
    "CREATE TABLE IF NOT EXISTS cameras (name TEXT PRIMARY KEY, source TEXT NOT NULL, loop INTEGER NOT NULL,"
    " created TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS people (name TEXT PRIMARY KEY, faces INTEGER NOT NULL, created TEXT NOT NULL,"
    " updated TEXT NOT NULL)",
    # AUTOINCREMENT: an id is never reused after a purge, so a crop file or a URL never names another event.
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, camera TEXT NOT NULL,"
    " track INTEGER NOT NULL, name TEXT, score REAL, started TEXT NOT NULL, ended TEXT NOT NULL,"
    " closed INTEGER NOT NULL DEFAULT 0, vector BLOB, crop INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS events_by_start ON events (started)",
    "CREATE INDEX IF NOT EXISTS events_by_camera ON events (camera, started)",
    "CREATE INDEX IF NOT EXISTS events_by_name ON events (name, started)",
    # The page's sign-in sessions: the SHA-256 of the cookie's value, never the value; a session ends with its token.
    "CREATE TABLE IF NOT EXISTS sessions (hash TEXT PRIMARY KEY, token_id TEXT NOT NULL, csrf TEXT NOT NULL,"
    " created TEXT NOT NULL, expires TEXT NOT NULL)",
    # Each "this is not NAME" / "this is OTHER": which event, from which name to which (NULL: unknown), by whom.
    "CREATE TABLE IF NOT EXISTS corrections (id INTEGER PRIMARY KEY AUTOINCREMENT, event INTEGER NOT NULL,"
    " previous TEXT, name TEXT, token_id TEXT, at TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS corrections_by_previous ON corrections (previous)",
    # Where each enrolment photo came from: an upload, a named cluster's event, a corrected event.
    "CREATE TABLE IF NOT EXISTS photos (person TEXT NOT NULL, photo TEXT NOT NULL, source TEXT NOT NULL,"
    " event INTEGER, added TEXT NOT NULL, PRIMARY KEY (person, photo))",
    "CREATE INDEX IF NOT EXISTS photos_by_event ON photos (event)",
)
_EVENT_COLUMNS = "id, camera, track, name, score, started, ended, closed, crop, corrected"
#: Where an enrolment photo came from (the ``photos`` table's ``source``).
PHOTO_SOURCES = ("upload", "cluster", "correction")


def utc_iso(moment: datetime) -> str:
    """``moment`` as ISO 8601 UTC with milliseconds and a ``Z`` (``2026-12-07T07:30:00.123Z``); naive = UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds") + "Z"


def parse_time(text: str, parameter: str = "time") -> datetime:
    """An aware UTC datetime from ISO 8601 text: ``Z``, an offset (``+01:00``), or none (read as UTC).

    Raises:
        InputError: ``text`` is not an ISO 8601 time; the message names ``parameter``.
    """
    try:
        iso_text = text.strip()
        if iso_text[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat reads no "Z"
            iso_text = iso_text[:-1] + "+00:00"
        moment = datetime.fromisoformat(iso_text)
    except (AttributeError, TypeError, ValueError) as error:
        shown = repr(text) if isinstance(text, str) else f"a {type(text).__name__}"
        raise InputError(f"`{parameter}` is {shown}, not an ISO 8601 time: pass e.g. 2026-12-07T07:30:00Z") from error
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _check_text(value: Any, parameter: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"`{parameter}` must be a non-empty string")
    return value


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


KEY_UNSET = "unset"
TOKEN_PREFIX = "fid_"


def _checked_score(score: float | None) -> float | None:
    """An event's score: a finite number, or ``None`` where there is none (nobody enrolled)."""
    if score is None:
        return None
    score = float(score)
    if not math.isfinite(score):
        raise InputError(f"`score` must be a finite number or None, not {score}")
    return score


def _crop_context(event_id: int) -> str:
    return f"{CROPS_FOLDER}/{int(event_id)}.jpg"


def _public_event(row: sqlite3.Row) -> dict[str, Any]:
    """The event as the REST API returns it and the sinks send it."""
    return {"id": row["id"], "camera": row["camera"], "track": row["track"], "name": row["name"],
            "score": None if row["score"] is None else round(row["score"], 4), "start": row["started"], "end": row["ended"],
            "closed": bool(row["closed"]), "face": f"/events/{row['id']}/face.jpg" if row["crop"] else None,
            "corrected": bool(row["corrected"])}


class ServiceStore:
    """People, cameras, tokens and events of ``faceid serve``, in ``data_dir`` (created if missing).

    ``key``: the :class:`~faceid.io.sealed.Key` that seals vectors and crops (``None``: plaintext);
    a store keeps the key it was created with. ``tokens_only``: opened to manage tokens, which are
    not sealed, so the key is not checked (and must not be used for events). Thread-safe: one connection guarded by a lock, every
    write one transaction.

    Raises:
        KeyRequiredError: the store is encrypted and no ``key`` was given; WrongKeyError: another key;
        InputError: a ``key`` for a plaintext store, a file that is not a faceid database, a newer schema.
    """

    def __init__(self, data_dir: str | Path, *, key: sealed.Key | None = None, tokens_only: bool = False):
        self.data_dir = Path(data_dir)
        self.key = key
        # Tokens are no biometric data: `faceid serve token ...` manages them without the key.
        self._tokens_only = tokens_only
        self.database_path = self.data_dir / DATABASE_NAME
        self.crops_dir = self.data_dir / CROPS_FOLDER
        self._lock = threading.RLock()
        # Held by write_crop and sweep_orphan_crops: a crop whose row is being updated is never an orphan.
        self._crop_lock = threading.Lock()
        try:
            self.crops_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"`data_dir` {self.data_dir} cannot be created ({error}): pass a writable folder"
                             ) from error
        self._connection: sqlite3.Connection | None = None
        try:
            self._connection = sqlite3.connect(self.database_path, timeout=30.0, isolation_level=None,
                                               check_same_thread=False)
            os.chmod(self.database_path, 0o600)  # SQLite gives its -wal and -shm files the database's mode
            self._connection.row_factory = sqlite3.Row
            journal = self._connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._connection.execute("PRAGMA synchronous=NORMAL")
            self._connection.execute("PRAGMA foreign_keys=ON")
            if str(journal).lower() != "wal":
                raise InputError(f"{self.database_path} cannot use SQLite's WAL journal (got {journal}): "
                                 "put `data_dir` on a local file system")
            self._create_schema()
        except sqlite3.DatabaseError as error:
            self.close()
            raise InputError(f"{self.database_path} is not a faceid service database ({error}): "
                             "pass another `data_dir`") from error
        except BaseException:
            self.close()
            raise

    # -- plumbing -----------------------------------------------------------------------------------

    def _open_connection(self) -> sqlite3.Connection:
        if self._connection is None:
            raise InputError(f"the service store in {self.data_dir} is closed: open a new ServiceStore")
        return self._connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: takes the write lock at once, so never a busy upgrade)."""
        with self._lock:
            connection = self._open_connection()
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def _query(self, sql: str, parameters: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._open_connection().execute(sql, tuple(parameters)).fetchall()

    def _create_schema(self) -> None:
        with self._transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            meta = {row["name"]: row["value"] for row in db.execute("SELECT name, value FROM meta")}
            if "schema" not in meta:
                # A store first made to hold a token does not know its key yet: the service's first start records it.
                key_id = KEY_UNSET if self._tokens_only else self.key.id if self.key else ""
                meta = {"schema": str(SCHEMA_VERSION), "key_id": key_id, "created": utc_iso(_now())}
                db.executemany("INSERT INTO meta (name, value) VALUES (?, ?)", meta.items())
            if meta.get("key_id") == KEY_UNSET and not self._tokens_only:
                meta["key_id"] = self.key.id if self.key else ""
                db.execute("UPDATE meta SET value = ? WHERE name = 'key_id'", (meta["key_id"],))
            if int(meta["schema"]) > SCHEMA_VERSION:
                raise InputError(f"{self.database_path} was written by a newer faceid (schema {meta['schema']}, "
                                 f"this one reads {SCHEMA_VERSION}): upgrade faceid or pass another `data_dir`")
            if not self._tokens_only:
                self._check_key(meta.get("key_id", ""))
            for statement in _SCHEMA:
                db.execute(statement)
            columns = {row["name"] for row in db.execute("PRAGMA table_info(events)")}
            if "corrected" not in columns:  # schema 1 -> 2
                db.execute("ALTER TABLE events ADD COLUMN corrected INTEGER NOT NULL DEFAULT 0")
            if int(meta["schema"]) < SCHEMA_VERSION:
                db.execute("UPDATE meta SET value = ? WHERE name = 'schema'", (str(SCHEMA_VERSION),))

    def _check_key(self, recorded: str) -> None:
        where = f"the service data in {self.data_dir}"
        if recorded and self.key is None:
            raise KeyRequiredError(f"{where} is encrypted (key {recorded}): pass its `key`")
        if recorded and self.key.id != recorded:
            raise WrongKeyError(f"{where} was encrypted with key {recorded}, not with {self.key.describe()}: "
                                "pass the `key` it was created with")
        if not recorded and self.key is not None:
            raise InputError(f"{where} is not encrypted: open it without a `key`, or start a new `data_dir` "
                             "with the key")

    def close(self) -> None:
        """Close the database (idempotent); WAL's last checkpoint happens here."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> ServiceStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def integrity(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"``, or what it found wrong."""
        return "; ".join(str(row[0]) for row in self._query("PRAGMA integrity_check"))

    def counts(self) -> dict[str, int]:
        """How many events (and open ones), people, cameras and active (unrevoked) tokens are stored."""
        row = self._query(
            "SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM events WHERE closed = 0),"
            " (SELECT COUNT(*) FROM people), (SELECT COUNT(*) FROM cameras),"
            " (SELECT COUNT(*) FROM tokens WHERE revoked IS NULL)")[0]
        return dict(zip(("events", "open_events", "people", "cameras", "tokens"), map(int, row)))

    # -- tokens -------------------------------------------------------------------------------------

    def create_token(self, label: str | None = None) -> tuple[str, str]:
        """A new API token: ``(token id, token)``; only the token's SHA-256 is stored, so show it now or never."""
        # A prefix says what the secret is (secret scanners, logs) and keeps it from starting with '-' (a command-line option).
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._transaction() as db:
            token_id = secrets.token_hex(4)
            while db.execute("SELECT 1 FROM tokens WHERE id = ?", (token_id,)).fetchone():
                token_id = secrets.token_hex(4)
            db.execute("INSERT INTO tokens (id, hash, label, created) VALUES (?, ?, ?, ?)",
                       (token_id, _token_hash(token), label, utc_iso(_now())))
        logger.info("created API token %s", token_id)
        return token_id, token

    def revoke_token(self, token_or_id: str) -> bool:
        """Revoke a token given by its id or itself; ``False`` when none such is active."""
        with self._transaction() as db:
            revoked = db.execute("UPDATE tokens SET revoked = ? WHERE revoked IS NULL AND (id = ? OR hash = ?)",
                                 (utc_iso(_now()), token_or_id, _token_hash(str(token_or_id)))).rowcount
        return revoked > 0

    def list_tokens(self) -> list[dict[str, Any]]:
        """Every token, oldest first: ``id``, ``label``, ``created``, ``revoked``, ``last_used`` (times or ``None``)."""
        rows = self._query("SELECT id, label, created, revoked, last_used FROM tokens ORDER BY created, id")
        return [dict(row) for row in rows]

    def check_token(self, token: str) -> str | None:
        """The id of ``token`` when it is active, else ``None``.

        Every active hash is compared in constant time (no early exit), so the time taken says nothing
        about how close a guess was. ``last_used`` is written at most once a minute per token.
        """
        if not isinstance(token, str) or not token:
            return None
        digest = _token_hash(token)
        now = _now()
        with self._lock:
            found = None
            for row in self._query("SELECT id, hash, last_used FROM tokens WHERE revoked IS NULL"):
                if hmac.compare_digest(row["hash"], digest):
                    found = row
            if found is None:
                return None
            if found["last_used"] is None or parse_time(found["last_used"]) <= now - LAST_USED_EVERY:
                with self._transaction() as db:
                    db.execute("UPDATE tokens SET last_used = ? WHERE id = ?", (utc_iso(now), found["id"]))
        return found["id"]

    # -- cameras and people -------------------------------------------------------------------------

    def upsert_camera(self, name: str, source: str, loop: bool) -> None:
        """Add camera ``name`` or change its ``source`` and ``loop`` (its ``created`` time is kept)."""
        _check_text(name, "name")
        _check_text(source, "source")
        with self._transaction() as db:
            db.execute("INSERT INTO cameras (name, source, loop, created) VALUES (?, ?, ?, ?) ON CONFLICT (name)"
                       " DO UPDATE SET source = excluded.source, loop = excluded.loop",
                       (name, source, int(bool(loop)), utc_iso(_now())))

    def delete_camera(self, name: str) -> bool:
        """Forget camera ``name`` (its events stay); ``False`` when there was none."""
        with self._transaction() as db:
            return db.execute("DELETE FROM cameras WHERE name = ?", (name,)).rowcount > 0

    def list_cameras(self) -> list[dict[str, Any]]:
        """Every camera by name: ``name``, ``source``, ``loop`` and ``created``."""
        rows = self._query("SELECT name, source, loop, created FROM cameras ORDER BY name")
        return [{**dict(row), "loop": bool(row["loop"])} for row in rows]

    def touch_person(self, name: str, faces: int) -> None:
        """Record that ``name`` is enrolled with ``faces`` faces (``updated`` now; ``created`` the first time)."""
        _check_text(name, "name")
        now = utc_iso(_now())
        with self._transaction() as db:
            db.execute("INSERT INTO people (name, faces, created, updated) VALUES (?, ?, ?, ?) ON CONFLICT (name)"
                       " DO UPDATE SET faces = excluded.faces, updated = excluded.updated",
                       (name, int(faces), now, now))

    def delete_person(self, name: str) -> bool:
        """Remove ``name`` from the people (its events: :meth:`forget_person`); ``False`` when absent."""
        with self._transaction() as db:
            return db.execute("DELETE FROM people WHERE name = ?", (name,)).rowcount > 0

    def list_people(self) -> list[dict[str, Any]]:
        """Every person by name: ``name``, ``faces``, ``created`` and ``updated``."""
        return [dict(row) for row in self._query("SELECT name, faces, created, updated FROM people ORDER BY name")]

    def event_counts(self) -> dict[str, int]:
        """``{name: how many events are named so}``."""
        return {row[0]: int(row[1]) for row in self._query(
            "SELECT name, COUNT(*) FROM events WHERE name IS NOT NULL GROUP BY name")}

    # -- sign-in sessions (the web page) -------------------------------------------------------------

    def create_session(self, token_id: str, hours: float) -> tuple[str, str, str]:
        """A session for the page, signed in with token ``token_id``: ``(session, csrf, expires)``. Only the
        session's SHA-256 is stored; ``csrf`` is the value the page sends back with each change. Expired
        sessions are deleted here."""
        session, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = _now()
        expires = utc_iso(now + timedelta(hours=float(hours)))
        with self._transaction() as db:
            db.execute("DELETE FROM sessions WHERE expires <= ?", (utc_iso(now),))
            db.execute("INSERT INTO sessions (hash, token_id, csrf, created, expires) VALUES (?, ?, ?, ?, ?)",
                       (_token_hash(session), token_id, csrf, utc_iso(now), expires))
        logger.info("signed in on the page with token %s", token_id)
        return session, csrf, expires

    def check_session(self, session: str) -> dict[str, str] | None:
        """``{"token_id", "csrf", "expires"}`` of an unexpired session whose token is not revoked, else ``None``."""
        if not isinstance(session, str) or not session:
            return None
        rows = self._query(
            "SELECT s.token_id, s.csrf, s.expires FROM sessions s JOIN tokens t ON t.id = s.token_id"
            " WHERE s.hash = ? AND s.expires > ? AND t.revoked IS NULL", (_token_hash(session), utc_iso(_now())))
        return dict(rows[0]) if rows else None

    def end_session(self, session: str) -> bool:
        """Sign a session out; ``False`` when there was none."""
        with self._transaction() as db:
            return db.execute("DELETE FROM sessions WHERE hash = ?", (_token_hash(str(session)),)).rowcount > 0

    # -- enrolment photos' sources -------------------------------------------------------------------

    def record_photo(self, person: str, photo: str, source: str, event: int | None = None) -> None:
        """Record where ``person``'s enrolment photo ``photo`` (its file name) came from (`PHOTO_SOURCES`);
        a photo recorded before keeps its first source."""
        if source not in PHOTO_SOURCES:
            raise InputError(f"`source` must be one of {', '.join(PHOTO_SOURCES)}, not {source!r}")
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO photos (person, photo, source, event, added) VALUES (?, ?, ?, ?, ?)",
                       (_check_text(person, "person"), _check_text(photo, "photo"), source,
                        None if event is None else int(event), utc_iso(_now())))

    def photo_sources(self, person: str) -> dict[str, dict[str, Any]]:
        """``{photo: {"source", "event"}}`` for ``person``'s recorded photos."""
        rows = self._query("SELECT photo, source, event FROM photos WHERE person = ?", (person,))
        return {row["photo"]: {"source": row["source"], "event": row["event"]} for row in rows}

    def photos_of_event(self, event_id: int) -> list[tuple[str, str]]:
        """``[(person, photo)]``: the enrolment photos made from ``event_id``'s face."""
        return [(row["person"], row["photo"]) for row in
                self._query("SELECT person, photo FROM photos WHERE event = ?", (int(event_id),))]

    def delete_photo(self, person: str, photo: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM photos WHERE person = ? AND photo = ?", (person, photo))

    # -- corrections ----------------------------------------------------------------------------------

    def correct_event(self, event_id: int, name: str | None, token_id: str | None = None) -> tuple[int, str | None]:
        """Relabel event ``event_id`` as ``name`` (``None``: not a known person), mark it corrected and record
        the correction, in one transaction: ``(correction id, the name it had)``.

        Raises:
            NotFoundError: no such event.
        """
        with self._transaction() as db:
            row = db.execute("SELECT name FROM events WHERE id = ?", (int(event_id),)).fetchone()
            if row is None:
                raise NotFoundError(f"no event {int(event_id)}")
            previous = row["name"]
            db.execute("UPDATE events SET name = ?, corrected = 1 WHERE id = ?", (name, int(event_id)))
            cursor = db.execute("INSERT INTO corrections (event, previous, name, token_id, at) VALUES (?, ?, ?, ?, ?)",
                                (int(event_id), previous, name, token_id, utc_iso(_now())))
        return int(cursor.lastrowid), previous

    def list_corrections(self, person: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Corrections, newest first (``person``: those from or to that name): ``id, event, previous, name, at``."""
        where, parameters = ("WHERE previous = ? OR name = ?", (person, person)) if person else ("", ())
        rows = self._query(f"SELECT id, event, previous, name, at FROM corrections {where} ORDER BY id DESC LIMIT ?",
                           (*parameters, int(limit)))
        return [dict(row) for row in rows]

    def correction_counts(self) -> dict[str, int]:
        """``{name: how many events named so were corrected to someone else}``: how often a person was
        recognised wrongly."""
        return {row[0]: int(row[1]) for row in self._query(
            "SELECT previous, COUNT(*) FROM corrections WHERE previous IS NOT NULL GROUP BY previous")}

    # -- events -------------------------------------------------------------------------------------

    def _vector_blob(self, vector: np.ndarray) -> bytes:
        values = np.asarray(vector, dtype="<f4")
        if values.ndim != 1 or values.size == 0:
            raise InputError(f"`vector` must be one face's vector, shape (dim,), not {values.shape}")
        data = values.tobytes()
        return data if self.key is None else sealed.seal(data, self.key, VECTOR_CONTEXT)

    def insert_event(self, camera: str, track: int, name: str | None, score: float | None, start: datetime,
                     end: datetime, vector: np.ndarray | None) -> int:
        """Store a new open event (``name`` ``None``: unknown; ``vector`` (dim,) float32) and return its id."""
        _check_text(camera, "camera")
        score = _checked_score(score)
        blob = None if vector is None else self._vector_blob(vector)
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO events (camera, track, name, score, started, ended, vector) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (camera, int(track), name, score, utc_iso(start), utc_iso(end), blob))
        return int(cursor.lastrowid)

    def update_event(self, event_id: int, *, name: str | None, score: float | None, end: datetime,
                     vector: np.ndarray | None = None, closed: bool = False) -> bool:
        """Change an event's identity, score and end; ``vector`` ``None`` keeps the stored one; ``closed``
        closes it (a closed event is never reopened). ``False`` when the event is gone (forgotten, purged)."""
        score = _checked_score(score)
        blob = None if vector is None else self._vector_blob(vector)
        with self._transaction() as db:
            return db.execute(
                "UPDATE events SET name = ?, score = ?, ended = ?, vector = COALESCE(?, vector),"
                " closed = MAX(closed, ?) WHERE id = ?",
                (name, score, utc_iso(end), blob, int(bool(closed)), int(event_id))).rowcount > 0

    def crop_path(self, event_id: int) -> Path:
        """Where the crop of ``event_id`` lives (sealed when the store has a key: read it with :meth:`read_crop`)."""
        return self.crops_dir / f"{int(event_id)}.jpg"

    def write_crop(self, event_id: int, jpeg: bytes) -> bool:
        """Replace the face crop of ``event_id`` with ``jpeg``: the file atomically first, then the row names it.
        ``False`` (and no file) when the event is gone."""
        path = self.crop_path(event_id)
        with self._crop_lock:
            write_private(path, bytes(jpeg), _crop_context(event_id), key=self.key)
            with self._transaction() as db:
                found = db.execute("UPDATE events SET crop = 1 WHERE id = ?", (int(event_id),)).rowcount > 0
            if not found:  # forgotten or purged meanwhile: the file must not outlive its row
                path.unlink(missing_ok=True)
        return found

    def read_crop(self, event_id: int) -> bytes | None:
        """The JPEG bytes of the crop of ``event_id``, or ``None`` when it has none (or is gone)."""
        rows = self._query("SELECT crop FROM events WHERE id = ?", (int(event_id),))
        if not rows or not rows[0]["crop"]:
            return None
        path = self.crop_path(event_id)
        try:
            return read_private(path, "an event's face crop", "it was deleted outside faceid", _crop_context(event_id),
                                encrypted=self.key is not None, key=self.key)
        except InputError:
            if path.exists():
                raise
            return None  # deleted by forget_person or purge since the row was read

    def event_vector(self, event_id: int) -> np.ndarray | None:
        """The face vector of ``event_id``, (dim,) float32, or ``None`` when it has none (or is gone)."""
        rows = self._query("SELECT vector FROM events WHERE id = ?", (int(event_id),))
        if not rows or rows[0]["vector"] is None:
            return None
        data = bytes(rows[0]["vector"])
        if self.key is not None:
            data = sealed.unseal(data, f"{self.database_path} (event {int(event_id)})", self.key, VECTOR_CONTEXT)
        return np.frombuffer(data, dtype="<f4").astype(np.float32)

    def get_event(self, event_id: int) -> dict[str, Any] | None:
        """The public event dict of ``event_id``, or ``None``."""
        rows = self._query(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ?", (int(event_id),))
        return _public_event(rows[0]) if rows else None

    def list_events(self, camera: str | None = None, person: str | None = None, since: datetime | None = None,
                    until: datetime | None = None, limit: int = 100,
                    unknown: bool | None = None) -> list[dict[str, Any]]:
        """Events, newest start first, at most ``limit``, as public event dicts.

        Filters (``None``: any): ``camera``; ``person`` (the event's name); ``unknown`` ``True`` only
        unknown people, ``False`` only named ones; ``since`` / ``until`` on the start, to the millisecond:
        ``since <= start < until``.
        """
        if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1:
            raise InputError(f"`limit` must be a whole number of at least 1, not {limit}")
        clauses, parameters = [], []
        for clause, value in (("camera = ?", camera), ("name = ?", person),
                              ("started >= ?", since and utc_iso(since)), ("started < ?", until and utc_iso(until))):
            if value is not None:
                clauses.append(clause)
                parameters.append(value)
        if unknown is not None:
            clauses.append("name IS NULL" if unknown else "name IS NOT NULL")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(f"SELECT {_EVENT_COLUMNS} FROM events{where} ORDER BY started DESC, id DESC LIMIT ?",
                           (*parameters, int(limit)))
        return [_public_event(row) for row in rows]

    def _delete_events(self, where: str, parameters: tuple[Any, ...]) -> int:
        """Delete the matching rows in one transaction, then their crop files (a crash between leaves orphans)."""
        with self._transaction() as db:
            ids = [row["id"] for row in db.execute(f"SELECT id FROM events WHERE {where}", parameters)]
            db.execute(f"DELETE FROM events WHERE {where}", parameters)
        for event_id in ids:
            self.crop_path(event_id).unlink(missing_ok=True)
        return len(ids)

    def forget_person(self, name: str) -> int:
        """Delete every event named ``name`` and its crop file; returns how many events."""
        removed = self._delete_events("name = ?", (_check_text(name, "name"),))
        with self._transaction() as db:  # the name leaves the corrections and the photos' records too
            db.execute("DELETE FROM corrections WHERE previous = ? OR name = ?", (name, name))
            db.execute("DELETE FROM photos WHERE person = ?", (name,))
        logger.info("forgot %d events of one person", removed)
        return removed

    def purge(self, retention_days: float, now: datetime | None = None) -> int:
        """Delete closed events that ended more than ``retention_days`` before ``now`` (default: now), with
        their crops; returns how many. Open events are kept whatever their age."""
        if (isinstance(retention_days, bool) or not isinstance(retention_days, numbers.Real)
                or not math.isfinite(retention_days) or retention_days <= 0):
            raise InputError(f"`retention_days` must be a positive number of days, not {retention_days}")
        cutoff = utc_iso((now or _now()) - timedelta(days=float(retention_days)))
        removed = self._delete_events("closed = 1 AND ended < ?", (cutoff,))
        if removed:
            logger.info("purged %d events older than %s days", removed, retention_days)
        return removed

    def close_open_events(self) -> int:
        """At start-up: close the events a crash left open (their end kept), then :meth:`sweep_orphan_crops`.
        Returns how many events were closed. Call it only while no other process serves this data."""
        with self._transaction() as db:
            closed = db.execute("UPDATE events SET closed = 1 WHERE closed = 0").rowcount
        swept = self.sweep_orphan_crops()
        if closed or swept:
            logger.info("start-up: closed %d events left open, removed %d orphan crop files", closed, swept)
        return closed

    def sweep_orphan_crops(self) -> int:
        """Delete crop files no event names (left by a crash between a crop and its row, or a delete and its
        files) and interrupted temporary files; a row whose file is missing stops naming it. Returns how many
        files were deleted."""
        removed = 0
        with self._crop_lock:
            for leftover in self.crops_dir.glob(TEMPORARY_GLOB):
                leftover.unlink(missing_ok=True)
                removed += 1
            named = {row["id"] for row in self._query("SELECT id FROM events WHERE crop = 1")}
            files = {int(path.stem): path for path in self.crops_dir.glob("*.jpg") if path.stem.isdigit()}
            for event_id, path in files.items():
                if event_id not in named:
                    path.unlink(missing_ok=True)
                    removed += 1
            missing = named - files.keys()
            if missing:
                with self._transaction() as db:
                    db.executemany("UPDATE events SET crop = 0 WHERE id = ?", ((event_id,) for event_id in missing))
                logger.warning("%d event crops were missing from %s", len(missing), self.crops_dir)
        return removed

    # --- unknown people (helper unknowns) -----------------------------------------------------------

    def unknown_event_ids(self, closed: bool = True) -> list[int]:
        """Ids of the unknown events (no name) that have a face vector, oldest first; ``closed``: closed ones only."""
        rows = self._query("SELECT id FROM events WHERE name IS NULL AND vector IS NOT NULL"
                           f"{' AND closed = 1' if closed else ''} ORDER BY id")
        return [int(row["id"]) for row in rows]

    def events_by_ids(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """``{id: public event dict}`` of those of ``ids`` that exist (a purged or forgotten one is absent)."""
        ids = sorted({int(event_id) for event_id in ids})
        found: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):  # SQLite's bound on the parameters of one statement
            chunk = ids[start:start + 500]
            rows = self._query(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id IN ({', '.join('?' * len(chunk))})",
                               chunk)
            found.update((int(row["id"]), _public_event(row)) for row in rows)
        return found

    def relabel_events(self, ids: Iterable[int], name: str | None) -> int:
        """Give the events ``ids`` the name ``name`` (``None``: unknown), in one transaction; returns how many
        exist and were changed (a named cluster's events, `faceid.service.unknowns`)."""
        ids = sorted({int(event_id) for event_id in ids})
        if name is not None:
            _check_text(name, "name")
        with self._transaction() as db:
            return sum(db.execute("UPDATE events SET name = ? WHERE id = ?", (name, event_id)).rowcount
                       for event_id in ids)
