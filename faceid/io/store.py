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
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from faceid.errors import InputError

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


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Write plain arrays as ``.npz``, atomically (nothing that needs pickle: load with :func:`load_npz`)."""
    with atomic_path(path) as temporary:
        np.savez(temporary, **arrays)


def load_npz(path: str | Path, what: str, fix: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (read without pickle); missing or corrupt: :class:`InputError`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except CORRUPT_FILE_ERRORS as error:
        raise InputError(f"{what} {path} is missing, unreadable or corrupt ({error}): {fix}") from error


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


def check_output_folder(output: Path, output_flag: str, source: Path, source_flag: str, why: str) -> None:
    """Refuse an output folder inside (or equal to) a source folder, or one that is a file.

    Raises :class:`InputError` naming both options and ``why`` the place is wrong.
    """
    if output.resolve() == source.resolve() or source.resolve() in output.resolve().parents:
        raise InputError(f"{output_flag} {output} is inside {source_flag} {source}: {why}; pass a folder outside it")
    if output.exists() and not output.is_dir():
        raise InputError(f"{output_flag} {output} is a file: pass a folder")
