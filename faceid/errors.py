"""Exceptions raised by the faceid package.

Every message says what went wrong *and* what to do about it; the scripts print
``error: <message>`` and exit non-zero, so the message is all the user sees.
"""

from __future__ import annotations


class FaceIdError(Exception):
    """Base class for every error the package raises on purpose."""


class InputError(FaceIdError):
    """A path, folder or file given by the user is missing, empty or unusable."""


class ImageReadError(InputError):
    """A file could not be decoded as an image (not an image, truncated, unreadable)."""


class NoFaceError(FaceIdError):
    """No face was found where one was required."""


class WeightsUnavailableError(FaceIdError):
    """Pretrained backbone weights could not be loaded or downloaded."""


class ManifestMismatchError(FaceIdError):
    """Two artefacts were made by different models or settings and cannot be combined."""


class NotFittedError(FaceIdError):
    """An estimator was used before ``fit``."""
