"""Extraction on Ray against the local engine: images/s, and what Ray adds per run and per image.

Both engines embed the same LFW slice (whole people, in name order, until ``--images``) with
the same dlib extractor into a fresh cache, ``--repeats`` times, alternating, in this
process; the median is reported.

- **local**: :class:`~faceid.features.engine.LocalEngine`, ``--workers`` processes detecting
  while this process embeds (extract_features.py's default).
- **ray**: :class:`~faceid.features.ray_engine.RayEngine` on a local Ray instance with
  ``--cpus`` CPUs, started once before the timed runs (each run still starts its own actor
  pool, which loads the model: Ray Data's per-dataset cost).
- **ray, cold**: the same, with the engine starting and stopping the Ray instance itself
  (what one ``extract_features.py --engine ray`` call costs).
- **one person**: both engines on the first person alone: the fixed cost of a run, so that
  the per-image overhead is the difference of the slopes, not of the totals.
- **nothing new**: a second Ray run over the finished cache: no image is sent; what is left
  is the driver's per-image work (hashing each file, planning) and the manifest.

The Ray runs' driver CPU time (this process, all threads: planning, Ray Data's executor,
receiving vectors, writing files) is reported per image: it bounds how far one driver scales.

The vectors of the two engines' caches are compared (largest absolute difference).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from faceid.backbones import create_extractor, load_extractor
from faceid.benchmarks.common import print_json_lines, print_table, shared_data
from faceid.benchmarks.extract import _subset
from faceid.features.cache import FeatureCache
from faceid.features.engine import LocalEngine
from faceid.features.extract import extract_features
from faceid.features.ray_engine import RayEngine
from faceid.io.images import list_people
from faceid.settings import DEFAULTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--faces_path", type=Path, default=shared_data() / "lfw_devtrain",
                        help="folder of person folders to embed")
    parser.add_argument("--images", type=int, default=300, help="images to embed (whole people, in name order)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs of the local Ray instance")
    parser.add_argument("--workers", type=int, default=DEFAULTS.workers, help="worker processes of the local engine")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per engine (median reported)")


def _timed_extract(faces: Path, extractor, features: Path, engine) -> tuple[float, float, int]:
    """Wall seconds, this process's CPU seconds (all its threads), images embedded."""
    started, cpu = time.perf_counter(), time.process_time()
    summary = extract_features(faces, extractor, features, engine=engine, progress=False)
    return time.perf_counter() - started, time.process_time() - cpu, summary.embedded


def run(args: argparse.Namespace) -> int:
    records = []
    with tempfile.TemporaryDirectory(prefix="faceid-bench-") as workdir:
        work = Path(workdir)
        faces = _subset(args.faces_path, args.images, work / "faces")
        people = list_people(faces)
        n_images = sum(len(files) for files in people.values())
        first = next(iter(people))
        one = work / "one"
        one.mkdir()
        (one / first).symlink_to((faces / first).resolve(), target_is_directory=True)
        create_extractor("dlib").save(work / "extractor", "extractor")
        extractor = load_extractor(work / "extractor")
        local = LocalEngine(workers=args.workers)
        cold = RayEngine(work / "extractor", num_cpus=args.cpus, quiet=True)  # starts and stops its own instance
        warm = RayEngine(work / "extractor", num_cpus=args.cpus, quiet=True)  # joins the one started below

        runs = 0

        def fresh() -> Path:
            nonlocal runs
            runs += 1
            return work / f"features{runs}"

        times: dict[str, list[float]] = {"local": [], "ray": [], "local_one": [], "ray_one": []}
        embedded: dict[str, int] = {}
        driver_cpu: list[float] = []  # the Ray runs' driver: planning, hashing, Ray Data's executor, writes
        cold_seconds, _, _ = _timed_extract(faces, extractor, fresh(), cold)  # also warms the file cache
        warm.connect()  # the same local instance the engine would start, kept up for the timed runs
        try:
            caches = {}
            for _ in range(args.repeats):
                for name, engine in (("local", local), ("ray", warm)):
                    caches[name] = fresh()
                    seconds, cpu, embedded[name] = _timed_extract(faces, extractor, caches[name], engine)
                    times[name].append(seconds)
                    if name == "ray":
                        driver_cpu.append(cpu)
                    seconds, _, _ = _timed_extract(one, extractor, fresh(), engine)
                    times[f"{name}_one"].append(seconds)
            again_started = time.perf_counter()
            again = extract_features(faces, extractor, caches["ray"], engine=warm, progress=False)
            again_seconds = time.perf_counter() - again_started
        finally:
            warm.ray.shutdown()
        a, b = FeatureCache.load(caches["local"]), FeatureCache.load(caches["ray"])
        max_diff = max(float(np.abs(a.people[name].vectors - b.people[name].vectors).max(initial=0.0)) for name in a.people)
    median = {name: statistics.median(values) for name, values in times.items()}
    n_one = len(people[first])
    # Per-image cost: the slope between one person and the slice, which removes each run's fixed cost.
    slope = {name: (median[name] - median[f"{name}_one"]) / (n_images - n_one) for name in ("local", "ray")}
    for name, label in (("local", f"local ({args.workers} worker processes + embedding here)"),
                        ("ray", f"ray ({args.cpus} CPUs, instance already running)")):
        records.append({
            "bench": "ray", "engine": label, "images": n_images, "embedded": embedded[name],
            "seconds": round(median[name], 2), "img_per_s": round(n_images / median[name], 2),
            "ratio": round(median["local"] / median[name], 3),
            "one_person_s": round(median[f"{name}_one"], 2),
            "ms_per_img": round(1000 * slope[name], 2),
        })
    records[-1]["driver_cpu_ms_per_img"] = round(1000 * statistics.median(driver_cpu) / n_images, 2)
    records.append({
        "bench": "ray", "engine": "ray, cold (starts and stops its instance)", "images": n_images,
        "seconds": round(cold_seconds, 2), "img_per_s": round(n_images / cold_seconds, 2),
        "ratio": round(median["local"] / cold_seconds, 3),
    })
    records.append({
        "bench": "ray", "engine": "ray, nothing new (second run)", "images": n_images, "embedded": again.embedded,
        "seconds": round(again_seconds, 2), "driver_ms_per_img": round(1000 * again_seconds / n_images, 3),
    })
    overhead = {
        "bench": "ray", "summary": True, "images": n_images, "cpus": args.cpus, "repeats": args.repeats,
        "ray_overhead_ms_per_img": round(1000 * (slope["ray"] - slope["local"]), 2),
        "ray_fixed_cost_per_run_s": round(median["ray_one"] - median["local_one"], 2),
        "ray_start_stop_s": round(cold_seconds - median["ray"], 2),
        "max_abs_vector_difference": max_diff,
    }
    print(f"bench ray: {n_images} images ({len(people)} people) of {args.faces_path}, dlib extractor; median of "
          f"{args.repeats}; one person = {first} ({n_one} images)")
    print_table(records, ["engine", "images", "embedded", "seconds", "img_per_s", "ratio", "one_person_s",
                          "ms_per_img", "driver_cpu_ms_per_img", "driver_ms_per_img"])
    print(f"Ray adds {overhead['ray_overhead_ms_per_img']} ms per image (slope difference) and "
          f"{overhead['ray_fixed_cost_per_run_s']} s per run (actor pool, model load); starting and stopping the "
          f"instance {overhead['ray_start_stop_s']} s; largest vector difference local vs ray: {max_diff:.2e}")
    print_json_lines([*records, overhead])
    return 0
