"""The per-person feature cache under ``features/``.

Layout::

    features/
      manifest.json          extractor manifest + fingerprint, people and counts
      people/<person>.npz    vectors (n, dim) float32, files, sha256 of each file,
                             skipped files with their hash and reason, fingerprint
      stats.npz, stats.json  normalisation statistics (compute_mean.py)

Every file is NumPy ``.npz`` of plain arrays or JSON, read with
``allow_pickle=False``: a cache received from someone else cannot run code.
Each person file is written atomically (:mod:`faceid.io.store`) and carries the
extractor fingerprint, so an interrupted or mixed run never passes a stale file off
as valid. This module only stores and reads; :mod:`faceid.features.extract` fills it.

**Hashes.** The manifest lists the SHA-256 of every person file (``files``); a cache is
checked against it when opened, so a file changed, added or removed since the manifest
was written is named instead of used (caches written before the table are read unchecked).

**Encryption** (:mod:`faceid.io.sealed`). A cache created with a key is encrypted: its
manifest records ``encryption`` (cipher, key id, ``complete``, and ``seal``: an AES-GCM tag
over the manifest's digest, so the manifest, its hash table included, cannot be edited
without the key); every person file and ``stats.npz`` is sealed, bound to its own name.
The manifest itself stays readable (extractor, names, counts: no vector), so a wrong
or missing key is named before anything is read.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceid.errors import InputError, ManifestMismatchError
from faceid.io import sealed
from faceid.io.manifest import sha256_file, sha256_json
from faceid.io.store import (
    CORRUPT_FILE_ERRORS,
    TEMPORARY_GLOB,
    mapped_file,
    open_private,
    read_json,
    reseal_file,
    save_npz,
    write_json,
)

logger = logging.getLogger(__name__)

CACHE_FORMAT = "faceid-features/1"
MANIFEST_NAME = "manifest.json"
PEOPLE_DIR = "people"
STATS_FILE = "stats.npz"  # written by faceid.features.stats; sealed like the person files


@dataclass
class PersonFeatures:
    """One person's cached vectors and the files they came from."""

    name: str
    vectors: np.ndarray  # (n_images, dim) float32
    files: list[str]  # file names inside the person's folder, one per vector
    hashes: list[str]  # sha256 of each file's bytes
    skipped: dict[str, tuple[str, str]] = field(default_factory=dict)  # file -> (sha256, reason)

    def save(self, path: Path, fingerprint: str, *, key: sealed.Key | None = None) -> None:
        """Write the person file (sealed with ``key``, bound to its name, when a key is given)."""
        skipped_files = sorted(self.skipped)
        save_npz(
            path,
            person_context(path.stem),
            key=key,
            vectors=self.vectors.astype(np.float32),
            files=np.array(self.files, dtype=str),
            hashes=np.array(self.hashes, dtype=str),
            skipped_files=np.array(skipped_files, dtype=str),
            skipped_hashes=np.array([self.skipped[name][0] for name in skipped_files], dtype=str),
            skipped_reasons=np.array([self.skipped[name][1] for name in skipped_files], dtype=str),
            fingerprint=np.array(fingerprint),
        )

    def lookup(self, file_name: str, sha256: str) -> np.ndarray | str | None:
        """The vector of ``file_name`` (or why it was skipped) if cached with this content, else ``None``."""
        row = self._rows.get(file_name)
        if row is not None and self.hashes[row] == sha256:
            return self.vectors[row]
        skipped = self.skipped.get(file_name)
        if skipped is not None and skipped[0] == sha256:
            return skipped[1]
        return None

    @functools.cached_property
    def _rows(self) -> dict[str, int]:
        return {name: row for row, name in enumerate(self.files)}

    @classmethod
    def load(cls, path: Path, encrypted: bool | None = False, sha256: str | None = None, *,
             key: sealed.Key | None = None) -> tuple["PersonFeatures", str]:
        """Read a person file; returns it and the fingerprint it was made with.

        ``encrypted``: whether the cache is (a plaintext file in an encrypted cache, or the
        reverse, is refused: :func:`faceid.io.store.open_private`). ``sha256``: what the
        manifest's table says the file's bytes hash to. ``key``: the key an encrypted file opens with.
        """
        fix = "re-run extract_features.py to rebuild it"
        with mapped_file(path, "feature file", fix) as raw:
            # Authentication first (its errors say what happened: tampered, truncated, moved,
            # plaintext among encrypted), the manifest's hash next (an older or foreign copy).
            plain = open_private(raw, path, "this feature cache", person_context(path.stem), encrypted, key=key)
            if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
                raise InputError(f"{path} does not match the hash in its cache's manifest (changed, or replaced by "
                                 f"another copy, after the manifest was written): restore it, or re-run "
                                 f"extract_features.py on {path.parent.parent}")
            try:
                # A plaintext file is read from its mapping, a decrypted one from memory.
                with np.load(io.BytesIO(plain) if isinstance(plain, bytes) else plain, allow_pickle=False) as data:
                    vectors = data["vectors"].astype(np.float32, copy=False)
                    files = [str(name) for name in data["files"]]
                    hashes = [str(digest) for digest in data["hashes"]]
                    skipped = {
                        str(name): (str(digest), str(reason))
                        for name, digest, reason in zip(
                            data["skipped_files"], data["skipped_hashes"], data["skipped_reasons"])
                    }
                    fingerprint = str(data["fingerprint"])
            except CORRUPT_FILE_ERRORS as error:
                raise InputError(f"feature file {path} is unreadable or corrupt ({error}): {fix}") from error
        if vectors.ndim != 2 or len(vectors) != len(files) or len(files) != len(hashes):
            raise InputError(f"feature file {path} is inconsistent: rebuild the cache with extract_features.py (`rebuild`)")
        return cls(path.stem, vectors, files, hashes, skipped), fingerprint


def describe_extractor(manifest: dict[str, Any]) -> str:
    """One line naming an extractor, for mismatch messages."""
    return (
        f"{manifest.get('backbone')} layer {manifest.get('layer')} {manifest.get('input_size')}px "
        f"pooling {manifest.get('pooling')} weights {manifest.get('weights')} "
        f"(fingerprint {str(manifest.get('fingerprint'))[:12]})"
    )


class FeatureCache:
    """The cached vectors of every enrolled person, as written by :func:`extract_features`."""

    def __init__(self, directory: Path, manifest: dict[str, Any], people: dict[str, PersonFeatures]):
        self.directory = directory
        self.manifest = manifest
        self.people = people

    @property
    def fingerprint(self) -> str:
        return self.manifest["extractor"]["fingerprint"]

    @property
    def dim(self) -> int:
        return int(self.manifest["extractor"]["output_dim"])

    @classmethod
    def load(
        cls, directory: str | Path, extractor_manifest: dict[str, Any] | None = None, for_update: bool = False, *,
        key: sealed.Key | None = None,
    ) -> "FeatureCache":
        """Open a cache; with ``extractor_manifest``, insist it was made by that extractor.

        ``for_update`` (extraction re-opening its own cache) accepts an empty cache
        and leaves out person files from another extractor, to be re-embedded.
        ``key``: the key an encrypted cache was made with (``None``: the cache must be plaintext).

        Raises:
            InputError: no cache there, or a corrupt file.
            ManifestMismatchError: the cache was made by another extractor.
        """
        directory = Path(directory)
        manifest = read_json(
            directory / MANIFEST_NAME,
            "feature cache manifest",
            f"make it with extract_features.py first (a folder of faces, an extractor, and {directory} as the cache)",
        )
        if manifest.get("format") != CACHE_FORMAT:
            raise InputError(f"{directory} is not a faceid feature cache (format {manifest.get('format')!r})")
        if extractor_manifest is not None:
            check_same_extractor(
                manifest["extractor"], extractor_manifest, f"feature cache {directory}",
                f"pass the extractor that made it, or rebuild the cache {directory} with extract_features.py (`rebuild`)",
            )
        encrypted = check_encryption(directory, manifest, key=key)
        paths = person_paths(directory)
        table = {} if for_update else check_file_table(directory, manifest, paths)
        people = {}
        for path in paths:
            person, fingerprint = PersonFeatures.load(path, encrypted, table.get(path.name), key=key)
            if fingerprint != manifest["extractor"]["fingerprint"]:
                if for_update:
                    logger.info("%s comes from another extractor: re-embedding it", path)
                    continue
                raise ManifestMismatchError(
                    f"{path} was embedded by extractor {fingerprint[:12]}, the cache's manifest says "
                    f"{manifest['extractor']['fingerprint'][:12]} (an interrupted run?): re-run extract_features.py"
                )
            people[person.name] = person
        if not people and not for_update:
            raise InputError(f"feature cache {directory} holds no people: run extract_features.py")
        return cls(directory, manifest, people)

    @property
    def not_enrolled(self) -> list[str]:
        """People the cache lists with no usable vector (every image failed): never identified, sorted."""
        return sorted(name for name, person in self.people.items() if len(person.vectors) == 0)

    def matrix(self, min_images: int = 1) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """All vectors stacked, for people with at least ``min_images`` vectors.

        Returns:
            ``(vectors (n, dim) float32, labels (n,) int64, names)`` where
            ``names[labels[i]]`` is the person of row ``i``.
        """
        names = [name for name, person in sorted(self.people.items()) if len(person.vectors) >= min_images]
        if not names:
            raise InputError(f"no person in {self.directory} has {min_images} or more usable images")
        vectors = np.concatenate([self.people[name].vectors for name in names], dtype=np.float32)
        labels = np.concatenate(
            [np.full(len(self.people[name].vectors), index, dtype=np.int64) for index, name in enumerate(names)]
        )
        return vectors, labels, names

    def lookup(self, person: str, file_name: str, sha256: str) -> np.ndarray | str | None:
        """What the cache knows about ``person/file_name`` with exactly these bytes.

        The one cache look-up (extraction, evaluation and the audit use it): the file's
        ``(dim,) float32`` vector, or the reason it was skipped (e.g. no face), or ``None``
        when the cache has not seen these bytes under that name.
        """
        person_features = self.people.get(person)
        if person_features is None:
            return None
        return person_features.lookup(file_name, sha256)

    def content_digest(self) -> str:
        """Hash of what the cache holds (extractor + every person's file hashes)."""
        digest = hashlib.sha256(self.fingerprint.encode())
        for name in sorted(self.people):
            digest.update(name.encode() + b"\0" + "\0".join(self.people[name].hashes).encode() + b"\n")
        return digest.hexdigest()[:32]


# Manifest fields that say nothing about the vectors (or are hashes of what the others say).
_NOT_SETTINGS = ("format", "fingerprint", "sources")


def extractor_differences(found: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """The settings two extractor manifests disagree on, as ``name: found ≠ expected``.

    Settings first; file hashes (``*_sha256``: other weights) only when no setting differs.
    """
    plain = {"tta": "none", "precision": "fp32"}  # what a manifest older than these fields means
    keys = sorted((set(found) | set(expected)) - set(_NOT_SETTINGS))
    differing = [key for key in keys if found.get(key, plain.get(key)) != expected.get(key, plain.get(key))]
    settings = [key for key in differing if not key.endswith("_sha256")]
    return [f"{key}: {_short(found.get(key, plain.get(key)))} ≠ {_short(expected.get(key, plain.get(key)))}"
            for key in (settings or differing)]


def _short(value: Any) -> str:
    text = "(none)" if value is None else str(value)
    return text[:12] if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def check_same_extractor(found: dict[str, Any], expected: dict[str, Any], found_from: str, fix: str) -> None:
    """Stop when two artefacts come from different extractors, naming both, what differs, and the fix."""
    if found.get("fingerprint") != expected.get("fingerprint"):
        differences = extractor_differences(found, expected)
        differ = f" (they differ in {'; '.join(differences)})" if differences else ""
        raise ManifestMismatchError(
            f"{found_from} was made by {describe_extractor(found)}, but the extractor given is "
            f"{describe_extractor(expected)}{differ}: {fix}"
        )


def cache_manifest(extractor_manifest: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    """The cache's ``manifest.json``: format, the extractor's manifest, people and counts."""
    return {
        "format": CACHE_FORMAT,
        "extractor": extractor_manifest,
        "people": counts,
        "n_vectors": int(sum(counts.values())),
    }


def check_person_name(name: Any, parameter: str = "name") -> None:
    """Refuse what cannot be a person of a cache (a person's folder and file name): not a string, empty,
    with a ``/``, or hidden. ``parameter``: the argument it came in, named by the error."""
    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise InputError(f"`{parameter}` {name!r} is not a person's name: use a non-empty name without '/' that does "
                         "not start with '.'")


def person_context(name: str) -> str:
    """The place a person file is sealed for: a file moved to another person's name fails to open."""
    return f"{PEOPLE_DIR}/{name}.npz"


def person_paths(directory: Path) -> list[Path]:
    """The person files of a cache (not the temporary files of an interrupted write)."""
    return sorted(
        path for path in (Path(directory) / PEOPLE_DIR).glob("*.npz")
        if not (path.match(TEMPORARY_GLOB) or path.name.startswith("."))
    )


def file_table(directory: Path) -> dict[str, str]:
    """``{people/<person>.npz: sha256}`` of the person files as they are on disk."""
    return {f"{PEOPLE_DIR}/{path.name}": sha256_file(path) for path in person_paths(directory)}


def _manifest_digest(manifest: dict[str, Any]) -> str:
    unsealed = dict(manifest)
    encryption = dict(unsealed.get("encryption") or {})
    encryption.pop("seal", None)
    unsealed["encryption"] = encryption or None
    return sha256_json(unsealed)


def write_manifest(directory: Path, manifest: dict[str, Any], key: sealed.Key | None, complete: bool = True,
                   table: bool = True, **encryption: Any) -> None:
    """Write ``manifest.json`` with the person files' hash table (``table``) and, with ``key``, the
    encryption record (``complete``: every file sealed) and its seal over the whole manifest."""
    import base64

    manifest = dict(manifest)
    manifest.pop("files", None)
    if table:
        manifest["files"] = file_table(directory)
    record = sealed.encryption_record(key, complete)
    if record is not None:
        record.update(encryption)
        manifest["encryption"] = record
        tag = sealed.seal(b"", key, "manifest " + _manifest_digest(manifest))
        manifest["encryption"]["seal"] = base64.b64encode(tag).decode()
    else:
        manifest["encryption"] = None
    write_json(Path(directory) / MANIFEST_NAME, manifest)


def check_encryption(directory: Path, manifest: dict[str, Any], *, key: sealed.Key | None = None) -> bool:
    """Whether the cache at ``directory`` is encrypted, after checking that ``key`` opens it.

    Raises:
        KeyRequiredError / WrongKeyError: encrypted, and no key / another key was given.
        TamperedFileError: the manifest was edited after it was sealed.
        SealError: a conversion was interrupted (re-run it to finish).
    """
    import base64
    import binascii

    record = manifest.get("encryption")
    manifest_path = Path(directory) / MANIFEST_NAME
    if not record:
        return False
    if not record.get("complete", True):
        raise sealed.SealError(
            f"feature cache {directory}: an encryption or key change was interrupted half way; run the same "
            "keys.py (or extract_features.py with `encrypt`) command again to finish it")
    if key is None:
        raise sealed.KeyRequiredError(
            f"feature cache {directory} is encrypted (key {record.get('key_id')}): pass `key` "
            f"(or set {sealed.KEY_ENV})")
    if key.id != record.get("key_id"):
        raise sealed.WrongKeyError(
            f"feature cache {directory} is encrypted with key {record.get('key_id')}, not with {key.describe()}: "
            "pass the key it was encrypted with")
    try:
        tag = base64.b64decode(str(record.get("seal", "")), validate=True)
        sealed.unseal(tag, manifest_path, key, "manifest " + _manifest_digest(manifest))
    except (binascii.Error, sealed.TamperedFileError, sealed.PlaintextFileError) as error:
        raise sealed.TamperedFileError(
            f"{manifest_path} was changed after it was written (its seal does not match): restore it from a copy, "
            "or rebuild the cache with extract_features.py") from error
    return True


def check_key_matches(directory: Path, manifest: dict[str, Any], *, key: sealed.Key | None = None) -> None:
    """Before writing to an existing cache: ``key`` must be the one it is encrypted with, and a
    plaintext cache takes no key (mixing would leave half of it readable without one)."""
    if check_encryption(directory, manifest, key=key):
        return
    if key is not None:
        raise sealed.PlaintextFileError(
            f"feature cache {directory} is not encrypted, and {key.describe()} was given: convert it in place "
            f"first (keys.py encrypt on {directory} with that key, or extract_features.py with `encrypt`), "
            "or leave out `key` (nothing was changed)")


def check_file_table(directory: Path, manifest: dict[str, Any], paths: list[Path]) -> dict[str, str]:
    """Stop when person files were added or removed since the manifest's hash table was written;
    returns ``{file name: sha256}`` for :meth:`PersonFeatures.load` to check each file's bytes."""
    table = manifest.get("files")
    if table is None:
        return {}  # written before the table existed, or by an extraction still running
    fix = f"restore the file, or re-run extract_features.py on {directory} (it re-checks every image)"
    found = {f"{PEOPLE_DIR}/{path.name}": path for path in paths}
    for name in sorted(set(table) - set(found)):
        raise InputError(f"feature cache {directory}: {name} is in the manifest but missing: {fix}")
    for name in sorted(set(found) - set(table)):
        raise InputError(f"feature cache {directory}: {name} is not in the manifest (added from elsewhere?): {fix}")
    return {Path(name).name: digest for name, digest in table.items()}


def nested_caches(directory: Path) -> list[Path]:
    """``directory`` (if a cache) and every feature cache below it (e.g. retrieval galleries under
    ``features/galleries/``), parents first."""
    directory = Path(directory)
    found = []
    for manifest_path in sorted(directory.rglob(MANIFEST_NAME), key=lambda path: len(path.parts)):
        try:
            manifest = read_json(manifest_path, "manifest", "")
        except InputError:
            continue
        if manifest.get("format") == CACHE_FORMAT:
            found.append(manifest_path.parent)
    return found


def reseal_cache(directory: Path, old: sealed.Key | None, new: sealed.Key | None) -> dict[str, int]:
    """Convert one cache in place from ``old`` to ``new`` (either ``None``: plaintext): encrypt a
    plaintext cache, rotate its key, or decrypt it.

    File by file, each atomically; the manifest says ``complete: false`` (and both key ids) until
    every file is done, so readers refuse a half-converted cache and the same call resumes an
    interrupted one. Returns ``{"rewritten": n, "already": m}``.

    Raises:
        KeyRequiredError / WrongKeyError: ``old`` is not the key the cache is encrypted with (or
            the interrupted conversion was to another key); nothing is changed then.
    """
    directory = Path(directory)
    manifest = read_json(directory / MANIFEST_NAME, "feature cache manifest", "pass a feature cache folder")
    if manifest.get("format") != CACHE_FORMAT:
        raise InputError(f"{directory} is not a faceid feature cache")
    record = manifest.get("encryption") or None
    old_id, new_id = (old.id if old else None), (new.id if new else None)
    if record and not record.get("complete", True):
        if (record.get("from_key_id"), record.get("key_id")) != (old_id, new_id):
            raise sealed.WrongKeyError(
                f"feature cache {directory}: an interrupted conversion from key {record.get('from_key_id')} to "
                f"{record.get('key_id')} (None: plaintext) must be finished with those keys, not {old_id} -> {new_id}")
    else:
        found_id = record.get("key_id") if record else None
        if found_id == new_id:
            return {"rewritten": 0, "already": len(person_paths(directory)) + (directory / STATS_FILE).is_file()}
        if found_id != old_id:
            what = f"encrypted with key {found_id}" if found_id else "not encrypted"
            error = sealed.KeyRequiredError if old is None and found_id else sealed.WrongKeyError
            raise error(f"feature cache {directory} is {what}: pass "
                        + (f"the key it is encrypted with (from {old_id})" if found_id else "no old key"))
        if old is not None:
            check_encryption(directory, manifest, key=old)
        progress = dict(manifest)
        progress["encryption"] = {"cipher": sealed.CIPHER, "key_id": new_id, "from_key_id": old_id, "complete": False}
        write_json(directory / MANIFEST_NAME, progress)
    counts = {"rewritten": 0, "already": 0}
    files = [(path, person_context(path.stem)) for path in person_paths(directory)]
    if (directory / STATS_FILE).is_file():
        files.append((directory / STATS_FILE, STATS_FILE))
    for path, context in files:
        counts["rewritten" if reseal_file(path, old, new, context) else "already"] += 1
    manifest.pop("encryption", None)
    write_manifest(directory, manifest, new)
    return counts
