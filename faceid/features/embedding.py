"""From an image to face vectors: the cropper, the backbone, and the one batching loop.

:class:`FaceEmbedder` puts a :class:`~faceid.detect.faces.FaceCropper` and an
:class:`~faceid.backbones.Extractor` together; :class:`ChipBatcher` is the one loop
that gathers aligned chips from many images and embeds them in backbone batches
(extraction, evaluation and the audit all use it), so a face is found, aligned and
embedded the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import numpy as np

from faceid.backbones import Extractor
from faceid.detect.faces import DetectedFace, FaceCropper, FaceOptions
from faceid.settings import DEFAULTS

Key = TypeVar("Key", bound=Hashable)


class FaceEmbedder:
    """Finds faces in images and embeds them with one extractor."""

    def __init__(self, extractor: Extractor, options: FaceOptions = FaceOptions()):
        self.extractor = extractor
        self.options = options
        self.cropper = FaceCropper(options, extractor.chip_size, extractor.align_padding)

    def find_faces(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        """All faces in ``image_rgb``, largest first (the whole image with ``detect=False``)."""
        return self.cropper.find_faces(image_rgb)

    def chips(self, image_rgb: np.ndarray, faces: list[DetectedFace]) -> np.ndarray:
        """Aligned chips of ``faces``: ``(n_faces, size, size, 3) uint8``."""
        return self.cropper.chips(image_rgb, faces)

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """``(n, size, size, 3) uint8`` chips -> ``(n, dim) float32`` vectors."""
        return self.extractor.embed(chips)

    def embed_faces(self, image_rgb: np.ndarray, faces: list[DetectedFace]) -> np.ndarray:
        """Vectors of ``faces`` in one backbone batch: ``(n_faces, dim) float32``."""
        return self.embed_chips(self.chips(image_rgb, faces))


class ChipBatcher(Generic[Key]):
    """Chips from many images, embedded ``batch_size`` at a time.

    ``add(key, chip)`` queues one aligned chip; when ``batch_size`` are queued (and on
    :meth:`flush`, and when a ``with`` block ends normally) they go through ``embed`` in
    one call and ``deliver(keys, vectors)`` receives them, in the order added.

    Args:
        embed: ``(n, size, size, 3) uint8`` -> ``(n, dim) float32`` (an extractor's ``embed``).
        deliver: called with the keys and their ``(n, dim)`` vectors after each batch.
        batch_size: chips per backbone call; larger amortises framework overhead.
    """

    def __init__(
        self,
        embed: Callable[[np.ndarray], np.ndarray],
        deliver: Callable[[list[Key], np.ndarray], None],
        batch_size: int = DEFAULTS.batch_size,
    ):
        self.embed = embed
        self.deliver = deliver
        self.batch_size = max(1, int(batch_size))
        self._keys: list[Key] = []
        self._chips: list[np.ndarray] = []

    def add(self, key: Key, chip: np.ndarray) -> None:
        self._keys.append(key)
        self._chips.append(chip)
        if len(self._chips) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Embed whatever is queued now."""
        if not self._chips:
            return
        keys, chips = self._keys, np.stack(self._chips)
        self._keys, self._chips = [], []
        vectors = self.embed(chips)
        self.deliver(keys, vectors)

    def __enter__(self) -> ChipBatcher[Key]:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.flush()
