"""Reading images and walking enrolment folders: the one copy of that logic.

Images are RGB ``uint8`` arrays of shape ``(height, width, 3)`` throughout the
package; OpenCV's BGR frames are converted once, where they are read
(:mod:`faceid.io.video`) or written (:func:`encode_png`, :mod:`faceid.io.writers`).
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import numpy as np

from faceid.errors import ImageReadError, InputError
from faceid.io.sealed import Key
from faceid.io.store import open_private

# Why a file gave no image: the reason every report (extraction, evaluation, audit) uses.
UNREADABLE = "unreadable or not an image"


def read_image(path: str | Path, key: Key | None = None) -> np.ndarray:
    """Decode an image file into ``(height, width, 3) uint8`` RGB.

    EXIF orientation is applied (phone photos are often stored sideways) and
    greyscale or palette images are expanded to three channels.  Anything that is
    not a complete, decodable image raises :class:`ImageReadError`. ``key``: the key
    an encrypted crop was sealed with (:func:`image_bytes`).
    """
    path = Path(path)
    return decode_image(image_bytes(path, key), str(path))


def decode_image(data: bytes, source: str = "image bytes") -> np.ndarray:
    """Decode an encoded image (PNG, JPEG, ...) into ``(height, width, 3) uint8`` RGB, as :func:`read_image`.

    ``source`` names the image in messages (its path, or ``"image bytes"``).

    Raises:
        ImageReadError: empty, not an image, truncated, or no usable pixels; the message names
            ``source`` (never the in-memory buffer Pillow read from).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageReadError(f"{source}: not a readable image (empty: 0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            # load() forces a full decode: a truncated JPEG fails here, not later.
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError as error:
        # Pillow's message names the BytesIO it read from ("<_io.BytesIO object at 0x...>"): not the user's file.
        raise ImageReadError(f"{source}: not a readable image (not in any image format Pillow decodes)") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{source}: not a readable image ({_without_object_reprs(error)})") from error
    if rgb.ndim != 3 or rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise ImageReadError(f"{source}: image has no usable pixels (shape {rgb.shape})")
    return rgb


def _without_object_reprs(error: BaseException) -> str:
    """A library's error message without Python object representations (``<... object at 0x...>``)."""
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the image", str(error)) or type(error).__name__


def image_bytes(path: str | Path, key: Key | None = None) -> bytes:
    """An image file's content: decrypted with ``key`` when it is an encrypted crop (:mod:`faceid.io.sealed`).

    Raises:
        ImageReadError: no such file, or unreadable.
        SealError: encrypted, and no key / the wrong key / changed since it was written (fatal:
            never passed off as "not an image", which the cache would remember).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise ImageReadError(f"{path}: no such file") from error
    except OSError as error:
        raise ImageReadError(f"{path}: not a readable image ({error})") from error
    return open_private(data, path, "an enrolment folder", key=key)


def image_sha256(path: str | Path, key: Key | None = None) -> str:
    """SHA-256 of an image's content (of the plaintext, for an encrypted crop, opened with ``key``:
    re-encrypting it with a new key, which changes every byte on disk, does not make it new to the
    feature cache)."""
    return hashlib.sha256(image_bytes(path, key)).hexdigest()


def encode_jpeg(image_bgr: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of a BGR image (what OpenCV draws on) at ``quality`` (1-100): the service's face crops and
    live views."""
    import cv2

    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(image_bgr), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise InputError(f"OpenCV could not encode a {image_bgr.shape} image as JPEG")
    return encoded.tobytes()


def encode_png(image_rgb: np.ndarray) -> bytes:
    """PNG bytes of an RGB image (lossless: what enrolment saves)."""
    import cv2

    image_bgr = cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image_bgr)
    if not ok:
        raise InputError(f"OpenCV could not encode a {image_rgb.shape} image as PNG")
    return encoded.tobytes()


def list_image_files(folder: Path) -> list[Path]:
    """Files of one person's folder, sorted by name; hidden files are ignored.

    Every regular file is returned, not only known image suffixes, so that a
    stray non-image is *reported* by the caller instead of silently ignored.
    """
    return sorted(
        path for path in folder.iterdir() if path.is_file() and not path.name.startswith(".")
    )


def list_people(faces_root: str | Path) -> dict[str, list[Path]]:
    """Map each person (sub-folder of ``faces_root``) to their files, sorted by name.

    Raises:
        InputError: the folder is missing, is not a folder, or holds no person folder.
    """
    faces_root = Path(faces_root)
    if not faces_root.exists():
        raise InputError(f"faces folder {faces_root} does not exist: pass `faces_root`, a folder with one sub-folder "
                         "per person")
    if not faces_root.is_dir():
        raise InputError(f"{faces_root} is not a folder: pass `faces_root`, a folder with one sub-folder per person")
    people = {
        folder.name: list_image_files(folder)
        for folder in sorted(faces_root.iterdir())
        if folder.is_dir() and not folder.name.startswith(".")
    }
    if not people:
        raise InputError(
            f"{faces_root} has no person folders: expected {faces_root}/<person>/<image>, "
            "e.g. built with capture.py or selfies2face.py"
        )
    return people


# The person name of photos lying directly in a photo folder (not in a person sub-folder).
FLAT = "_flat"


def list_photos(folder: str | Path, parameter: str) -> dict[str, list[Path]]:
    """``{person: files}`` of a folder of photos that is flat, one sub-folder per person, or both:
    flat files under :data:`FLAT` (retrieval galleries and queries, photo2sketch.py, synthetic pairs).
    ``parameter``: how messages name the folder, the caller's parameter in backticks (`` "`gallery`" ``).

    Raises:
        InputError: not a folder, no photo in it, or a sub-folder named :data:`FLAT`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{parameter} {folder} is not a folder: pass a folder of photos (flat, or one sub-folder per "
                         "person)")
    people: dict[str, list[Path]] = {}
    flat = list_image_files(folder)
    if flat:
        people[FLAT] = flat
    for child in sorted(folder.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            if child.name == FLAT:
                raise InputError(f"{parameter} {folder}: a sub-folder may not be named {FLAT!r} (the name of its flat "
                                 "photos)")
            files = list_image_files(child)
            if files:
                people[child.name] = files
    if not people:
        raise InputError(f"{parameter} {folder} holds no photos")
    return people


# What keys.py encrypts in an enrolment folder (other files are left as they are).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm", ".ppm"})


def reseal_images(folder: str | Path, old, new) -> dict[str, int]:
    """Encrypt (``old`` ``None``), re-key or decrypt (``new`` ``None``) every image under ``folder``
    (person folders, capture.py's ``frames/``), each file atomically; files already in the new
    state are skipped, so an interrupted run resumes. Returns ``{"rewritten": n, "already": m}``."""
    from faceid.io.store import TEMPORARY_GLOB, reseal_file

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"`folder` {folder} is not a folder")
    counts = {"rewritten": 0, "already": 0}
    for path in sorted(folder.rglob("*")):
        if (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.match(TEMPORARY_GLOB)
                and not any(part.startswith(".") for part in path.relative_to(folder).parts)):
            counts["rewritten" if reseal_file(path, old, new, "") else "already"] += 1
    return counts
