"""Per-face gallery search latency at 1k-100k vectors: exhaustive head against two-stage search.

How the gallery is made (printed with the results):

* **Real people.** Faces of real people come from a feature cache (``--features``, default the
  demo's dlib cache of LFW DevTrain). Every other person with more than ``--enrol`` images, up
  to ``--people`` of them, is enrolled with their first ``--enrol`` images; their remaining
  images (up to 3 each, taken round-robin) are the **probes**: real held-out faces whose
  person is in every gallery.
* **Synthetic people** fill each gallery up to its size, ``--images_per_person`` vectors each.
  A synthetic person's centre is a variance-preserving mix of two real faces of two different
  *other* people of the cache (never an enrolled person); each of their vectors is that centre
  plus a real within-person offset (one of those people's images minus their mean), or with
  ``--noise gaussian`` Gaussian noise of the same per-dimension spread. Galleries are nested:
  each is the previous one plus more synthetic people.
* **2048-d.** No face-trained 2048-d extractor is available offline (ResNet50 ImageNet weights
  need a download, and random-weight ResNet50 features do not separate people: a head trained
  on them is near chance, so "the exhaustive head's top-1" would be noise). With ``--dim 2048``
  every vector (real and synthetic) is mapped from the cache's space to 2048-d by a fixed random
  orthonormal map, which keeps every distance, and a head of the standard architecture is
  trained on the mapped vectors of the non-enrolled people (``--head_epochs``, not z-scored, as
  train.py's default; cached in ``--work_dir``). ``--dim 0`` keeps the cache's own vectors and
  needs ``--classification``.

Measured per gallery size, one face per call (the live case): ``Gallery.score_people`` latency
p50/p95 of two-stage search (``--shortlist`` people) on every probe, and of the exhaustive head
on as many probes as ``--exhaustive_pairs`` allows (it costs gallery size x probes head
evaluations); top-1 agreement of two-stage with exhaustive on those same probes; rank-1
accuracy of both on the probes' true identities; and the floor: FLOPs per face over this
machine's measured float32 matrix-multiply rate.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceid.benchmarks.common import REPO, matmul_gflops, memory_gbps, print_json_lines, print_table
from faceid.errors import InputError
from faceid.features.cache import FeatureCache, PersonFeatures
from faceid.match.decision import Decision
from faceid.match.gallery import Gallery
from faceid.match.model import SimilarityModel
from faceid.match.scoring import SCORERS
from faceid.match.search import BACKENDS, ShortlistIndex
from faceid.settings import DEFAULTS

# Probes per enrolled person at most: spreads the probes over many people.
MAX_PROBES_PER_PERSON = 3
# Exhaustive calls at each size, at least, even when --exhaustive_pairs allows fewer.
MIN_EXHAUSTIVE_PROBES = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--features", type=Path, required=True,
                        help="feature cache of real faces, many people with several images each "
                             "(./run.sh demo writes work/demo/lfw_features)")
    parser.add_argument("--classification", type=Path, default=None,
                        help="similarity model for the cache's own vectors (needed with --dim 0); "
                             "with --dim D a head is trained on the mapped vectors instead")
    parser.add_argument("--dim", type=int, default=2048,
                        help="map the vectors to this many dimensions (2048 = ResNet50's size); 0 = as cached")
    parser.add_argument("--scorer", choices=SCORERS, default="head",
                        help="what the gallery scores with: the head (the costly case this measures), or a metric "
                             "scorer (the backbone alone: one matrix product)")
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated gallery sizes in vectors")
    parser.add_argument("--probes", type=int, default=200,
                        help="real probe faces timed through two-stage search (more = tighter percentiles)")
    parser.add_argument("--exhaustive_pairs", type=float, default=2e6,
                        help="head evaluations allowed to the exhaustive path per gallery size: it is timed and "
                             "compared on min(probes, this / size) probes (at least 10); 2e7 covers 200 probes at 100k")
    parser.add_argument("--shortlist", type=int, default=DEFAULTS.shortlist, help="people kept by the first stage")
    parser.add_argument("--search_dims", type=int, default=DEFAULTS.search_dims,
                        help="PCA dimensions of the first stage (0 = the vectors' own)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help=f"first-stage engine; auto = NumPy below {DEFAULTS.faiss_min_vectors} vectors, FAISS above")
    parser.add_argument("--people", type=int, default=100, help="real people enrolled in every gallery")
    parser.add_argument("--enrol", type=int, default=3, help="images enrolled per real person (the rest are probes)")
    parser.add_argument("--images_per_person", type=int, default=5, help="vectors per synthetic person")
    parser.add_argument("--noise", choices=("residual", "gaussian"), default="residual",
                        help="a synthetic person's images: their centre plus real within-person offsets (an image "
                             "minus its person's mean, from other people) or Gaussian noise of the same per-dimension spread")
    parser.add_argument("--head_epochs", type=int, default=8, help="epochs of the head trained for --dim D")
    parser.add_argument("--work_dir", type=Path, default=REPO / "work" / "bench_match",
                        help="where the head trained for --dim D is kept between runs")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seeds people, noise, the map and the head")


@dataclass
class RealFaces:
    """The cache split for the benchmark."""

    enrolled: np.ndarray  # (n_enrolled, dim) vectors of the real enrolled people
    enrolled_names: np.ndarray  # (n_enrolled,) their person names
    probes: np.ndarray  # (n_probes, dim) held-out images of the same people
    probe_names: np.ndarray  # (n_probes,)
    background: np.ndarray  # (n_background, dim) every other person's vectors
    background_labels: np.ndarray  # (n_background,) int


def split_real_faces(cache: FeatureCache, people: int, enrol: int, probes: int) -> RealFaces:
    """Enrol every other person with more than ``enrol`` images; the rest of the cache is background."""
    names = sorted(cache.people)
    eligible = [name for name in names if len(cache.people[name].vectors) > enrol]
    chosen = eligible[::2][:people]
    if len(chosen) < 2:
        raise InputError(
            f"{cache.directory} has {len(eligible)} people with more than {enrol} images: "
            "the benchmark needs real probes of enrolled people; use a larger cache or lower --enrol"
        )
    # Round-robin over people (each one's first held-out image, then the second, ...).
    held_out = [(rank, name) for name in chosen
                for rank in range(min(MAX_PROBES_PER_PERSON, len(cache.people[name].vectors) - enrol))]
    held_out = sorted(held_out, key=lambda item: (item[0], chosen.index(item[1])))[:probes]
    background_names = [name for name in names if name not in set(chosen)]
    if not background_names:
        raise InputError(f"{cache.directory} has no people left after enrolling: use a larger cache or fewer --people")
    return RealFaces(
        enrolled=np.concatenate([cache.people[name].vectors[:enrol] for name in chosen]),
        enrolled_names=np.concatenate([[name] * enrol for name in chosen]),
        probes=np.stack([cache.people[name].vectors[enrol + rank] for rank, name in held_out]),
        probe_names=np.array([name for _, name in held_out]),
        background=np.concatenate([cache.people[name].vectors for name in background_names]),
        background_labels=np.concatenate(
            [np.full(len(cache.people[name].vectors), index) for index, name in enumerate(background_names)]
        ),
    )


def within_person_deviations(vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each image's offset from its person's mean, for people with 2+ images: ``(n, dim)``."""
    deviations = []
    for person in np.unique(labels):
        rows = vectors[labels == person]
        if len(rows) >= 2:
            # Unbiased: deviations from a mean of n images shrink by sqrt((n - 1) / n).
            deviations.append((rows - rows.mean(axis=0)) * math.sqrt(len(rows) / (len(rows) - 1)))
    if not deviations:
        raise InputError("no background person has two images: cannot measure the within-person spread")
    return np.concatenate(deviations).astype(np.float32)


def synthetic_people(
    seeds: np.ndarray, seed_labels: np.ndarray, deviations: np.ndarray, n_people: int, per_person: int,
    rng: np.random.Generator, noise: str = "residual",
) -> np.ndarray:
    """``(n_people * per_person, dim)`` vectors of synthetic people, person by person.

    Centre: ``mean + (a (s1 - mean) + (1 - a) (s2 - mean)) / sqrt(a^2 + (1 - a)^2)`` for two seed
    faces of different people and ``a ~ U(0, 1)``, which keeps the seeds' variance; vectors:
    centre + ``N(0, spread^2)`` per dimension.
    """
    mean = seeds.mean(axis=0)
    first = rng.integers(0, len(seeds), n_people)
    second = rng.integers(0, len(seeds), n_people)
    same = seed_labels[first] == seed_labels[second]
    while same.any() and len(np.unique(seed_labels)) > 1:
        second[same] = rng.integers(0, len(seeds), int(same.sum()))
        same = seed_labels[first] == seed_labels[second]
    share = rng.uniform(0.0, 1.0, (n_people, 1)).astype(np.float32)
    centres = mean + (share * (seeds[first] - mean) + (1 - share) * (seeds[second] - mean)) / np.sqrt(
        share**2 + (1 - share) ** 2
    )
    if noise == "gaussian":
        offsets = rng.standard_normal((n_people, per_person, seeds.shape[1]), dtype=np.float32) * deviations.std(axis=0)
    else:
        offsets = deviations[rng.integers(0, len(deviations), (n_people, per_person))]
    return (centres[:, None, :] + offsets).reshape(-1, seeds.shape[1]).astype(np.float32)


def orthonormal_map(source_dim: int, dim: int, seed: int) -> np.ndarray:
    """``(source_dim, dim)`` with orthonormal rows: ``x @ map`` keeps every distance and inner product."""
    if dim < source_dim:
        raise InputError(f"--dim {dim} is smaller than the cached vectors' {source_dim}: pass 0 or at least {source_dim}")
    basis, _ = np.linalg.qr(np.random.default_rng(seed + 1).standard_normal((dim, source_dim)))
    return np.ascontiguousarray(basis.T, dtype=np.float32)


def trained_head(cache: FeatureCache, mapping: np.ndarray, background_names: set[str], args) -> tuple[SimilarityModel, dict]:
    """A head trained on the mapped vectors of the background people, cached in ``--work_dir``."""
    from faceid.train.trainer import TrainOptions, train_similarity

    mapping_digest = hashlib.sha256(mapping.tobytes()).hexdigest()[:12]
    key = hashlib.sha256(
        f"{cache.content_digest()}|{sorted(background_names)}|{mapping_digest}|{args.head_epochs}|{args.seed}|raw".encode()
    ).hexdigest()[:16]
    directory = args.work_dir / f"head-{mapping.shape[1]}d-{key}"
    extractor = dict(cache.manifest["extractor"])
    extractor.update(
        output_dim=int(mapping.shape[1]),
        fingerprint=f"{cache.fingerprint}-orthonormal{mapping.shape[1]}-{mapping_digest}",
        mapped_to=f"{mapping.shape[1]}-d by a random orthonormal map (seed {args.seed})",
    )
    if (directory / "head.json").exists():
        model = SimilarityModel.load(directory)
        return model, {"trained": f"loaded from {directory}"}
    people = {
        name: PersonFeatures(name, person.vectors @ mapping, person.files, person.hashes)
        for name, person in cache.people.items() if name in background_names
    }
    mapped = FeatureCache(cache.directory, {**cache.manifest, "extractor": extractor}, people)
    started = time.perf_counter()
    model, report = train_similarity(
        mapped, None, TrainOptions(epochs=args.head_epochs, normalize=False, seed=args.seed),
        progress=not args.quiet,
    )
    model.save(directory)
    return model, {
        "trained": f"{args.head_epochs} epochs in {time.perf_counter() - started:.0f} s, saved to {directory}",
        "val_auc": round(report["val_auc"], 4),
        "calibration_rank1": round(report["calibration"]["head"]["rank1"], 4),
    }


def head_flops(head) -> int:
    """FLOPs of one head evaluation (multiply-adds x 2, the |a - b| and activations left out)."""
    if head is None:
        return 0
    return int(sum(2 * kernel.shape[0] * kernel.shape[1] for kernel in head.kernels))


def run(args: argparse.Namespace) -> int:
    sizes = sorted({int(float(size)) for size in args.sizes.split(",") if size.strip()})
    if not sizes or sizes[0] < 1 or args.probes < 1 or args.images_per_person < 1 or args.enrol < 1:
        raise InputError("--sizes, --probes, --images_per_person and --enrol must be positive")
    if not (args.features / "manifest.json").is_file():
        raise InputError(
            f"no feature cache at {args.features}: run ./run.sh demo (it builds this dlib cache of LFW DevTrain), "
            "or pass --features DIR, any cache of many people with several images each"
        )
    cache = FeatureCache.load(args.features)
    real = split_real_faces(cache, args.people, args.enrol, args.probes)
    source_dim = real.enrolled.shape[1]
    if sizes[0] < len(real.enrolled):
        raise InputError(f"the smallest gallery ({sizes[0]}) cannot hold the {len(real.enrolled)} real enrolled vectors")
    rng = np.random.default_rng(args.seed)
    deviations = within_person_deviations(real.background, real.background_labels)
    spread = deviations.std(axis=0)
    n_synthetic = math.ceil((sizes[-1] - len(real.enrolled)) / args.images_per_person)
    started = time.perf_counter()
    vectors = np.concatenate([
        real.enrolled,
        synthetic_people(real.background, real.background_labels, deviations, n_synthetic, args.images_per_person, rng,
                         args.noise),
    ])
    names = np.concatenate([real.enrolled_names, np.repeat([f"synthetic-{i:06d}" for i in range(n_synthetic)],
                                                           args.images_per_person)])
    probes = real.probes

    background_names = set(cache.people) - set(real.enrolled_names)
    head_info: dict = {}
    if args.dim and args.dim != source_dim:
        mapping = orthonormal_map(source_dim, args.dim, args.seed)
        vectors, probes = vectors @ mapping, probes @ mapping
        model, head_info = trained_head(cache, mapping, background_names, args)
    else:
        if args.classification is None:
            raise InputError("--dim 0 scores the cached vectors as they are: pass --classification DIR, "
                             "the similarity model trained on them (train.py)")
        model = SimilarityModel.load(args.classification)
        model.check_extractor(cache.manifest["extractor"], f"feature cache {args.features}")
        head_info = {"trained": f"loaded from {args.classification}"}
    dim = vectors.shape[1]
    build_s = time.perf_counter() - started

    gflops, gbps = matmul_gflops("numpy", size=2048, repeats=5), memory_gbps()
    per_head = head_flops(model.head)
    search_dims = args.search_dims if 0 < args.search_dims < dim else dim
    print(f"# real: {len(real.enrolled)} vectors of {len(set(real.enrolled_names))} people enrolled from "
          f"{args.features} ({cache.manifest['extractor'].get('backbone')}, {source_dim}-d); "
          f"{len(probes)} real probes (their held-out images)")
    print(f"# synthetic: {n_synthetic} people x {args.images_per_person} vectors around real faces of "
          f"{len(background_names)} other people: centre = mix of two of their faces, images = centre + "
          + ("real within-person offsets" if args.noise == "residual" else "Gaussian noise")
          + f" (spread {float(np.sqrt(np.mean(spread ** 2))):.4f} rms/dim); built in {build_s:.1f} s")
    print(f"# vectors: {dim}-d" + (f" (orthonormal map from {source_dim}-d: distances kept)" if dim != source_dim else "")
          + f"; head {model.head.input_dim}->{list(model.head.architecture.hidden_units)}->1, "
          f"{per_head / 1e6:.2f} MFLOP per vector, {head_info}")
    print(f"# machine: {gflops:.0f} GFLOP/s float32 matmul (NumPy 2048^3), {gbps:.0f} GB/s read; "
          f"two-stage: shortlist {args.shortlist} people, stage 1 in {search_dims} dims")

    records, rows, stage1_rows = [], [], []
    for size in sizes:
        records.append(_measure_size(size, vectors[:size], names[:size], probes, real.probe_names, model, args,
                                     search_dims, per_head, gflops, gbps))
        record = records[-1]
        rows.append({
            "gallery": size, "people": record["people"], "backend": record["backend"],
            "p50_ms": record["p50_ms"], "p95_ms": record["p95_ms"], "floor_ms": record["floor_ms"],
            "exh_p50_ms": record["exhaustive_p50_ms"], "exh_p95_ms": record["exhaustive_p95_ms"],
            "exh_floor_ms": record["exhaustive_floor_ms"], "speedup": record["speedup"],
            "agree": f"{record['top1_agreement']:.4f} ({record['agreement_probes']})",
            "rank1": f"{record['rank1']:.3f}/{record['exhaustive_rank1']:.3f}",
        })
        for backend, stage1 in record["stage1"].items():
            stage1_rows.append({"gallery": size, "stage 1": backend, "p50_ms": stage1["p50_ms"],
                                "agree": stage1["top1_agreement"], "build_s": stage1["build_s"] or record["fit_s"],
                                "note": f"IVF {stage1['lists']} lists, nprobe {stage1['nprobe']}" if backend == "faiss"
                                else "exact scan"})
    print()
    print_table(rows, list(rows[0]))
    print("# exh = exhaustive head over every vector (the reference); agree = two-stage top-1 == exhaustive top-1 "
          "(on N probes); rank1 = two-stage/exhaustive accuracy on those probes; floor = FLOPs / matmul rate")
    if stage1_rows:
        print()
        print_table(stage1_rows, list(stage1_rows[0]))
        print("# stage 1 alone, per face, on every probe; agree = share of the N probes above whose exhaustive top-1 "
              "it shortlists (the two-stage agreement that backend would give)")
    last = records[-1]
    if last["backend"] != "exhaustive":
        print(f"# floor at {last['gallery']}: stage 1 {last['stage1_mflop']} MFLOP (project the face, scan "
              f"{last['gallery']} x {search_dims}) + head on {last['stage2_vectors']} shortlisted vectors "
              f"{last['stage2_mflop']} MFLOP = {last['stage1_mflop'] + last['stage2_mflop']:.0f} MFLOP / "
              f"{gflops:.0f} GFLOP/s = {last['floor_ms']} ms; an exact scan also reads {last['gallery']} x "
              f"{search_dims} x 4 B = {last['gallery'] * search_dims * 4 / 1e6:.0f} MB at {gbps:.0f} GB/s = "
              f"{last['stage1_memory_ms']} ms")
    print_json_lines(records)
    return 0


def _measure_size(size, vectors, names, probes, probe_names, model, args, search_dims, per_head, gflops, gbps) -> dict:
    # Speed does not depend on the threshold: a metric scorer keeps the model's rule with a given one.
    decision = model.decision if args.scorer == "head" else Decision.for_rule(model.rule, 0.0, args.scorer)
    exhaustive = Gallery(head=model.head, normalizer=model.normalizer, decision=decision)
    exhaustive.fit(vectors, names)
    two_stage = Gallery(head=model.head, normalizer=model.normalizer, decision=decision,
                        shortlist=args.shortlist, search_dims=args.search_dims, search_backend=args.backend)
    started = time.perf_counter()
    two_stage.fit(vectors, names)
    fit_s = time.perf_counter() - started
    truth = np.searchsorted(exhaustive.classes_, probe_names)

    def timed_top1(gallery: Gallery, faces: np.ndarray) -> tuple[list[float], np.ndarray]:
        gallery.score_people(faces[:1])  # warm-up: first-call allocations and thread start-up
        milliseconds, best = [], []
        for face in faces:
            started = time.perf_counter()
            scores = gallery.score_people(face[None])
            milliseconds.append((time.perf_counter() - started) * 1e3)
            best.append(int(scores[0].argmax()))
        return milliseconds, np.array(best)

    two_stage_ms, two_stage_top1 = timed_top1(two_stage, probes)
    n_exhaustive = int(min(len(probes), max(MIN_EXHAUSTIVE_PROBES, args.exhaustive_pairs // size)))
    exhaustive_ms, exhaustive_top1 = timed_top1(exhaustive, probes[:n_exhaustive])
    shortlisted = two_stage.index_ is not None
    stage1 = _stage1_backends(two_stage, vectors, probes, exhaustive_top1, args) if shortlisted else {}
    stage2_vectors = (float(np.mean([two_stage.index_.counts_[row[row >= 0]].sum()
                                     for row in two_stage.shortlist_people(probes[:20])]))
                      if shortlisted else size)
    # Stage 1: project the face, then one multiply-add per (vector, dimension); stage 2: the head.
    stage1_flops = (2 * vectors.shape[1] * search_dims + 2 * size * search_dims) if shortlisted else 0
    floor_flops = stage1_flops + stage2_vectors * per_head
    return {
        "bench": "match",
        "gallery": size,
        "dim": int(vectors.shape[1]),
        "people": len(exhaustive.classes_),
        "shortlist": int(args.shortlist),
        "backend": two_stage.index_.backend_ if shortlisted else "exhaustive",
        "search_dims": int(search_dims),
        "p50_ms": round(float(np.percentile(two_stage_ms, 50)), 3),
        "p95_ms": round(float(np.percentile(two_stage_ms, 95)), 3),
        "exhaustive_p50_ms": round(float(np.percentile(exhaustive_ms, 50)), 1),
        "exhaustive_p95_ms": round(float(np.percentile(exhaustive_ms, 95)), 1),
        "speedup": round(float(np.percentile(exhaustive_ms, 50) / np.percentile(two_stage_ms, 50)), 1),
        "top1_agreement": round(float(np.mean(two_stage_top1[:n_exhaustive] == exhaustive_top1)), 4),
        "agreement_probes": n_exhaustive,
        "probes": len(probes),
        "rank1": round(float(np.mean(two_stage_top1[:n_exhaustive] == truth[:n_exhaustive])), 4),
        "exhaustive_rank1": round(float(np.mean(exhaustive_top1 == truth[:n_exhaustive])), 4),
        "rank1_all_probes": round(float(np.mean(two_stage_top1 == truth)), 4),
        "stage2_vectors": round(stage2_vectors, 1),
        "stage1_mflop": round(stage1_flops / 1e6, 1),
        "stage2_mflop": round(stage2_vectors * per_head / 1e6, 1),
        "floor_ms": round(floor_flops / (gflops * 1e9) * 1e3, 3),
        "stage1_memory_ms": round(size * search_dims * 4 / (gbps * 1e9) * 1e3, 3) if shortlisted else 0.0,
        "exhaustive_floor_ms": round(size * per_head / (gflops * 1e9) * 1e3, 1),
        "matmul_gflops": round(gflops, 1),
        "fit_s": round(fit_s, 2),
        "stage1": stage1,
    }


def _stage1_backends(two_stage: Gallery, vectors, probes, exhaustive_top1, args) -> dict:
    """First stage alone with each backend: p50 per face, build time, and the share of faces whose
    exhaustive top-1 it shortlists (= two-stage top-1 agreement, the shortlisted scores being exact)."""
    normalised = two_stage._normalised(vectors)
    queries = two_stage._normalised(probes)
    results = {}
    for backend in ("numpy", "faiss"):
        if backend == two_stage.index_.backend_:
            index, build_s = two_stage.index_, None
        else:
            started = time.perf_counter()
            index = ShortlistIndex(dims=args.search_dims, backend=backend, top_k=two_stage.rule_.top_k).fit(
                normalised, two_stage.labels_
            )
            build_s = round(time.perf_counter() - started, 2)
            if index.backend_ != backend:  # faiss-cpu missing: nothing to compare
                continue
        index.shortlist(queries[:1], args.shortlist)
        milliseconds, found = [], []
        for query in queries:
            started = time.perf_counter()
            found.append(index.shortlist(query[None], args.shortlist)[0])
            milliseconds.append((time.perf_counter() - started) * 1e3)
        kept = [top1 in row for top1, row in zip(exhaustive_top1, found)]
        results[backend] = {"p50_ms": round(float(np.percentile(milliseconds, 50)), 3),
                            "top1_agreement": round(float(np.mean(kept)), 4), "build_s": build_s}
        if backend == "faiss":
            results[backend]["nprobe"] = int(index.index_.nprobe)
            results[backend]["lists"] = int(index.index_.nlist)
    return results
