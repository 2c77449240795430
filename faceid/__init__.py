"""faceid: enrol a few photos per person, then recognise them live.

A frozen backbone embeds each face once into a per-person feature cache; a
similarity decision calibrated for the people enrolled says who a new face is, or
that it is unknown. Importing the package loads no model and imports nothing
heavy: the public names below are imported on first use (PEP 562).

    >>> import faceid
    >>> fid = faceid.FaceID(features="features")     # doctest: +SKIP
    >>> fid.enrol("alice", ["alice_1.jpg"])           # doctest: +SKIP
    >>> fid.identify("group.jpg")                     # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "FaceID": "faceid.api",
    "Face": "faceid.api",
    "Verification": "faceid.api",
    "Frame": "faceid.api",
    "embed": "faceid.api",
    "load_image": "faceid.api",
    "FaceIdError": "faceid.errors",
    "InputError": "faceid.errors",
    "ImageReadError": "faceid.errors",
    "NoFaceError": "faceid.errors",
    "ManifestMismatchError": "faceid.errors",
    "NotFittedError": "faceid.errors",
    "WeightsUnavailableError": "faceid.errors",
}

__all__ = [*_EXPORTS, "errors", "__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on first use
    from faceid import errors
    from faceid.api import Face, FaceID, Frame, Verification, embed, load_image
    from faceid.errors import (
        FaceIdError,
        ImageReadError,
        InputError,
        ManifestMismatchError,
        NoFaceError,
        NotFittedError,
        WeightsUnavailableError,
    )


def __getattr__(name: str) -> Any:
    if name == "errors":
        return importlib.import_module("faceid.errors")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'faceid' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
