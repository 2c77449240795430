"""What encryption at rest costs: extraction, and loading a 100k-vector gallery, plaintext against encrypted.

(a) **Extraction**: ``extract_features`` of the same LFW photos into a fresh plaintext cache and a
    fresh encrypted one (dlib backbone, its defaults), alternating, ``--repeats`` times each; the
    difference is the sealing of each person file (and the hashing of the manifest's table).
(b) **Loading a gallery**: a cache of ``--vectors`` vectors (``--dim``-d, ``--per_person`` per person:
    real layout, random unit vectors: loading does not depend on their values), written once
    plaintext and once encrypted, opened with :meth:`FeatureCache.load` (the hash table checked,
    every file decrypted and authenticated) and stacked with ``matrix()``: what test.py does before
    the first frame. Median of ``--repeats`` loads, file cache warm (both read the same bytes).

The baseline is the plaintext run in the same process; the ratio is encrypted / plaintext.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from faceid.benchmarks.common import print_json_lines, print_table, shared_data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--faces_path", type=Path, help="enrolment folder to extract (default: LFW DevTrain people)")
    parser.add_argument("--images", type=int, default=200, help="images extracted per run (the first people's)")
    parser.add_argument("--vectors", type=int, default=100_000, help="vectors in the loaded gallery")
    parser.add_argument("--dim", type=int, default=128, help="vector size (128: dlib; 2048: ResNet50)")
    parser.add_argument("--per_person", type=int, default=10, help="vectors per person file")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each, alternating")


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def _extraction(args: argparse.Namespace, scratch: Path, key) -> dict:
    import shutil

    from faceid.backbones import create_extractor
    from faceid.features.extract import extract_features
    from faceid.io.images import list_people

    source = args.faces_path or shared_data() / "lfw_devtrain"
    people, count = {}, 0
    for person, files in list_people(source).items():
        if count >= args.images:
            break
        people[person] = files[: args.images - count]
        count += len(people[person])
    extractor = create_extractor("dlib")
    times: dict[str, list[float]] = {"plaintext": [], "encrypted": []}
    for repeat in range(args.repeats + 1):  # the first round warms the workers' imports and the model
        for mode in times:
            target = scratch / f"extract_{mode}"
            shutil.rmtree(target, ignore_errors=True)
            started = time.perf_counter()
            extract_features(source, extractor, target, progress=False, people_files=people,
                             key=key if mode == "encrypted" else None)
            if repeat:
                times[mode].append(time.perf_counter() - started)
    plain, encrypted = _median_ms(times["plaintext"]), _median_ms(times["encrypted"])
    return {"benchmark": "encryption", "what": "extract", "images": count, "people": len(people),
            "plaintext_ms": plain, "encrypted_ms": encrypted, "overhead_ms": round(encrypted - plain, 1),
            "overhead_ms_per_image": round((encrypted - plain) / count, 3), "ratio": round(encrypted / plain, 3)}


def _gallery(args: argparse.Namespace, scratch: Path, key) -> dict:
    from faceid.features.cache import FeatureCache, PersonFeatures, cache_manifest, write_manifest

    rng = np.random.default_rng(0)
    people = max(1, args.vectors // args.per_person)
    extractor = {"backbone": "synthetic", "fingerprint": "benchmark", "output_dim": args.dim}
    times: dict[str, list[float]] = {"plaintext": [], "encrypted": []}
    sizes = {}
    for mode in times:
        directory = scratch / f"gallery_{mode}"
        mode_key = key if mode == "encrypted" else None
        rng = np.random.default_rng(0)
        counts = {}
        for index in range(people):
            vectors = rng.standard_normal((args.per_person, args.dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            files = [f"{index:06d}_{row:02d}.jpg" for row in range(args.per_person)]
            name = f"person_{index:06d}"
            PersonFeatures(name, vectors, files, [f"{index:058d}{row:06d}" for row in range(args.per_person)]).save(
                directory / "people" / f"{name}.npz", "benchmark", key=mode_key)
            counts[name] = args.per_person
        write_manifest(directory, cache_manifest(extractor, counts), mode_key)
        sizes[mode] = sum(path.stat().st_size for path in (directory / "people").iterdir())
    loaded = {}
    for _ in range(args.repeats + 1):
        for mode in times:
            started = time.perf_counter()
            vectors, _, _ = FeatureCache.load(scratch / f"gallery_{mode}", key=key if mode == "encrypted" else None).matrix()
            times[mode].append(time.perf_counter() - started)
            loaded[mode] = vectors
    if not np.array_equal(loaded["plaintext"], loaded["encrypted"]):
        raise AssertionError("the encrypted gallery loaded other vectors than the plaintext one")
    plain, encrypted = _median_ms(times["plaintext"][1:]), _median_ms(times["encrypted"][1:])
    return {"benchmark": "encryption", "what": "load_gallery", "vectors": people * args.per_person, "dim": args.dim,
            "person_files": people, "plaintext_ms": plain, "encrypted_ms": encrypted,
            "overhead_ms": round(encrypted - plain, 1), "ratio": round(encrypted / plain, 3),
            "plaintext_mb": round(sizes["plaintext"] / 1e6, 1), "encrypted_mb": round(sizes["encrypted"] / 1e6, 1)}


def run(args: argparse.Namespace) -> int:
    from faceid.io import sealed

    key = sealed.new_key()
    with tempfile.TemporaryDirectory() as scratch:
        records = [_gallery(args, Path(scratch), key), _extraction(args, Path(scratch), key)]
    print_table(records, ["what", "vectors", "images", "plaintext_ms", "encrypted_ms", "overhead_ms", "ratio"])
    print_json_lines(records)
    return 0
