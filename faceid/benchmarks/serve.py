"""faceid serve under load: /identify over HTTP, and how many 10 FPS camera streams it keeps up with.

Runs ``python -m faceid serve`` as a process of its own on a free loopback port, with a fresh data
directory and a token (``faceid serve token create``); enrols the people of the video's ``known/``
folder through ``POST /people/{name}/faces``.

(1) ``POST /identify`` with one photo (by default a frame of the clip in which the in-process run
    names someone; ``--image`` for another), at each count of ``--clients``: that many threads, each
    with one keep-alive HTTP connection, send ``--requests`` requests in all, after one untimed
    request each. Requests per second (requests / wall time), p50 and p99 latency. The baseline, in
    this process: `faceid.FaceID.identify` called directly on the same file, with the same model,
    detector and people; the ratio is the HTTP rate over the in-process rate, so what HTTP costs
    (multipart parsing, JSON, the token check, the event loop) is visible. Clients and server share
    this machine's cores.
(2) Camera streams: a ``--stream_fps`` 640x360 copy of the video made with ffmpeg, added N = 1, 2,
    ... times as looping cameras (``POST /cameras``); for each N, after every camera runs, each
    camera's identified frames per second over ``--stream_seconds`` (``frames_processed`` of
    ``GET /cameras``, its change over the time between two reads) and the share of frames it dropped.
    N streams are sustained when every camera identifies at least 95% of the stream's frame rate; it
    stops at the first N that is not (or at ``--max_streams``).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from faceid.benchmarks.common import REPO, print_json_lines, print_table, shared_data
from faceid.errors import FaceIdError, InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
# Frames of the Hamilton clip tried in turn for the /identify photo: the middle of each named shot.
CANDIDATE_FRAMES = (146, 10, 50, 100, 180)
SUSTAINED_SHARE = 0.95  # a camera keeps up when it identifies this share of its stream's frames
START_TIMEOUT_S = 180.0  # imports and the dlib model built in memory, on a busy 2-core machine
REQUEST_TIMEOUT_S = 300.0  # 32 clients queue behind one identification at a time
CAMERA_START_TIMEOUT_S = 120.0
SETTLE_S = 2.0  # after the cameras run, before the measured window: their first frames build models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", type=Path, default=shared_data() / "video" / "hamilton_clip.mp4",
                        help="the video: the /identify frame comes from it, and the camera streams are copies of it")
    parser.add_argument("--known", type=Path, default=None,
                        help="enrolment folder (one sub-folder per person); default: known/ beside the video")
    parser.add_argument("--image", type=Path, default=None,
                        help="the photo to POST to /identify; default: a frame of --video where someone is named")
    parser.add_argument("--requests", type=int, default=200, help="timed /identify requests per client count")
    parser.add_argument("--clients", default="1,8,32", help="comma-separated counts of concurrent clients")
    parser.add_argument("--warmup", type=int, default=10, help="untimed identifications before timing each side")
    parser.add_argument("--max_streams", type=int, default=16,
                        help="most camera streams to try (0: skip the streams part)")
    parser.add_argument("--stream_seconds", type=float, default=30.0,
                        help="measured seconds per stream count (longer: steadier rates)")
    parser.add_argument("--stream_fps", type=float, default=10.0, help="frame rate of the camera streams")


def run(args: argparse.Namespace) -> int:
    from faceid import __version__
    from faceid.extras import require_all

    require_all(("fastapi", "uvicorn", "multipart", "prometheus_client"), "bench.py serve")
    clients = _counts(args.clients)
    if args.requests < 1 or args.warmup < 0 or args.max_streams < 0 or args.stream_seconds <= 0 or args.stream_fps <= 0:
        raise InputError("`requests` must be at least 1, `warmup` and `max_streams` at least 0, "
                         "`stream_seconds` and `stream_fps` positive")
    if not args.video.is_file():
        raise InputError(f"video {args.video} not found: pass --video FILE")
    known = args.known or args.video.parent / "known"
    people = {folder.name: sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
              for folder in sorted(known.iterdir()) if folder.is_dir()} if known.is_dir() else {}
    if not any(people.values()):
        raise InputError(f"no enrolment photos in {known}: pass --known DIR (one sub-folder of photos per person)")
    ffmpeg = shutil.which("ffmpeg")
    if args.max_streams and ffmpeg is None:
        raise InputError("ffmpeg is not installed (apt-get install ffmpeg): it makes the camera streams; "
                         "or pass --max_streams 0")
    load_before = os.getloadavg()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    record: dict[str, Any] = {"bench": "serve", "version": __version__, "cores": os.cpu_count(), "usable_cores": usable,
                              "load_before": [round(value, 2) for value in load_before]}
    print(f"bench serve: faceid {__version__}, {record['cores']} cores ({record['usable_cores']} usable), "
          f"load average {' '.join(f'{value:.2f}' for value in load_before)}")
    with tempfile.TemporaryDirectory(prefix="faceid-bench-serve-") as workdir_name:
        workdir = Path(workdir_name)
        image, image_note, baseline = _in_process(args, people, workdir)
        record["image"] = image_note
        print(f"/identify photo: {image_note}")
        with _Server(workdir / "data") as server:
            names = _enrol(server, people)
            record["identify"] = _identify_levels(server, image, clients, args, baseline, names)
            if args.max_streams:
                stream = _stream_copy(ffmpeg, args.video, args.stream_fps, workdir)
                record["streams"] = _stream_levels(server, stream, args)
    record["load_after"] = [round(value, 2) for value in os.getloadavg()]
    print(f"load average after: {' '.join(f'{value:.2f}' for value in record['load_after'])}")
    print_json_lines([record])
    return 0


def _counts(text: str) -> list[int]:
    try:
        counts = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise InputError(f"`clients` takes comma-separated positive counts (e.g. 1,8,32), not {text!r}")
    return counts


# --- the in-process baseline ------------------------------------------------------------------------


def _in_process(args: argparse.Namespace, people: dict[str, list[Path]], workdir: Path):
    """Enrol in this process, choose the photo, time `FaceID.identify` on it. Returns the photo's
    path, a note on it, and the baseline's figures."""
    import cv2

    from faceid.api import FaceID
    from faceid.io.video import VideoSource

    faceid = FaceID(None, workdir / "baseline_features")
    for name, paths in people.items():
        if paths:
            faceid.enrol(name, paths)
    if args.image is not None:
        if not args.image.is_file():
            raise InputError(f"image {args.image} not found: pass --image FILE")
        image, note = args.image, args.image.name
    else:
        with VideoSource(args.video) as source:
            frames = {index: frame for index, _, frame in source if index in CANDIDATE_FRAMES}
        chosen = next((index for index in CANDIDATE_FRAMES if index in frames
                       and any(face.name for face in faceid.identify(frames[index]))), None)
        if chosen is None:
            chosen = next((index for index in CANDIDATE_FRAMES
                           if index in frames and faceid.identify(frames[index])), None)
        if chosen is None:
            raise InputError(f"no face in frames {CANDIDATE_FRAMES} of {args.video.name}: pass --image FILE")
        image = workdir / f"frame{chosen}.jpg"
        cv2.imwrite(str(image), cv2.cvtColor(frames[chosen], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        height, width = frames[chosen].shape[:2]
        note = f"{args.video.name} frame {chosen} ({width}x{height} JPEG, {image.stat().st_size // 1024} KiB)"
    faces = faceid.identify(image)
    note += f", {len(faces)} face(s): " + ", ".join(face.name or "unknown" for face in faces)
    for _ in range(args.warmup):
        faceid.identify(image)
    milliseconds = []
    started = time.perf_counter()
    for _ in range(args.requests):
        began = time.perf_counter()
        faceid.identify(image)  # from the file: decoding included, as the service decodes the upload
        milliseconds.append((time.perf_counter() - began) * 1000.0)
    baseline = _rates(milliseconds, time.perf_counter() - started)
    baseline["names"] = sorted(face.name or "unknown" for face in faces)
    baseline["load"] = round(os.getloadavg()[0], 2)
    return image, note, baseline


def _rates(milliseconds: list[float], wall_seconds: float) -> dict[str, Any]:
    values = np.asarray(milliseconds, dtype=np.float64)
    return {"requests": int(len(values)), "per_s": round(len(values) / wall_seconds, 2),
            "p50_ms": round(float(np.percentile(values, 50)), 1) if len(values) else None,
            "p99_ms": round(float(np.percentile(values, 99)), 1) if len(values) else None}


# --- the service: a process, a client --------------------------------------------------------------


class _Client:
    """One keep-alive HTTP/1.1 connection to the service, with its token (stdlib only: the client's own
    cost stays small beside the server's on the shared cores)."""

    def __init__(self, port: int, token: str):
        self.port, self.token = port, token
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)

    def call(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None):
        headers = {"Authorization": f"Bearer {self.token}"}
        if content_type:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            try:
                self.connection.request(method, path, body=body, headers=headers)
                response = self.connection.getresponse()
                payload = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # An idle connection the server closed (uvicorn's keep-alive timeout): once more, anew.
                self.connection.close()
                if attempt == 2:
                    raise
        try:
            return response.status, json.loads(payload or b"null")
        except json.JSONDecodeError:
            return response.status, None

    def close(self) -> None:
        self.connection.close()


def _multipart(field: str, files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = secrets.token_hex(16)
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class _Server:
    """``python -m faceid serve`` on a free loopback port with a fresh token, for a ``with`` block."""

    def __init__(self, data: Path):
        self.data = data
        self.port = 0
        self.token = ""
        self.process: subprocess.Popen | None = None
        self.log_path = data.parent / "serve.log"

    def __enter__(self) -> _Server:
        import socket

        made = subprocess.run([sys.executable, "-m", "faceid", "serve", "token", "create", "--data", str(self.data)],
                              cwd=REPO, capture_output=True, text=True)
        if made.returncode != 0 or not made.stdout.strip():
            raise FaceIdError(f"faceid serve token create failed: {made.stderr.strip()[-500:]}")
        self.token = made.stdout.strip().splitlines()[-1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "faceid", "serve", "--data", str(self.data), "--port", str(self.port)],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise FaceIdError(f"faceid serve did not answer /health in {START_TIMEOUT_S:.0f} s; its log ends:\n"
                                  + self.log_path.read_text(errors="replace")[-2000:])
            time.sleep(0.2)
        return self

    def _healthy(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", "/health")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    def client(self) -> _Client:
        return _Client(self.port, self.token)

    def cpu_seconds(self) -> float | None:
        """The server process's CPU time so far (user + system, all its threads); None off Linux."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __exit__(self, *exc_info) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=60)


def _enrol(server: _Server, people: dict[str, list[Path]]) -> list[str]:
    client = server.client()
    try:
        for name, paths in people.items():
            if not paths:
                continue
            body, content_type = _multipart("images", [(path.name, path.read_bytes()) for path in paths])
            status, answer = client.call("POST", f"/people/{name}/faces", body, content_type)
            if status != 200:
                raise FaceIdError(f"enrolling {name} through the service failed: {status} {answer}")
        status, answer = client.call("GET", "/people")
        return sorted(person["name"] for person in answer["people"])
    finally:
        client.close()


# --- (1) /identify at each client count -----------------------------------------------------------------


def _identify_levels(server: _Server, image: Path, clients: list[int], args: argparse.Namespace,
                     baseline: dict[str, Any], enrolled: list[str]) -> dict[str, Any]:
    body, content_type = _multipart("image", [(image.name, image.read_bytes())])
    warm = server.client()
    try:
        status, answer = warm.call("POST", "/identify", body, content_type)
        if status != 200:
            raise FaceIdError(f"POST /identify answered {status}: {answer}")
        names = sorted(face["name"] or "unknown" for face in answer["faces"])
        for _ in range(args.warmup):
            warm.call("POST", "/identify", body, content_type)
    finally:
        warm.close()
    levels = []
    for count in clients:
        level = _load(server, body, content_type, count, args.requests)
        level["ratio"] = round(level["per_s"] / baseline["per_s"], 2)
        levels.append(level)
    result = {"enrolled": enrolled, "requests": args.requests, "warmup": args.warmup, "baseline": baseline,
              "service_names": names, "levels": levels}
    print(f"/identify: {args.requests} requests per row after {args.warmup} warm-up ones; "
          f"enrolled {', '.join(enrolled)}; "
          f"names: service {names}, in-process {baseline['names']}; keep-alive connection per client, on loopback")
    rows = [{"clients": "in-process (baseline)", "req/s": baseline["per_s"], "p50_ms": baseline["p50_ms"],
             "p99_ms": baseline["p99_ms"], "errors": 0, "server_cpu": "", "vs baseline": 1.0, "load": baseline["load"]}]
    rows += [{"clients": level["clients"], "req/s": level["per_s"], "p50_ms": level["p50_ms"],
              "p99_ms": level["p99_ms"], "errors": level["errors"], "server_cpu": level["server_cpu"],
              "vs baseline": level["ratio"], "load": level["load"]}
             for level in levels]
    print_table(rows, ["clients", "req/s", "p50_ms", "p99_ms", "errors", "server_cpu", "vs baseline", "load"])
    print("req/s = requests / wall time; server_cpu = the server process's CPU seconds per second (cores busy); "
          "vs baseline = HTTP req/s over FaceID.identify called in this process; load = 1-minute load average after")
    return result


def _load(server: _Server, body: bytes, content_type: str, count: int, requests: int) -> dict[str, Any]:
    """``count`` threads, one connection each, share ``requests`` timed requests."""
    tickets = itertools.count()
    latencies: list[list[float]] = [[] for _ in range(count)]
    failures: list[str] = []
    ready = threading.Barrier(count + 1)

    def work(index: int) -> None:
        client = server.client()
        try:
            try:
                client.call("POST", "/identify", body, content_type)  # opens the connection, untimed
            finally:
                ready.wait()
            while next(tickets) < requests:
                began = time.perf_counter()
                try:
                    status, answer = client.call("POST", "/identify", body, content_type)
                except OSError as error:
                    status, answer = 0, str(error)
                latencies[index].append((time.perf_counter() - began) * 1000.0)
                if status != 200 or not (answer or {}).get("faces"):
                    failures.append(f"{status} {str(answer)[:200]}")
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(index,), daemon=True) for index in range(count)]
    for thread in threads:
        thread.start()
    ready.wait()
    cpu_before, started = server.cpu_seconds(), time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    cpu_after = server.cpu_seconds()
    level = {"clients": count, **_rates([value for values in latencies for value in values], wall),
             "errors": len(failures), "server_cpu": _cpu_share(cpu_before, cpu_after, wall),
             "load": round(os.getloadavg()[0], 2)}
    if failures:
        level["first_error"] = failures[0]
    return level


def _cpu_share(before: float | None, after: float | None, seconds: float) -> float | None:
    return None if before is None or after is None else round((after - before) / seconds, 2)


# --- (2) camera streams ---------------------------------------------------------------------------


def _stream_copy(ffmpeg: str, video: Path, fps: float, workdir: Path) -> Path:
    """The video at ``fps`` and 640x360, as a camera would send it."""
    path = workdir / f"stream_{fps:g}fps.mp4"
    made = subprocess.run([ffmpeg, "-nostdin", "-y", "-loglevel", "error", "-i", str(video), "-vf",
                           f"fps={fps:g},scale=640:360", "-an", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        raise FaceIdError(f"ffmpeg could not make the {fps:g} fps copy of {video.name}: {made.stderr.strip()[-500:]}")
    return path


def _stream_levels(server: _Server, stream: Path, args: argparse.Namespace) -> dict[str, Any]:
    floor = SUSTAINED_SHARE * args.stream_fps
    print(f"camera streams: {stream.name} (640x360, {args.stream_fps:g} fps, looped), N cameras at once, "
          f"{args.stream_seconds:g} s measured per N; N is sustained when every camera identifies >= "
          f"{floor:g} frames/s ({SUSTAINED_SHARE:.0%} of {args.stream_fps:g})")
    client = server.client()
    levels, sustained = [], 0
    try:
        for count in range(1, args.max_streams + 1):
            name = f"bench{count}"
            status, answer = client.call("POST", "/cameras", json.dumps(
                {"name": name, "source": str(stream), "loop": True}).encode(), "application/json")
            if status != 201:
                raise FaceIdError(f"POST /cameras answered {status}: {answer}")
            _wait_running(client, count)
            time.sleep(SETTLE_S)
            before, cpu_before, started = _cameras(client), server.cpu_seconds(), time.perf_counter()
            time.sleep(args.stream_seconds)
            after, cpu_after = _cameras(client), server.cpu_seconds()
            seconds = time.perf_counter() - started
            cameras = []
            for camera, now in sorted(after.items()):
                then = before.get(camera, {"frames_read": 0, "frames_processed": 0, "frames_dropped": 0})
                read = now["frames_read"] - then["frames_read"]
                dropped = now["frames_dropped"] - then["frames_dropped"]
                cameras.append({"camera": camera, "state": now["state"],
                                "fps": round((now["frames_processed"] - then["frames_processed"]) / seconds, 2),
                                "read_fps": round(read / seconds, 2),
                                "dropped_share": round(dropped / read, 3) if read else None,
                                "frames_processed": now["frames_processed"]})
            kept_up = all(camera["fps"] >= floor for camera in cameras)
            levels.append({"streams": count, "seconds": round(seconds, 1), "sustained": kept_up,
                           "min_fps": min(camera["fps"] for camera in cameras),
                           "mean_fps": round(float(np.mean([camera["fps"] for camera in cameras])), 2),
                           "max_dropped_share": max((camera["dropped_share"] or 0.0) for camera in cameras),
                           "server_cpu": _cpu_share(cpu_before, cpu_after, seconds),
                           "load": round(os.getloadavg()[0], 2), "cameras": cameras})
            if not kept_up:
                break
            sustained = count
    finally:
        client.close()
    rows = [{"streams": level["streams"], "min_fps": level["min_fps"], "mean_fps": level["mean_fps"],
             "min_read_fps": min(camera["read_fps"] for camera in level["cameras"]),
             "max_dropped": f"{level['max_dropped_share']:.1%}", "server_cpu": level["server_cpu"],
             "sustained": "yes" if level["sustained"] else "no", "load": level["load"]} for level in levels]
    print_table(rows, ["streams", "min_fps", "mean_fps", "min_read_fps", "max_dropped", "server_cpu", "sustained",
                       "load"])
    capped = levels and levels[-1]["sustained"] and len(levels) == args.max_streams
    print(f"fps = identified frames per second of a camera; read_fps = frames its reader took from the stream; "
          f"dropped = frames replaced before they were identified, over those read. Sustained: {sustained} "
          f"stream(s) of {args.stream_fps:g} fps on {os.cpu_count()} cores"
          + (f" (the cap, --max_streams {args.max_streams})" if capped else ""))
    return {"fps": args.stream_fps, "seconds": args.stream_seconds, "criterion_fps": floor, "sustained": sustained,
            "capped": bool(capped), "levels": levels}


def _cameras(client: _Client) -> dict[str, dict[str, Any]]:
    status, answer = client.call("GET", "/cameras")
    if status != 200:
        raise FaceIdError(f"GET /cameras answered {status}: {answer}")
    return {camera["name"]: camera for camera in answer["cameras"]}


def _wait_running(client: _Client, count: int) -> None:
    deadline = time.monotonic() + CAMERA_START_TIMEOUT_S
    while True:
        cameras = _cameras(client)
        if len(cameras) >= count and all(camera["state"] == "running" and camera["frames_processed"] > 0
                                         for camera in cameras.values()):
            return
        if time.monotonic() > deadline:
            raise FaceIdError(f"the cameras did not all run in {CAMERA_START_TIMEOUT_S:.0f} s: "
                              + ", ".join(f"{name} {camera['state']} {camera['error'] or ''}".strip()
                                          for name, camera in cameras.items()))
        time.sleep(0.5)
