"""Extraction engines: where decoding, detection, alignment and embedding run.

An :class:`ExtractionEngine` turns image paths into :class:`Extracted` results (the
vector of each image's largest face, or why there is none), in batches and in any
order; :func:`faceid.features.extract.extract_features` plans what to send and writes
the cache, whatever engine did the work. :class:`LocalEngine` is this machine's:
worker processes decode, detect and align (:meth:`LocalEngine.prepare`, in the order
given) while this process embeds the chips in backbone batches.
:class:`faceid.features.ray_engine.RayEngine` runs the same steps on a Ray cluster.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceid.backbones import Extractor
from faceid.detect.faces import NO_FACE, FaceCropper
from faceid.errors import ImageReadError
from faceid.features.embedding import ChipBatcher
from faceid.io.images import UNREADABLE, read_image
from faceid.io.sealed import Key
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """What a worker sends back for one image: the chip of its largest face, or why not."""

    chip: np.ndarray | None
    n_faces: int = 0
    reason: str | None = None


def prepare_image(path: Path, cropper: FaceCropper, key: Key | None = None) -> Prepared:
    """Decode, detect and align one image (runs in a worker process); ``key`` opens an encrypted crop."""
    try:
        image = read_image(path, key)
    except ImageReadError as error:
        logger.warning("skipping %s", error)
        return Prepared(chip=None, reason=UNREADABLE)
    faces = cropper.find_faces(image)
    if not faces:
        logger.info("no face in %s", path)
        return Prepared(chip=None, reason=NO_FACE)
    return Prepared(chip=cropper.chips(image, faces[:1])[0], n_faces=len(faces))


@dataclass(frozen=True)
class Extracted:
    """One image's result: ``paths[index]``'s vector (its largest face), or why there is none."""

    index: int
    vector: np.ndarray | None
    n_faces: int = 0
    reason: str | None = None


class ExtractionEngine(ABC):
    """Runs decode, detect, align (:func:`prepare_image`) and embed over many paths."""

    name: str = ""

    @abstractmethod
    def extract(self, paths: Sequence[Path], cropper: FaceCropper, extractor: Extractor,
                batch_size: int = DEFAULTS.batch_size, *, key: Key | None = None) -> Iterator[list[Extracted]]:
        """Every path's :class:`Extracted` exactly once, in batches, in any order.

        ``key``: what encrypted crops among ``paths`` open with (sent to the engine's own workers
        only, in memory; never written).

        The vectors are ``extractor``'s for the chip ``cropper`` cuts from each image, whatever
        the engine (equal within the runtime's float tolerance, 1e-5 for dlib on ONNX Runtime).
        """


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

    def extract(self, paths: Sequence[Path], cropper: FaceCropper, extractor: Extractor,
                batch_size: int = DEFAULTS.batch_size, *, key: Key | None = None) -> Iterator[list[Extracted]]:
        """Chips from the workers, embedded here ``batch_size`` at a time; skipped images at once."""
        done: list[Extracted] = []

        def deliver(indices: list[tuple[int, int]], vectors: np.ndarray) -> None:
            done.extend(Extracted(index, vector, n_faces) for (index, n_faces), vector in zip(indices, vectors))

        with ChipBatcher(lambda chips: extractor.embed(chips, batch_size=batch_size), deliver, batch_size) as batcher:
            for index, prepared in enumerate(self.prepare(paths, cropper, key=key)):
                if prepared.reason is not None:
                    done.append(Extracted(index, None, reason=prepared.reason))
                else:
                    batcher.add((index, prepared.n_faces), prepared.chip)
                if done:
                    yield done
                    done = []
        if done:
            yield done

    def prepare(self, paths: Sequence[Path], cropper: FaceCropper, *, key: Key | None = None) -> Iterator[Prepared]:
        """One :class:`Prepared` per path, in the order of ``paths``; ``key`` opens encrypted crops."""
        workers, batch_size = self.workers, self.batch_size
        if workers > 0 and not _spawn_can_start():
            logger.info("no importable main script (stdin or interactive session): extracting in this process")
            workers = 0
        if workers <= 0:
            for path in paths:
                yield prepare_image(path, cropper, key)
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the parent may hold TensorFlow/ONNX Runtime threads, which fork does not copy safely.
        context = multiprocessing.get_context("spawn")
        in_flight: deque = deque()
        limit = max(4 * batch_size, 8 * workers)
        # Workers open encrypted crops with the caller's key, sent with each task over the pool's
        # pipe (never to disk): a worker holds no key of its own.
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            try:
                for path in paths:
                    in_flight.append(pool.submit(prepare_image, path, cropper, key))
                    if len(in_flight) >= limit:
                        yield in_flight.popleft().result()
                while in_flight:
                    yield in_flight.popleft().result()
            finally:
                for future in in_flight:
                    future.cancel()
