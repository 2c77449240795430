"""Every file the toolkit writes goes through here: one policy for atomic writes.

Two kinds of write, both crash-safe:

* **replace** (:func:`atomic_path`, :func:`write_bytes`, :func:`write_json`,
  :func:`save_npz`, :class:`StagedFiles`): the new content is written in full under a
  hidden temporary name beside the destination, flushed to disk, then renamed over it.
  A crash or Ctrl-C leaves the old file (or none), never a half-written one.
  :class:`StagedFiles` does this for several files that must change together (a head's
  weights, its normaliser and its manifest): all are staged first, renamed last.
* **create** (:func:`write_new_file`): enrolment crops are never overwritten; the
  destination must not exist, and appears complete or not at all.

One permission policy for both: the files get what a plain ``open()`` would give
(``0o666`` less the umask), not ``mkstemp``'s private ``0o600``.

Readers: :func:`read_json` and :func:`load_npz` turn a missing or corrupt file into an
:class:`~faceid.errors.InputError` that names the fix; ``.npz`` files are read with
``allow_pickle=False``, so a file received from someone else cannot run code.

**Private files** (anything holding a face or a vector of one) are written with
:func:`write_private`, :func:`write_new_private` or ``save_npz(..., context=...)`` and read with
:func:`read_private` / ``load_npz(..., context=...)``, each given the caller's ``key``
(a :class:`faceid.io.sealed.Key`; nothing here looks for one): with a key their bytes are sealed
with AES-256-GCM *before* the temporary file is written, so nothing decrypted ever reaches the
disk, and opened (checked for the right key, tampering, truncation, place) when read. With
``key=None`` they are written plain, and an encrypted one cannot be read.
"""

from __future__ import annotations

import errno
import io
import json
import mmap
import os
import secrets
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from faceid.errors import InputError
from faceid.io import sealed

# What reading a truncated or foreign .npz/.json can raise; caught to say "corrupt, rebuild it".
CORRUPT_FILE_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)
# Hidden temporary files of this module (left behind only by a killed process: never valid data).
TEMPORARY_GLOB = ".*.tmp*"


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def temporary_beside(destination: str | Path) -> Path:
    """A fresh hidden name beside ``destination`` with the same suffix (libraries such as
    NumPy, Keras and OpenCV pick the format from it); same folder, so a rename is atomic."""
    destination = Path(destination)
    return destination.with_name(f".{destination.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{destination.suffix}")


def _seal(temporary: Path) -> None:
    """Give a finished temporary file the shared permissions and flush it to disk (before its rename)."""
    os.chmod(temporary, _default_mode())
    with open(temporary, "rb") as written:
        os.fsync(written.fileno())


def commit(temporary: Path, destination: str | Path) -> None:
    """Seal a finished temporary file and rename it over ``destination``."""
    _seal(temporary)
    os.replace(temporary, destination)


@contextmanager
def atomic_path(destination: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it into place on success.

    The caller writes the whole file to the yielded path (any library, any format). On an
    exception the temporary file is removed and ``destination`` is left as it was.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_beside(destination)
    try:
        yield temporary
        commit(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, atomically."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def json_bytes(payload: dict[str, Any]) -> bytes:
    """The toolkit's JSON layout: indented, keys sorted, one trailing newline."""
    return (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    write_bytes(path, json_bytes(payload))


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


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """Plain arrays as the bytes of an ``.npz`` file (built in memory)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def save_npz(path: str | Path, context: str | None = None, *, key: sealed.Key | None = None,
             **arrays: np.ndarray) -> None:
    """Write plain arrays as ``.npz``, atomically (nothing that needs pickle: load with :func:`load_npz`).

    ``context`` (e.g. ``people/alice.npz``) makes it a private file: sealed with ``key`` when one is given.
    """
    if context is not None:
        write_private(path, npz_bytes(**arrays), context, key=key)
        return
    with atomic_path(path) as temporary:
        np.savez(temporary, **arrays)


def load_npz(
    path: str | Path, what: str, fix: str, context: str | None = None, encrypted: bool | None = None, *,
    key: sealed.Key | None = None,
) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (read without pickle); missing or corrupt: :class:`InputError`.

    ``context``: a private file, opened by :func:`read_private` with ``key`` (``encrypted`` as there).
    """
    path = Path(path)
    try:
        if context is None:
            source: Any = path
        else:
            source = io.BytesIO(read_private(path, what, fix, context, encrypted, key=key))
        with np.load(source, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except CORRUPT_FILE_ERRORS as error:
        raise InputError(f"{what} {path} is missing, unreadable or corrupt ({error}): {fix}") from error


def private_bytes(data: bytes, context: str = "", *, key: sealed.Key | None = None) -> bytes:
    """What a private file holds on disk: ``data`` sealed with ``key``, or ``data`` itself when ``key`` is ``None``."""
    return data if key is None else sealed.seal(data, key, context)


def write_private(path: str | Path, data: bytes, context: str = "", *, key: sealed.Key | None = None) -> None:
    """Replace ``path`` with ``data``, atomically, sealed first with ``key`` (``None``: plaintext)."""
    write_bytes(path, private_bytes(data, context, key=key))


def write_new_private(path: Path, data: bytes, context: str = "", *, key: sealed.Key | None = None) -> None:
    """:func:`write_new_file` for a private file (enrolment crops and frames), sealed with ``key`` when given."""
    write_new_file(path, private_bytes(data, context, key=key))


def open_private(data: bytes, path: str | Path, what: str, context: str | None = None,
                 encrypted: bool | None = None, *, key: sealed.Key | None = None) -> bytes:
    """The plaintext of a private file's bytes (a sealed one opened with ``key``).

    ``encrypted``: ``True`` the file must be sealed (a plaintext file among encrypted ones is an
    error), ``False`` it must be plain (an encrypted file in a plaintext cache is an error),
    ``None`` either (enrolment folders may mix the user's photos and encrypted crops).
    ``context``: the place it must have been sealed for (``None``: any).
    """
    if sealed.is_sealed(data):
        if encrypted is False:
            raise sealed.PlaintextFileError(
                f"{path} is encrypted (key {sealed.sealed_key_id(data)}) but {what} is not: a file from another, "
                "encrypted cache; remove it or rebuild")
        return sealed.unseal(data, path, key, context)
    if encrypted and len(data) < len(sealed.MAGIC):
        raise sealed.TamperedFileError(f"{path} is truncated ({len(data)} bytes): restore it from a copy or rebuild it")
    if encrypted:
        raise sealed.PlaintextFileError(
            f"{path} is not encrypted, but {what} is: a plaintext file put among encrypted ones is never read; "
            "remove it, or convert the cache again with keys.py encrypt")
    return data


def read_private(path: str | Path, what: str, fix: str, context: str | None = None,
                 encrypted: bool | None = None, *, key: sealed.Key | None = None) -> bytes:
    """Read a private file and open it with ``key`` (:func:`open_private`); missing: :class:`InputError`
    naming ``fix``."""
    return open_private(read_file_bytes(path, what, fix), path, what, context, encrypted, key=key)


def reseal_file(path: Path, old: sealed.Key | None, new: sealed.Key | None, context: str = "") -> bool:
    """Re-write one private file from ``old`` (``None``: plaintext) to ``new`` (``None``: plaintext),
    atomically; a file already in the ``new`` state is left as it is (an interrupted conversion
    resumes). Returns whether the file was re-written.

    ``context``: the place the file is sealed for.

    Raises:
        WrongKeyError: sealed with a third key; PlaintextFileError: plaintext where ``old`` says
        sealed; TamperedFileError: it does not open.
    """
    data = read_file_bytes(path, "file", "restore it")
    if sealed.is_sealed(data):
        found = sealed.sealed_key_id(data)
        if new is not None and found == new.id:
            return False
        if old is None or found != old.id:
            keys = " or ".join(key.describe() for key in (old, new) if key is not None) or "no key"
            raise sealed.WrongKeyError(f"{path} is encrypted with key {found}, not with {keys}: pass the key it was "
                                       "encrypted with as `old`")
        plain = sealed.unseal(data, path, old, context)
    else:
        if new is None:
            return False
        if old is not None:
            raise sealed.PlaintextFileError(f"{path} is not encrypted, but should be with {old.describe()}: a plaintext "
                                            "file put among encrypted ones; remove it, or restore it from a copy")
        plain = data
    write_bytes(path, plain if new is None else sealed.seal(plain, new, context))
    return True


def is_sealed_file(path: str | Path) -> bool:
    """Whether ``path`` is an encrypted file (reads its first bytes only)."""
    with open(path, "rb") as stream:
        return sealed.is_sealed(stream.read(len(sealed.MAGIC)))


class _Mapping(mmap.mmap):
    """A read-only file mapping that ``zipfile`` (``np.load``) can read like a file."""

    def seekable(self) -> bool:
        return True


@contextmanager
def mapped_file(path: str | Path, what: str, fix: str) -> Iterator[bytes | Any]:
    """A file's bytes, memory-mapped for the length of the block (hashing, decrypting and
    ``np.load`` read it in place: no copy of a large feature file). Missing or unreadable:
    :class:`InputError`. The toolkit replaces files by rename, so a mapped file never changes."""
    path = Path(path)
    try:
        stream = open(path, "rb")  # noqa: SIM115 (closed below, after the mapping)
    except FileNotFoundError as error:
        raise InputError(f"{what} {path} not found: {fix}") from error
    except OSError as error:
        raise InputError(f"{what} {path} is unreadable ({error}): {fix}") from error
    with stream:
        if os.fstat(stream.fileno()).st_size == 0:
            yield b""
            return
        with _Mapping(stream.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            yield mapped


def read_file_bytes(path: str | Path, what: str, fix: str) -> bytes:
    """A file's bytes as they are on disk; missing or unreadable: :class:`InputError` naming ``fix``."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError as error:
        raise InputError(f"{what} {path} not found: {fix}") from error
    except OSError as error:
        raise InputError(f"{what} {path} is unreadable ({error}): {fix}") from error


class StagedFiles:
    """Several files of one directory that change together: staged first, renamed at the end.

    >>> with StagedFiles(directory) as staged:
    ...     staged.write_bytes("head.npz", weights)
    ...     staged.remove("normalizer.npz")
    ...     staged.write_bytes("head.json", manifest)      # renamed last: readers check it

    Files are renamed in the order they were staged when the block ends without an
    exception, then the removals happen (a crash in between leaves an unused extra file,
    never a manifest naming a file that is gone). On an exception nothing in
    ``directory`` changes and every temporary file is deleted.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._staged: list[tuple[Path, Path]] = []  # (temporary, final)
        self._removed: list[Path] = []

    def write_with(self, name: str, write: Callable[[Path], object]) -> None:
        """Stage ``name`` by calling ``write(temporary_path)`` (e.g. a Keras model's ``save``)."""
        final = self.directory / name
        temporary = temporary_beside(final)
        self._staged.append((temporary, final))
        write(temporary)

    def write_bytes(self, name: str, data: bytes) -> None:
        self.write_with(name, lambda path: path.write_bytes(data))

    def remove(self, name: str) -> None:
        """Delete ``name`` (if there) when the others are committed."""
        self._removed.append(self.directory / name)

    def __enter__(self) -> StagedFiles:
        self.directory.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            if exc_type is None:
                for temporary, _ in self._staged:
                    _seal(temporary)
                for temporary, final in self._staged:
                    os.replace(temporary, final)
                for path in self._removed:
                    path.unlink(missing_ok=True)
        finally:
            for temporary, _ in self._staged:
                temporary.unlink(missing_ok=True)


def write_new_file(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data``; never replaces an existing file.

    The bytes go to a temporary file beside ``path`` first, which is then
    hard-linked to ``path``: the link fails if ``path`` exists, and ``path`` only
    ever appears complete. On a file system without hard links, ``path`` is
    claimed with exclusive creation and the temporary file renamed over that claim.

    Raises:
        FileExistsError: ``path`` already exists (nothing was changed).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_beside(path)
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _default_mode())
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            raise
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # FileExistsError if taken
            os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def remove_leftovers(folder: Path) -> None:
    """Delete the temporary files an interrupted run left in ``folder`` (never valid data)."""
    for leftover in folder.glob(TEMPORARY_GLOB):
        leftover.unlink(missing_ok=True)


def check_output_folder(output: Path, output_name: str, source: Path, source_name: str, why: str) -> None:
    """Refuse an output folder inside (or equal to) a source folder, or one that is a file.

    Raises :class:`InputError` naming both parameters (``output_name``, ``source_name``: the
    caller's parameter names, in backticks) and ``why`` the place is wrong.
    """
    if output.resolve() == source.resolve() or source.resolve() in output.resolve().parents:
        raise InputError(f"{output_name} {output} is inside {source_name} {source}: {why}; pass a folder outside it")
    if output.exists() and not output.is_dir():
        raise InputError(f"{output_name} {output} is a file: pass a folder")
