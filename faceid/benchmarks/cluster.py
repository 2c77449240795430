"""Clustering time and memory at 1k-100k face vectors, with its accuracy on the synthetic truth.

How the vectors are made (printed with the results):

* **Real people first.** The vectors of a feature cache of real faces (``--features``; without it
  ``--faces_path``, LFW DevTrain by default, is embedded once into a cache in ``--work_dir`` with
  ``--model_path``, or dlib's extractor), unit-normalised, person by person in a seeded random
  order. A size below the number of real faces is that many of them.
* **Synthetic people** fill each size beyond them. A synthetic person is a real person's faces
  moved rigidly to a new centre, then unit-normalised: faces = ``c + s + (x - mean_d)`` for every
  face ``x`` of one real *donor* person ``d`` (any person of the cache, drawn at random, so the
  synthetic people have the real people's numbers of faces, singletons included). The centre ``c``
  is a random mix of the centres (means of unit vectors) of :data:`PARENTS` real people with
  :data:`PARENT_MIN_FACES` or more faces, drawn afresh for each synthetic person: ``c = m + sum_i w_i (centre_i - m)``, ``m`` the mean of
  those centres, ``w ~ N(0, 1)`` scaled to ``sum w_i^2 = 1``: such centres have the real people's
  between-person covariance (the same mean squared distance between two people), and none is a
  near copy of one real person (one weight near 1 is improbable with 6). ``s``, shared by the
  person's faces, is one real face's offset from its person's mean (scaled to a face's spread about
  the true centre) over ``sqrt(n_d)``: the error a mean of ``n_d`` faces has, which the donor's own
  offsets lack (without it a donor's single face would be the centre itself, closer to everyone).
  Within a person everything is real: every pairwise distance of the donor's faces, before the
  renormalisation. The sets are nested (each size is the first vectors of the next), the last
  person cut short.

  How real that is, on the dlib cache of LFW DevTrain (6,671 faces, 1,184 people) against 6,671
  synthetic faces (1,285 people): each face's most similar face of *another* person has cosine
  similarity 0.935 / 0.948 / 0.961 / 0.971 (median, 90th, 99th, 99.9th percentile) among the real
  faces and 0.932 / 0.944 / 0.954 / 0.963 among the synthetic ones; its most similar face of the
  *same* person 0.924 / 0.952 / 0.972 (1st, 10th percentile, median) in both. Synthetic people are,
  if anything, a little easier to tell apart than real ones at the same number of people (the real
  tail holds look-alikes and near-duplicate photos); what grows harder with size is the crowd.
  With few real people (a test's slice) the centres mix few directions and crowd far sooner.

Measured per size, each in a **fresh process** (spawned; the vectors are sent through a pipe in
4 MiB pieces into an array allocated there): the default method (``--method``) after a warm-up on
:data:`WARM_UP` vectors (imports, thread pools; at sizes up to it the growth is 0 by construction),
wall-clock seconds of :func:`faceid.cluster.methods.cluster_labels`, and memory as the growth of the process's peak
resident set (``getrusage(RUSAGE_SELF).ru_maxrss`` after the call minus before it: everything
the call allocated at its peak, NumPy, FAISS and scikit-learn alike, above what the process had
already touched: the interpreter, the libraries, the vectors themselves, reported as
``rss_before_mb``). ``--methods`` adds baselines, only at sizes up to ``--baseline_max``.
The clusters are scored against the synthetic truth (:func:`faceid.cluster.metrics.clustering_metrics`),
over all vectors and over the real people's faces alone (``real_*``: whether the synthetic crowd
pulled real people together). Numbers are printed, never judged.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np

from faceid.benchmarks.common import REPO, print_json_lines, print_table, shared_data
from faceid.errors import InputError
from faceid.features.cache import FeatureCache
from faceid.settings import DEFAULTS

# Real people mixed into each synthetic person's centre.
PARENTS = 6
# Faces a real person needs to lend its centre to synthetic people (a centre of fewer is mostly one face's noise).
PARENT_MIN_FACES = 5
# Vectors clustered once in the fresh process before the timed call.
WARM_UP = 300
# Bytes per message sending the vectors to that process.
_CHUNK = 1 << 22


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--features", type=Path,
                        help="feature cache of real faces, many people with several faces each (./run.sh demo "
                             "writes work/demo/lfw_features); default: embed --faces_path into --work_dir")
    parser.add_argument("--faces_path", type=Path, default=shared_data() / "lfw_devtrain",
                        help="person folders embedded when no --features is given")
    parser.add_argument("--model_path", type=Path,
                        help="extractor that embeds --faces_path, and whose calibration sets the default method's "
                             "thresholds (default: dlib's, made in --work_dir)")
    parser.add_argument("--work_dir", type=Path, default=REPO / "work" / "bench_cluster",
                        help="where the embedded cache (and a made extractor) are kept between runs")
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated numbers of vectors")
    parser.add_argument("--method", default=DEFAULTS.cluster_method, help="the method timed at every size")
    parser.add_argument("--methods", default="",
                        help="baselines timed too, comma-separated (e.g. chinese-whispers,hdbscan), at sizes up "
                             "to --baseline_max")
    parser.add_argument("--baseline_max", type=int, default=10000, help="largest size the baselines run at")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seeds the order of people and the synthesis")


def real_people(cache: FeatureCache) -> list[np.ndarray]:
    """Each person's unit vectors ``(n_i, dim) float32``, people with at least one face, by name."""
    people = []
    for name in sorted(cache.people):
        vectors = cache.people[name].vectors.astype(np.float32)
        if len(vectors):
            people.append(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    return people


def _deviations(people: list[np.ndarray]) -> np.ndarray:
    """Every face's offset from its person's mean, for people with 2+ faces, scaled to a face's spread
    about the person's true centre (offsets from a mean of n shrink by sqrt((n - 1) / n)): ``(m, dim)``."""
    blocks = [(person - person.mean(axis=0)) * np.sqrt(len(person) / (len(person) - 1))
              for person in people if len(person) >= 2]
    if not blocks:
        raise InputError("no real person has two faces: cannot measure how a person's faces spread")
    return np.concatenate(blocks)


def build_vectors(people: list[np.ndarray], size: int, rng: np.random.Generator,
                  parents: int = PARENTS) -> tuple[np.ndarray, np.ndarray, int]:
    """``size`` unit vectors: the real people (random order), then synthetic people (module docstring).

    Returns:
        ``(vectors (size, dim) float32, truth (size,) int64 person ids, rows of real people)``.
    """
    order = rng.permutation(len(people))
    blocks = [people[index] for index in order]
    real_rows = total = sum(len(block) for block in blocks)
    if size > real_rows:
        centres = [person.mean(axis=0) for person in people if len(person) >= PARENT_MIN_FACES]
        if len(centres) < 2:
            raise InputError(f"{len(centres)} real people have {PARENT_MIN_FACES} or more faces: too few to mix new "
                             "people from; use a larger cache")
        pool = np.stack(centres)
        parents = min(parents, len(pool))
        middle = pool.mean(axis=0)
        deviations = _deviations(people)
    while total < size:
        donor = people[rng.integers(len(people))]
        weights = rng.standard_normal(parents)
        weights /= np.linalg.norm(weights)
        centre = middle + weights @ (pool[rng.choice(len(pool), parents, replace=False)] - middle)
        # The donor's faces sit around their own mean, which misses its error (1/n of a face's spread):
        # one shared real deviation / sqrt(n) puts it back (a single face would otherwise be its centre).
        shift = deviations[rng.integers(len(deviations))] / np.sqrt(len(donor))
        faces = centre + shift + (donor - donor.mean(axis=0))
        blocks.append((faces / np.linalg.norm(faces, axis=1, keepdims=True)).astype(np.float32))
        total += len(donor)
    truth = np.concatenate([np.full(len(block), person, np.int64) for person, block in enumerate(blocks)])
    return np.concatenate(blocks)[:size], truth[:size], min(real_rows, size)


def _cluster_in_child(connection) -> None:
    """Runs in a fresh process: receive the vectors, warm up, time one clustering and its peak memory."""
    import resource
    import traceback

    try:
        from faceid.cluster.methods import cluster_labels, merge_thresholds

        request = connection.recv()
        vectors = np.empty(request["shape"], np.float32)
        received, buffer = 0, memoryview(vectors).cast("B")  # as bytes: a 2-d view counts rows
        while received < len(buffer):
            received += connection.recv_bytes_into(buffer, received)
        thresholds = merge_thresholds(request["manifest"], request["extractor_dir"])
        cluster_labels(vectors[:WARM_UP], request["method"], thresholds=thresholds)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        labels = cluster_labels(vectors, request["method"], thresholds=thresholds)
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        connection.send({"seconds": seconds, "rss_before_kb": before, "rss_peak_kb": peak})
        connection.send_bytes(np.ascontiguousarray(labels, dtype=np.int64))
    except BaseException as error:  # the parent reports it; a child never prints
        # The stack and a bounded message: an exception may carry the data (a pipe's bytes) in its text.
        connection.send({"error": "".join(traceback.format_tb(error.__traceback__))
                         + f"{type(error).__name__}: {str(error)[:300]}"})
    finally:
        connection.close()


def cluster_in_fresh_process(vectors: np.ndarray, method: str, manifest: dict[str, Any],
                             extractor_dir: Path | None) -> tuple[np.ndarray, dict[str, float]]:
    """Labels of ``vectors`` by ``method``, computed in a spawned process, and its time and memory."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=_cluster_in_child, args=(theirs,), daemon=True)
    child.start()
    theirs.close()
    try:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ours.send({"shape": vectors.shape, "method": method, "manifest": manifest, "extractor_dir": extractor_dir})
        data = memoryview(vectors).cast("B")
        for start in range(0, len(data), _CHUNK):  # in pieces: each is held whole once more on the way in
            ours.send_bytes(data[start:start + _CHUNK])
        report = ours.recv()
        if "error" in report:
            raise RuntimeError(f"clustering {len(vectors)} vectors with {method} failed in its process:\n"
                               f"{report['error']}")
        labels = np.frombuffer(ours.recv_bytes(), dtype=np.int64)
    finally:
        ours.close()
        child.join()
    return labels, {"seconds": round(report["seconds"], 3),
                    "rss_before_mb": round(report["rss_before_kb"] / 1024, 1),
                    "peak_growth_mb": round((report["rss_peak_kb"] - report["rss_before_kb"]) / 1024, 1)}


def _real_cache(args: argparse.Namespace) -> tuple[FeatureCache, Path | None]:
    """The cache of real faces, and the extractor directory whose calibration sets the thresholds."""
    if args.features is not None:
        if not (args.features / "manifest.json").is_file():
            raise InputError(f"no feature cache at {args.features}: run ./run.sh demo (it builds a dlib cache of LFW "
                             "DevTrain in work/demo/lfw_features), or leave out --features to embed --faces_path")
        cache = FeatureCache.load(args.features)
        if args.model_path is not None:
            from faceid.features.cache import check_same_extractor
            from faceid.io.store import read_json

            extractor = read_json(args.model_path / "manifest.json", "extractor manifest", "pass --model_path")
            check_same_extractor(cache.manifest["extractor"], extractor, f"feature cache {args.features}",
                                 "pass the --model_path that made it")
        return cache, args.model_path
    from faceid.backbones import create_extractor, load_extractor
    from faceid.features.extract import extract_features

    model_path = args.model_path
    if model_path is None:
        model_path = args.work_dir / "extractor"
        if not (model_path / "manifest.json").is_file():
            create_extractor("dlib").save(model_path, "extractor")
    extractor = load_extractor(model_path)
    features = args.work_dir / f"features-{extractor.fingerprint[:12]}"
    summary = extract_features(args.faces_path, extractor, features, progress=not args.quiet)
    print(f"# embedded {args.faces_path} into {features}: {summary.embedded} new, {summary.reused} reused")
    return FeatureCache.load(features, extractor.manifest), model_path


def run(args: argparse.Namespace) -> int:
    from faceid.cluster.methods import METHODS
    from faceid.cluster.metrics import clustering_metrics

    try:
        sizes = sorted({int(float(size)) for size in args.sizes.split(",") if size.strip()})
    except ValueError:
        raise InputError(f"--sizes takes whole numbers separated by commas, got {args.sizes!r}") from None
    baselines = [name.strip() for name in args.methods.split(",") if name.strip() and name.strip() != args.method]
    unknown = [name for name in [args.method, *baselines] if name not in METHODS]
    if not sizes or sizes[0] < 2 or unknown:
        raise InputError(f"--sizes must be 2 or more vectors, --method and --methods among {', '.join(METHODS)}"
                         + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    cache, extractor_dir = _real_cache(args)
    people = real_people(cache)
    started = time.perf_counter()
    vectors, truth, real_rows = build_vectors(people, sizes[-1], np.random.default_rng(args.seed))
    build_s = time.perf_counter() - started
    manifest = cache.manifest["extractor"]
    print(f"# real: {sum(len(person) for person in people)} faces of {len(people)} people from {cache.directory} "
          f"({manifest.get('backbone')}, {vectors.shape[1]}-d); synthetic people beyond them: a real person's faces "
          f"moved to a centre mixed from {PARENTS} real people's centres; built in {build_s:.1f} s")
    print(f"# each size clustered in a fresh process after a warm-up on {WARM_UP} vectors; memory: growth of peak RSS "
          "(ru_maxrss) during the call")
    records = []
    for size in sizes:
        rows = truth[:size]
        real = min(real_rows, size)
        for method in [args.method, *[name for name in baselines if size <= args.baseline_max]]:
            labels, cost = cluster_in_fresh_process(vectors[:size], method, manifest, extractor_dir)
            scores = clustering_metrics(labels, rows)
            record = {"bench": "cluster", "size": size, "method": method, "people": scores["people"],
                      "clusters": scores["clusters"], **cost,
                      "vectors_mb": round(vectors[:size].nbytes / 2**20, 1),
                      "vectors_per_s": round(size / max(cost["seconds"], 1e-9)),
                      "pairwise_f": round(scores["pairwise_f"], 4), "bcubed_f": round(scores["bcubed_f"], 4),
                      "real_faces": real}
            if real >= 2 and real < size:
                on_real = clustering_metrics(labels[:real], rows[:real])
                record.update(real_pairwise_f=round(on_real["pairwise_f"], 4),
                              real_bcubed_f=round(on_real["bcubed_f"], 4))
            records.append(record)
    print_table(records, ["size", "method", "people", "clusters", "seconds", "vectors_per_s", "rss_before_mb",
                          "peak_growth_mb", "vectors_mb", "pairwise_f", "bcubed_f", "real_pairwise_f", "real_bcubed_f"])
    print_json_lines(records)
    return 0
