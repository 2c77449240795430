"""The REST API of ``faceid serve``: FastAPI routes over a `faceid.service.server.Service`.

JSON in and out. Every endpoint but ``GET /health`` needs ``Authorization: Bearer <token>`` (a token
made by ``faceid serve token create``; stored hashed). Every error is a JSON body
``{"error": "<what is wrong and what to do>"}`` with a status that says what is wrong: 400 a bad
value, 401 no or a wrong token, 404 an unknown person, camera or event, 409 a name in use or nobody
enrolled, 413 an upload or an image over the limits, 415 a file that is not an image, 422 a missing
field or an image without a face; a 500 means a fault of ours, and its body says nothing more.
OpenAPI: ``/docs`` and ``/openapi.json``.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, which name classes
# imported inside create_app (FastAPI is the [serve] extra, imported only when an app is made).
import asyncio
import logging
import secrets
import time
from contextlib import asynccontextmanager
from typing import Any

from faceid.errors import (
    ConflictError,
    FaceIdError,
    ImageReadError,
    InputError,
    NoFaceError,
    NotFoundError,
    SealError,
    TooLargeError,
)
from faceid.extras import require_all
from faceid.service.cameras import CameraConfig
from faceid.service import web
from faceid.service.metrics import Metrics
from faceid.service.server import IMAGE_SUFFIXES, Service
from faceid.service.store import parse_time
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

#: The status of each library error over HTTP (the first class that matches, in this order).
STATUS_OF_ERROR: tuple[tuple[type[Exception], int], ...] = (
    (NotFoundError, 404),
    (ConflictError, 409),
    (TooLargeError, 413),
    (ImageReadError, 415),
    (NoFaceError, 422),
    (SealError, 400),
    (InputError, 400),
)


def create_app(service: Service, *, manage_service: bool = True):
    """The API of ``service`` (a FastAPI app); with ``manage_service`` the app starts it and, at
    shutdown (SIGTERM, Ctrl-C), stops it: cameras stopped and their events closed, sinks flushed,
    store closed."""
    require_all(["fastapi", "multipart"], "faceid serve")
    from typing import Annotated

    from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
    from fastapi import Path as PathParam
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
    from fastapi.responses import StreamingResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import BaseModel, Field, StrictInt, StrictStr
    from starlette.exceptions import HTTPException as StarletteHTTPException

    class CameraIn(BaseModel):
        """``POST /cameras``: a name and a source (webcam number, stream URL or video file)."""

        name: str = Field(description="1-64 letters, digits, '_', '.' or '-'")
        source: StrictStr | StrictInt = Field(description="a webcam number, a stream URL (rtsp://, http://, ...) or a video file")
        loop: bool = Field(False, description="play a video file from the start again when it ends")

    class CorrectionIn(BaseModel):
        """``POST /events/{id}/correct``: who the event's face is; ``null``: not a known person."""

        name: StrictStr | None = Field(description="an enrolled or new person's name, or null")

    class NameIn(BaseModel):
        name: StrictStr = Field(description="the person the cluster is")

    class MergeIn(BaseModel):
        into: StrictStr = Field(description="the id of the cluster that takes this one's faces")

    class SplitIn(BaseModel):
        events: list[StrictInt] | None = Field(None, description="the events to split off; none: in two, automatically")

    options = service.options
    metrics = Metrics(service)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if manage_service:
            service.start()
        yield
        if manage_service:
            service.stop()

    from faceid import __version__

    # /docs and /openapi.json describe the API and hold no data: served without a token (a browser cannot send
    # one for a page), unless `docs` is off. No /redoc: one copy of the documentation.
    app = FastAPI(title="faceid", version=__version__, lifespan=lifespan, redoc_url=None,
                  docs_url="/docs" if options.docs else None, openapi_url="/openapi.json" if options.docs else None,
                  description="Enrol people, identify faces, run cameras and read their events. "
                              "Every endpoint but /health needs `Authorization: Bearer <token>`.")
    bearer = HTTPBearer(auto_error=False)

    # --- errors as JSON --------------------------------------------------------------------------

    def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(FaceIdError)
    async def _library_error(request: Request, error: FaceIdError):
        for kind, status in STATUS_OF_ERROR:
            if isinstance(error, kind):
                return error_response(status, str(error))
        logger.error("%s %s failed: %s", request.method, request.url.path, type(error).__name__)
        return error_response(500, "internal error")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError):
        problems = []
        for item in error.errors():
            if item.get("type") == "json_invalid":
                example = ("e.g. {\"name\": \"door\", \"source\": \"rtsp://...\"}" if request.url.path == "/cameras"
                           else "the body documented at /docs")
                problems.append(f"the body is not valid JSON: send {example}")
                continue
            where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        return error_response(422, "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException):
        message = error.detail if isinstance(error.detail, str) else "invalid request"
        if error.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):  # the router's own
            message = (f"no endpoint {request.method} {request.url.path} (a name with '/' in it never matches one): "
                       "the API is described at /docs")
        if error.status_code == 400:  # raised by Starlette's form parser: the body is not what it says
            message = f"malformed request body ({message}): send multipart/form-data with the fields documented at /docs"
        return error_response(error.status_code, message, getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception):
        # Never the exception's text: it could hold a path, a value or worse. The class is enough to look for.
        logger.error("%s %s failed: %s", request.method, request.url.path, type(error).__name__)
        return error_response(500, "internal error")

    # --- limits and metrics ------------------------------------------------------------------------

    @app.middleware("http")
    async def _metrics(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        metrics.observe_request(request, response.status_code, time.perf_counter() - started)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")  # a body is what its type says, never sniffed
        return response

    # Outermost: no token, no reading of the body; then a body over the limit is refused before anything reads it.
    app.add_middleware(BodyLimit, limit=options.max_upload_bytes)
    app.add_middleware(TokenGate, check=service.store.check_token, open_paths=OPEN_PATHS,
                       check_session=service.store.check_session, open_prefixes=OPEN_PREFIXES, open_routes=OPEN_ROUTES)

    # --- auth ----------------------------------------------------------------------------------

    def authorised(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        """The id of the token `TokenGate` accepted (the bearer scheme is declared here for the OpenAPI description)."""
        token_id = request.scope.get(TOKEN_ID)
        if token_id is None:  # a route reached without the gate: refused all the same
            raise HTTPException(401, MISSING_TOKEN, {"WWW-Authenticate": "Bearer"})
        return token_id

    Auth = Annotated[str, Depends(authorised)]
    EventId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="an event's id")]

    async def read_image(upload: UploadFile, field: str):
        """An upload as RGB, after the pixel limit was checked from its header (no decoding of a bomb)."""
        data = await upload.read()
        # Decoding takes milliseconds of CPU: in the thread pool, not on the event loop that serves everyone.
        described = f"`{field}` ({upload.filename or 'upload'})"
        return await _in_thread(check_and_decode, data, described, options.max_image_pixels), data

    # --- routes --------------------------------------------------------------------------------------

    @app.get("/health", summary="Status, version, cameras and their state (no token needed)")
    def health() -> dict[str, Any]:
        return service.health()

    @app.get("/people", summary="The enrolled people")
    def people(_: Auth) -> dict[str, Any]:
        return {"people": service.people()}

    @app.post("/people/{name}/faces", summary="Enrol photos of a person (multipart field `images`, repeatable)")
    async def enrol(name: str, _: Auth, images: Annotated[list[UploadFile], File(description="photos")]):
        checked = [(await read_image(upload, "images"))[1] for upload in images]
        return await _in_thread(service.enrol, name, checked)

    @app.delete("/people/{name}", summary="Forget a person: cache, photos, events and their crops")
    def forget(name: str, _: Auth) -> dict[str, Any]:
        return service.forget(name)

    @app.post("/identify", summary="Every face of an image and who it is (multipart field `image`)")
    async def identify(_: Auth, image: Annotated[UploadFile, File(description="an image")]):
        image_rgb, _data = await read_image(image, "image")
        return await _in_thread(service.identify, image_rgb)

    @app.post("/verify", summary="Whether the largest faces of two images are the same person")
    async def verify(_: Auth, image_a: Annotated[UploadFile, File()], image_b: Annotated[UploadFile, File()]):
        first, _a = await read_image(image_a, "image_a")
        second, _b = await read_image(image_b, "image_b")
        return await _in_thread(service.verify, first, second)

    @app.get("/events", summary="Events, newest first, filtered by camera, person and time")
    def events(
        _: Auth,
        camera: str | None = None,
        person: Annotated[str | None, Query(description="a name; 'unknown' for the unknown faces")] = None,
        since: Annotated[str | None, Query(description="ISO 8601; events that started at or after")] = None,
        until: Annotated[str | None, Query(description="ISO 8601; events that started before")] = None,
        limit: Annotated[int, Query(ge=1, le=DEFAULTS.event_page_max)] = DEFAULTS.event_page,
    ) -> dict[str, Any]:
        unknown = person == "unknown"
        found = service.store.list_events(
            camera=camera, person=None if unknown else person, unknown=True if unknown else None,
            since=None if since is None else parse_time(since, "since"),
            until=None if until is None else parse_time(until, "until"), limit=limit)
        return {"events": found}

    @app.get("/events/{event_id}", summary="One event")
    def event(event_id: EventId, _: Auth) -> dict[str, Any]:
        found = service.store.get_event(event_id)
        if found is None:
            raise HTTPException(404, f"no event {event_id}")
        return found

    @app.get("/events/{event_id}/face.jpg", summary="The best face crop of an event", response_class=Response)
    def event_face(event_id: EventId, _: Auth) -> Response:
        jpeg = service.store.read_crop(event_id)
        if jpeg is None:
            raise HTTPException(404, f"no face crop for event {event_id}")
        return Response(jpeg, media_type="image/jpeg", headers=web.IMAGE_HEADERS)

    @app.get("/cameras", summary="The cameras, their state and counters")
    def cameras(_: Auth) -> dict[str, Any]:
        return {"cameras": service.camera_list()}

    @app.post("/cameras", status_code=201, summary="Add a camera and start it")
    def add_camera(camera: CameraIn, _: Auth) -> dict[str, Any]:
        return service.add_camera(CameraConfig.parse(camera.name, camera.source, camera.loop))

    @app.delete("/cameras/{name}", summary="Stop and remove a camera (its events are kept)")
    def remove_camera(name: str, _: Auth) -> dict[str, Any]:
        return service.remove_camera(name)

    @app.get("/cameras/{name}/frame.jpg", summary="A camera's latest identified frame, boxes and names drawn",
             response_class=Response)
    def camera_frame(name: str, _: Auth) -> Response:
        view = service.camera(name).view_jpeg()
        if view is None:
            raise HTTPException(404, f"camera {name!r} has identified no frame yet")
        return Response(view[1], media_type="image/jpeg", headers=web.IMAGE_HEADERS)

    @app.get("/cameras/{name}/stream.mjpg", summary="A camera's live view: its identified frames as MJPEG",
             response_class=Response)
    async def camera_stream(name: str, _: Auth) -> Response:
        camera = service.camera(name)

        async def frames():
            number = -1
            while not service.closing.is_set() and service.cameras.get(name) is camera:
                view = await _in_thread(camera.view_jpeg, number)
                if view is not None:
                    number, jpeg = view
                    yield b"".join((b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: ",
                                    str(len(jpeg)).encode(), b"\r\n\r\n", jpeg, b"\r\n"))
                await asyncio.sleep(1.0 / DEFAULTS.stream_fps)

        return StreamingResponse(frames(), media_type="multipart/x-mixed-replace; boundary=frame",
                                 headers=web.IMAGE_HEADERS)

    # --- photos, corrections, unknown people -----------------------------------------------------------

    @app.get("/people/{name}/faces", summary="A person's enrolment photos")
    def photos(name: str, _: Auth) -> dict[str, Any]:
        return {"name": name, "photos": service.photos(name)}

    @app.get("/people/{name}/faces/{photo}", summary="One enrolment photo (an image, never a document)",
             response_class=Response)
    def photo(name: str, photo: str, _: Auth) -> Response:
        data, media_type = service.photo(name, photo)
        return Response(data, media_type=media_type,
                        headers={**web.IMAGE_HEADERS, "Content-Disposition": f'inline; filename="{photo}"'})

    @app.delete("/people/{name}/faces/{photo}", summary="Remove one enrolment photo (and its face from the gallery)")
    def remove_photo(name: str, photo: str, _: Auth) -> dict[str, Any]:
        return service.remove_photo(name, photo)

    @app.post("/events/{event_id}/correct",
              summary="Correct who an event's face is ({\"name\": null}: not a known person)")
    def correct(event_id: EventId, correction: CorrectionIn, token_id: Auth) -> dict[str, Any]:
        return service.correct(event_id, correction.name, token_id)

    @app.get("/corrections", summary="The corrections made, newest first")
    def corrections(_: Auth, person: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=DEFAULTS.event_page_max)] = DEFAULTS.event_page_max):
        return {"corrections": service.store.list_corrections(person, limit)}

    @app.get("/unknowns", summary="Clusters of the unknown faces, largest and most recent first")
    def unknowns(_: Auth) -> dict[str, Any]:
        return {"unknowns": service.unknowns.list()}

    @app.get("/unknowns/{cluster_id}", summary="One cluster of unknown faces, with all its events")
    def unknown(cluster_id: str, _: Auth) -> dict[str, Any]:
        return service.unknowns.get(cluster_id)

    @app.post("/unknowns/{cluster_id}/name", summary="Enrol a cluster as a person and relabel its events")
    def name_unknown(cluster_id: str, body: NameIn, _: Auth) -> dict[str, Any]:
        return service.name_unknown(cluster_id, body.name)

    @app.post("/unknowns/{cluster_id}/merge", summary="Merge a cluster into another")
    def merge_unknown(cluster_id: str, body: MergeIn, _: Auth) -> dict[str, Any]:
        return service.unknowns.merge(cluster_id, body.into)

    @app.post("/unknowns/{cluster_id}/split", summary="Split a cluster: the events given, or in two")
    def split_unknown(cluster_id: str, _: Auth, body: SplitIn | None = None) -> dict[str, Any]:
        return service.unknowns.split(cluster_id, None if body is None else body.events)

    @app.post("/unknowns/{cluster_id}/dismiss", summary="Hide a cluster (and the faces that join it later)")
    def dismiss_unknown(cluster_id: str, _: Auth) -> dict[str, Any]:
        return service.unknowns.dismiss(cluster_id)

    # --- the web page ------------------------------------------------------------------------------------

    def page(body: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(body, status_code=status, headers=web.PAGE_HEADERS)

    def cookie_options(request: Request) -> dict[str, Any]:
        return {"httponly": True, "samesite": "strict", "path": "/", "secure": request.url.scheme == "https"}

    def signin(request: Request, error: str = "", status: int = 200) -> HTMLResponse:
        csrf = web.cookie_value(request.cookies, web.CSRF_COOKIE) or secrets.token_urlsafe(32)
        response = page(web.signin_page(csrf, error), status)
        response.set_cookie(web.CSRF_COOKIE, csrf, **cookie_options(request))
        return response

    @app.get("/", summary="The web page: sign-in, or the app once signed in", response_class=HTMLResponse)
    def home(request: Request) -> HTMLResponse:
        session = web.cookie_value(request.cookies, web.SESSION_COOKIE)
        found = None if session is None else service.store.check_session(session)
        if found is None:
            return signin(request)
        with service.people_lock:
            people = service.faceid.people
        return page(web.app_page(found["csrf"], people, __version__))

    @app.post("/session", summary="Sign in on the web page with a token (form fields token and csrf, or JSON)")
    async def sign_in(request: Request) -> Response:
        form = not request.headers.get("content-type", "").startswith("application/json")

        def refuse(status: int, message: str) -> Response:
            return signin(request, message, status) if form else error_response(status, message)

        if not web.same_origin(request.headers.get("origin"), request.url.scheme, request.headers.get("host")):
            return refuse(403, "a sign-in from another site is refused")
        if form:
            fields = await request.form()
            token, csrf = fields.get("token"), fields.get("csrf")
        else:
            try:
                body = await request.json()
            except ValueError:
                return refuse(422, "the body is not valid JSON: send {\"token\": \"...\"}")
            token, csrf = body.get("token") if isinstance(body, dict) else None, request.headers.get(web.CSRF_HEADER)
        expected = web.cookie_value(request.cookies, web.CSRF_COOKIE)
        if not web.same_value(csrf if isinstance(csrf, str) else None, expected):
            return refuse(403, "the sign-in form had expired: reload the page and sign in again")
        token_id = service.store.check_token(token.strip()) if isinstance(token, str) and token.strip() else None
        if token_id is None:
            return refuse(401, "wrong or revoked token")
        session, csrf, expires = service.store.create_session(token_id, DEFAULTS.session_hours)
        response = RedirectResponse("/", 303) if form else JSONResponse({"signed_in": True, "csrf": csrf,
                                                                         "expires": expires})
        response.set_cookie(web.SESSION_COOKIE, session, max_age=int(DEFAULTS.session_hours * 3600),
                            **cookie_options(request))
        return response

    @app.get("/session", summary="The page's session: its CSRF token and when it ends")
    def session_info(request: Request, token_id: Auth) -> dict[str, Any]:
        session = request.scope.get(SESSION) or {}  # the gate's: a bearer request has none
        return {"token": token_id, "csrf": session.get("csrf"), "expires": session.get("expires")}

    @app.delete("/session", summary="Sign the page out")
    def sign_out(request: Request, _: Auth) -> Response:
        session = request.scope.get(SESSION)
        if session is None:
            raise HTTPException(400, "no session to end: this request was made with a bearer token")
        service.store.end_session(session["cookie"])
        response = JSONResponse({"signed_in": False})
        response.delete_cookie(web.SESSION_COOKIE, **cookie_options(request))
        return response

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        found = web.static_file(name)
        if found is None:
            raise HTTPException(404, f"no file {name!r} in the page's files")
        return Response(found[0], media_type=found[1], headers={"Cache-Control": "no-cache"})

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    def prometheus(_: Auth) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return app


#: What answers without a token: the health check and the API's documentation (no data in either).
OPEN_PATHS = ("/health", "/docs", "/docs/oauth2-redirect", "/openapi.json")
MISSING_TOKEN = "missing token: send 'Authorization: Bearer <token>' (faceid serve token create makes one)"
#: Where `TokenGate` leaves the id of the token it accepted, for the routes (the ASGI scope of the request).
TOKEN_ID = "faceid.token_id"
#: Where it leaves the session of a request signed in on the page: ``check_session``'s dict and its ``cookie``.
SESSION = "faceid.session"
#: What the page needs before sign-in: its files, and the sign-in itself (its route checks the CSRF cookie).
OPEN_PREFIXES = ("/static/",)
OPEN_ROUTES = (("GET", "/"), ("HEAD", "/"), ("POST", "/session"))


class TokenGate:
    """ASGI middleware: who may call what, decided once per request before its body is read.

    A request for ``open_paths`` (or a path under ``open_prefixes``, or an ``open_routes`` method and
    path, whose route checks what it needs) passes. Otherwise it needs a valid ``Authorization: Bearer``
    token (scripts) or a valid session cookie (the web page, `faceid.service.web`); with the cookie,
    anything but GET/HEAD must come from the service's own origin and carry the session's
    ``X-CSRF-Token``, else 403. No credentials, or wrong ones: 401 (JSON, ``WWW-Authenticate: Bearer``).
    The id of the accepted token (a session's: the token it was opened with) goes to the routes in the
    scope (`TOKEN_ID`), and the session (its row and cookie) as `SESSION`.
    """

    def __init__(self, app, check, open_paths: tuple[str, ...], check_session=None,
                 open_prefixes: tuple[str, ...] = (), open_routes: tuple[tuple[str, str], ...] = ()):
        self.app, self.check, self.open_paths, self.check_session = app, check, open_paths, check_session
        self.open_prefixes, self.open_routes = open_prefixes, open_routes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":  # there are none; one added later must not pass unchecked
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if path in self.open_paths or path.startswith(self.open_prefixes) or (method, path) in self.open_routes:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        header = headers.get(b"authorization", b"").decode("latin-1")
        session = None if header or self.check_session is None else _session_cookie(headers)
        if session is not None:
            found = self.check_session(session)
            if found is None:
                return await _refuse(scope, receive, send, 401, "your session has ended: sign in again at /",
                                     {"WWW-Authenticate": "Bearer"})
            if method not in ("GET", "HEAD"):
                origin, host = headers.get(b"origin"), headers.get(b"host")
                if not web.same_origin(None if origin is None else origin.decode("latin-1"),
                                       scope.get("scheme", "http"), None if host is None else host.decode("latin-1")):
                    return await _refuse(scope, receive, send, 403, "a request from another site is refused")
                if not web.same_value(headers.get(b"x-csrf-token", b"").decode("latin-1"), found["csrf"]):
                    return await _refuse(scope, receive, send, 403, "missing or wrong X-CSRF-Token: a change made "
                                         "with the session cookie must send the page's CSRF token")
            scope[TOKEN_ID], scope[SESSION] = found["token_id"], {**found, "cookie": session}
            return await self.app(scope, receive, send)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            message = MISSING_TOKEN
        elif (token_id := self.check(token.strip())) is None:
            message = "invalid or revoked token"
        else:
            scope[TOKEN_ID] = token_id
            return await self.app(scope, receive, send)
        await _refuse(scope, receive, send, 401, message, {"WWW-Authenticate": "Bearer"})


def _session_cookie(headers: dict[bytes, bytes]) -> str | None:
    """The session cookie of a request's headers, when one is there and well formed."""
    from starlette.requests import cookie_parser

    raw = headers.get(b"cookie")
    return None if raw is None else web.cookie_value(cookie_parser(raw.decode("latin-1")), web.SESSION_COOKIE)


class BodyLimit:
    """ASGI middleware: a request body larger than ``limit`` bytes is answered 413 (JSON) — from its
    Content-Length before it is read, or, without one (chunked), as soon as the bytes read pass it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _refuse(scope, receive, send, 400, "Content-Length is not a number")
            if int(length) > self.limit:
                return await _refuse(scope, receive, send, 413, f"the request is {int(length) / 2**20:.1f} MiB; "
                                                                f"the limit is {self.limit / 2**20:.1f} MiB")
            return await self.app(scope, receive, send)
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                return await _refuse(scope, receive, send, 413,
                                     f"the request is over the limit of {self.limit / 2**20:.1f} MiB")
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)


async def _refuse(scope, receive, send, status: int, message: str, headers: dict[str, str] | None = None):
    """Answer an ASGI request with ``{"error": message}`` before a route sees it (the connection then closes:
    its body, unread, may still be on the way)."""
    from starlette.responses import JSONResponse

    await JSONResponse({"error": message}, status_code=status,
                       headers={**(headers or {}), "Connection": "close", "X-Content-Type-Options": "nosniff"}
                       )(scope, receive, send)


async def _in_thread(function, *args):
    """Run blocking work (a backbone, the cache) in the thread pool, not on the event loop."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(function, *args)


def check_and_decode(data: bytes, what: str, max_pixels: int):
    """Decode an uploaded image to RGB, refusing one of more than ``max_pixels`` pixels from its
    header, before its pixels are decoded.

    Raises:
        ImageReadError: empty or not an image; TooLargeError: too many pixels.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    from faceid.io.images import decode_image

    if not data:
        raise ImageReadError(f"{what} is empty")
    try:
        # Only the formats the service serves back (`IMAGE_SUFFIXES`): no other decoder ever sees an upload.
        with Image.open(io.BytesIO(data), formats=list(IMAGE_SUFFIXES)) as header:
            width, height = header.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(f"{what} is not an image this service takes: send a JPEG, PNG, WebP, BMP, TIFF "
                             "or GIF") from error
    if width * height > max_pixels:
        raise TooLargeError(f"{what} is {width}x{height} = {width * height / 1e6:.1f} megapixels; the limit is "
                            f"{max_pixels / 1e6:.1f} (`max_image_pixels`)")
    return decode_image(data, what)
