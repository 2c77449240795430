"""Where events go besides the database: an MQTT broker (paho-mqtt) and webhooks (POST, HMAC-SHA256).

Both sinks share one promise: ``publish_*`` never raises and never blocks a camera for long. A broker
or a receiver that is down costs a warning in the log and a count (``sent``, ``failed``, ``dropped``,
read by ``/metrics``), never a stopped camera. Neither logs a password, a token, a payload or a
webhook's path and query (which often carry a secret): a destination is named by its host and port.

MQTT topics (``prefix`` "faceid" by default; Home Assistant's MQTT sensors read the JSON payloads):

- ``<prefix>/status``: "online" (retained) once connected, "offline" (retained) on close, and as the
  broker's last will when the connection dies;
- ``<prefix>/events``: every event change, ``{"type": "new" | "update" | "end", "event": {...}}``;
- ``<prefix>/<camera>/<person>``: the event itself, ``<person>`` "unknown" for someone not enrolled;
- ``<prefix>/<camera>/state``: the camera's state, retained, so a subscriber that connects later sees it.

A webhook receives ``{"type": kind, "event": {...}}`` (or ``{"type": "camera", "camera": ..., "state":
...}``) with ``X-Faceid-Event``, ``X-Faceid-Timestamp`` and, with a secret, ``X-Faceid-Signature:
sha256=<hex>``, the HMAC-SHA256 of ``f"{timestamp}.".encode() + body``; :func:`verify_signature` checks it.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import http.client
import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from faceid.errors import InputError
from faceid.extras import require

logger = logging.getLogger(__name__)

MQTT_PORT = 1883
MQTTS_PORT = 8883
# The most QoS-1 messages paho keeps for a broker that is away; past it new ones are dropped (counted).
MQTT_QUEUE_SIZE = 1000
WEBHOOK_QUEUE_SIZE = 1000
# Logged once, then every this many, so a receiver that is away for a day does not flood the log.
WARN_EVERY = 100
_TOPIC_UNSAFE = str.maketrans({"+": "_", "#": "_", "/": "_", "\0": "_"})


def topic_segment(name: str | None, *, empty: str = "unknown") -> str:
    """``name`` as one MQTT topic level: no wildcard (``+``, ``#``), no ``/``, never empty (``empty``)."""
    if name is None:
        return empty
    segment = str(name).translate(_TOPIC_UNSAFE).strip()
    return segment or "_"


def _json_bytes(payload: Any) -> bytes:
    def convert(value: Any) -> Any:
        if hasattr(value, "item"):  # NumPy scalars
            return value.item()
        if hasattr(value, "tolist"):
            return value.tolist()
        return str(value)

    return json.dumps(payload, default=convert, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class _Counters:
    """``sent``, ``failed``, ``dropped``, changed under one lock (callbacks run on other threads)."""

    def __init__(self) -> None:
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._counter_lock = threading.Lock()

    def _count(self, name: str, amount: int = 1) -> int:
        with self._counter_lock:
            value = getattr(self, name) + amount
            setattr(self, name, value)
            return value


class MqttSink(_Counters):
    """Publishes events and camera states to an MQTT broker, reconnecting by itself.

    Every message is QoS 1. While the broker is away paho keeps up to ``MQTT_QUEUE_SIZE`` of them and
    sends them once connected; newer ones are then ``dropped``. ``sent`` counts the messages the broker
    acknowledged (an event is two: ``<prefix>/events`` and its camera/person topic; the status topic is
    not counted); ``failed``, those refused, or still unacknowledged at :meth:`close`.

    Args:
        url: ``mqtt://[user:password@]host[:port]`` (``mqtts://`` for TLS with the system's CAs).
        prefix: the first topic level(s) of every topic, e.g. ``"faceid"`` or ``"home/faceid"``.
        client_id: the MQTT client id; a random ``faceid-xxxxxxxx`` when None.

    Raises:
        InputError: `url` or `prefix` is unusable. MissingExtraError: paho-mqtt is not installed.
    """

    def __init__(self, url: str, *, prefix: str = "faceid", client_id: str | None = None) -> None:
        super().__init__()
        scheme, host, port, username, password = _parse_mqtt_url(url)
        self.prefix = _check_prefix(prefix)
        self.where = f"{host}:{port}"  # for logs and /health: never the credentials
        mqtt = require("paho.mqtt.client", "`mqtt_url` (MQTT events)")
        self._status_topic = f"{self.prefix}/status"
        self._pending: set[int] = set()  # mids of our QoS-1 messages the broker has not acknowledged
        self._acknowledged_early: set[int] = set()  # acknowledged before publish() returned its mid
        self._status_mids: set[int] = set()  # "online"/"offline": not events, not counted
        self._condition = threading.Condition()
        self._closed = False
        self._connected = False
        self._connection_failures = 0
        self._no_connection, self._queue_full = int(mqtt.MQTT_ERR_NO_CONN), int(mqtt.MQTT_ERR_QUEUE_SIZE)
        self._client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=client_id or f"faceid-{secrets.token_hex(4)}")
        if username is not None:
            self._client.username_pw_set(username, password)
        if scheme == "mqtts":
            self._client.tls_set()
        self._client.max_queued_messages_set(MQTT_QUEUE_SIZE)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.will_set(self._status_topic, "offline", qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_publish = self._on_publish
        self._client.connect_async(host, port, keepalive=30)
        self._client.loop_start()  # connects, and reconnects, on its own thread

    # --- publishing ---------------------------------------------------------------------------

    def publish_event(self, kind: str, event: dict) -> None:
        """``{"type": kind, "event": event}`` to ``<prefix>/events``, and ``event`` to
        ``<prefix>/<camera>/<name or "unknown">`` (QoS 1, not retained). Never raises."""
        if self._closed:
            self._count("dropped")
            return
        try:
            camera = topic_segment(event.get("camera"), empty="_")
            person = topic_segment(event.get("name"))
            self._publish(f"{self.prefix}/events", _json_bytes({"type": kind, "event": event}))
            self._publish(f"{self.prefix}/{camera}/{person}", _json_bytes(event))
        except Exception as error:  # noqa: BLE001 - a sink must never stop a camera
            self._count("failed")
            logger.warning("MQTT %s: could not publish an event (%s)", self.where, type(error).__name__)

    def publish_camera(self, camera: str, state: dict) -> None:
        """``state`` to ``<prefix>/<camera>/state``, retained (a later subscriber gets the last one). Never raises."""
        try:
            self._publish(f"{self.prefix}/{topic_segment(camera, empty='_')}/state", _json_bytes(state), retain=True)
        except Exception as error:  # noqa: BLE001
            self._count("failed")
            logger.warning("MQTT %s: could not publish a camera state (%s)", self.where, type(error).__name__)

    def forget_camera(self, camera: str) -> None:
        """A camera was removed: its retained state is cleared (an empty retained message). Never raises."""
        try:
            self._publish(f"{self.prefix}/{topic_segment(camera, empty='_')}/state", b"", retain=True)
        except Exception as error:  # noqa: BLE001
            self._count("failed")
            logger.warning("MQTT %s: could not clear a camera state (%s)", self.where, type(error).__name__)

    def _publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        if self._closed:
            self._count("dropped")
            return
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        rc = int(info.rc)
        # NO_CONN: paho keeps a QoS-1 message and sends it once (re)connected.
        if rc not in (0, self._no_connection):
            if rc == self._queue_full:
                if self._count("dropped") % WARN_EVERY == 1:
                    logger.warning("MQTT %s: broker unreachable and %d messages waiting; dropping new ones "
                                   "(%d dropped so far)", self.where, MQTT_QUEUE_SIZE, self.dropped)
            else:
                self._count("failed")
                logger.warning("MQTT %s: publish refused (error %d)", self.where, rc)
            return
        with self._condition:
            if info.mid in self._acknowledged_early:
                self._acknowledged_early.discard(info.mid)
                self._count("sent")
            else:
                self._pending.add(info.mid)

    # --- paho's callbacks (its network thread) ---------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:  # bad credentials, say: paho tries again with backoff
            self._connection_failures += 1
            if self._connection_failures % WARN_EVERY == 1:
                logger.warning("MQTT %s refused the connection: %s", self.where, reason_code)
            return
        self._connected = True
        logger.info("MQTT connected to %s", self.where)
        # Its acknowledgement comes on this thread, after this returns: registering the mid now is in time.
        online = client.publish(self._status_topic, "online", qos=1, retain=True)
        with self._condition:
            self._status_mids.add(online.mid)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected, self._connected = self._connected, False
        if was_connected and not self._closed:
            logger.warning("MQTT %s: disconnected (%s); reconnecting", self.where, reason_code)

    def _on_connect_fail(self, client, userdata) -> None:
        self._connection_failures += 1
        if self._connection_failures % WARN_EVERY == 1 and not self._closed:
            logger.warning("MQTT %s unreachable (%d tries so far); retrying with backoff, events wait in a queue",
                           self.where, self._connection_failures)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._condition:
            if mid in self._pending:
                self._pending.discard(mid)
                self._count("sent")
                self._condition.notify_all()
            elif mid in self._status_mids:
                self._status_mids.discard(mid)
            elif len(self._acknowledged_early) < MQTT_QUEUE_SIZE:
                self._acknowledged_early.add(mid)  # publish() has not returned its mid yet

    # --- closing -------------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Wait up to ``timeout`` seconds for the messages the broker has not acknowledged (a broker still
        being connected to gets that long to come up), publish "offline", disconnect.

        Messages still unacknowledged then (a broker that is away) count as ``failed``. Idempotent.
        """
        if self._closed:
            return
        deadline = time.monotonic() + timeout
        try:
            with self._condition:
                self._condition.wait_for(lambda: not self._pending, timeout=max(0.0, deadline - time.monotonic()))
            if self._connected:
                offline = self._client.publish(self._status_topic, "offline", qos=1, retain=True)
                with self._condition:
                    self._status_mids.add(offline.mid)
                offline.wait_for_publish(max(0.0, deadline - time.monotonic()))
        except Exception as error:  # noqa: BLE001 - closing goes on
            logger.warning("MQTT %s: closing without a clean goodbye (%s)", self.where, type(error).__name__)
        self._closed = True
        with self._condition:
            if self._pending:
                self._count("failed", len(self._pending))
                logger.warning("MQTT %s: %d messages not acknowledged at close", self.where, len(self._pending))
                self._pending.clear()
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()


def _parse_mqtt_url(url: str) -> tuple[str, str, int, str | None, str | None]:
    """``(scheme, host, port, username, password)``; messages never repeat the URL (it may hold a password)."""
    try:
        parts = urllib.parse.urlsplit(str(url))
        port = parts.port
    except ValueError as error:
        raise InputError(f"`mqtt_url` is not a URL of the form mqtt://[user:password@]host[:port] ({error})") from None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise InputError("`mqtt_url` must be mqtt://[user:password@]host[:port] (or mqtts:// for TLS), "
                         f"not a {parts.scheme or 'scheme-less'} URL")
    if parts.path not in ("", "/") or parts.query:
        raise InputError("`mqtt_url` takes no path or query: set the topic prefix with `mqtt_prefix`")
    default_port = MQTTS_PORT if parts.scheme == "mqtts" else MQTT_PORT
    username = urllib.parse.unquote(parts.username) if parts.username is not None else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    return parts.scheme, parts.hostname, port or default_port, username, password


def _check_prefix(prefix: str) -> str:
    prefix = str(prefix).strip("/")
    if not prefix or any(character in prefix for character in "+#\0") or "//" in prefix:
        raise InputError(f"`mqtt_prefix` {prefix!r} must be one or more topic levels without + or # "
                         "(for example faceid or home/faceid)")
    return prefix


# --- webhooks ----------------------------------------------------------------------------------


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Faceid-Signature`` value: ``"sha256=" + HMAC-SHA256(secret, f"{timestamp}.".encode() + body)``."""
    return "sha256=" + hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, timestamp: str, body: bytes, header: str, *,
                     max_age: float | None = None, now: float | None = None) -> bool:
    """Whether a webhook request is ours: ``header`` (``X-Faceid-Signature``) matches ``body`` and
    ``timestamp`` (``X-Faceid-Timestamp``) under ``secret``, compared in constant time.

    A receiver should pass the raw request body, before any JSON parsing. ``max_age`` (seconds) also
    refuses a timestamp further than that from ``now`` (default: the clock), against replays.
    """
    if not isinstance(header, str) or not header.startswith("sha256="):
        return False
    expected = signature(secret, str(timestamp), body)
    if not hmac.compare_digest(expected.encode(), header.encode()):
        return False
    if max_age is not None:
        try:
            sent = float(timestamp)
        except (TypeError, ValueError):
            return False
        return abs((time.time() if now is None else now) - sent) <= max_age
    return True


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook does not follow redirects: urllib would turn a redirected POST into a GET without its body."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: PLR0913 - urllib's signature
        return None


class WebhookSink(_Counters):
    """POSTs events to webhook receivers from a thread of its own, with retries and an HMAC signature.

    Each message goes to every URL in turn. A connection error, a timeout, a 5xx or a 429 is retried up
    to ``retries`` more times, waiting ``backoff``, then twice that, ... (at most ``max_backoff``, or a
    429's Retry-After); another 4xx, or a redirect, is not. ``sent`` and ``failed`` count deliveries (a
    message and a URL); ``dropped`` counts messages pushed out of a full queue (the oldest go first) or
    left when closing.

    Args:
        urls: the receivers, ``http://`` or ``https://``.
        secret: the HMAC key shared with the receivers; None sends no signature header.
        retries: extra attempts after the first. timeout: seconds for one attempt.
        backoff: the first wait between attempts, in seconds. queue_size: messages waiting at most.

    Raises:
        InputError: `webhook_urls` empty or not http(s), or another argument out of range.
    """

    def __init__(self, urls: list[str], *, secret: bytes | None, retries: int = 3, timeout: float = 5.0,
                 backoff: float = 0.5, max_backoff: float = 30.0, queue_size: int = WEBHOOK_QUEUE_SIZE) -> None:
        super().__init__()
        self.urls = [_check_webhook_url(url) for url in urls]
        if not self.urls:
            raise InputError("`webhook_urls` is empty: give one http(s) URL or more")
        if retries < 0 or timeout <= 0 or backoff < 0 or max_backoff < 0 or queue_size < 1:
            raise InputError("`webhook_retries` must be >= 0, `webhook_timeout` > 0, `backoff` and "
                             "`max_backoff` >= 0, `queue_size` >= 1")
        self.secret = secret.encode() if isinstance(secret, str) else secret
        self.retries, self.timeout = int(retries), float(timeout)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self._queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self._queue_size = queue_size
        self._condition = threading.Condition()
        self._closing = False
        self._abort = threading.Event()  # close's time is up: stop waiting between attempts
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._thread = threading.Thread(target=self._run, name="faceid-webhooks", daemon=True)
        self._thread.start()

    def publish_event(self, kind: str, event: dict) -> None:
        """Queue ``{"type": kind, "event": event}`` for every receiver. Never raises, never waits."""
        self._enqueue(kind, {"type": kind, "event": event})

    def publish_camera(self, camera: str, state: dict) -> None:
        """Queue ``{"type": "camera", "camera": camera, "state": state}``. Never raises, never waits."""
        self._enqueue("camera", {"type": "camera", "camera": camera, "state": state})

    def forget_camera(self, camera: str) -> None:
        """A camera was removed: ``{"type": "camera", "camera": camera, "state": {"state": "removed"}}``."""
        self._enqueue("camera", {"type": "camera", "camera": camera, "state": {"camera": camera, "state": "removed"}})

    def _enqueue(self, kind: str, payload: dict) -> None:
        try:
            body = _json_bytes(payload)
        except Exception as error:  # noqa: BLE001
            self._count("failed")
            logger.warning("webhook: could not encode a %s message (%s)", kind, type(error).__name__)
            return
        with self._condition:
            if self._closing:
                self._count("dropped")
                return
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                dropped = self._count("dropped")
                if dropped % WARN_EVERY == 1:
                    logger.warning("webhook receivers fall behind: %d messages waiting, dropping the oldest "
                                   "(%d dropped so far)", self._queue_size, dropped)
            self._queue.append((kind, body))
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._queue or self._closing)
                if not self._queue:
                    return  # closing, and drained
                if self._abort.is_set():
                    self._count("dropped", len(self._queue))
                    self._queue.clear()
                    return
                kind, body = self._queue.popleft()
            for url in self.urls:
                try:
                    delivered = self._deliver(url, kind, body)
                except Exception as error:  # noqa: BLE001 - the thread must outlive any receiver
                    delivered = False
                    logger.warning("webhook %s: %s", _where(url), type(error).__name__)
                self._count("sent" if delivered else "failed")

    def _deliver(self, url: str, kind: str, body: bytes) -> bool:
        """POST ``body`` to ``url`` with retries; whether a 2xx came back."""
        for attempt in range(self.retries + 1):
            timestamp = str(int(time.time()))  # fresh on each attempt, so a receiver's replay window holds
            headers = {"Content-Type": "application/json", "X-Faceid-Event": kind, "X-Faceid-Timestamp": timestamp,
                       "User-Agent": "faceid-webhook"}
            if self.secret is not None:
                headers["X-Faceid-Signature"] = signature(self.secret, timestamp, body)
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            retry_after = None
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    response.read(65536)
                return True
            except urllib.error.HTTPError as error:
                status = error.code
                error.close()
                if status != 429 and not 500 <= status <= 599:
                    logger.warning("webhook %s answered %d to a %s message: not retried", _where(url), status, kind)
                    return False
                reason = f"HTTP {status}"
                retry_after = _retry_after(error.headers.get("Retry-After")) if status == 429 else None
            except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
                reason = type(getattr(error, "reason", error)).__name__
            if attempt == self.retries:
                logger.warning("webhook %s: %s message failed after %d attempts (%s)", _where(url), kind,
                               attempt + 1, reason)
                return False
            delay = min(self.max_backoff, retry_after if retry_after is not None else self.backoff * 2 ** attempt)
            logger.info("webhook %s: %s; retrying in %.1f s", _where(url), reason, delay)
            if self._abort.wait(delay):
                return False
        return False

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued within ``timeout`` seconds; what is left then counts as ``dropped``. Idempotent."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()  # the thread stops at its next wait and drops the rest
            with self._condition:
                self._count("dropped", len(self._queue))
                self._queue.clear()
            logger.warning("webhook receivers: closed with deliveries unfinished")


def _check_webhook_url(url: str) -> str:
    parts = urllib.parse.urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"`webhook_urls`: each must be an http:// or https:// URL, not a "
                         f"{parts.scheme or 'scheme-less'} one")
    return str(url)


def _where(url: str) -> str:
    """A receiver as logged: scheme, host and port only (paths and queries often carry a secret)."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the ordinary backoff
