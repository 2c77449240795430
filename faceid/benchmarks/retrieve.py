"""Per-sketch search latency of retrieve.py at gallery sizes up to 100k photos, against the naive scan.

A model fitted on the CUHK pairs (``--model_path``, else fitted here in seconds) embeds the real
sketches and photos; the gallery is the real photos plus synthetic distractor vectors (real photo
vectors with their dimensions shuffled per row: the same length and spread, no identity) up to each
size. Per sketch, ours: :func:`faceid.match.retrieval.top_matches` on the gallery's unit vectors
(normalised once at load, scanned in blocks, top-k kept); the baseline: the naive path of scoring
with :func:`faceid.match.scoring.pairwise_scores` (normalises the gallery for every query) and sorting
every score. Both must give the same top-1 for every sketch; query embedding is timed apart.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from faceid.benchmarks.common import latency_stats, print_json_lines, print_table, shared_data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs_path", type=Path, help="sketch/photo pairs (default: the shared CUHK training pairs)")
    parser.add_argument("--model_path", type=Path, help="extractor directory (default: fit the HOG model on the pairs)")
    parser.add_argument("--sizes", default="1000,10000,100000", help="gallery sizes, comma-separated")
    parser.add_argument("--queries", type=int, default=20, help="sketches timed per size")
    parser.add_argument("--top", type=int, default=10, help="candidates per sketch")


def run(args: argparse.Namespace) -> int:
    from faceid.backbones import load_extractor
    from faceid.detect.faces import FaceCropper, FaceOptions
    from faceid.match.retrieval import top_matches
    from faceid.match.scoring import pairwise_scores, unit_vectors
    from faceid.retrieve.gallery import gallery_side, query_side
    from faceid.train.cross_domain import HogOptions, train_hog
    from faceid.train.siamese_data import load_domain_pairs

    pairs = args.pairs_path or shared_data() / "cuhk_train"
    faces = load_domain_pairs(pairs, ("sketches", "photos"))
    with tempfile.TemporaryDirectory() as scratch:
        model_path = args.model_path
        if model_path is None:
            model_path = Path(scratch) / "model"
            train_hog(faces, model_path, HogOptions(), FaceOptions(), workers=0, progress=False)
        extractor = load_extractor(model_path)
        cropper = FaceCropper(FaceOptions(), extractor.chip_size, extractor.align_padding)
        chips = {side: np.stack([cropper.largest_chip(faces.paths[row]) for row in np.flatnonzero(faces.domains == side)])
                 for side in (0, 1)}
    started = time.perf_counter()
    sketches = query_side(extractor).embed(chips[0][:args.queries])
    embed_ms = (time.perf_counter() - started) * 1000 / len(sketches)
    photos = gallery_side(extractor).embed(chips[1])
    rng = np.random.default_rng(0)
    rows = []
    for size in [int(part) for part in args.sizes.split(",")]:
        filler = photos[rng.integers(0, len(photos), max(0, size - len(photos)))]
        filler = np.take_along_axis(filler, rng.random(filler.shape).argsort(axis=1), axis=1)
        raw = np.concatenate([photos, filler])[:size]
        gallery = unit_vectors(raw)
        queries = unit_vectors(sketches)
        ours, naive, agree = [], [], 0
        for query in queries:
            started = time.perf_counter()
            best, _ = top_matches(query[None], gallery, args.top)
            ours.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            order = np.argsort(-pairwise_scores(query[None], raw, scorer="cosine")[0])[:args.top]
            naive.append((time.perf_counter() - started) * 1000)
            agree += int(best[0, 0] == order[0])
        mine, base = latency_stats(ours), latency_stats(naive)
        rows.append({"gallery": size, "dim": int(gallery.shape[1]), "ours_p50_ms": mine["p50_ms"],
                     "ours_p95_ms": mine["p95_ms"], "naive_p50_ms": base["p50_ms"],
                     "speedup": round(base["mean_ms"] / mine["mean_ms"], 1), "same_top1": f"{agree}/{len(queries)}",
                     "embed_ms_per_sketch": round(embed_ms, 2), "gallery_mb": round(gallery.nbytes / 2**20)})
    print_table(rows, list(rows[0]))
    print_json_lines(rows)
    return 0
