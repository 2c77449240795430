"""Helpers for the tests of ``faceid serve``: free loopback ports, a real Mosquitto broker, system binaries.

``mosquitto()`` starts the system's broker (``/usr/sbin/mosquitto``) on 127.0.0.1 with a config of its
own (anonymous, no persistence), waits until it accepts connections, and stops it afterwards::

    with mosquitto(tmp_path) as port:
        ...  # mqtt://127.0.0.1:{port}

or, as a fixture, ``mosquitto_port`` (import it into a test module: ``from service_support import
mosquitto_port``). A binary that is missing skips the test here, and fails it under CI (``$CI`` set),
where ``.ci/run`` installs it.

The web page's tests drive the system's Chromium (``chromium`` and ``chromedriver``, Debian's ``chromium``
and ``chromium-driver``) headless through Selenium; nothing is downloaded::

    with chromium_driver(tmp_path / "screenshots") as driver:
        driver.get(url)
        screenshot(driver, "people")               # a PNG, into $FACEID_SCREENSHOTS when it is set
        assert console_errors(driver) == []        # the browser console's errors since the last call
        assert axe_violations(driver) == []        # axe-core's WCAG 2 A and AA rules on the page
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


def require_binary(name: str, package: str | None = None) -> str:
    """The path of system binary ``name`` (a name on PATH or an absolute path); skips the test when it is
    missing, or fails it when ``$CI`` is set (CI installs every binary the tests use). ``package``: the
    Debian package that has it, when not named like it."""
    path = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (apt-get install {package or Path(name).name})"
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


def stop_process(process: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    """Terminate a process we started, then kill it if it does not end within ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


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


# --- the web page in a real browser: headless Chromium through Selenium ---------------------------

CHROMIUM, CHROMEDRIVER = "chromium", "chromedriver"  # Debian's packages chromium and chromium-driver
SCREENSHOTS_ENV = "FACEID_SCREENSHOTS"  # where screenshots go when set (kept after the run, to look at)
AXE_TIMEOUT_S = 120.0  # one axe-core run (a large page on a loaded machine takes seconds)
# The WCAG 2.0 and 2.1 level A and AA rules: labels, names, contrast, keyboard traps, language, ...
AXE_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")


def require_browser() -> tuple[str, str]:
    """The paths of the system's ChromeDriver and Chromium (`require_binary`: skipped or failed when missing)."""
    return require_binary(CHROMEDRIVER, package="chromium-driver"), require_binary(CHROMIUM)


@contextlib.contextmanager
def chromium_driver(screenshots_dir: Path) -> Iterator:
    """A Selenium driver of the system's Chromium, headless, 1280x900, that records the browser console;
    quit when the block ends. Its screenshots (`screenshot`) go to ``$FACEID_SCREENSHOTS`` when set, else
    to ``screenshots_dir``.

    Both binaries come from the system (skipped here, failed under CI, when missing) and the driver's path
    is given to Selenium, so Selenium Manager never runs and nothing is downloaded.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path, browser_path = require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                     "--disable-gpu", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.faceid_screenshots = Path(os.environ.get(SCREENSHOTS_ENV) or screenshots_dir)
    driver.faceid_screenshots.mkdir(parents=True, exist_ok=True)
    driver.set_script_timeout(AXE_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver, name: str) -> Path:
    """Save the browser's viewport as ``NAME.png`` in the driver's screenshot folder (see
    `chromium_driver`); prints and returns its path."""
    path = driver.faceid_screenshots / f"{name}.png"
    if not driver.save_screenshot(str(path)):
        pytest.fail(f"the browser did not save the screenshot {path}", pytrace=False)
    print(f"screenshot: {path}")
    return path


def console_errors(driver, allowed: tuple[str, ...] = ()) -> list[str]:
    """The browser console's errors (level SEVERE: uncaught exceptions, ``console.error``, failed loads)
    since the last call (reading the log empties it), less those whose message contains one of
    ``allowed`` (an error the test caused on purpose, such as the 401 of a wrong token)."""
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE" and not any(text in entry["message"] for text in allowed)]


def axe_violations(driver, context: str = "document") -> list[dict]:
    """axe-core's violations of the WCAG 2 A and AA rules (`AXE_TAGS`) on the page as it is now, in the
    element ``context`` (a JavaScript expression: ``"document"``, or a CSS selector in quotes).

    axe-core's script is the one the ``axe-core-python`` package ships (``axe.min.js``), injected into
    the page by Selenium (a CSP on the page does not apply to it). Each violation is ``{"id", "impact",
    "help", "targets"}``, ``targets`` the CSS selectors of the elements at fault, so a failure says what
    to fix and where; ``[]`` when the page passes.
    """
    from importlib import resources

    if not driver.execute_script("return typeof window.axe === 'object'"):
        driver.execute_script((resources.files("axe_core_python") / "axe.min.js").read_text(encoding="utf-8"))
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"axe.run({context}, {{runOnly: {{type: 'tag', values: arguments[0]}}, resultTypes: ['violations']}})"
        ".then(results => done({violations: results.violations}), error => done({error: String(error)}));",
        list(AXE_TAGS))
    if "error" in result:
        pytest.fail(f"axe-core failed on {driver.current_url}: {result['error']}", pytrace=False)
    return [{"id": violation["id"], "impact": violation["impact"], "help": violation["help"],
             "targets": [" ".join(node["target"]) for node in violation["nodes"]]}
            for violation in result["violations"]]
