"""Extraction on a Ray cluster: decode, detect and align as Ray Data tasks, embed in an actor pool.

:class:`RayEngine` is an :class:`~faceid.features.engine.ExtractionEngine`:
:func:`faceid.features.extract.extract_features` plans the run on the driver (what is new
or changed, by content hash), sends only those images here, and writes every cache file
itself from the vectors that come back, exactly as with the local engine.

The Ray Data pipeline, streamed (bounded memory, whatever the number of images):

1. the paths, :data:`PATHS_PER_TASK` to a block;
2. ``map_batches(_prepare_batch)``: CPU tasks that decode, detect and align
   (:func:`~faceid.features.engine.prepare_image`, the local engine's function); a
   task whose worker process died is run again (Ray's default: up to 3 times);
3. ``map_batches(_Embedder)``: an actor pool; each actor loads the extractor once
   (its files travel with the job, so nodes need faceid installed, not the model
   folder) and embeds ``batch_size`` chips per call; a dead actor is restarted and its
   batches re-run (Ray Data's default for actor pools).

Images are read by the node that runs the task, from the absolute path the driver
sees: the enrolment folder must be on a file system every node mounts at the same
path. An image a node cannot read is reported like any unreadable file.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import faceid
from faceid.backbones import Extractor
from faceid.detect.faces import FaceCropper
from faceid.errors import ClusterError, FaceIdError  # ClusterError: importable from here too
from faceid.extras import require
from faceid.features.engine import Extracted, ExtractionEngine, prepare_image
from faceid.io.sealed import Key
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

PATHS_PER_TASK = 8  # images per detection task: small enough that a retry redoes little
# Ray's CPU accounting decides how many run at once: on 2 CPUs, two detection tasks (single-threaded
# dlib, ~40 ms an image) beside one embedding actor. The actor is the pipeline's one serial stage, so
# it runs ONNX Runtime on EMBED_THREADS threads (Ray would give it one): with one, the detection tasks
# starved it and the run was 1.4x slower (bench.py ray, 2 CPUs).
DETECT_CPUS = 0.9
EMBED_CPUS = 0.1
EMBED_THREADS = 2
CPUS_PER_ACTOR = 4  # the actor pool grows to one actor per this many cluster CPUs
ENGINES = ("local", "ray")
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's node address is 127.0.0.1


def extractor_files(model_path: str | Path) -> dict[str, bytes]:
    """The files of an extractor directory (network.py's output), to load it on another node."""
    path = Path(model_path)
    directory = path.parent if path.is_file() else path
    if not directory.is_dir():
        return {}  # load_extractor on the driver has already said what is missing
    return {entry.name: entry.read_bytes() for entry in sorted(directory.iterdir()) if entry.is_file()}


def _prepare_batch(batch: dict[str, np.ndarray], cropper: FaceCropper, key: Key | None) -> dict[str, np.ndarray]:
    """Ray task: decode, detect and align each path (a row's chip is zeros where ``reason`` says why not);
    encrypted enrolment crops open with ``key``, the driver's, sent with the task."""
    size = cropper.chip_size
    results = [prepare_image(Path(path), cropper, key) for path in batch["path"]]
    return {
        "index": np.asarray(batch["index"], dtype=np.int64),
        "chip": np.stack([np.zeros((size, size, 3), np.uint8) if r.chip is None else r.chip for r in results]),
        "n_faces": np.array([r.n_faces for r in results], dtype=np.int32),
        "reason": np.array([r.reason or "" for r in results], dtype=object),
    }


class _Embedder:
    """Ray actor: the extractor, loaded once, embeds the chips of each batch."""

    def __init__(self, files: dict[str, bytes], runtime: str, fingerprint: str, version: str, batch_size: int):
        from faceid.backbones import load_extractor

        os.environ["OMP_NUM_THREADS"] = str(EMBED_THREADS)  # this actor's process: ONNX Runtime's threads

        if version != faceid.__version__:
            raise ClusterError(f"this node has faceid {faceid.__version__}, the driver {version}: install the "
                               f"same version on every node")
        directory = tempfile.mkdtemp(prefix="faceid-extractor-")
        try:
            for name, data in files.items():
                Path(directory, name).write_bytes(data)
            self.extractor = load_extractor(directory, runtime)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        if self.extractor.fingerprint != fingerprint:
            raise ClusterError(f"the extractor loaded on this node has fingerprint {self.extractor.fingerprint}, the "
                               f"driver's {fingerprint}: install the same model files (face_recognition_models) on "
                               f"every node")
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        found = batch["reason"] == ""
        vectors = np.zeros((len(found), self.extractor.output_dim), np.float32)
        if found.any():
            vectors[found] = self.extractor.embed(batch["chip"][found], batch_size=self.batch_size)
        return {"index": batch["index"], "vector": vectors, "n_faces": batch["n_faces"], "reason": batch["reason"]}


def _last_line(error: Exception) -> str:
    """What went wrong, from a Ray error whose message ends with the remote traceback (an actor that
    died in its constructor keeps only that text): its last line, without our exception's type name."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    ours = re.fullmatch(r"faceid(?:\.\w+)+: (.*)", lines[-1])
    return ours.group(1) if ours else lines[-1]


class RayEngine(ExtractionEngine):
    """Decode, detect, align and embed on a Ray cluster; the driver (this process) writes the cache.

    Args:
        model_path: the extractor directory (network.py's output): its files are sent to the
            embedding actors, which check that they load the driver's fingerprint.
        runtime: what runs the backbone in the actors (as ``--runtime``).
        address: a running cluster (``ray://host:10001``, ``host:6379``, ``auto``); ``None``
            starts a local Ray instance with this machine's cores (stopped at the end).
        num_cpus: the CPUs of that local instance (``None``: every core).
        quiet: keep Ray's own log lines out of the terminal (errors still raise).
    """

    name = "ray"

    def __init__(self, model_path: str | Path, runtime: str = "auto", address: str | None = None,
                 num_cpus: int | None = None, quiet: bool = False):
        self.model_path = Path(model_path)
        self.runtime = runtime
        self.address = address
        self.num_cpus = num_cpus
        self.quiet = quiet
        if address is None:
            # A local instance serves this machine only: Ray's processes listen on loopback
            # (Ray reads this when imported; its workers inherit it).
            os.environ.setdefault(LOOPBACK_ENV, "0")
        self.ray = require("ray", "`engine` ray (extraction on a Ray cluster)")
        require("ray.data", "`engine` ray (extraction on a Ray cluster)")

    def extract(self, paths: Sequence[Path], cropper: FaceCropper, extractor: Extractor,
                batch_size: int = DEFAULTS.batch_size, *, key: Key | None = None) -> Iterator[list[Extracted]]:
        if not paths:
            return
        ray = self.ray
        started = self.connect(encrypted=key is not None)
        try:
            yield from self._run(list(paths), cropper, extractor, batch_size, key)
        except ray.exceptions.RayError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, FaceIdError):
                raise cause from error
            raise ClusterError(f"the Ray run failed: {_last_line(error)}") from error
        finally:
            if started:
                ray.shutdown()

    def connect(self, *, encrypted: bool = False) -> bool:
        """Join the cluster (or start a local instance) unless Ray is already up in this process;
        True when this call started it (:meth:`extract` calls it, and stops what it started).

        ``encrypted``: a key is in use (faces must not reach a disk): a local instance never spills
        objects, and a cluster's spilling is warned about.
        """
        ray = self.ray
        if ray.is_initialized():
            return False
        level = logging.ERROR if self.quiet else logging.WARNING
        if self.quiet:  # Ray's C++ core logs to stderr too; its failures still raise, and are reported
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        logs = {"logging_level": level, "log_to_driver": not self.quiet}
        try:
            if self.address:
                if encrypted:
                    logger.warning("a key is in use: faces (decoded, aligned chips) and their vectors pass through the "
                                   "Ray cluster's object store, which spills to its nodes' disks under memory "
                                   "pressure, unencrypted; run the cluster without spilling or on encrypted disks")
                ray.init(address=self.address, **logs)
            else:
                # With a key, nothing decrypted may reach a disk: the local instance never spills objects.
                system = {"automatic_object_spilling_enabled": False} if encrypted else None
                # "local": a new instance, even where another runs on this machine or $RAY_ADDRESS names one.
                ray.init(address="local", num_cpus=self.num_cpus or os.cpu_count() or 1, include_dashboard=False,
                         _system_config=system, **logs)
        except Exception as error:
            # Ray raises ConnectionError, RuntimeError, ValueError, its AuthenticationError (no token), and a
            # bare Exception when a local node does not register in time (a busy machine).
            where = self.address or "a local instance"
            raise ClusterError(f"cannot start Ray on {where} ({type(error).__name__}: {error})") from error
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # extract_features.py draws its own
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(level)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
        return True

    def _pool_size(self) -> int:
        cpus = self.ray.cluster_resources().get("CPU", 1)
        return max(1, int(cpus // CPUS_PER_ACTOR))

    def _run(self, paths: list[Path], cropper: FaceCropper, extractor: Extractor,
             batch_size: int, key: Key | None) -> Iterator[list[Extracted]]:
        ray = self.ray
        rows = [{"index": index, "path": str(path.absolute())} for index, path in enumerate(paths)]
        dataset = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / PATHS_PER_TASK))
        dataset = dataset.map_batches(
            _prepare_batch, batch_size=None, batch_format="numpy",
            fn_kwargs={"cropper": cropper, "key": key},
            num_cpus=DETECT_CPUS,  # unlike the actors' share: keeps Ray Data from fusing the two stages
        )
        embedder: dict[str, Any] = {
            "files": extractor_files(self.model_path), "runtime": self.runtime,
            "fingerprint": extractor.fingerprint, "version": faceid.__version__, "batch_size": batch_size,
        }
        dataset = dataset.map_batches(
            _Embedder, fn_constructor_kwargs=embedder, batch_size=batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=self._pool_size()), num_cpus=EMBED_CPUS,
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            yield [
                Extracted(int(index), None if reason else vector, int(n_faces), reason or None)
                for index, vector, n_faces, reason in zip(batch["index"], batch["vector"], batch["n_faces"], batch["reason"])
            ]
