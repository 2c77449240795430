"""Extraction engines: where decoding, detection and alignment run while the backbone embeds.

An :class:`ExtractionEngine` turns image paths into :class:`Prepared` results (the
aligned chip of each image's largest face, or why there is none), **in the order
given**; :func:`faceid.features.extract.extract_features` embeds the chips and writes
the cache, whatever engine prepared them. :class:`LocalEngine` is this machine's.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceid.detect.faces import NO_FACE, FaceCropper
from faceid.errors import ImageReadError
from faceid.io.images import UNREADABLE, read_image
from faceid.io.sealed import active_key, use_key
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """What a worker sends back for one image: the chip of its largest face, or why not."""

    chip: np.ndarray | None
    n_faces: int = 0
    reason: str | None = None


def prepare_image(path: Path, cropper: FaceCropper) -> Prepared:
    """Decode, detect and align one image (runs in a worker process)."""
    try:
        image = read_image(path)
    except ImageReadError as error:
        logger.warning("skipping %s", error)
        return Prepared(chip=None, reason=UNREADABLE)
    faces = cropper.find_faces(image)
    if not faces:
        logger.info("no face in %s", path)
        return Prepared(chip=None, reason=NO_FACE)
    return Prepared(chip=cropper.chips(image, faces[:1])[0], n_faces=len(faces))


class ExtractionEngine(ABC):
    """Runs :func:`prepare_image` over many paths."""

    name: str = ""

    @abstractmethod
    def prepare(self, paths: list[Path], cropper: FaceCropper) -> Iterator[Prepared]:
        """One :class:`Prepared` per path, in the order of ``paths``."""


def _spawn_can_start() -> bool:
    """Whether spawned workers can start: they re-import ``__main__`` from its file, if it has one."""
    import sys

    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or Path(main_file).is_file()


class LocalEngine(ExtractionEngine):
    """This machine: ``workers`` spawned processes (0: this process), a bounded number of images in flight."""

    name = "local"

    def __init__(self, workers: int = DEFAULTS.workers, batch_size: int = DEFAULTS.batch_size):
        self.workers = workers
        self.batch_size = batch_size

    def prepare(self, paths: list[Path], cropper: FaceCropper) -> Iterator[Prepared]:
        workers, batch_size = self.workers, self.batch_size
        if workers > 0 and not _spawn_can_start():
            logger.info("no importable main script (stdin or interactive session): extracting in this process")
            workers = 0
        if workers <= 0:
            for path in paths:
                yield prepare_image(path, cropper)
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the parent may hold TensorFlow/ONNX Runtime threads, which fork does not copy safely.
        context = multiprocessing.get_context("spawn")
        in_flight: deque = deque()
        limit = max(4 * batch_size, 8 * workers)
        # Workers open encrypted crops with the parent's key (sent over the pool's pipe, never to disk).
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=use_key,
                                 initargs=(active_key(),)) as pool:
            try:
                for path in paths:
                    in_flight.append(pool.submit(prepare_image, path, cropper))
                    if len(in_flight) >= limit:
                        yield in_flight.popleft().result()
                while in_flight:
                    yield in_flight.popleft().result()
            finally:
                for future in in_flight:
                    future.cancel()
