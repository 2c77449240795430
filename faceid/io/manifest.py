"""How an artefact records what made it: content hashes, library versions, source-file hashes."""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parents[1]
logger = logging.getLogger(__name__)


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
    """Short hashes of the package's own source files (paths relative to ``faceid/``) that shaped an artefact."""
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



def check_file_sha256(path: Path, manifest: dict[str, Any], key: str, manifest_path: Path, fix: str) -> None:
    """Stop unless ``path`` is the file whose SHA-256 ``manifest[key]`` recorded when it was saved.

    The one check before a file of a model directory (which may come from someone else) is read:
    extractors, similarity models, calibrations. A manifest written before the hash was recorded
    (no ``key``) cannot vouch for the file: it is used, with a warning. ``key`` recorded as ``None``
    means the save wrote no such file.

    Raises:
        InputError: the file is missing, was not part of the save, or its bytes changed since; the
            message names the file and ``fix``.
    """
    from faceid.errors import InputError

    if not path.is_file():
        raise InputError(f"{path} is missing: the directory of {manifest_path} is incomplete; {fix}")
    if key not in manifest:
        logger.warning("%s cannot be verified: %s records no %s (saved before file hashes were recorded); "
                       "%s to record one", path, manifest_path, key, fix)
        return
    expected = manifest[key]
    if expected is None:
        raise InputError(f"{path} is not part of what {manifest_path} describes (it records no {key}): the file "
                         f"was added after it was saved; delete it, or {fix}")
    if sha256_file(path) != expected:
        raise InputError(f"{path} does not match the {key} recorded in {manifest_path}: the file was changed after "
                         f"it was saved (edited, corrupted or from another save); {fix}")
