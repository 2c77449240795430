"""Exceptions raised by the faceid package.

This module is the one place the package's exception classes are defined (``faceid.errors``);
other modules import them from here. Every message says what went wrong *and* what to do about it,
in library terms: a parameter is named in backticks (`` `key` ``, `` `scorer` ``), and a script that
prints the message (``error: <message>``, exit non-zero) turns each such name into its own flag
(``--key_file``, ``--scorer``): see `faceid.cli.run_reporting_errors`. No message embeds a
Python object's representation (``<_io.BytesIO object at 0x...>``): a file is named by its path.
"""

from __future__ import annotations


class FaceIdError(Exception):
    """Base class for every error the package raises on purpose: ``except FaceIdError`` catches them all."""


class InputError(FaceIdError):
    """Raised when a path, folder, file or value given by the caller is missing, empty or unusable."""


class ImageReadError(InputError):
    """Raised when a file or bytes cannot be decoded as an image (not an image, truncated, unreadable)."""


class NoFaceError(FaceIdError):
    """Raised when no face was found where one was required."""


class WeightsUnavailableError(FaceIdError):
    """Raised when pretrained backbone weights cannot be loaded or downloaded."""


class ManifestMismatchError(FaceIdError):
    """Raised when two artefacts were made by different models or settings and cannot be combined."""


class NotFittedError(FaceIdError):
    """Raised when an estimator is used before ``fit``."""


class DlibModelError(InputError):
    """Raised when a file is not a dlib DNN model this reader understands (truncated, another format...)."""


class SealError(InputError):
    """Raised when a sealed (encrypted) file or a key cannot be used; the message names the file and the fix."""


class KeyRequiredError(SealError):
    """Raised when a file or cache is encrypted and no key was given."""


class WrongKeyError(SealError):
    """Raised when a file was sealed with another key than the one given."""


class TamperedFileError(SealError):
    """Raised when a sealed file fails authentication: changed, truncated, or moved from another place."""


class PlaintextFileError(SealError):
    """Raised for a plaintext file where only encrypted ones may be (or an encrypted one among plaintext)."""


class MissingExtraError(FaceIdError):
    """Raised when a feature needs an optional dependency (a pip extra) that is not installed."""


class ClusterError(FaceIdError):
    """Raised when the Ray cluster cannot be reached, or a stage failed there for good."""


class NotFoundError(InputError):
    """Raised when a named thing (a person, a camera, an event) does not exist (HTTP 404 in `faceid serve`)."""


class ConflictError(InputError):
    """Raised when a thing to create exists already (HTTP 409 in `faceid serve`)."""


class TooLargeError(InputError):
    """Raised when an upload or an image is larger than the limit (HTTP 413 in `faceid serve`)."""
