"""The web page's security over HTTP, against the real thing: one ``python -m faceid serve`` subprocess
on a loopback port (``test_service_api``'s helpers), spoken to with ``requests`` the way a browser or
another site's page would: the sign-in form read from the HTML, cookies as the server set them.

What it shows (issue 36, point 4): a page or an API call without a session or a token is refused; a
sign-in or a change sent from another site (a cross-site form post, a wrong or missing CSRF token, a
foreign ``Origin``) is refused and changes nothing; an uploaded SVG, HTML or text file is refused, and a
photo with HTML appended is only ever served back as an image, sandboxed; the page's own files are the
only static files served. Every wait is bounded; no test asserts on a time.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import re
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser

import pytest
import requests
from service_support import wait_until
from test_service_api import (
    GORE,
    LIN,
    REQUEST_TIMEOUT_S,
    Server,
    create_token_and_id,
    enrol,
    error_of,
    faceid_cli,
    start_server,
    upload,
)

from conftest import VIDEO

PERSON = "Al_Gore"
SESSION_COOKIE = "faceid_session"
CSRF_COOKIE = "faceid_csrf"
EVIL = "http://evil.example"
# A person's name may hold '<', '>', '=' and spaces (only '/' and a leading '.' are refused): the page
# must show it as text.
HOSTILE_NAME = "<img src=x onerror=alert(1)>"
EVENT_TIMEOUT_S = 120.0  # the first event with a face from a camera on the clip, on a loaded machine


# --- a browser's view of the page -------------------------------------------------------------------


class Page(HTMLParser):
    """The tags of an HTML page, with their attributes, and the text inside its ``<script>`` elements."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.script_text: list[str] = []
        self._in_script = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {name: value or "" for name, value in attrs}))
        self._in_script = tag == "script"

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.script_text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        """The attributes of each ``tag`` whose attributes include ``attrs``."""
        return [found for name, found in self.tags
                if name == tag and all(found.get(key) == value for key, value in attrs.items())]

    def inline_code(self) -> list[str]:
        """What a Content-Security-Policy without 'unsafe-inline' would block: inline scripts, ``on*``
        handlers, ``style`` attributes and elements, ``javascript:`` URLs."""
        problems = [f"inline script {text[:60]!r}" for text in self.script_text]
        for tag, attrs in self.tags:
            if tag == "script" and not attrs.get("src"):
                problems.append("a <script> without src")
            if tag == "style":
                problems.append("a <style> element")
            for name, value in attrs.items():
                if name.startswith("on") or name == "style":
                    problems.append(f"<{tag} {name}={value!r}>")
                if value.strip().lower().startswith("javascript:"):
                    problems.append(f"<{tag} {name}={value!r}>")
        return problems


def browser() -> requests.Session:
    """A client with a cookie jar, as a browser is, that never sends loopback through a proxy."""
    http = requests.Session()
    http.trust_env = False
    return http


def set_cookies(response: requests.Response) -> dict[str, str]:
    """Each ``Set-Cookie`` header of a response, raw, by cookie name."""
    return {header.split("=", 1)[0].strip(): header for header in response.raw.headers.getlist("Set-Cookie")}


def cookie_attributes(header: str) -> tuple[str, dict[str, str]]:
    """The value of a raw ``Set-Cookie`` header and its attributes (names lower-cased)."""
    first, *rest = [part.strip() for part in header.split(";")]
    attributes = {}
    for part in rest:
        name, _, value = part.partition("=")
        attributes[name.strip().lower()] = value.strip()
    return first.split("=", 1)[1], attributes


def open_sign_in(server: Server, http: requests.Session) -> tuple[requests.Response, str]:
    """``GET /`` without a session: the sign-in page and the CSRF value of its form."""
    response = http.get(server.url + "/", timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 200, response.text
    fields = Page(response.text).find("input", type="hidden", name="csrf")
    assert len(fields) == 1, response.text
    return response, fields[0]["value"]


def post_sign_in(server: Server, http: requests.Session, fields: dict[str, str],
                 headers: dict[str, str] | None = None) -> requests.Response:
    """The sign-in form posted (form-encoded, as the browser sends it), the redirect not followed."""
    return http.post(server.url + "/session", data=fields, headers=headers or {}, allow_redirects=False,
                     timeout=REQUEST_TIMEOUT_S)


@dataclass
class SignedIn:
    """A browser signed in on the page: its cookie jar, the session cookie and the app page's CSRF value."""

    http: requests.Session
    session: str
    csrf: str
    app: requests.Response


def sign_in(server: Server, token: str | None = None) -> SignedIn:
    """Sign a new browser in through the form, as a person would: read the form, post it, follow to ``/``."""
    http = browser()
    _page, csrf = open_sign_in(server, http)
    response = post_sign_in(server, http, {"token": token or server.token, "csrf": csrf})
    assert response.status_code == 303, response.text
    session = http.cookies.get(SESSION_COOKIE)
    assert session, set_cookies(response)
    app = http.get(server.url + "/", timeout=REQUEST_TIMEOUT_S)
    assert app.status_code == 200, app.text
    meta = Page(app.text).find("meta", name="csrf-token")
    assert len(meta) == 1 and meta[0]["content"], app.text
    return SignedIn(http, session, meta[0]["content"], app)


def with_cookie(server: Server, method: str, path: str, session: str | None, *, csrf: str | None = None,
                origin: str | None = None, **kwargs) -> requests.Response:
    """``method path`` with only the session cookie (no bearer token), and the CSRF header and an
    ``Origin`` when given."""
    headers = dict(kwargs.pop("headers", {}))
    if session is not None:
        headers["Cookie"] = f"{SESSION_COOKIE}={session}"
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    if origin is not None:
        headers["Origin"] = origin
    return server.request(method, path, token=None, headers=headers, allow_redirects=False, **kwargs)


def raw_get(server: Server, path: str) -> tuple[int, str, str]:
    """``GET path`` sent byte for byte (``requests`` would resolve ``..`` before sending it):
    status, content type, body."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=REQUEST_TIMEOUT_S)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode(errors="replace")
    finally:
        connection.close()


def photo_ids(server: Server, name: str) -> list[str]:
    response = server.get(f"/people/{name}/faces")
    assert response.status_code == 200, response.text
    return sorted(photo["id"] for photo in response.json()["photos"])


def camera_names(server: Server) -> set[str]:
    response = server.get("/cameras")
    assert response.status_code == 200, response.text
    return {camera["name"] for camera in response.json()["cameras"]}


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    yield from start_server(tmp_path_factory.mktemp("serve-web-security"))


@pytest.fixture(scope="module")
def person(server) -> str:
    """Al Gore enrolled from one real photo (by bearer token, as a script would)."""
    response = enrol(server, PERSON, GORE[:1])
    assert response.status_code == 200, response.text
    return PERSON


@pytest.fixture(scope="module")
def signed_in(server, person) -> SignedIn:
    """One browser signed in for the tests that keep their session."""
    return sign_in(server)


@pytest.fixture(scope="module")
def event(server, person) -> dict:
    """An event with a face crop: a camera on the clip (added by bearer token) until its first one, then removed."""
    added = server.post("/cameras", json={"name": "clip", "source": str(VIDEO)})
    assert added.status_code == 201, added.text
    found: list[dict] = []

    def has_event() -> bool:
        response = server.get("/events", params={"camera": "clip"})
        assert response.status_code == 200, response.text
        found[:] = [event for event in response.json()["events"] if event["face"]]
        return bool(found)

    try:
        wait_until(has_event, EVENT_TIMEOUT_S, "an event with a face from the clip", interval=0.5)
    finally:
        assert server.delete("/cameras/clip").status_code == 200
    return found[-1]


# --- 1. the sign-in page -----------------------------------------------------------------------------


def test_the_sign_in_page_is_a_plain_form_posting_a_token_and_a_csrf_value_to_session(server):
    response, csrf = open_sign_in(server, browser())
    assert response.headers["content-type"].startswith("text/html")
    page = Page(response.text)
    forms = page.find("form")
    assert len(forms) == 1 and forms[0].get("method", "").lower() == "post" and forms[0].get("action") == "/session"
    assert page.find("input", type="password", name="token")
    assert re.fullmatch(r"[A-Za-z0-9_-]{20,100}", csrf), csrf


def test_the_sign_in_page_sets_an_httponly_samesite_strict_csrf_cookie_equal_to_its_form_value(server):
    response, csrf = open_sign_in(server, browser())
    cookies = set_cookies(response)
    assert SESSION_COOKIE not in cookies
    value, attributes = cookie_attributes(cookies[CSRF_COOKIE])
    assert value == csrf
    assert "httponly" in attributes
    assert attributes.get("samesite", "").lower() == "strict"
    assert attributes.get("path") == "/"


def test_the_pages_have_a_strict_content_security_policy_and_may_not_be_framed(server, signed_in):
    for response in (open_sign_in(server, browser())[0], signed_in.app):
        policy = response.headers.get("content-security-policy", "")
        directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
        assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, policy
        assert directives.get("script-src") == ["'self'"], policy
        assert directives.get("frame-ancestors") == ["'none'"], policy
        assert directives.get("object-src") == ["'none'"], policy
        assert response.headers.get("x-frame-options") == "DENY"
        assert response.headers.get("x-content-type-options") == "nosniff"
        assert "no-store" in response.headers.get("cache-control", "")  # the names and CSRF value stay off disk


def test_the_pages_hold_no_inline_script_style_or_event_handler(server, signed_in):
    assert Page(open_sign_in(server, browser())[0].text).inline_code() == []
    page = Page(signed_in.app.text)
    assert page.inline_code() == []
    assert page.find("script", src="/static/app.js")


# --- 2. signing in -------------------------------------------------------------------------------------


def test_a_wrong_token_gets_the_sign_in_page_again_with_an_error_and_no_session(server):
    http = browser()
    _page, csrf = open_sign_in(server, http)
    response = post_sign_in(server, http, {"token": "not-a-token-" + secrets.token_urlsafe(16), "csrf": csrf})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    page = Page(response.text)
    assert page.find("input", type="password", name="token")
    alert = re.search(r'role="alert"[^>]*>([^<]*)<', response.text)
    assert alert and alert.group(1).strip(), response.text
    assert SESSION_COOKIE not in set_cookies(response) and SESSION_COOKIE not in http.cookies


@pytest.mark.parametrize("case", ["no csrf field", "no csrf cookie", "another csrf value"])
def test_a_sign_in_without_the_matching_csrf_value_is_refused(server, case):
    http = browser()
    _page, csrf = open_sign_in(server, http)
    fields = {"token": server.token, "csrf": csrf}
    if case == "no csrf field":
        del fields["csrf"]
    elif case == "no csrf cookie":
        http.cookies.clear()
    else:
        fields["csrf"] = secrets.token_urlsafe(32)
    response = post_sign_in(server, http, fields)
    assert response.status_code == 403, response.text
    assert SESSION_COOKIE not in set_cookies(response) and SESSION_COOKIE not in http.cookies


@pytest.mark.parametrize("origin", [EVIL, "null"])
def test_a_cross_site_sign_in_is_refused_even_with_the_right_token_and_csrf(server, origin):
    # "null": what a sandboxed frame or a redirected form sends.
    http = browser()
    _page, csrf = open_sign_in(server, http)
    response = post_sign_in(server, http, {"token": server.token, "csrf": csrf}, headers={"Origin": origin})
    assert response.status_code == 403, response.text
    assert SESSION_COOKIE not in set_cookies(response) and SESSION_COOKIE not in http.cookies


def test_a_json_sign_in_needs_the_csrf_cookie_echoed_in_its_header(server):
    http = browser()
    _page, csrf = open_sign_in(server, http)
    refused = http.post(server.url + "/session", json={"token": server.token}, timeout=REQUEST_TIMEOUT_S)
    assert refused.status_code == 403 and error_of(refused)
    assert SESSION_COOKIE not in http.cookies
    accepted = http.post(server.url + "/session", json={"token": server.token}, headers={"X-CSRF-Token": csrf},
                         timeout=REQUEST_TIMEOUT_S)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["signed_in"] is True and http.cookies.get(SESSION_COOKIE)


def test_the_right_token_opens_an_httponly_samesite_strict_session_and_redirects_to_the_app(server, person):
    http = browser()
    _page, csrf = open_sign_in(server, http)
    response = post_sign_in(server, http, {"token": server.token, "csrf": csrf})
    assert response.status_code == 303 and response.headers["location"] == "/"
    session, attributes = cookie_attributes(set_cookies(response)[SESSION_COOKIE])
    assert "httponly" in attributes
    assert attributes.get("samesite", "").lower() == "strict"
    assert attributes.get("path") == "/"
    assert int(attributes.get("max-age", "0")) > 0
    assert server.token not in response.headers.get("set-cookie", "")  # the cookie is a session, not the token

    app = http.get(server.url + "/", timeout=REQUEST_TIMEOUT_S)
    assert app.status_code == 200
    assert Page(app.text).find("meta", name="csrf-token")
    assert re.search(rf">\s*{re.escape(person)}\s*<", app.text), app.text
    people = with_cookie(server, "GET", "/people", session)
    assert people.status_code == 200, people.text
    assert person in {entry["name"] for entry in people.json()["people"]}


def test_a_persons_name_is_shown_as_text_on_the_app_page(server, person):
    response = enrol(server, HOSTILE_NAME, [LIN])
    assert response.status_code == 200, response.text
    try:
        app = sign_in(server).app
        assert HOSTILE_NAME not in app.text
        assert "&lt;img src=x onerror=alert(1)&gt;" in app.text
        assert not [attrs for tag, attrs in Page(app.text).tags if tag == "img" and "onerror" in attrs]
    finally:
        assert server.delete(f"/people/{HOSTILE_NAME}").status_code == 200


# --- 3. no session, no data ------------------------------------------------------------------------------

FORGED_SESSIONS = {
    "well formed, never issued": secrets.token_urlsafe(32),
    "garbage": "garbage",
    "quotes and a path": '"../../faceid.db"',
}


@pytest.mark.parametrize("forged", FORGED_SESSIONS.values(), ids=FORGED_SESSIONS.keys())
def test_a_forged_session_cookie_gets_the_sign_in_page_not_the_names(server, person, forged):
    response = with_cookie(server, "GET", "/", forged)
    assert response.status_code == 200
    page = Page(response.text)
    assert page.find("input", type="password", name="token")
    assert not page.find("meta", name="csrf-token")
    assert person not in response.text


@pytest.mark.parametrize("forged", FORGED_SESSIONS.values(), ids=FORGED_SESSIONS.keys())
@pytest.mark.parametrize("path", ["/people", "/events", "/session", f"/people/{PERSON}/faces", "/unknowns",
                                  "/corrections", "/cameras"])
def test_api_calls_with_a_forged_session_cookie_are_refused(server, person, forged, path):
    response = with_cookie(server, "GET", path, forged)
    assert response.status_code == 401
    assert error_of(response)


@pytest.mark.parametrize("method, path", [
    ("GET", f"/people/{PERSON}/faces"), ("GET", f"/people/{PERSON}/faces/x.jpg"),
    ("DELETE", f"/people/{PERSON}/faces/x.jpg"), ("GET", "/session"), ("DELETE", "/session"),
    ("POST", "/events/1/correct"), ("GET", "/corrections"), ("GET", "/unknowns"), ("GET", "/cameras/x/stream.mjpg"),
    ("GET", "/cameras/x/frame.jpg"),
])
def test_the_new_endpoints_refuse_a_call_without_a_session_or_token(server, person, method, path):
    response = server.request(method, path, token=None)
    assert response.status_code == 401
    assert error_of(response)


def test_a_photo_is_never_served_without_a_session_or_token(server, person):
    photo = photo_ids(server, person)[0]
    response = server.get(f"/people/{person}/faces/{photo}", token=None)
    assert response.status_code == 401 and error_of(response)


ERRORS = {
    "no token (the gate)": ("GET", "/people", {}),
    "a forged session (the gate)": ("GET", "/people", {"Cookie": f"{SESSION_COOKIE}={secrets.token_urlsafe(32)}"}),
    "a path holding a script (the router)": ("GET", "/%3Cscript%3Ealert(1)%3C/script%3E", {"bearer": ""}),
    "a static name holding a tag": ("GET", "/static/%3Cb%3E.js", {}),
}


@pytest.mark.parametrize("method, path, headers", ERRORS.values(), ids=ERRORS.keys())
def test_an_error_is_json_that_a_browser_never_sniffs_as_a_page(server, method, path, headers):
    headers = dict(headers)
    token = "default" if headers.pop("bearer", None) is not None else None
    response = server.request(method, path, token=token, headers=headers)
    assert 400 <= response.status_code < 500
    assert error_of(response)
    assert response.headers.get("x-content-type-options") == "nosniff", dict(response.headers)


# --- 4. cross-site requests ------------------------------------------------------------------------------


def cross_site_requests(event_id: int) -> dict[str, dict]:
    """What an HTML form on another site can send (urlencoded or multipart; never DELETE), as ``request`` kwargs."""
    return {
        "POST /cameras (form)": {"method": "POST", "path": "/cameras",
                                  "data": {"name": "evil", "source": "http://evil.example/stream"}},
        "POST /people/NAME/faces (multipart)": {"method": "POST", "path": f"/people/{PERSON}/faces",
                                                 "files": [("images", upload(LIN))]},
        "POST /events/ID/correct (form)": {"method": "POST", "path": f"/events/{event_id}/correct",
                                            "data": {"name": "Somebody_Else"}},
    }


def assert_nothing_changed(server: Server, photos_before: list[str], event_before: dict) -> None:
    assert "evil" not in camera_names(server)
    assert photo_ids(server, PERSON) == photos_before
    after = server.get(f"/events/{event_before['id']}")
    assert after.status_code == 200 and after.json()["name"] == event_before["name"]
    assert not after.json().get("corrected")
    assert server.get("/corrections").json()["corrections"] == []


@pytest.mark.parametrize("case", ["POST /cameras (form)", "POST /people/NAME/faces (multipart)",
                                  "POST /events/ID/correct (form)"])
@pytest.mark.parametrize("csrf", ["none", "wrong"])
def test_a_cross_site_form_post_with_the_session_cookie_is_refused(server, signed_in, event, case, csrf):
    photos_before = photo_ids(server, PERSON)
    request = dict(cross_site_requests(event["id"])[case])
    response = with_cookie(server, request.pop("method"), request.pop("path"), signed_in.session,
                           csrf=None if csrf == "none" else secrets.token_urlsafe(32), **request)
    assert response.status_code == 403, response.text
    assert error_of(response)
    assert_nothing_changed(server, photos_before, event)


@pytest.mark.parametrize("origin", [EVIL, "null", "http://127.0.0.1:1", "http://localhost.evil.example"])
@pytest.mark.parametrize("case", ["POST /cameras (form)", "POST /people/NAME/faces (multipart)",
                                  "POST /events/ID/correct (form)", "DELETE /people/NAME"])
def test_a_request_from_another_origin_is_refused_even_with_the_right_csrf_header(server, signed_in, event, case,
                                                                                  origin):
    photos_before = photo_ids(server, PERSON)
    requests_ = cross_site_requests(event["id"])
    requests_["DELETE /people/NAME"] = {"method": "DELETE", "path": f"/people/{PERSON}"}
    request = dict(requests_[case])
    response = with_cookie(server, request.pop("method"), request.pop("path"), signed_in.session,
                           csrf=signed_in.csrf, origin=origin, **request)
    assert response.status_code == 403, response.text
    assert error_of(response)
    assert_nothing_changed(server, photos_before, event)


@pytest.mark.parametrize("origin", [None, "own"])
def test_the_csrf_header_from_the_app_page_lets_a_change_through(server, signed_in, origin):
    # 404 from the route itself: the request passed the gate.
    response = with_cookie(server, "DELETE", "/cameras/nosuch", signed_in.session, csrf=signed_in.csrf,
                           origin=server.url if origin == "own" else None)
    assert response.status_code == 404, response.text
    assert "nosuch" in error_of(response)


def test_the_browsers_own_cookie_jar_and_the_csrf_header_make_a_change(server, signed_in):
    response = signed_in.http.delete(server.url + "/cameras/nosuch", headers={"X-CSRF-Token": signed_in.csrf},
                                     timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 404, response.text


def test_a_bearer_token_request_needs_no_csrf_header(server):
    response = server.delete("/cameras/nosuch")
    assert response.status_code == 404, response.text
    assert "nosuch" in error_of(response)


def test_another_origin_is_never_allowed_to_read_an_answer(server, signed_in):
    read = with_cookie(server, "GET", "/people", signed_in.session, origin=EVIL)
    assert "access-control-allow-origin" not in read.headers
    preflight = server.request("OPTIONS", "/people/x", token=None, headers={
        "Origin": EVIL, "Access-Control-Request-Method": "DELETE", "Access-Control-Request-Headers": "x-csrf-token"})
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-headers" not in preflight.headers


# --- 5. uploads are never served back as active content ----------------------------------------------------

ACTIVE_UPLOADS = {
    "svg with a script": ("face.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script>'
                                      b'<circle r="10"/></svg>', "image/svg+xml"),
    "svg named .png": ("face.png", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "image/png"),
    "html": ("face.html", b"<!doctype html><html><script>alert(1)</script></html>", "text/html"),
    "html named .jpg": ("face.jpg", b"<html><body onload=alert(1)></body></html>", "image/jpeg"),
    "text": ("face.txt", b"just some text, no image\n", "text/plain"),
}


@pytest.mark.parametrize("name, data, media_type", ACTIVE_UPLOADS.values(), ids=ACTIVE_UPLOADS.keys())
def test_an_uploaded_svg_html_or_text_file_is_refused_and_not_stored(server, person, name, data, media_type):
    before = photo_ids(server, person)
    response = server.post(f"/people/{person}/faces", files=[("images", (name, data, media_type))])
    assert response.status_code == 415, response.text
    assert error_of(response)
    assert photo_ids(server, person) == before


def polyglot(kind: str) -> bytes:
    """A real photo of Al Gore (not the enrolled one) as ``kind`` with an HTML document appended."""
    from PIL import Image

    buffer = io.BytesIO()
    with Image.open(GORE[1]) as image:
        image.convert("RGB").save(buffer, kind)
    return buffer.getvalue() + b"<html><body><script>alert(1)</script></body></html>"


@pytest.mark.parametrize("kind, media_type", [("JPEG", "image/jpeg"), ("PNG", "image/png")])
def test_a_photo_with_html_appended_is_served_back_only_as_a_sandboxed_image(server, signed_in, person, kind,
                                                                             media_type):
    data = polyglot(kind)
    before = photo_ids(server, person)
    response = server.post(f"/people/{person}/faces", files=[("images", ("face.html", data, "text/html"))])
    assert response.status_code == 200, response.text
    (new,) = set(photo_ids(server, person)) - set(before)
    served = with_cookie(server, "GET", f"/people/{person}/faces/{new}", signed_in.session)
    assert served.status_code == 200
    assert served.headers["content-type"] == media_type
    assert served.headers.get("x-content-type-options") == "nosniff"
    assert "sandbox" in served.headers.get("content-security-policy", "")
    assert served.headers.get("content-disposition", "inline").startswith("inline")
    assert served.content == data  # the bytes as sent, under an image type only


def photo_as(kind: str) -> bytes:
    """A real photo of Al Gore saved as image format ``kind`` (XBM: a text file of C source, one bit a pixel)."""
    from PIL import Image

    buffer = io.BytesIO()
    with Image.open(GORE[1]) as image:
        image.convert("1" if kind == "XBM" else "RGB").save(buffer, kind)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["PPM", "TGA", "XBM"])
def test_a_photo_in_another_format_is_refused_or_served_back_as_an_image(server, signed_in, person, kind):
    # Formats Pillow decodes beyond the ones the service serves: refused at upload (415), or every photo it
    # lists can be shown (GET answers an image type), never a listed photo whose URL is a 404.
    before = photo_ids(server, person)
    response = server.post(f"/people/{person}/faces", files=[("images", (f"face.{kind.lower()}", photo_as(kind),
                                                                         "application/octet-stream"))])
    if response.status_code == 415:
        assert photo_ids(server, person) == before
        return
    assert response.status_code == 200, response.text
    for new in set(photo_ids(server, person)) - set(before):
        served = with_cookie(server, "GET", f"/people/{person}/faces/{new}", signed_in.session)
        assert served.status_code == 200, (f"upload of a {kind} answered 200 and lists photo {new}, whose URL "
                                           f"answers {served.status_code} {served.text[:200]}")
        assert served.headers["content-type"].startswith("image/")
        assert served.headers["content-type"] != "image/svg+xml"


def test_an_events_face_crop_is_served_back_only_as_a_sandboxed_image(server, signed_in, event):
    served = with_cookie(server, "GET", event["face"], signed_in.session)
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/jpeg"
    assert served.headers.get("x-content-type-options") == "nosniff"
    assert "sandbox" in served.headers.get("content-security-policy", "")
    assert served.content[:2] == b"\xff\xd8"


@pytest.mark.parametrize("photo", ["..%2Ffaceid.db", "..%2F..%2Ffaceid.db", "%2E%2E%2F%2E%2E%2Ffaceid.db",
                                   ".hidden", "%2e%2e", "%2E", "..%5C..%5Cfaceid.db"])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_photo_id_that_leaves_the_persons_folder_is_not_found(server, person, method, photo):
    response = server.request(method, f"/people/{person}/faces/{photo}")
    assert response.status_code == 404, response.text
    assert error_of(response)
    assert (server.data / "faceid.db").is_file()
    assert server.get("/people").status_code == 200


@pytest.mark.parametrize("stray, data", [
    (".partial.jpg", GORE[2].read_bytes()),  # what an interrupted write leaves behind
    ("notes.html", b"<html><script>alert(1)</script></html>"),
    ("face.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
])
def test_a_file_put_in_a_persons_folder_by_hand_is_never_served(server, signed_in, person, stray, data):
    path = server.data / "faces" / person / stray
    assert path.parent.is_dir(), "the enrolment photos are no longer in data/faces/<name>/: update this test"
    path.write_bytes(data)
    try:
        response = with_cookie(server, "GET", f"/people/{person}/faces/{stray}", signed_in.session)
        assert response.status_code == 404, (response.headers.get("content-type"), response.text[:200])
        assert error_of(response)
        if stray.startswith("."):  # a hidden file is no photo: neither listed nor removable
            assert stray not in photo_ids(server, person)
            assert server.delete(f"/people/{person}/faces/{stray}").status_code == 404
            assert path.is_file()
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("name", ["%2E%2E", "..%2Ffaces"])
def test_a_person_name_that_leaves_the_faces_folder_serves_nothing(server, person, name):
    response = server.get(f"/people/{name}/faces/faceid.db")
    assert response.status_code in (400, 404), response.text
    assert error_of(response)


# --- 6. signing out, revoking ---------------------------------------------------------------------------


def test_signing_out_clears_the_cookie_and_ends_the_session(server, person):
    browser_ = sign_in(server)
    response = browser_.http.delete(server.url + "/session", headers={"X-CSRF-Token": browser_.csrf},
                                    timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 200, response.text
    assert response.json() == {"signed_in": False}
    value, attributes = cookie_attributes(set_cookies(response)[SESSION_COOKIE])
    assert value in ("", '""') and (attributes.get("max-age") == "0" or "expires" in attributes), attributes
    assert SESSION_COOKIE not in browser_.http.cookies

    old = with_cookie(server, "GET", "/people", browser_.session)
    assert old.status_code == 401 and error_of(old)
    page = with_cookie(server, "GET", "/", browser_.session)
    assert page.status_code == 200 and Page(page.text).find("input", type="password", name="token")
    assert person not in page.text


def test_signing_out_needs_the_csrf_header(server):
    browser_ = sign_in(server)
    refused = browser_.http.delete(server.url + "/session", timeout=REQUEST_TIMEOUT_S)
    assert refused.status_code == 403 and error_of(refused)
    assert with_cookie(server, "GET", "/people", browser_.session).status_code == 200


def test_revoking_the_token_ends_the_sessions_opened_with_it(server, person):
    token, token_id = create_token_and_id(server.data)
    browser_ = sign_in(server, token)
    assert with_cookie(server, "GET", "/people", browser_.session).status_code == 200
    revoked = faceid_cli("token", "revoke", "--data", server.data, token_id)
    assert revoked.returncode == 0, revoked.stderr
    response = with_cookie(server, "GET", "/people", browser_.session)
    assert response.status_code == 401 and error_of(response)
    page = with_cookie(server, "GET", "/", browser_.session)
    assert Page(page.text).find("input", type="password", name="token") and person not in page.text
    assert server.get("/people").status_code == 200  # the other token and its sessions still work


def test_an_expired_session_is_refused_by_the_server_whatever_the_browser_keeps(server, person):
    token, token_id = create_token_and_id(server.data)
    browser_ = sign_in(server, token)
    with contextlib.closing(sqlite3.connect(server.data / "faceid.db", timeout=REQUEST_TIMEOUT_S)) as db, db:
        changed = db.execute("UPDATE sessions SET expires = ? WHERE token_id = ?",
                             ("2000-01-01T00:00:00.000Z", token_id)).rowcount
    assert changed == 1
    response = with_cookie(server, "GET", "/people", browser_.session)
    assert response.status_code == 401 and error_of(response)
    page = with_cookie(server, "GET", "/", browser_.session)
    assert Page(page.text).find("input", type="password", name="token") and person not in page.text


def test_neither_a_session_nor_its_csrf_value_is_kept_in_the_database_or_the_log(server, signed_in):
    kept = b"".join(path.read_bytes() for path in server.data.glob("faceid.db*"))
    assert signed_in.session.encode() not in kept
    log = server.log()
    assert signed_in.session not in log and signed_in.csrf not in log and server.token not in log


# --- 7. the page's static files ----------------------------------------------------------------------------


def test_the_pages_script_is_served_as_javascript_without_a_token(server):
    response = server.get("/static/app.js", token=None)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == "text/javascript"
    assert response.headers.get("x-content-type-options") == "nosniff"


@pytest.mark.parametrize("path", ["/static/../server.py", "/static/..%2Fserver.py", "/static/%2e%2e%2fserver.py",
                                  "/static/../../faceid/service/server.py", "/static/web.py", "/static/nosuch.js",
                                  "/static/app.html", "/static/signin.html", "/static/.hidden.js",
                                  "/static/APP.JS", "/static/%2Fetc%2Fpasswd"])
def test_no_file_but_the_pages_own_is_served_from_static(server, path):
    status, content_type, body = raw_get(server, path)
    assert status in (401, 404), (status, body[:200])
    assert content_type.startswith("application/json"), (content_type, body[:200])
    assert "import " not in body and "$csrf" not in body and "root:" not in body


@pytest.mark.parametrize("path", ["/static/", "/static", "/static/.", "/static/%2e"])
def test_the_static_folder_is_never_listed(server, path):
    status, _content_type, body = raw_get(server, path)
    assert status in (401, 404), (status, body[:200])
    assert "app.js" not in body and "app.css" not in body
