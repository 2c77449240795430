"""Helpers for the tests of ``faceid serve``: free loopback ports, a real Mosquitto broker, system binaries.

``mosquitto()`` starts the system's broker (``/usr/sbin/mosquitto``) on 127.0.0.1 with a config of its
own (anonymous, no persistence), waits until it accepts connections, and stops it afterwards::

    with mosquitto(tmp_path) as port:
        ...  # mqtt://127.0.0.1:{port}

or, as a fixture, ``mosquitto_port`` (import it into a test module: ``from service_support import
mosquitto_port``). A binary that is missing skips the test here, and fails it under CI (``$CI`` set),
where ``.ci/run`` installs it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

MOSQUITTO = "/usr/sbin/mosquitto"
# Generous: a loaded 2-core machine can take seconds to start a process; the bound only turns a hang
# into a failure that says what hung.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS's choice; free until someone binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def require_binary(name: str) -> str:
    """The path of system binary ``name`` (a name on PATH or an absolute path); skips the test when it is
    missing, or fails it when ``$CI`` is set (CI installs every binary the tests use)."""
    path = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (apt-get install {Path(name).name})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: CI must install it (.ci/run)", pytrace=False)
    pytest.skip(message)


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``condition`` until it holds; fail the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout:.0f} s", pytrace=False)
        time.sleep(interval)


def accepts_connections(port: int) -> bool:
    """Whether something on 127.0.0.1:``port`` accepts a TCP connection."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def mosquitto(directory: Path | None = None, port: int | None = None) -> Iterator[int]:
    """Run a real Mosquitto broker on 127.0.0.1 for the ``with`` block; yields its port.

    Its config and log go to ``directory`` (a temporary folder when None). The broker is terminated
    (killed if it ignores that) when the block ends, whatever happened in it.
    """
    binary = require_binary(MOSQUITTO)
    port = port or free_port()
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mosquitto-")))
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / f"mosquitto-{port}.conf"
        config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        log = (directory / f"mosquitto-{port}.log").open("wb")
        stack.callback(log.close)
        process = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        stack.callback(stop_process, process)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not accepts_connections(port):
            if process.poll() is not None:
                log.flush()
                pytest.fail(f"mosquitto exited with {process.returncode} before accepting connections:\n"
                            f"{(directory / f'mosquitto-{port}.log').read_text(errors='replace')}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"mosquitto did not accept connections on port {port} in {START_TIMEOUT_S:.0f} s",
                            pytrace=False)
            time.sleep(0.05)
        yield port


def stop_process(process: subprocess.Popen) -> None:
    """Terminate a process we started, then kill it if it does not end within STOP_TIMEOUT_S."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)


class MqttSubscriber:
    """A real paho-mqtt client subscribed to ``topics`` on the broker at 127.0.0.1:``port`` (subscribed when
    the constructor returns); it keeps every message as ``(topic, payload, retained)``. A context manager."""

    def __init__(self, port: int, topics: list[str], timeout: float = START_TIMEOUT_S) -> None:
        import secrets
        import threading

        from paho.mqtt import client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self._condition = threading.Condition()
        subscribed = threading.Event()
        self._client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=f"test-subscriber-{secrets.token_hex(4)}")

        def on_connect(client, userdata, flags, reason_code, properties):
            client.subscribe([(topic, 1) for topic in topics])

        def on_message(client, userdata, message):
            with self._condition:
                self.messages.append((message.topic, message.payload, bool(message.retain)))
                self._condition.notify_all()

        self._client.on_connect = on_connect
        self._client.on_subscribe = lambda *args: subscribed.set()
        self._client.on_message = on_message
        self._client.connect("127.0.0.1", port, keepalive=30)
        self._client.loop_start()
        if not subscribed.wait(timeout):
            self.close()
            pytest.fail(f"the test subscriber did not subscribe to {topics} in {timeout:.0f} s", pytrace=False)

    def received(self, topic: str) -> list[tuple[bytes, bool]]:
        """``(payload, retained)`` of every message on ``topic`` so far."""
        with self._condition:
            return [(payload, retained) for name, payload, retained in self.messages if name == topic]

    def wait_for(self, topic: str, count: int = 1, timeout: float = START_TIMEOUT_S) -> list[tuple[bytes, bool]]:
        """The first ``count`` messages on ``topic``, waiting up to ``timeout`` seconds (then the test fails)."""
        with self._condition:
            if not self._condition.wait_for(lambda: len(self.received(topic)) >= count, timeout):
                pytest.fail(f"{count} message(s) on {topic} not received in {timeout:.0f} s; got: "
                            f"{[name for name, _, _ in self.messages]}", pytrace=False)
            return self.received(topic)[:count]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> MqttSubscriber:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@pytest.fixture
def mosquitto_port(tmp_path) -> Iterator[int]:
    """A real Mosquitto broker for one test; its port."""
    with mosquitto(tmp_path / "mosquitto") as port:
        yield port
