"""Small helpers for the JSON manifests and atomic writes every artefact uses."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from faceid.errors import InputError

PACKAGE_DIR = Path(__file__).resolve().parent
# What reading a truncated or foreign .npz/.json can raise; caught to say "corrupt, rebuild it".
CORRUPT_FILE_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


@contextmanager
def atomic_path(destination: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it into place on success.

    A crash or Ctrl-C before the end leaves ``destination`` as it was (old content
    or absent), never half-written. The temporary name keeps the suffix so
    libraries that pick a format from it (NumPy, Keras) behave.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{destination.stem}.", suffix=f".tmp{destination.suffix}", dir=destination.parent
    )
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary_path, 0o666 & ~umask)
        os.replace(temporary_path, destination)
    finally:
        if temporary_path.exists():
            temporary_path.unlink()


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path, what: str, fix: str) -> dict[str, Any]:
    """Read a JSON manifest; a missing or corrupt one raises :class:`InputError` naming ``fix``."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise InputError(f"{what} not found at {path}: {fix}") from error
    except (OSError, ValueError) as error:
        raise InputError(f"{what} at {path} is unreadable or corrupt ({error}): {fix}") from error
    if not isinstance(payload, dict):
        raise InputError(f"{what} at {path} is not a JSON object: {fix}")
    return payload


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(payload: Any) -> str:
    """Hash of a JSON-able value, independent of key order."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def source_hashes(module_files: Iterable[str]) -> dict[str, str]:
    """Short hashes of the package's own source files that shaped an artefact."""
    return {name: sha256_file(PACKAGE_DIR / name)[:16] for name in module_files}


def library_versions(modules: Iterable[str]) -> dict[str, str]:
    """Versions of the libraries that made an artefact (recorded, not enforced)."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for module in modules:
        try:
            versions[module] = metadata.version(module)
        except metadata.PackageNotFoundError:
            versions[module] = "not installed"
    return versions


def check_equal(
    expected: Any, found: Any, what: str, expected_from: str, found_from: str, fix: str,
    describe: Callable[[Any], str] = str,
) -> None:
    """Raise :class:`~faceid.errors.ManifestMismatchError` naming both sides when they differ."""
    from faceid.errors import ManifestMismatchError

    if expected != found:
        raise ManifestMismatchError(
            f"{what} differs: {expected_from} has {describe(expected)}, {found_from} has {describe(found)}; {fix}"
        )


def check_output_folder(output: Path, output_flag: str, source: Path, source_flag: str, why: str) -> None:
    """Refuse an output folder inside (or equal to) a source folder, or one that is a file.

    Raises :class:`InputError` naming both options and ``why`` the place is wrong.
    """
    if output.resolve() == source.resolve() or source.resolve() in output.resolve().parents:
        raise InputError(f"{output_flag} {output} is inside {source_flag} {source}: {why}; pass a folder outside it")
    if output.exists() and not output.is_dir():
        raise InputError(f"{output_flag} {output} is a file: pass a folder")
