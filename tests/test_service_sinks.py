"""faceid serve's sinks against real parts: a Mosquitto broker with a paho subscriber, and webhook
receivers on http.server, all on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from service_support import (MqttSubscriber, free_port, mosquitto, mosquitto_port,  # noqa: F401 - a fixture
                             require_binary, wait_until)

from faceid.errors import InputError, MissingExtraError
from faceid.service.sinks import MqttSink, WebhookSink, topic_segment, verify_signature

# Every wait is bounded; these are generous for a loaded 2-core machine, never a measured time.
CLOSE_TIMEOUT_S = 30.0


def an_event(event_id: int = 1, *, camera: str = "door", name: str | None = "alice") -> dict:
    return {"id": event_id, "camera": camera, "track": 3, "name": name, "score": 0.8123,
            "start": "2026-12-07T07:30:00.123Z", "end": "2026-12-07T07:30:02.456Z", "closed": False,
            "face": f"/events/{event_id}/face.jpg"}


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test's own, so no retained message of another test is in the way."""
    return f"faceid-test-{secrets.token_hex(4)}"


@pytest.fixture(autouse=True)
def no_proxy_for_loopback(monkeypatch):
    """urllib honours $http_proxy; a proxy set on the test machine must not carry loopback requests."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


# --- MQTT ------------------------------------------------------------------------------------


def test_an_event_reaches_the_events_topic_and_its_camera_and_person_topic(mosquitto_port, prefix):
    with MqttSubscriber(mosquitto_port, [f"{prefix}/#"]) as subscriber:
        sink = MqttSink(f"mqtt://127.0.0.1:{mosquitto_port}", prefix=prefix)
        try:
            sink.publish_event("new", an_event(1))
            sink.publish_event("end", an_event(2, camera="front/door+2", name=None))
            events = subscriber.wait_for(f"{prefix}/events", count=2)
            alice = subscriber.wait_for(f"{prefix}/door/alice")
            unknown = subscriber.wait_for(f"{prefix}/front_door_2/unknown")
        finally:
            sink.close(timeout=CLOSE_TIMEOUT_S)
    unknown_event = an_event(2, camera="front/door+2", name=None)
    assert [json.loads(payload) for payload, _ in events] == [{"type": "new", "event": an_event(1)},
                                                              {"type": "end", "event": unknown_event}]
    assert json.loads(alice[0][0]) == an_event(1) and not alice[0][1]  # not retained
    assert json.loads(unknown[0][0])["name"] is None
    assert (sink.sent, sink.failed, sink.dropped) == (4, 0, 0)


def test_a_camera_state_is_retained_for_a_subscriber_that_connects_later(mosquitto_port, prefix):
    state = {"camera": "door", "state": "running", "people": ["alice"], "unknown": 1,
             "updated": "2026-12-07T07:30:00.123Z"}
    sink = MqttSink(f"mqtt://127.0.0.1:{mosquitto_port}", prefix=prefix)
    try:
        sink.publish_camera("door", {**state, "state": "starting"})
        sink.publish_camera("door", state)
    finally:
        sink.close(timeout=CLOSE_TIMEOUT_S)  # waits for the broker's acknowledgements
    assert sink.sent == 2
    with MqttSubscriber(mosquitto_port, [f"{prefix}/door/state"]) as later:
        [(payload, retained)] = later.wait_for(f"{prefix}/door/state")
    assert json.loads(payload) == state and retained


def test_status_is_online_while_connected_and_offline_after_close(mosquitto_port, prefix):
    with MqttSubscriber(mosquitto_port, [f"{prefix}/status"]) as subscriber:
        sink = MqttSink(f"mqtt://127.0.0.1:{mosquitto_port}", prefix=prefix, client_id="faceid-status-test")
        try:
            assert subscriber.wait_for(f"{prefix}/status")[0][0] == b"online"
        finally:
            sink.close(timeout=CLOSE_TIMEOUT_S)
        assert [payload for payload, _ in subscriber.wait_for(f"{prefix}/status", count=2)] == [b"online", b"offline"]
    with MqttSubscriber(mosquitto_port, [f"{prefix}/status"]) as later:
        assert later.wait_for(f"{prefix}/status") == [(b"offline", True)]


def test_a_broker_that_is_not_running_does_not_raise_from_publish_or_close():
    sink = MqttSink(f"mqtt://127.0.0.1:{free_port()}", prefix="faceid")
    sink.publish_event("new", an_event(1))
    sink.publish_camera("door", {"state": "running"})
    sink.close(timeout=1.0)
    # Queued, never acknowledged: counted as failed when closing, not as sent.
    assert (sink.sent, sink.failed) == (0, 3)
    sink.publish_event("update", an_event(1))  # after close: dropped, still no exception
    assert sink.dropped == 1


def test_what_was_published_while_the_broker_was_down_arrives_once_it_is_up(tmp_path, prefix):
    port = free_port()
    sink = MqttSink(f"mqtt://127.0.0.1:{port}", prefix=prefix)
    try:
        sink.publish_camera("door", {"state": "running"})  # no broker yet: paho keeps it
        with mosquitto(tmp_path, port=port):
            # paho retries after 1, 2, 4... s; then the broker acknowledges, and keeps the state for later subscribers
            wait_until(lambda: sink.sent == 1, CLOSE_TIMEOUT_S, "the queued camera state acknowledged")
            with MqttSubscriber(port, [f"{prefix}/door/state"]) as subscriber:
                [(payload, retained)] = subscriber.wait_for(f"{prefix}/door/state")
            assert json.loads(payload) == {"state": "running"} and retained
    finally:
        sink.close(timeout=1.0)
    assert sink.sent == 1


def test_topic_segments_hold_no_wildcard_or_level_separator():
    assert topic_segment("front/door+#1") == "front_door__1"
    assert topic_segment(None) == "unknown"
    assert topic_segment(" ") == "_"


def test_a_bad_mqtt_url_or_prefix_is_an_input_error_that_never_shows_the_password():
    with pytest.raises(InputError, match="`mqtt_url`") as raised:
        MqttSink("http://user:hunter2@127.0.0.1:1883")
    assert "hunter2" not in str(raised.value)
    with pytest.raises(InputError, match="`mqtt_url`") as raised:
        MqttSink("mqtt://user:hunter2@127.0.0.1:notaport")
    assert "hunter2" not in str(raised.value)
    with pytest.raises(InputError, match="`mqtt_prefix`"):
        MqttSink("mqtt://127.0.0.1", prefix="faceid/+")


def test_without_paho_the_mqtt_sink_names_the_serve_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "paho", None)
    with pytest.raises(MissingExtraError, match=r'faceid\[serve\]'):
        MqttSink("mqtt://127.0.0.1:1883")


# --- webhooks --------------------------------------------------------------------------------


class Receiver:
    """A real HTTP server on 127.0.0.1 that records every POST and answers ``statuses`` in turn, then 200.

    With ``hold`` set, the first request waits for ``release`` (bounded) before answering."""

    def __init__(self, statuses: list[int] | None = None, hold: bool = False) -> None:
        self.requests: list[tuple[dict, bytes]] = []
        self.statuses = list(statuses or [])
        self.arrived = threading.Condition()
        self.release = threading.Event()
        self.hold = hold
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.arrived:
                    receiver.requests.append((dict(self.headers), body))
                    first = len(receiver.requests) == 1
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.arrived.notify_all()
                if first and receiver.hold:
                    receiver.release.wait(CLOSE_TIMEOUT_S)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/s3cr3t-path"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def wait_for(self, count: int) -> None:
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.requests) >= count, CLOSE_TIMEOUT_S):
                pytest.fail(f"{count} webhook requests not received in {CLOSE_TIMEOUT_S:.0f} s", pytrace=False)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory():
    receivers = []

    def make(statuses: list[int] | None = None, hold: bool = False) -> Receiver:
        receivers.append(Receiver(statuses, hold))
        return receivers[-1]

    yield make
    for receiver in receivers:
        receiver.close()


def test_a_webhook_carries_the_event_and_a_signature_that_verifies(receiver_factory):
    receiver = receiver_factory()
    secret = b"shared-secret"
    sink = WebhookSink([receiver.url], secret=secret, backoff=0.01)
    sink.publish_event("new", an_event(7))
    sink.publish_camera("door", {"state": "running"})
    sink.close(timeout=CLOSE_TIMEOUT_S)
    assert (sink.sent, sink.failed, sink.dropped) == (2, 0, 0)
    [(headers, body), (camera_headers, camera_body)] = receiver.requests
    assert json.loads(body) == {"type": "new", "event": an_event(7)}
    assert headers["Content-Type"] == "application/json" and headers["X-Faceid-Event"] == "new"
    timestamp, signature = headers["X-Faceid-Timestamp"], headers["X-Faceid-Signature"]
    assert signature.startswith("sha256=") and timestamp.isdigit()
    assert verify_signature(secret, timestamp, body, signature)
    assert not verify_signature(b"another-secret", timestamp, body, signature)
    assert not verify_signature(secret, timestamp, body.replace(b"alice", b"mallory"), signature)
    assert not verify_signature(secret, str(int(timestamp) + 1), body, signature)
    assert not verify_signature(secret, timestamp, body, signature, max_age=300, now=int(timestamp) + 3600)
    assert verify_signature(secret, timestamp, body, signature, max_age=300, now=int(timestamp) + 10)
    assert json.loads(camera_body) == {"type": "camera", "camera": "door", "state": {"state": "running"}}
    assert camera_headers["X-Faceid-Event"] == "camera"
    assert verify_signature(secret, camera_headers["X-Faceid-Timestamp"], camera_body,
                            camera_headers["X-Faceid-Signature"])


def test_without_a_secret_no_signature_header_is_sent(receiver_factory):
    receiver = receiver_factory()
    sink = WebhookSink([receiver.url], secret=None)
    sink.publish_event("end", an_event(1))
    sink.close(timeout=CLOSE_TIMEOUT_S)
    [(headers, _)] = receiver.requests
    assert "X-Faceid-Signature" not in headers and sink.sent == 1


@pytest.mark.parametrize("statuses", [[500, 500], [429, 503]], ids=["5xx", "429-then-5xx"])
def test_a_receiver_failing_twice_then_answering_200_gets_three_attempts(receiver_factory, statuses):
    receiver = receiver_factory(statuses)
    sink = WebhookSink([receiver.url], secret=b"k", retries=3, backoff=0.01)
    sink.publish_event("new", an_event(1))
    sink.close(timeout=CLOSE_TIMEOUT_S)
    assert len(receiver.requests) == 3
    assert len({body for _, body in receiver.requests}) == 1
    assert (sink.sent, sink.failed) == (1, 0)


def test_a_receiver_that_keeps_failing_gets_one_attempt_plus_the_retries(receiver_factory):
    receiver = receiver_factory([500] * 10)
    sink = WebhookSink([receiver.url], secret=None, retries=2, backoff=0.01)
    sink.publish_event("new", an_event(1))
    sink.close(timeout=CLOSE_TIMEOUT_S)
    assert len(receiver.requests) == 3 and (sink.sent, sink.failed) == (0, 1)


@pytest.mark.parametrize("status", [400, 404, 302])
def test_a_client_error_or_a_redirect_is_not_retried(receiver_factory, status):
    receiver = receiver_factory([status])
    sink = WebhookSink([receiver.url], secret=b"k", retries=3, backoff=0.01)
    sink.publish_event("new", an_event(1))
    sink.close(timeout=CLOSE_TIMEOUT_S)
    assert len(receiver.requests) == 1 and (sink.sent, sink.failed) == (0, 1)


def test_an_unreachable_receiver_does_not_raise_counts_failed_and_never_logs_its_path(caplog):
    url = f"http://127.0.0.1:{free_port()}/hook/s3cr3t-path?token=t0ken"
    caplog.set_level(logging.INFO, logger="faceid.service.sinks")
    sink = WebhookSink([url], secret=b"k", retries=1, backoff=0.01)
    sink.publish_event("new", an_event(1))
    sink.close(timeout=CLOSE_TIMEOUT_S)
    assert (sink.sent, sink.failed) == (0, 1)
    assert "failed after 2 attempts" in caplog.text
    assert "s3cr3t" not in caplog.text and "t0ken" not in caplog.text


def test_each_message_goes_to_every_receiver(receiver_factory):
    first, second = receiver_factory([400]), receiver_factory()
    sink = WebhookSink([first.url, second.url], secret=None, backoff=0.01)
    sink.publish_event("new", an_event(1))
    sink.close(timeout=CLOSE_TIMEOUT_S)
    assert len(first.requests) == len(second.requests) == 1
    assert (sink.sent, sink.failed) == (1, 1)


def test_a_full_queue_drops_the_oldest_messages(receiver_factory):
    receiver = receiver_factory(hold=True)
    sink = WebhookSink([receiver.url], secret=None, queue_size=2, backoff=0.01)
    sink.publish_event("new", an_event(1))
    receiver.wait_for(1)  # event 1 is being delivered: the receiver holds it
    for event_id in (2, 3, 4, 5):
        sink.publish_event("update", an_event(event_id))
    assert sink.dropped == 2
    receiver.release.set()
    sink.close(timeout=CLOSE_TIMEOUT_S)
    assert [json.loads(body)["event"]["id"] for _, body in receiver.requests] == [1, 4, 5]
    assert (sink.sent, sink.dropped) == (3, 2)


def test_a_close_that_runs_out_of_time_drops_what_is_left(receiver_factory):
    receiver = receiver_factory(hold=True)
    sink = WebhookSink([receiver.url], secret=None, backoff=0.01)
    for event_id in (1, 2, 3):
        sink.publish_event("new", an_event(event_id))
    receiver.wait_for(1)
    sink.close(timeout=0.2)  # the receiver still holds event 1
    assert sink.dropped == 2
    sink.publish_event("new", an_event(4))  # after close: dropped, no exception
    assert sink.dropped == 3
    receiver.release.set()


def test_bad_webhook_arguments_are_input_errors():
    with pytest.raises(InputError, match="`webhook_urls`"):
        WebhookSink(["ftp://127.0.0.1/hook"], secret=None)
    with pytest.raises(InputError, match="`webhook_urls`"):
        WebhookSink([], secret=None)
    with pytest.raises(InputError, match="`webhook_retries`"):
        WebhookSink(["http://127.0.0.1/hook"], secret=None, retries=-1)


def test_a_missing_binary_skips_here_and_fails_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        require_binary("faceid-no-such-binary")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must install it"):
        require_binary("faceid-no-such-binary")
    if os.access("/usr/sbin/mosquitto", os.X_OK):  # a binary that is there: its path, under CI too
        assert require_binary("/usr/sbin/mosquitto") == "/usr/sbin/mosquitto"
