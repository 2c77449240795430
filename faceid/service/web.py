"""The web page of ``faceid serve``: its files, its templates, its cookies and its headers.

The page is static files in ``faceid/service/web/`` (``signin.html``, ``app.html``, ``app.js``,
``app.css``, ``icon.svg``), served by the service itself: nothing comes from a CDN, so it works
without internet. ``GET /`` answers the sign-in page, or the app once signed in; every action of the
app is a call of the REST API (:mod:`faceid.service.app`) with the session cookie.

Sign-in and CSRF:

* the sign-in page sets a random ``faceid_csrf`` cookie and holds the same value in its form; ``POST
  /session`` accepts a token only when the two match (a page of another site can neither read the
  cookie nor set it), so no other site can sign a browser in;
* a valid token opens a session: the ``faceid_session`` cookie (``HttpOnly``: no script reads it;
  ``SameSite=Strict``: no other site's page sends it; ``Secure`` over HTTPS), of which the store keeps
  only the SHA-256, valid `Settings.session_hours` and ended by signing out or revoking its token;
* with the session cookie, every request that changes something must carry ``X-CSRF-Token`` with the
  session's CSRF value (in the app page's ``<meta name="csrf-token">``), and an ``Origin`` header, when
  sent, must be the service's own: a cross-site form post carries neither.

Every page is sent with a Content-Security-Policy that allows scripts, styles and images from the
service only (no inline script or style), and may not be framed.
"""

from __future__ import annotations

import hmac
import html
import re
from pathlib import Path
from string import Template

WEB_DIR = Path(__file__).with_name("web")
SESSION_COOKIE = "faceid_session"
CSRF_COOKIE = "faceid_csrf"
CSRF_HEADER = "x-csrf-token"
#: The static files and their media types: only these are served, so nothing else in the folder leaks.
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".svg": "image/svg+xml", ".png": "image/png"}
_STATIC_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.[a-z]+$")
_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_-]{20,100}$")

CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
                           "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
                           "object-src 'none'")
#: Sent with every page.
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make Chrome send "Origin: null" with the sign-in form
    "Cache-Control": "no-store",
}
#: Sent with every image a person uploaded or a camera saw: never run as a document, whatever its bytes.
#: Faces are never kept in the browser's cache (a shared computer keeps nothing after sign-out).
IMAGE_HEADERS = {"Content-Security-Policy": "default-src 'none'; sandbox", "Cache-Control": "no-store"}


def static_file(name: str) -> tuple[bytes, str] | None:
    """The bytes and media type of static file ``name``, or ``None`` when there is no such file to serve."""
    path = WEB_DIR / name
    if not _STATIC_NAME.match(name) or path.suffix not in STATIC_TYPES or not path.is_file():
        return None
    return path.read_bytes(), STATIC_TYPES[path.suffix]


def _render(template: str, **values: str) -> str:
    return Template((WEB_DIR / template).read_text(encoding="utf-8")).substitute(values)


def signin_page(csrf: str, error: str = "") -> str:
    """The sign-in page with the form's CSRF value and, after a failed attempt, why."""
    return _render("signin.html", csrf=html.escape(csrf), error=html.escape(error))


def app_page(csrf: str, people: list[str], version: str) -> str:
    """The app, with the session's CSRF value and the enrolled people's names on its first paint."""
    items = "".join(f'<li class="person-initial">{html.escape(name)}</li>' for name in people)
    return _render("app.html", csrf=html.escape(csrf), people=items, version=html.escape(version))


def cookie_value(cookies: dict[str, str], name: str) -> str | None:
    """A cookie of ours when it is well formed (anything else is ignored, never echoed)."""
    value = cookies.get(name)
    return value if value and _COOKIE_VALUE.match(value) else None


def same_value(a: str | None, b: str | None) -> bool:
    """Both given and equal, compared in constant time."""
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


def same_origin(origin: str | None, scheme: str, host: str | None) -> bool:
    """An ``Origin`` header is absent (not a browser's cross-site request) or names this service."""
    if origin is None:
        return True
    return bool(host) and origin.rstrip("/").lower() == f"{scheme}://{host}".lower()
