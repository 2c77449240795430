"""Shared fixtures: real faces from ../shared/data, built once per test session.

The expensive artefacts (a dlib extractor, a feature cache of an LFW slice and a
similarity head trained on it) are session-scoped so every test that needs
them pays once.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEID_DATA", REPO.parent / "shared" / "data"))
LFW = DATA / "lfw_devtrain"
ORL = DATA / "orl"
VIDEO = DATA / "video" / "hamilton_clip.mp4"
KNOWN = DATA / "video" / "known"
# How long a test waits for a subprocess it starts (an interpreter, a script, a build): minutes, so a
# loaded 2-core machine, where a fresh interpreter importing NumPy, OpenCV and ONNX Runtime takes tens
# of seconds, still finishes; the bound only turns a hang into a failure that says what hung.
SUBPROCESS_TIMEOUT_S = 600


def pytest_configure(config):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not LFW.is_dir() or not ORL.is_dir():
        raise pytest.UsageError(
            f"test data not found at {DATA}: check out ../shared beside the repo or set FACEID_DATA"
        )


def output_text(data: str | bytes | None) -> str:
    """A subprocess's captured output as text (a TimeoutExpired holds what it got so far as bytes)."""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def run_process(argv: list[str], *, what: str | None = None, timeout: float = SUBPROCESS_TIMEOUT_S,
                **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(argv)`` with its output captured as text and no exit-code check; one that is
    still running after ``timeout`` seconds is killed and fails the test with ``what`` it was (the
    command line by default) and its output so far, not a bare TimeoutExpired."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{what or ' '.join(map(str, argv))} did not finish in {timeout:.0f} s; its output so far:\n"
                    f"{output_text(error.stdout)}{output_text(error.stderr)}", pytrace=False)


def copy_people(
    source: Path, destination: Path, people: list[str], max_images: int | None = None
) -> Path:
    """Copy some person folders (their first ``max_images`` files) into ``destination``."""
    for person in people:
        (destination / person).mkdir(parents=True, exist_ok=True)
        for image in sorted((source / person).iterdir())[:max_images]:
            shutil.copy2(image, destination / person / image.name)
    return destination


def lfw_people(min_images: int, count: int, skip: int = 0) -> list[str]:
    """The first ``count`` LFW people (alphabetically, after ``skip``) with at least ``min_images`` images."""
    eligible = [
        folder.name for folder in sorted(LFW.iterdir()) if len(list(folder.iterdir())) >= min_images
    ]
    return eligible[skip : skip + count]


@pytest.fixture(scope="session")
def dlib_extractor_dir(tmp_path_factory) -> Path:
    from faceid.backbones import create_extractor

    directory = tmp_path_factory.mktemp("dlib_extractor")
    create_extractor("dlib").save(directory, "extractor")
    return directory


@pytest.fixture(scope="session")
def dlib_extractor(dlib_extractor_dir):
    from faceid.backbones import load_extractor

    return load_extractor(dlib_extractor_dir)


@pytest.fixture(scope="session")
def lfw_train_faces(tmp_path_factory) -> Path:
    """40 LFW people with 4-6 images each: enough for a head that generalises."""
    return copy_people(
        LFW, tmp_path_factory.mktemp("lfw_train"), lfw_people(min_images=4, count=40), max_images=6
    )


@pytest.fixture(scope="session")
def lfw_cache_dir(tmp_path_factory, lfw_train_faces, dlib_extractor) -> Path:
    from faceid.features.extract import extract_features

    directory = tmp_path_factory.mktemp("lfw_features")
    extract_features(lfw_train_faces, dlib_extractor, directory, progress=False)
    return directory


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory, lfw_cache_dir) -> Path:
    """A similarity head trained on the LFW slice with train.py (the real entry point)."""
    from faceid.cli import train

    directory = tmp_path_factory.mktemp("similarity")
    code = train.main(
        [
            "--features_path",
            str(lfw_cache_dir),
            "--output_model",
            str(directory),
            "--epochs",
            "8",
            "-q",
        ]
    )
    assert code == 0
    return directory


_ROOT_LOGGING = (logging.getLogger().level, list(logging.getLogger().handlers))


@pytest.fixture(autouse=True)
def restore_logging():
    """Scripts configure the root logger (-q sets it to ERROR), also inside session fixtures
    that run before this one; put back the state from before any test after each test."""
    yield
    root = logging.getLogger()
    root.setLevel(_ROOT_LOGGING[0])
    root.handlers[:] = _ROOT_LOGGING[1]


@pytest.fixture(scope="session", autouse=True)
def no_key_in_the_environment():
    """Scripts read $FACEID_KEY when no --key_file is given: a developer's own key must not change what
    the tests (and their module fixtures) write; a test that wants one sets it with monkeypatch."""
    saved = os.environ.pop("FACEID_KEY", None)
    yield
    if saved is not None:
        os.environ["FACEID_KEY"] = saved


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
