"""Erasing one person from everything the toolkit keeps (forget.py).

What holds a person, and what :func:`forget_person` does with it:

* **feature caches**: the cache at ``--features`` and every cache below it (retrieval galleries
  under ``features/galleries/``): their ``people/<name>.npz`` is deleted; in a flat retrieval
  gallery (``_flat``) the rows of photos whose file stem is the name are dropped. The manifest
  (counts, hash table, seal) is rewritten *first*, then the file is deleted: a crash in between
  leaves a cache that refuses to open (a file not in its manifest) until ``forget.py`` is run
  again, never one that still names the person.
* **normalisation statistics** (``stats.npz``): recomputed from the people left (they are a
  mean over everyone, the person included), or removed with the last person.
* **the search index**: the two-stage search's shortlist is built in memory from the cache
  each time a gallery is fitted, never stored: nothing to erase.
* **enrolment images** (``--faces_path``): the person's folder, crops and ``frames/``, deleted.
* **trained heads and extractors** hold no per-person data: a similarity head is a function of
  ``|f1 - f2|`` with no name and no vector in it, and it can only score vectors that a cache
  supplies; the names a system returns come from the cache alone.

Deleting a file frees its blocks without overwriting them; in an encrypted cache those blocks
(and any backup) are ciphertext, made unreadable for good by ``keys.py rotate`` and deleting
the old key.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceid.errors import InputError
from faceid.features.cache import (
    MANIFEST_NAME,
    PEOPLE_DIR,
    STATS_FILE,
    FeatureCache,
    PersonFeatures,
    check_encryption,
    file_table,
    nested_caches,
    write_manifest,
)
from faceid.io import sealed
from faceid.io.images import FLAT
from faceid.io.store import read_json


@dataclass
class ForgetReport:
    person: str
    removed: list[str] = field(default_factory=list)  # what was removed or rewritten, one line each

    def as_dict(self) -> dict[str, Any]:
        return {"person": self.person, "removed": self.removed}


def forget_person(name: str, features: Path, faces_path: Path | None = None, *,
                  key: sealed.Key | None = None) -> ForgetReport:
    """Remove ``name`` from every cache under ``features`` and (``faces_path``) their images.

    ``key``: the key the encrypted caches among them were made with (plaintext caches stay plaintext).

    Raises:
        InputError: no cache under ``features``; ``name`` is not a plain folder name; the person
            is nowhere (nothing is changed). KeyRequiredError / WrongKeyError: an encrypted
            cache and no key / another key (checked for every cache before any is changed).
    """
    if not name or Path(name).name != name or name.startswith("."):
        raise InputError(f"`name` {name!r} is not a person's folder name")
    features = Path(features)
    caches = nested_caches(features) if features.is_dir() else []
    if not caches:
        raise InputError(f"`features` {features} holds no feature cache (no manifest.json)")
    manifests = {}
    for cache in caches:  # every key problem before anything changes
        manifests[cache] = read_json(cache / MANIFEST_NAME, "feature cache manifest", "")
        check_encryption(cache, manifests[cache], key=key)
    report = ForgetReport(name)
    for cache in caches:
        _forget_in_cache(name, cache, manifests[cache], report, key)
    if faces_path is not None:
        folder = Path(faces_path) / name
        if folder.is_dir():
            count = sum(1 for path in folder.rglob("*") if path.is_file())
            shutil.rmtree(folder)
            report.removed.append(f"{folder}/: deleted ({count} enrolment files)")
    if not report.removed:
        where = f"{features}" + (f" or {faces_path}" if faces_path is not None else "")
        raise InputError(f"no person {name!r} in {where}: nothing was removed (names are folder names, "
                         "case-sensitive)")
    return report


def _forget_in_cache(name: str, cache: Path, manifest: dict[str, Any], report: ForgetReport,
                     key: sealed.Key | None) -> None:
    key = key if manifest.get("encryption") else None  # a plaintext cache stays plaintext
    encrypted = key is not None
    person_file = cache / PEOPLE_DIR / f"{name}.npz"
    flat_file = cache / PEOPLE_DIR / f"{FLAT}.npz"
    counts = dict(manifest.get("people", {}))
    changed = []
    if flat_file.is_file():
        flat, fingerprint = PersonFeatures.load(flat_file, encrypted, key=key)
        keep = [row for row, file in enumerate(flat.files) if Path(file).stem != name]
        if len(keep) < len(flat.files):
            dropped = len(flat.files) - len(keep)
            flat = PersonFeatures(FLAT, flat.vectors[keep], [flat.files[row] for row in keep],
                                  [flat.hashes[row] for row in keep],
                                  {file: why for file, why in flat.skipped.items() if Path(file).stem != name})
            flat.save(flat_file, fingerprint, key=key)
            counts[FLAT] = len(flat.files)
            changed.append(f"{flat_file}: {dropped} flat gallery photos of {name} dropped")
    vectors = counts.pop(name, None)
    hidden = person_file.with_name(f".{person_file.name}.forgotten")  # hidden files are never read
    if person_file.is_file() or vectors is not None:
        if person_file.is_file():
            person_file.replace(hidden)  # out of the table's sight before the manifest is rewritten
        changed.append(f"{person_file}: deleted ({vectors if vectors is not None else '?'} vectors)")
    # Rewritten when anything changed, or when an interrupted run left files the table does not match.
    if changed or manifest.get("files") != file_table(cache):
        manifest = dict(manifest, people=counts, n_vectors=int(sum(counts.values())))
        manifest.pop("encryption", None)
        write_manifest(cache, manifest, key)
    hidden.unlink(missing_ok=True)
    if changed and (cache / STATS_FILE).is_file():
        changed.append(_refresh_stats(cache, key))
    report.removed.extend(changed)


def _refresh_stats(cache: Path, key: sealed.Key | None) -> str:
    """Recompute a cache's statistics without the person (or remove them with the last person)."""
    from faceid.features.stats import STATS_MANIFEST, compute_stats, save_stats

    try:
        remaining = FeatureCache.load(cache, key=key)
    except InputError:
        remaining = None
    if remaining is None or not remaining.people or not sum(len(p.vectors) for p in remaining.people.values()):
        (cache / STATS_FILE).unlink(missing_ok=True)
        (cache / STATS_MANIFEST).unlink(missing_ok=True)
        return f"{cache / STATS_FILE}: deleted (nobody left)"
    save_stats(compute_stats(remaining), cache, key=key)
    return f"{cache / STATS_FILE}: recomputed without them"


