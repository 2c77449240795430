"""``evaluate.py cluster``: how well faces group by person, with person folders as the truth.

Every photo under ``faces_path/<person>/`` is embedded through the ordinary feature cache
(:func:`faceid.features.extract.extract_features`: the largest face of each photo, as extraction
takes it; photos without a face are left out and counted). With ``features`` that cache is reused
and updated; the photos are *added* to it, so a cache that holds other people too keeps them.
Without it a temporary cache is used and removed.

The vectors are clustered, without their labels, by the default method
(``DEFAULTS.cluster_method``, its thresholds from the extractor's open-set calibration:
:func:`faceid.cluster.methods.merge_thresholds`) and by each other method asked for, and every
result is scored against the person folders by :func:`faceid.cluster.metrics.clustering_metrics`:
pairwise precision/recall/F (over pairs of faces put together) and BCubed precision/recall/F (per
face, averaged over faces), the numbers of clusters, people and faces. The top-level numbers are
the default method's; ``methods`` holds every method's, with its wall-clock seconds.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceid.backbones import load_extractor
from faceid.cluster.methods import METHODS, cluster_labels, merge_thresholds
from faceid.cluster.metrics import METRIC_KEYS, clustering_metrics
from faceid.detect.faces import FaceOptions
from faceid.errors import InputError
from faceid.evaluate.report import _png, _pyplot, aligned
from faceid.features.cache import FeatureCache, describe_extractor
from faceid.features.extract import extract_features
from faceid.io.images import list_people
from faceid.io.sealed import Key
from faceid.io.store import write_bytes, write_json
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

@dataclass
class ClusterEvaluation:
    """What ``evaluate.py cluster`` produced.

    Attributes:
        summary: the JSON object (printed, and written with ``json_path``).
        cluster_sizes: per method, the sizes of its clusters (for the plots).
        person_sizes: faces per person folder (the truth's cluster sizes).
    """

    summary: dict[str, Any]
    cluster_sizes: dict[str, list[int]]
    person_sizes: list[int]


def parse_methods(text: str | Sequence[str] | None) -> list[str]:
    """Method names from ``"linkage,hdbscan"`` (or a list), checked against :data:`METHODS`."""
    if text is None:
        return []
    names = [part.strip() for part in (text.split(",") if isinstance(text, str) else text) if part.strip()]
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise InputError(f"unknown clustering method(s) {', '.join(unknown)} in `methods`: choose among "
                         f"{', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def folder_vectors(faces_path: Path, extractor, features: Path, people_files: dict[str, list[Path]], *,
                   face_options: FaceOptions, workers: int, batch_size: int, progress: bool,
                   key: Key | None) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """The vectors of the listed photos through the cache at ``features``: ``(vectors (n, dim) float32,
    person of each row, counts)``. Photos are added to the cache (nothing else in it is removed)."""
    summary = extract_features(faces_path, extractor, features, face_options=face_options, batch_size=batch_size,
                               workers=workers, progress=progress, people_files=people_files, add=True, key=key)
    cache = FeatureCache.load(features, extractor.manifest, key=key)
    blocks, truth, skipped = [], [], Counter()
    for person, paths in people_files.items():
        cached = cache.people.get(person)
        if cached is None:
            continue
        listed = {path.name for path in paths}
        rows = [row for row, name in enumerate(cached.files) if name in listed]
        blocks.append(cached.vectors[rows])
        truth += [person] * len(rows)
        skipped.update(reason for name, (_, reason) in cached.skipped.items() if name in listed)
    photos = sum(len(paths) for paths in people_files.values())
    counts = {"photos": photos, "faces": len(truth), "embedded": summary.embedded,
              "from_cache": len(truth) - summary.embedded, "skipped": dict(sorted(skipped.items())),
              "several_faces": len(summary.several_faces)}
    vectors = np.concatenate(blocks).astype(np.float32) if blocks else np.zeros((0, extractor.output_dim), np.float32)
    return vectors, truth, counts


def evaluate_cluster(
    faces_path: str | Path,
    model_path: str | Path,
    *,
    features: str | Path | None = None,
    methods: Sequence[str] = (),
    people: Sequence[str] | None = None,
    min_photos: int = 1,
    face_options: FaceOptions = FaceOptions(),
    workers: int = DEFAULTS.workers,
    batch_size: int = DEFAULTS.batch_size,
    progress: bool = True,
    argv: Sequence[str] | None = None,
    key: Key | None = None,
) -> ClusterEvaluation:
    """Cluster the faces of ``faces_path``'s person folders and score each method against the folders.

    Args:
        faces_path: one sub-folder of photos per person (the truth).
        model_path: the extractor directory; the default method's thresholds come from its calibration.
        features: a feature cache of this extractor to reuse and update (``None``: a temporary one).
        methods: methods run besides the default (:data:`faceid.cluster.methods.METHODS`).
        people: only these person folders (e.g. a held-out split).
        min_photos: person folders with fewer photos are left out.
        key: the cache is encrypted with it, encrypted photos open with it (``None``: plaintext).

    Raises:
        InputError: no such folder, no person folder, fewer than 2 people with a face found, an unknown method.
    """
    faces_path = Path(faces_path)
    methods = parse_methods(methods)
    default = DEFAULTS.cluster_method
    listed = {name: files for name, files in list_people(faces_path).items() if files}
    if people is not None:
        wanted = set(people)
        missing = sorted(wanted - set(listed))
        if missing:
            logger.warning("%d of the %d people asked for have no photos in %s (e.g. %s)", len(missing), len(wanted),
                           faces_path, missing[0])
        listed = {name: files for name, files in listed.items() if name in wanted}
    chosen = {name: files for name, files in listed.items() if len(files) >= max(1, min_photos)}
    if len(chosen) < 2:
        raise InputError(f"{faces_path}: {len(chosen)} person folder(s) with at least {max(1, min_photos)} photos; "
                         "clustering is scored against person folders and needs at least 2 people: pass as `faces_path` "
                         "a folder with one sub-folder of photos per person")
    extractor = load_extractor(model_path)
    with tempfile.TemporaryDirectory(prefix="faceid-cluster-") as temporary:
        cache_dir = Path(features) if features is not None else Path(temporary) / "features"
        vectors, truth, counts = folder_vectors(faces_path, extractor, cache_dir, chosen, face_options=face_options,
                                                workers=workers, batch_size=batch_size, progress=progress, key=key)
    found = Counter(truth)
    if len(found) < 2:
        raise InputError(f"{faces_path}: faces were found for {len(found)} person(s) of {len(chosen)}: clustering is "
                         "scored against at least 2 people (try `upsample` 2 or another `detector`)")
    thresholds = merge_thresholds(extractor.manifest, Path(model_path))
    results, sizes = {}, {}
    for method in [default, *[name for name in methods if name != default]]:
        started = time.perf_counter()
        labels = cluster_labels(vectors, method, thresholds=thresholds)
        seconds = time.perf_counter() - started
        scores = clustering_metrics(labels, truth)
        cluster_sizes = sorted(Counter(labels.tolist()).values(), reverse=True)
        results[method] = {**{name: scores[name] for name in METRIC_KEYS},
                           "singletons": sum(size == 1 for size in cluster_sizes), "seconds": round(seconds, 3)}
        sizes[method] = cluster_sizes
    summary = {
        "command": "cluster",
        **results[default],
        "method": default,
        "methods": results,
        "images": counts,
        "thresholds": thresholds.as_dict(),
        "extractor": {"path": str(model_path), "backbone": extractor.name, "fingerprint": extractor.fingerprint,
                      "description": describe_extractor(extractor.manifest)},
        "feature_cache": None if features is None else str(features),
        "settings": {"faces_path": str(faces_path), "people_asked": None if people is None else len(people),
                     "people_left_out": len(listed) - len(chosen), "min_photos": min_photos,
                     "detector": face_options.detector, "upsample": face_options.effective_upsample,
                     "command_line": None if argv is None else " ".join(["evaluate.py", *argv])},
    }
    return ClusterEvaluation(summary, sizes, sorted(found.values(), reverse=True))


def text_table(summary: dict[str, Any]) -> str:
    """One row per method: the pairwise and BCubed measures, clusters, singletons, seconds."""
    images = summary["images"]
    skipped = sum(images["skipped"].values())
    head = (f"clustering {summary['faces']} faces of {summary['people']} people ({images['photos']} photos: "
            f"{images['from_cache']} vectors from the cache, {images['embedded']} embedded, {skipped} without a face "
            f"left out); default method: {summary['method']}")
    header = ["method", "pairwise F", "P", "R", "BCubed F", "P", "R", "clusters", "singletons", "seconds"]
    rows = []
    for name, row in summary["methods"].items():
        rows.append([name + (" (default)" if name == summary["method"] else ""),
                     *[f"{row[key]:.4f}" for key in METRIC_KEYS[:6]],
                     str(row["clusters"]), str(row["singletons"]), f"{row['seconds']:.2f}"])
    return head + "\n" + aligned(header, rows)


def render_plots(evaluation: ClusterEvaluation) -> dict[str, bytes]:
    """PNG bytes keyed by file name: F per method, and cluster sizes against the people's sizes."""
    plt = _pyplot()
    from matplotlib import ticker

    summary = evaluation.summary
    names = list(summary["methods"])
    plots = {}
    figure, axis = plt.subplots(figsize=(max(4.5, 1.3 * len(names) + 2), 3.8))
    positions = np.arange(len(names))
    for offset, (key, label) in zip((-0.2, 0.2), (("pairwise_f", "pairwise F"), ("bcubed_f", "BCubed F"))):
        values = [summary["methods"][name][key] for name in names]
        bars = axis.bar(positions + offset, values, width=0.4, label=label)
        axis.bar_label(bars, fmt="%.3f", fontsize=7)
    axis.set_xticks(positions, names, rotation=20)
    axis.set(ylabel="F", ylim=(0, 1.2),
             title=f"Clustering {summary['faces']} faces of {summary['people']} people")
    axis.legend(loc="upper center", ncol=2)
    plots["f_by_method.png"] = _png(figure)

    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    default = summary["method"]
    largest = max([*evaluation.person_sizes, *evaluation.cluster_sizes[default]])
    bins = np.unique(np.geomspace(1, largest + 1, num=min(20, largest + 1)).astype(int))
    axis.hist([evaluation.person_sizes, evaluation.cluster_sizes[default]], bins=bins,
              label=[f"people ({len(evaluation.person_sizes)})",
                     f"{default} clusters ({len(evaluation.cluster_sizes[default])})"])
    axis.set_xscale("log")
    axis.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    axis.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    axis.set(xlabel="faces per group", ylabel="groups", title="Cluster sizes against the people's")
    axis.legend()
    plots["cluster_sizes.png"] = _png(figure)
    return plots


def write_outputs(evaluation: ClusterEvaluation, json_path: Path | None, plots_dir: Path | None) -> list[Path]:
    """Write the JSON summary and the plots; the paths written."""
    written = []
    if json_path is not None:
        write_json(json_path, evaluation.summary)
        written.append(json_path)
    if plots_dir is not None:
        for name, data in render_plots(evaluation).items():
            write_bytes(plots_dir / name, data)
            written.append(plots_dir / name)
    return written
