"""``faceid serve``'s REST API against the real thing: ``python -m faceid serve`` started as a subprocess
on a free 127.0.0.1 port, a token made by ``faceid serve token create``, requests over loopback, real
faces from ../shared/data.

Two servers per module: ``server`` (default limits; the known people of the clip and an LFW person
enrolled by the ``enrolled`` fixture) and ``small_server`` (``--max_upload_mb 1``, ``-v`` so its access
log is on, nobody enrolled). Every wait is bounded; no test asserts on a time.
"""

from __future__ import annotations

import io
import os
import re
import socket
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from service_support import free_port, stop_process, wait_until

from conftest import KNOWN, LFW, REPO, VIDEO, output_text

# Generous bounds for a loaded 2-core machine (a fresh interpreter imports NumPy, OpenCV, dlib and
# builds the face model): they turn a hang into a failure that says what hung, never a measured time.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
CLI_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 60.0

LIN = KNOWN / "lin-manuel-miranda" / "lin-manuel-miranda.png"
ALEX = KNOWN / "alex-lacamoire" / "alex-lacamoire.png"
# An LFW person enrolled from three photos and named on others; Angela Merkel is never enrolled (unknown).
# Checked on this data: the held-out Al Gore photos score about -0.41..-0.46 against a threshold of
# -0.57, Merkel's about -0.75..-0.79.
GORE = sorted((LFW / "Al_Gore").glob("*.jpg"))
MERKEL = sorted((LFW / "Angela_Merkel").glob("*.jpg"))
# Enrolled only to be deleted.
TO_FORGET = sorted((LFW / "Amelia_Vega").glob("*.jpg"))


def faceid_cli(*args: str | Path) -> subprocess.CompletedProcess:
    """``python -m faceid serve ...`` run to its end (bounded), its output as text."""
    try:
        return subprocess.run([sys.executable, "-m", "faceid", "serve", *map(str, args)], cwd=REPO, env=server_env(),
                              capture_output=True, text=True, timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"faceid serve {' '.join(map(str, args))} still running after {CLI_TIMEOUT_S:.0f} s:\n"
                    f"{output_text(error.stderr)}", pytrace=False)


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("FACEID_KEY", None)
    return env


def create_token(data: Path) -> str:
    """A new token for ``data``: the last line of ``faceid serve token create``'s stdout."""
    return create_token_and_id(data)[0]


def create_token_and_id(data: Path) -> tuple[str, str]:
    """``(token, token id)`` from ``faceid serve token create`` (the id is in its note on stderr)."""
    result = faceid_cli("token", "create", "--data", data)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    assert token not in result.stderr
    token_id = re.search(r"token ([0-9a-f]{8}) created", result.stderr)
    assert token_id, result.stderr
    return token, token_id.group(1)


@dataclass
class Server:
    """A running ``faceid serve`` subprocess and a session that sends its token."""

    data: Path
    port: int
    token: str
    process: subprocess.Popen
    log_path: Path
    http: requests.Session = field(default_factory=requests.Session)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def request(self, method: str, path: str, *, token: str | None = "default", **kwargs) -> requests.Response:
        """``method path``, with this server's token unless ``token`` says another (None: no header)."""
        headers = dict(kwargs.pop("headers", {}))
        if token == "default":
            headers.update(self.auth)
        elif token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, self.url + path, headers=headers, timeout=REQUEST_TIMEOUT_S, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def log(self) -> str:
        """What the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")


def start_server(directory: Path, *extra: str) -> Iterator[Server]:
    """Start ``faceid serve`` on a free port with a fresh data directory and token; wait (bounded) until
    /health answers; terminate it (kill if it ignores SIGTERM) when the generator is closed."""
    data = directory / "data"
    token = create_token(data)
    port = free_port()
    log_path = directory / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "faceid", "serve", "--data", str(data), "--port", str(port),
                                    *extra], cwd=REPO, env=server_env(), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    server = Server(data, port, token, process, log_path)
    server.http.trust_env = False  # a proxy set in the environment must not carry loopback requests
    try:
        def healthy() -> bool:
            if process.poll() is not None:
                pytest.fail(f"faceid serve exited with {process.returncode} before answering:\n{server.log()}",
                            pytrace=False)
            try:
                return server.get("/health", token=None).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(healthy, START_TIMEOUT_S, f"faceid serve answering /health on port {port}", interval=0.2)
        yield server
    finally:
        server.http.close()
        stop_process(process)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """The main server: default limits."""
    yield from start_server(tmp_path_factory.mktemp("serve-main"))


@pytest.fixture(scope="module")
def small_server(tmp_path_factory) -> Iterator[Server]:
    """A server with a 1 MiB upload limit and its access log on (-v); nobody is ever enrolled in it."""
    yield from start_server(tmp_path_factory.mktemp("serve-small"), "--max_upload_mb", "1", "-v")


def upload(path: Path) -> tuple[str, bytes, str]:
    return (path.name, path.read_bytes(), "image/png" if path.suffix == ".png" else "image/jpeg")


def enrol(server: Server, name: str, photos: list[Path]) -> requests.Response:
    return server.post(f"/people/{name}/faces", files=[("images", upload(path)) for path in photos])


@pytest.fixture(scope="module")
def enrolled(server) -> dict[str, dict]:
    """The clip's two known people and Al Gore (three LFW photos) enrolled in ``server``; their answers."""
    answers = {}
    for name, photos in (("lin-manuel-miranda", [LIN]), ("alex-lacamoire", [ALEX]), ("Al_Gore", GORE[:3])):
        response = enrol(server, name, photos)
        assert response.status_code == 200, response.text
        answers[name] = response.json()
    return answers


def png_bytes(width: int, height: int) -> bytes:
    """A valid grey PNG of ``width`` x ``height`` pixels, made row by row (a 50-megapixel one is ~50 kB
    and never held decoded in memory)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    compressor = zlib.compressobj(9)
    row = b"\0" + b"\x80" * width  # filter byte 0, then mid-grey
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def blank_png() -> bytes:
    """A 200x200 photo of a wall: an image without a face."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (200, 200), (120, 130, 140)).save(buffer, "PNG")
    return buffer.getvalue()


def error_of(response: requests.Response) -> str:
    """The ``error`` of a JSON error body (the test fails when the body is anything else)."""
    assert response.headers.get("content-type", "").startswith("application/json"), (response.status_code,
                                                                                       response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str) and body["error"].strip(), body
    return body["error"]


# --- /health and tokens ------------------------------------------------------------------------------

def test_health_needs_no_token_and_says_version_and_cameras(server):
    from faceid import __version__

    response = server.get("/health", token=None)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert body["cameras"] == []


# Every route but /health, with a value for its path parameters. Checked against /openapi.json, so a
# route added without being listed here fails the test rather than escaping the token check.
PROTECTED = [
    ("GET", "/people"), ("POST", "/people/{name}/faces"), ("DELETE", "/people/{name}"), ("POST", "/identify"),
    ("POST", "/verify"), ("GET", "/events"), ("GET", "/events/{event_id}"), ("GET", "/events/{event_id}/face.jpg"),
    ("GET", "/cameras"), ("POST", "/cameras"), ("DELETE", "/cameras/{name}"), ("GET", "/metrics"),
    ("GET", "/cameras/{name}/frame.jpg"), ("GET", "/cameras/{name}/stream.mjpg"), ("GET", "/people/{name}/faces"),
    ("GET", "/people/{name}/faces/{photo}"), ("DELETE", "/people/{name}/faces/{photo}"),
    ("POST", "/events/{event_id}/correct"), ("GET", "/corrections"), ("GET", "/unknowns"),
    ("GET", "/unknowns/{cluster_id}"), ("POST", "/unknowns/{cluster_id}/name"), ("POST", "/unknowns/{cluster_id}/merge"),
    ("POST", "/unknowns/{cluster_id}/split"), ("POST", "/unknowns/{cluster_id}/dismiss"),
    ("GET", "/session"), ("DELETE", "/session"),
]
# The page and the sign-in answer without a token: their routes decide (the sign-in page; a token and the CSRF cookie).
OPEN_ROUTES = {("GET", "/health"), ("GET", "/"), ("POST", "/session")}


def concrete(path: str) -> str:
    return (path.replace("{name}", "someone").replace("{event_id}", "1").replace("{photo}", "a.jpg")
            .replace("{cluster_id}", "c0001"))


def test_every_endpoint_but_health_is_listed_as_protected(server):
    routes = server.get("/openapi.json", token=None).json()["paths"]
    found = {(method.upper(), path) for path, methods in routes.items() for method in methods}
    assert found - OPEN_ROUTES == set(PROTECTED)


@pytest.mark.parametrize(("method", "path"), PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
@pytest.mark.parametrize("credentials", ["none", "wrong", "basic"])
def test_endpoints_refuse_a_missing_or_wrong_token(server, method, path, credentials):
    headers = {"basic": {"Authorization": "Basic dXNlcjpwYXNz"}}.get(credentials, {})
    token = {"none": None, "wrong": "not-a-token-" + "x" * 32, "basic": None}[credentials]
    response = server.request(method, concrete(path), token=token, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers.get("www-authenticate") == "Bearer"
    message = error_of(response)
    assert "token" in message


def test_a_revoked_token_is_refused(server):
    # Made and revoked while the server runs: the CLI and the server share the database (WAL). Revoked by
    # its id: a token may start with '-', which argparse would take for an option.
    token, token_id = create_token_and_id(server.data)
    assert server.get("/people", token=token).status_code == 200
    revoked = faceid_cli("token", "revoke", token_id, "--data", server.data)
    assert revoked.returncode == 0, revoked.stderr
    response = server.get("/people", token=token)
    assert response.status_code == 401
    assert response.headers.get("www-authenticate") == "Bearer"
    assert "revoked" in error_of(response)
    assert server.get("/people").status_code == 200  # the others still work


def test_token_revoke_takes_the_documented_argument_order(tmp_path):
    _token, token_id = create_token_and_id(tmp_path / "data")
    revoked = faceid_cli("token", "revoke", "--data", tmp_path / "data", token_id)
    assert revoked.returncode == 0, revoked.stderr


# --- people, identify, verify --------------------------------------------------------------------------

def test_enrolled_people_are_listed_with_their_face_counts(server, enrolled):
    photos = enrolled["Al_Gore"].pop("photos")
    assert enrolled["Al_Gore"] == {"name": "Al_Gore", "added": 3, "faces": 3, "images": 3}
    assert sorted(photos) == sorted(path.name for path in (server.data / "faces" / "Al_Gore").iterdir())
    assert enrolled["lin-manuel-miranda"]["faces"] == 1
    response = server.get("/people")
    assert response.status_code == 200
    people = {person["name"]: person for person in response.json()["people"]}
    assert {"lin-manuel-miranda", "alex-lacamoire", "Al_Gore"} <= set(people)
    assert people["Al_Gore"]["faces"] == people["Al_Gore"]["photos"] == 3
    assert people["Al_Gore"]["events"] == people["Al_Gore"]["corrections"] == 0
    assert people["alex-lacamoire"]["faces"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", people["Al_Gore"]["created"])
    assert len(list((server.data / "faces" / "Al_Gore").iterdir())) == 3


@pytest.mark.parametrize("photo", GORE[3:6], ids=lambda path: path.name)
def test_identify_names_an_enrolled_person_on_another_photo(server, enrolled, photo):
    response = server.post("/identify", files={"image": upload(photo)})
    assert response.status_code == 200, response.text
    faces = response.json()["faces"]
    assert len(faces) == 1
    face = faces[0]
    assert set(face) == {"box", "name", "score", "threshold"}
    assert face["name"] == "Al_Gore"
    assert face["score"] >= face["threshold"]
    x, y, width, height = face["box"]
    assert all(isinstance(value, int) for value in face["box"])
    # LFW photos are 250x250 with the face in the middle.
    assert 0 <= x < 125 < x + width <= 250 and 0 <= y < 125 < y + height <= 250


@pytest.mark.parametrize("photo", MERKEL[:2], ids=lambda path: path.name)
def test_identify_says_unknown_for_someone_not_enrolled(server, enrolled, photo):
    response = server.post("/identify", files={"image": upload(photo)})
    assert response.status_code == 200, response.text
    faces = response.json()["faces"]
    assert len(faces) == 1
    assert faces[0]["name"] is None
    assert faces[0]["score"] < faces[0]["threshold"]


def test_identify_an_image_without_a_face_is_an_empty_list(server, enrolled):
    response = server.post("/identify", files={"image": ("wall.png", blank_png(), "image/png")})
    assert response.status_code == 200, response.text
    assert response.json() == {"faces": []}


@pytest.mark.parametrize(("second", "same"), [(GORE[5], True), (MERKEL[0], False)], ids=["same", "different"])
def test_verify_says_whether_two_photos_show_one_person(server, second, same):
    response = server.post("/verify", files={"image_a": upload(GORE[4]), "image_b": upload(second)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["same"] is same
    assert (body["score"] >= body["threshold"]) is same


def test_delete_forgets_a_person_and_their_photos(server, enrolled):
    response = enrol(server, "Amelia_Vega", TO_FORGET[:2])
    assert response.status_code == 200, response.text
    folder = server.data / "faces" / "Amelia_Vega"
    assert folder.is_dir()
    named = server.post("/identify", files={"image": upload(TO_FORGET[2])}).json()["faces"]
    assert [face["name"] for face in named] == ["Amelia_Vega"]

    response = server.delete("/people/Amelia_Vega")
    assert response.status_code == 200, response.text
    assert response.json()["forgotten"] is True
    assert "Amelia_Vega" not in {person["name"] for person in server.get("/people").json()["people"]}
    assert not folder.exists()
    after = server.post("/identify", files={"image": upload(TO_FORGET[2])}).json()["faces"]
    assert [face["name"] for face in after] == [None]
    assert {"Al_Gore", "lin-manuel-miranda"} <= {person["name"] for person in server.get("/people").json()["people"]}

    again = server.delete("/people/Amelia_Vega")
    assert again.status_code == 404
    assert "Amelia_Vega" in error_of(again)


# --- the bad-request table -------------------------------------------------------------------------------

@dataclass
class BadRequest:
    """One bad request: what to send (to the main or the small server), the status and words of the answer."""

    send: Callable[[Server, Server], requests.Response]
    status: int | tuple[int, ...]  # the status, or the statuses that would each be right
    words: tuple[str, ...]  # each must appear in the error message (case-insensitive)
    bug: str | None = None  # a known bug: the case is an expected failure (strict) until it is fixed


def _camera(server: Server, name: str, source: str) -> requests.Response:
    return server.post("/cameras", json={"name": name, "source": source})


def _duplicate_camera(server: Server, small: Server) -> requests.Response:
    first = _camera(server, "twice", str(VIDEO))
    assert first.status_code == 201, first.text
    try:
        return _camera(server, "twice", str(VIDEO))
    finally:
        assert server.delete("/cameras/twice").status_code == 200  # stop it: it would identify the clip


BAD_REQUESTS = {
    "malformed multipart": BadRequest(
        lambda s, _: s.post("/identify", data=b"garbage, not multipart",
                            headers={"Content-Type": "multipart/form-data; boundary=X"}),
        400, ("multipart",)),
    "a text file as an image": BadRequest(
        lambda s, _: s.post("/identify", files={"image": ("notes.txt", b"hello, not an image\n", "text/plain")}),
        415, ("notes.txt", "not an image")),
    "an empty file": BadRequest(
        lambda s, _: s.post("/identify", files={"image": ("empty.jpg", b"", "image/jpeg")}), 415, ("empty",)),
    "a 50-megapixel image": BadRequest(
        lambda s, _: s.post("/identify", files={"image": ("huge.png", png_bytes(8000, 6250), "image/png")}),
        413, ("8000x6250", "megapixels", "max_image_pixels")),
    "a body over --max_upload_mb (Content-Length)": BadRequest(
        lambda _, small: small.post("/identify",
                                    files={"image": ("big.jpg", b"\xff" * (3 * 2**20 // 2), "image/jpeg")}),
        413, ("limit", "mib")),
    "a body over --max_upload_mb (chunked)": BadRequest(
        lambda _, small: small.post("/identify", data=iter([b"\xff" * 2**16] * 24),
                                    headers={"Content-Type": "multipart/form-data; boundary=X"}),
        413, ("limit", "mib")),
    "the wrong field name": BadRequest(
        lambda s, _: s.post("/identify", files={"picture": upload(GORE[3])}), 422, ("image", "required")),
    "enrol an image without a face": BadRequest(
        lambda s, _: s.post("/people/nobody/faces", files={"images": ("wall.png", blank_png(), "image/png")}),
        422, ("no usable face", "nobody")),
    "a person name with a slash (..%2Fx)": BadRequest(
        lambda s, _: s.post("/people/..%2Fx/faces", files={"images": upload(GORE[0])}), 404, ("no endpoint", "/docs")),
    "a person name '..' (%2E%2E)": BadRequest(
        lambda s, _: s.post("/people/%2E%2E/faces", files={"images": upload(GORE[0])}), 400, ("name",)),
    "a hidden person name (.hidden)": BadRequest(
        lambda s, _: s.post("/people/.hidden/faces", files={"images": upload(GORE[0])}), 400, (".hidden", "name")),
    "DELETE an unknown person": BadRequest(lambda s, _: s.delete("/people/nobody-here"), 404, ("nobody-here",)),
    "DELETE an unknown camera": BadRequest(lambda s, _: s.delete("/cameras/x"), 404, ("camera", "'x'")),
    "POST /cameras with a missing source file": BadRequest(
        lambda s, _: _camera(s, "missing", "/no/such/video.mp4"), 400, ("source", "/no/such/video.mp4")),
    "POST /cameras with an invalid name": BadRequest(
        lambda s, _: _camera(s, "../up", str(VIDEO)), 400, ("name",)),
    "POST /cameras with a body that is not JSON": BadRequest(
        lambda s, _: s.post("/cameras", data=b"name=x", headers={"Content-Type": "application/json"}), 422,
        ("not valid json",)),
    "POST /cameras with a boolean source": BadRequest(
        lambda s, _: s.post("/cameras", json={"name": "flag", "source": True}), 422, ("source",)),
    "a duplicate camera name": BadRequest(_duplicate_camera, 409, ("twice", "exists")),
    "GET /events?since=notatime": BadRequest(
        lambda s, _: s.get("/events", params={"since": "notatime"}), 400, ("since", "iso 8601")),
    "GET /events?limit=0": BadRequest(lambda s, _: s.get("/events", params={"limit": 0}), 422, ("limit",)),
    "an unknown event's face": BadRequest(lambda s, _: s.get("/events/999999/face.jpg"), 404, ("999999",)),
    "an unknown event": BadRequest(lambda s, _: s.get("/events/999999"), 404, ("999999",)),
    "identify when nobody is enrolled": BadRequest(
        lambda _, small: small.post("/identify", files={"image": upload(GORE[3])}), 409, ("nobody is enrolled",)),
    "an event id too large for SQLite": BadRequest(
        lambda s, _: s.get("/events/99999999999999999999999"), 422, ("event_id",)),
    "an event's face, id too large for SQLite": BadRequest(
        lambda s, _: s.get("/events/99999999999999999999999/face.jpg"), 422, ("event_id",)),
    "malformed multipart without a token": BadRequest(
        lambda s, _: s.post("/identify", token=None, data=b"garbage, not multipart",
                            headers={"Content-Type": "multipart/form-data; boundary=X"}),
        401, ("token",)),
}


@pytest.mark.parametrize("case", [
    pytest.param(case, marks=pytest.mark.xfail(strict=True, reason=bad.bug)) if bad.bug else case
    for case, bad in BAD_REQUESTS.items()])
def test_a_bad_request_is_a_clear_4xx(server, small_server, enrolled, case):
    bad = BAD_REQUESTS[case]
    response = bad.send(server, small_server)
    print(f"{case} -> {response.status_code} {response.text}")  # the table, with -s
    message = error_of(response)
    statuses = bad.status if isinstance(bad.status, tuple) else (bad.status,)
    assert response.status_code in statuses, (response.status_code, message)
    for word in bad.words:
        assert word.lower() in message.lower(), (word, message)


def test_a_rejected_enrolment_keeps_no_photo(server, enrolled):
    enrol_blank = server.post("/people/nobody/faces", files={"images": ("wall.png", blank_png(), "image/png")})
    assert enrol_blank.status_code == 422
    assert not (server.data / "faces" / "nobody").exists()
    assert "nobody" not in {person["name"] for person in server.get("/people").json()["people"]}


def test_a_chunked_upload_under_the_limit_is_read(server, enrolled):
    # The middleware reads a body without Content-Length to count it; the route must still get all of it.
    prepared = requests.Request("POST", server.url + "/identify", files={"image": upload(GORE[3])},
                                headers=server.auth).prepare()
    body = prepared.body
    chunks = iter([body[start:start + 4096] for start in range(0, len(body), 4096)])  # no Content-Length: chunked
    response = server.http.post(server.url + "/identify", data=chunks,
                                headers={**server.auth, "Content-Type": prepared.headers["Content-Type"]},
                                timeout=REQUEST_TIMEOUT_S)
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 200, response.text
    assert [face["name"] for face in response.json()["faces"]] == ["Al_Gore"]


# --- metrics -----------------------------------------------------------------------------------------

def test_metrics_are_prometheus_text(server, enrolled):
    server.get("/people")
    response = server.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert re.search(r"^# TYPE faceid_http_requests(_total)? counter$", text, re.M)
    assert re.search(r'^faceid_http_requests_total\{[^}]*route="/people"[^}]*status="200"[^}]*\} [1-9]', text, re.M)
    people = re.search(r"^faceid_people (\S+)$", text, re.M)
    assert people and float(people.group(1)) >= 3


# --- security ---------------------------------------------------------------------------------------------

def test_the_server_listens_on_loopback_only(server):
    assert f"http://127.0.0.1:{server.port}" in server.log()
    listening = subprocess.run(["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True,
                               timeout=30) if _has("ss") else None
    if listening is not None and listening.returncode == 0:
        local = [line.split()[3] for line in listening.stdout.splitlines() if line.strip()]
        assert local == [f"127.0.0.1:{server.port}"], listening.stdout
    address = _outward_address()
    if address is not None:
        with pytest.raises(OSError):
            socket.create_connection((address, server.port), timeout=5).close()


def _has(binary: str) -> bool:
    import shutil

    return shutil.which(binary) is not None


def _outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None when it has none."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_no_token_is_ever_in_the_server_logs(server, small_server):
    # A few requests that log something (errors, the access log of the -v server), with good and bad tokens.
    wrong = "wrong-" + "y" * 40
    server.get("/people", token=wrong)
    server.post("/identify", files={"image": ("notes.txt", b"text", "text/plain")})
    small_server.get("/people")
    small_server.get("/people", token=wrong)
    small_server.post("/identify", files={"image": upload(GORE[3])})
    for running in (server, small_server):
        log = running.log()
        assert "Started server process" in log or "Uvicorn running" in log  # the log is the server's
        assert running.token not in log
        assert wrong not in log
        assert "Bearer" not in log
    assert 'GET /people HTTP/1.1" 200' in small_server.log()  # the access log is on, and still no token


# --- encryption at rest ------------------------------------------------------------------------------------

def test_with_a_key_every_photo_vector_and_crop_at_rest_is_sealed_and_the_key_is_required(tmp_path):
    """--key_file: the enrolment photo, the feature cache and the event vectors are sealed on disk; the API
    answers in the clear; started again without the key, the service refuses with an error naming it."""
    from faceid.io.sealed import new_key, write_key_file

    key_file = tmp_path / "service.key"
    write_key_file(key_file, new_key())
    runs = start_server(tmp_path, "--key_file", str(key_file))
    keyed = next(runs)
    try:
        assert enrol(keyed, "Al_Gore", GORE[:2]).status_code == 200
        response = keyed.post("/identify", files={"image": upload(GORE[3])})
        assert response.status_code == 200 and response.json()["faces"][0]["name"] == "Al_Gore", response.text
        photos = sorted((keyed.data / "faces" / "Al_Gore").iterdir())
        assert len(photos) == 2
        for photo in photos:
            sealed = photo.read_bytes()
            assert sealed.startswith(b"FACEID\x00\x01"), photo  # a sealed file, not the JPEG
            assert all(sealed != path.read_bytes() for path in GORE[:2])
        person_file = keyed.data / "features" / "people" / "Al_Gore.npz"
        assert person_file.read_bytes().startswith(b"FACEID\x00\x01")
        # The page gets the photos back in the clear, and a removed one leaves the disk and the gallery.
        listed = keyed.get("/people/Al_Gore/faces").json()["photos"]
        assert sorted(photo["id"] for photo in listed) == [photo.name for photo in photos]
        served = keyed.get(listed[0]["url"])
        assert served.status_code == 200 and served.content in {path.read_bytes() for path in GORE[:2]}
        removed = keyed.delete(listed[0]["url"])
        assert removed.status_code == 200 and removed.json()["faces"] == 1, removed.text
        assert not (keyed.data / "faces" / "Al_Gore" / listed[0]["id"]).exists()
    finally:
        runs.close()
    refused = subprocess.run([sys.executable, "-m", "faceid", "serve", "--data", str(keyed.data), "--port",
                              str(free_port())], cwd=REPO, env=server_env(), capture_output=True, text=True,
                             timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert refused.returncode != 0
    assert "encrypted" in refused.stderr and "--key_file" in refused.stderr, refused.stderr
