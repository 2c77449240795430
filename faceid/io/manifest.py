"""How an artefact records what made it: content hashes, library versions, source-file hashes."""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parents[1]


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

