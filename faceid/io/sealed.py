"""Encryption at rest: the toolkit's keys and its one envelope for stored biometrics.

Everything that holds a face or a vector of one (per-person feature files, a cache's
normalisation statistics, enrolment crops and frames, synthetic sketches, training chips)
is written through :mod:`faceid.io.store`, which seals it here when a key is in use. The
cryptography is the `cryptography` package's **AES-256-GCM** (authenticated encryption:
a changed byte anywhere fails the tag check); nothing here invents a cipher, a MAC or a
key derivation.

A **key** is 32 random bytes (``os.urandom`` via :class:`AESGCM.generate_key`), kept as one
line of URL-safe base64 in a key file (``keys.py new --output FILE``, created owner-only,
``0o600``, never overwritten) or in the ``FACEID_KEY`` environment variable. Its **key id** is
the first 8 bytes of SHA-256 over a fixed label and the key: it names the key in every file
and message without revealing it (recovering a 256-bit key from it is a pre-image search).

A **sealed file** is::

    MAGIC (8) | key id (8) | nonce (12) | body length (8, big-endian) | context length (2) | context | body

``body`` is the ciphertext with GCM's 16-byte tag; the header is the associated data, so it
cannot be changed either. ``context`` binds a file to its place (``people/alice.npz``): a
feature file swapped for another person's, or renamed, fails as *moved* instead of
silently naming the wrong person. A fresh random 96-bit nonce per file, as NIST SP 800-38D
allows for up to 2^32 messages per key (a cache re-sealed daily for a century is 36,500).

There is no key "in use": every function that writes or reads a private file takes its key as
an argument (``key=None``: plaintext), and passes it on. Only the boundary reads a key from where
the user keeps it: the scripts from ``--key_file`` / ``FACEID_KEY``
(:func:`faceid.cli.script_key`), :class:`faceid.FaceID` from its ``key`` argument or
``FACEID_KEY``. The package never reads the environment for a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

from faceid.errors import (  # the seal errors are defined in errors.py; importable from here too
    KeyRequiredError,
    PlaintextFileError,
    SealError,
    TamperedFileError,
    WrongKeyError,
)

MAGIC = b"FACEID\x00\x01"  # faceid sealed file, format 1
CIPHER = "AES-256-GCM"
KEY_ENV = "FACEID_KEY"
_KEY_ID_LABEL = b"faceid key id v1\x00"
_HEADER = struct.Struct(">8s8s12sQH")  # magic, key id, nonce, body length, context length
_TAG_BYTES = 16


@dataclass(frozen=True)
class Key:
    """A 256-bit key; ``source`` says where it came from (for messages), never the key itself."""

    secret: bytes = field(repr=False)
    source: str = "a key"

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise SealError(f"{self.source} holds {len(self.secret)} bytes, a faceid key holds 32: create one with keys.py new")

    @property
    def id_bytes(self) -> bytes:
        return hashlib.sha256(_KEY_ID_LABEL + self.secret).digest()[:8]

    @property
    def id(self) -> str:
        """The key id: 16 hex digits, recorded in every sealed file and cache manifest."""
        return self.id_bytes.hex()

    def text(self) -> str:
        """The key as one line of URL-safe base64 (what key files and ``FACEID_KEY`` hold)."""
        return base64.urlsafe_b64encode(self.secret).decode()

    def describe(self) -> str:
        return f"key {self.id} ({self.source})"


def new_key() -> Key:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return Key(AESGCM.generate_key(bit_length=256), "a new key")


def key_from_text(text: str, source: str) -> Key:
    """Parse a key from its base64 text (URL-safe or standard alphabet, padding optional)."""
    text = "".join(text.split())
    if not text:
        raise SealError(f"{source} is empty: create a key file with keys.py new")
    try:
        secret = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as error:
        raise SealError(f"{source} is not a base64 key ({error}): create one with keys.py new") from error
    return Key(secret, source)


def write_key_file(path: str | Path, key: Key) -> None:
    """Create ``path`` holding ``key``, readable by its owner only (``0o600``); never replaces a file
    (a replaced key file loses everything sealed with the old key)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as error:
        raise SealError(f"{path} exists: a key file is never overwritten (whatever it sealed needs it); "
                        "pass a new path") from error
    with os.fdopen(handle, "w") as stream:
        stream.write(key.text() + "\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.chmod(path, 0o600)  # O_CREAT's mode is reduced by the umask; 0o600 is what we promise


def read_key_file(path: str | Path) -> Key:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as error:
        raise SealError(f"key file {path} not found: pass the key file the data was encrypted with, "
                        "or create a new key with keys.py new") from error
    except (OSError, UnicodeDecodeError) as error:
        raise SealError(f"key file {path} is unreadable ({error})") from error
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        import logging

        logging.getLogger(__name__).warning(
            "key file %s is readable by others (mode %o): chmod 600 %s", path, mode, path)
    return key_from_text(text, f"key file {path}")


def encryption_record(key: Key | None, complete: bool = True) -> dict | None:
    """What a manifest records about its files' encryption (the key's id, never the key)."""
    if key is None:
        return None
    return {"cipher": CIPHER, "key_id": key.id, "complete": complete}


def is_sealed(data: bytes) -> bool:
    return data[: len(MAGIC)] == MAGIC


def sealed_key_id(data: bytes) -> str | None:
    """The key id a sealed file names, or ``None`` for a plaintext one."""
    if not is_sealed(data) or len(data) < _HEADER.size:
        return None
    return data[8:16].hex()


def seal(data: bytes, key: Key, context: str = "") -> bytes:
    """``data`` encrypted and authenticated under ``key``, bound to ``context``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    context_bytes = context.encode()
    nonce = os.urandom(12)
    header = _HEADER.pack(MAGIC, key.id_bytes, nonce, len(data) + _TAG_BYTES, len(context_bytes)) + context_bytes
    return header + AESGCM(key.secret).encrypt(nonce, data, header)


def unseal(data: bytes, path: str | Path, key: Key | None, context: str | None = None) -> bytes:
    """The plaintext of a sealed file's bytes ``data`` (read from ``path``, named in errors).

    ``context``: the place the file must have been sealed for (``None``: any).

    Raises:
        KeyRequiredError: no key; WrongKeyError: sealed with another key;
        TamperedFileError: truncated, changed, or sealed for another place.
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(data) < _HEADER.size:
        raise TamperedFileError(f"{path} is truncated ({len(data)} bytes, not even a header): restore it from a copy "
                                "or rebuild it")
    magic, key_id, nonce, body_length, context_length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise PlaintextFileError(f"{path} is not a faceid encrypted file")
    if key is None:
        raise KeyRequiredError(f"{path} is encrypted (key {key_id.hex()}): pass `key` (or set {KEY_ENV})")
    if key_id != key.id_bytes:
        raise WrongKeyError(f"{path} was encrypted with key {key_id.hex()}, not with {key.describe()}: "
                            "pass the key it was encrypted with")
    start = _HEADER.size + context_length
    found_context = data[_HEADER.size:start].decode(errors="replace")
    if len(data) - start != body_length or len(data) < start:
        raise TamperedFileError(
            f"{path} is truncated or has bytes added ({max(len(data) - start, 0)} of {body_length} encrypted bytes): "
            "restore it from a copy or rebuild it")
    if context is not None and found_context != context:
        raise TamperedFileError(f"{path} was encrypted as {found_context!r}, not as {context!r}: it was moved or "
                                "swapped with another file; put it back or rebuild it")
    try:
        with memoryview(data) as view:  # no copy of the body (data may be a memory-mapped file)
            return AESGCM(key.secret).decrypt(nonce, view[start:], view[:start])
    except InvalidTag as error:
        raise TamperedFileError(f"{path} fails authentication: it was changed after it was written (or is corrupt); "
                                "restore it from a copy or rebuild it") from error
