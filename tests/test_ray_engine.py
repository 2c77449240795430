"""extract_features.py --engine ray: the local engine's cache, built on a Ray cluster.

A local Ray instance with 2 CPUs on loopback (``ray start --head``), started and stopped by
this module (its own processes only: other Ray instances on the machine are left alone); each run is
the real script in its own process, joining it with --ray_address. Every wait has minutes, for a
loaded machine, and fails with what it waited for and the output.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import LFW, copy_people, lfw_people, run_process

from faceid.features.cache import FeatureCache, PersonFeatures

pytest.importorskip("ray", reason="the [ray] extra is not installed")

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).parent / "ray"
# Waits sized for a loaded 2-core machine (CI beside other jobs), where Ray's processes and every
# extraction start several times slower than on an idle one. None bounds how long a healthy run may
# take: each only turns a hang into a failure that says what was waited for, with its output.
RAY_START_TIMEOUT_S = 300  # one `ray start --head`
# Ray's own start-up waits (the raylet has 30 s to register, hard-coded) can still run out on a busy
# machine: the head is started again, on a new port, before the module's tests fail.
RAY_START_ATTEMPTS = 3
RUN_TIMEOUT_S = 900  # one extract_features.py run, or one step of it (until it has written two people)
# Loopback only (Ray's node address 127.0.0.1), and token authentication with a token of this test
# session's own, passed to the head, every driver and the local instance through the environment:
# `ray start --head` refuses to start with token authentication and no token, and a machine that never
# ran Ray has none (~/.ray/auth_token is written by the first local `ray.init`, not by `ray start`).
# Ray's waits that do read the environment (GCS requests, the GCS port) get the same minutes.
RAY_ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_gcs_server_request_timeout_seconds": str(RAY_START_TIMEOUT_S),
           "RAY_gcs_server_port_wait_time_s": str(RAY_START_TIMEOUT_S)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_ray_head(group: int) -> None:
    """SIGKILL every process of a head's process group (as `ray stop --force` does, but only this
    head's: `ray stop` would also end every other Ray instance of this user on the machine)."""
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + RAY_START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    warnings.warn(f"Ray's head (process group {group}) still had processes {RAY_START_TIMEOUT_S} s after SIGKILL")


def start_ray_head() -> tuple[str, int]:
    """A 2-CPU Ray head on a free loopback port, started by `ray start --head` in a process group of its
    own, which its processes join (the workers, each the leader of its own group, end with their
    raylet): its address and that group.

    Tried :data:`RAY_START_ATTEMPTS` times (what a failed try left running is stopped first); then the
    test fails with every try's output.
    """
    tries = []
    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        port = free_port()
        argv = [str(RAY), "start", "--head", "--num-cpus", "2", "--node-ip-address", "127.0.0.1", "--port", str(port),
                "--include-dashboard", "false", "--disable-usage-stats"]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=RAY_ENV,
                                   start_new_session=True)
        try:
            output, _ = process.communicate(timeout=RAY_START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stop_ray_head(process.pid)
            output, _ = process.communicate()
            tries.append(f"try {attempt}: still starting after {RAY_START_TIMEOUT_S} s\n{output}")
            continue
        if process.returncode == 0:
            return f"127.0.0.1:{port}", process.pid
        stop_ray_head(process.pid)
        tries.append(f"try {attempt}: exit code {process.returncode}\n{output}")
    pytest.fail(f"Ray's head did not start on 127.0.0.1 ({RAY_START_ATTEMPTS} tries of `ray start --head`, "
                f"{RAY_START_TIMEOUT_S} s each):\n" + "\n".join(tries), pytrace=False)


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory) -> str:
    """A 2-CPU Ray head on 127.0.0.1, stopped when the module's tests are done."""
    address, group = start_ray_head()
    try:
        yield address
    finally:
        stop_ray_head(group)


# Ctrl-C as in a terminal, whatever this test process passes on: a Python that starts with SIGINT
# ignored (or blocked) never raises KeyboardInterrupt. Then the script, as `python extract_features.py`.
WITH_CTRL_C = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
               "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); sys.argv = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__')")


def extract(faces: Path, features: Path, extractor_dir: Path, *extra: str, ctrl_c: bool = False) -> subprocess.Popen:
    python = [sys.executable, "-c", WITH_CTRL_C] if ctrl_c else [sys.executable]
    return subprocess.Popen(
        [*python, str(ROOT / "extract_features.py"), "--faces_path", str(faces), "--model_path",
         str(extractor_dir), "--features", str(features), "--json", "-q", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=RAY_ENV,
    )


def communicate(process: subprocess.Popen, what: str, timeout: float = RUN_TIMEOUT_S) -> tuple[str, str]:
    """The process's output once it has exited; still running after ``timeout`` seconds, it is killed
    and the test fails with ``what`` was waited for and the output it had written."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"{what}: still running after {timeout:.0f} s; its output:\n{out}{err}", pytrace=False)


def finished(process: subprocess.Popen) -> dict:
    out, err = communicate(process, "extract_features.py")
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def run_extract(faces: Path, features: Path, extractor_dir: Path, *extra: str) -> dict:
    return finished(extract(faces, features, extractor_dir, *extra))


def assert_same_cache(ours: Path, reference: Path, key=None) -> None:
    """Same people, files, hashes, skipped images, extractor; vectors within 1e-5 (``key``: both encrypted with it)."""
    a, b = FeatureCache.load(ours, key=key), FeatureCache.load(reference, key=key)
    assert a.fingerprint == b.fingerprint
    assert sorted(a.people) == sorted(b.people)
    for name, person in b.people.items():
        other = a.people[name]
        assert other.files == person.files, name
        assert other.hashes == person.hashes, name
        assert other.skipped == person.skipped, name
        np.testing.assert_allclose(other.vectors, person.vectors, atol=1e-5, rtol=0)
    for field in ("format", "extractor", "people", "n_vectors"):
        assert a.manifest[field] == b.manifest[field], field
    unsealed = [{k: v for k, v in (cache.manifest["encryption"] or {}).items() if k != "seal"} for cache in (a, b)]
    assert unsealed[0] == unsealed[1]  # the same key (or none); each seal has its own nonce


# The slice's runs that count skipped images pin dlib's HOG: the one photo without a face is one HOG finds
# none in (Abdoulaye_Wade_0003, a turned face that BlazeFace, the default, finds), so the "no face found"
# path (skipped, and not sent again) is exercised on Ray. The other Ray tests run the default detector.
SLICE_DETECTOR = ("--detector", "hog")


@pytest.fixture(scope="module")
def lfw_slice(tmp_path_factory) -> Path:
    """12 LFW people, 36 photos: with HOG (SLICE_DETECTOR) one without a detectable face and two with
    several faces; one broken file."""
    faces = copy_people(LFW, tmp_path_factory.mktemp("ray_faces"), lfw_people(min_images=1, count=12), max_images=4)
    (faces / "Aaron_Peirsol" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return faces


@pytest.fixture(scope="module")
def local_cache(tmp_path_factory, lfw_slice, dlib_extractor_dir) -> tuple[Path, dict]:
    features = tmp_path_factory.mktemp("local_cache")
    return features, run_extract(lfw_slice, features, dlib_extractor_dir, "--engine", "local", *SLICE_DETECTOR)


def test_ray_engine_writes_the_local_engines_cache(ray_address, lfw_slice, local_cache, dlib_extractor_dir, tmp_path):
    local_features, local_summary = local_cache
    summary = run_extract(lfw_slice, tmp_path / "features", dlib_extractor_dir, "--engine", "ray",
                          "--ray_address", ray_address, *SLICE_DETECTOR)
    assert summary == local_summary
    assert summary["embedded"] > 30 and summary["skipped"] == {"no face found": 1, "unreadable or not an image": 1}
    assert summary["several_faces"] == 2
    assert_same_cache(tmp_path / "features", local_features)


def test_a_second_ray_run_sends_only_new_and_changed_images(ray_address, lfw_slice, local_cache, dlib_extractor_dir,
                                                             tmp_path):
    faces = tmp_path / "faces"
    shutil.copytree(lfw_slice, faces)
    features = tmp_path / "features"
    shutil.copytree(local_cache[0], features)  # a cache the local engine made: the same format
    person = min(p for p in faces.iterdir() if len(list(p.iterdir())) >= 3)
    images = sorted(person.iterdir())
    shutil.copy2(LFW / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg", images[0])  # changed content
    shutil.copy2(LFW / "Abel_Pacheco" / "Abel_Pacheco_0002.jpg", person / "added.jpg")  # new
    images[1].unlink()  # removed
    summary = run_extract(faces, features, dlib_extractor_dir, "--engine", "ray", "--ray_address", ray_address,
                          *SLICE_DETECTOR)
    assert summary["embedded"] == 2  # the engine returns one result per image it was sent
    assert summary["removed_images"] == 1
    assert summary["reused"] == summary["images"] - 2 - 2  # the broken and no-face files are not tried again
    reference = tmp_path / "reference"
    run_extract(faces, reference, dlib_extractor_dir, "--engine", "local", *SLICE_DETECTOR)
    assert_same_cache(features, reference)


def ray_workers(title: str) -> list[int]:
    """Pids of processes whose title starts with ``ray::<title>`` (a Ray worker running that task)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if command.startswith(f"ray::{title}"):
                pids.append(int(entry.name))
    return pids


def kill_first(title: str, process: subprocess.Popen, timeout: float = RUN_TIMEOUT_S) -> int:
    """SIGKILL the first worker found running ``title`` while ``process`` runs; its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for pid in ray_workers(title):
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.02)
    if process.poll() is None:
        process.kill()
    out, err = process.communicate()
    pytest.fail(f"no Ray worker ran {title} while the extraction ran (waited up to {timeout:.0f} s; the extraction "
                f"exited with {process.returncode}); its output:\n{out}{err}", pytrace=False)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds Ray's workers through /proc")
def test_killed_workers_are_retried_and_the_cache_is_complete(ray_address, lfw_slice, dlib_extractor_dir, tmp_path):
    faces = copy_people(LFW, tmp_path / "faces", lfw_people(min_images=4, count=15), max_images=4)
    reference = tmp_path / "reference"
    run_extract(faces, reference, dlib_extractor_dir, "--engine", "local")
    process = extract(faces, tmp_path / "features", dlib_extractor_dir, "--engine", "ray", "--ray_address",
                      ray_address)
    detector = kill_first("MapBatches(_prepare_batch)", process)  # a detection task, mid-image
    embedder = kill_first("MapWorker(MapBatches(_Embedder)).submit", process)  # the actor, mid-batch
    summary = finished(process)
    assert detector != embedder
    assert summary["embedded"] + sum(summary["skipped"].values()) == summary["images"] == 60
    assert_same_cache(tmp_path / "features", reference)


def interrupted_run(faces: Path, features: Path, extractor_dir: Path, ray_address: str) -> subprocess.Popen | None:
    """A Ray run sent SIGINT once it has written two people; None if it ended before the signal landed."""
    # Small embedding batches: people are completed (and written) a few at a time.
    process = extract(faces, features, extractor_dir, "--engine", "ray", "--ray_address", ray_address,
                      "--batch_size", "4", ctrl_c=True)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while len(person_files(features)) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    if process.poll() is None and len(person_files(features)) < 2:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"the Ray run wrote {len(person_files(features))} people in {RUN_TIMEOUT_S} s, not the 2 the "
                    f"Ctrl-C waits for; its output:\n{out}{err}", pytrace=False)
    process.send_signal(signal.SIGINT)
    _, err = communicate(process, "extract_features.py after Ctrl-C")
    if len(person_files(features)) == len(list(faces.iterdir())) and process.returncode in (0, 130):
        return None  # it wrote everyone between the check and the signal: nothing left to interrupt
    assert process.returncode == 130, err
    return process


def person_files(features: Path) -> list[Path]:
    """Person files in place (temporary files are hidden: .NAME.PID.XXXX.tmp.npz)."""
    return sorted(path for path in (features / "people").glob("*.npz") if not path.name.startswith("."))


def test_ctrl_c_on_the_driver_keeps_the_people_written(ray_address, dlib_extractor_dir, tmp_path):
    faces = copy_people(LFW, tmp_path / "faces", lfw_people(min_images=4, count=24), max_images=4)
    for attempt in range(3):  # another try only if a run beat the signal to the end
        features = tmp_path / f"features{attempt}"
        if interrupted_run(faces, features, dlib_extractor_dir, ray_address):
            break
    else:
        pytest.fail("every run wrote all its people before Ctrl-C reached it")
    kept = {path.stem: PersonFeatures.load(path)[0] for path in person_files(features)}  # complete, readable
    assert 2 <= len(kept) < 24
    assert sorted(path.stem for path in (features / "people").iterdir()) == sorted(kept)  # no temporary left
    summary = run_extract(faces, features, dlib_extractor_dir, "--engine", "ray", "--ray_address", ray_address,
                          "--batch_size", "4")
    assert summary["reused"] == sum(len(person.files) for person in kept.values())  # not sent again
    assert summary["embedded"] + sum(summary["skipped"].values()) + summary["reused"] == 96
    cache = FeatureCache.load(features)  # complete: every person, every photo accounted for
    assert sorted(cache.people) == sorted(path.name for path in faces.iterdir())
    assert all(len(person.files) + len(person.skipped) == 4 for person in cache.people.values())


def test_encrypted_crops_are_read_by_the_ray_workers_with_the_drivers_key(lfw_slice, dlib_extractor_dir, tmp_path):
    """No --ray_address: the engine starts (and stops) its own local instance, without object spilling."""
    from faceid.cli import keys as keys_script
    from faceid.cli import selfies2face as selfies_script
    from faceid.io import sealed

    key_file = tmp_path / "key"
    assert keys_script.main(["new", "--output", str(key_file)]) == 0
    selfies = copy_people(LFW, tmp_path / "selfies", lfw_people(min_images=4, count=3), max_images=4)
    crops = tmp_path / "crops"
    key = ["--key_file", str(key_file)]
    assert selfies_script.main(["--face_selfies", str(selfies), "--faces_path", str(crops), "-q", *key]) == 0
    files = sorted(crops.rglob("*.png"))
    assert len(files) >= 10 and all(sealed.is_sealed(path.read_bytes()) for path in files)
    summary = run_extract(crops, tmp_path / "ray", dlib_extractor_dir, "--no_detect", "--engine", "ray", *key)
    assert summary["embedded"] == len(files) and not summary["skipped"]
    run_extract(crops, tmp_path / "local", dlib_extractor_dir, "--no_detect", "--engine", "local", *key)
    assert_same_cache(tmp_path / "ray", tmp_path / "local", sealed.read_key_file(key_file))


def test_a_node_with_another_faceid_version_is_named(ray_address, lfw_slice, dlib_extractor_dir, tmp_path):
    """The driver claims another version than the nodes' (this checkout's): the actors refuse to load."""
    argv = ["--faces_path", str(lfw_slice), "--model_path", str(dlib_extractor_dir), "--features",
            str(tmp_path / "features"), "--engine", "ray", "--ray_address", ray_address, "-q"]
    body = ("import sys, faceid; faceid.__version__ = '0.0.0-other'; from faceid.cli import extract_features; "
            f"sys.exit(extract_features.main({argv!r}))")
    done = run_process([sys.executable, "-c", body], what="extract_features.main with another driver version",
                       cwd=ROOT, env=RAY_ENV, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the Ray run failed: this node has faceid ") and "the driver 0.0.0-other" in last
    assert not list((tmp_path / "features" / "people").glob("*.npz"))


def test_engine_ray_without_the_extra_says_what_to_install(lfw_slice, dlib_extractor_dir, tmp_path, capsys,
                                                           monkeypatch):
    from faceid.cli import extract_features

    monkeypatch.setitem(sys.modules, "ray", None)
    code = extract_features.main(["--faces_path", str(lfw_slice), "--model_path", str(dlib_extractor_dir),
                                  "--features", str(tmp_path / "features"), "--engine", "ray", "-q"])
    assert code == 1
    err = capsys.readouterr().err
    assert 'pip install "faceid[ray]"' in err and "Traceback" not in err
    assert not (tmp_path / "features").exists()


def test_ray_address_without_engine_ray_is_refused(lfw_slice, dlib_extractor_dir, tmp_path, capsys):
    from faceid.cli import extract_features

    code = extract_features.main(["--faces_path", str(lfw_slice), "--model_path", str(dlib_extractor_dir),
                                  "--features", str(tmp_path / "features"), "--ray_address", "auto", "-q"])
    assert code == 1
    assert "--ray_address is for --engine ray" in capsys.readouterr().err
