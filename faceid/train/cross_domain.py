"""Cross-domain training (sketches -> photos): the HOG extractor's fit, synthetic pairs, and the
person-disjoint cross-validation every train_siamese.py method is compared by.

``train_siamese.py --pairs_path DIR --domains sketches photos`` with no ``--init`` fits the HOG
extractor (:mod:`faceid.backbones.hog`): what 5-fold cross-validation on the CUHK training people
chose over frozen and fine-tuned dlib networks (README: Sketch -> photo retrieval). ``--cross_validate
K`` runs any method (``--init hog|dlib|koch|resnet50`` with its options) K times, each time trained
on the other folds' people only, and scores sketch -> photo retrieval on the held-out people, with
frozen dlib measured on the same people beside it.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceid.backbones.hog import (
    HogExtractor,
    descriptor_dim,
    descriptors,
    domain_means,
    hog_manifest,
    project,
    projection_digest,
)
from faceid.detect.faces import FaceCropper
from faceid.errors import InputError
from faceid.extras import require
from faceid.io.manifest import library_versions
from faceid.io.sealed import Key
from faceid.io.store import write_json
from faceid.match.retrieval import retrieval_metrics
from faceid.match.scoring import pairwise_scores
from faceid.train.siamese_data import ChipSet, FaceSet, prepare_chips, split_faceset, synthetic_pairs

logger = logging.getLogger(__name__)

# The HOG extractor's chip: dlib's aligned 150-px chip with its 0.25 margin (hair line and jaw
# are in it); 12-px cells, 9 orientation bins -> 11 x 11 blocks x 36 = 4,356 dimensions. Chosen by
# cross-validation on the CUHK training people (finer cells and tighter crops did worse).
HOG_CHIP = 150
HOG_PADDING = 0.25
HOG_CELL = 12
HOG_BINS = 9
TRAINING_DIR = "training"
CROSSVAL_DIR = "crossval"
CROSSVAL_FILE = "crossval.json"


@dataclass(frozen=True)
class HogOptions:
    cell: int = HOG_CELL
    bins: int = HOG_BINS
    dims: int = 0  # PCA components; 0 keeps the centred descriptor whole
    synthetic: Path | None = None  # photos to turn into synthetic sketch-photo pairs (PCA only)
    synthetic_limit: int = 2000
    val_people: float = 0.2
    seed: int = 0

    def check(self) -> None:
        if self.cell < 2 or HOG_CHIP // self.cell < 2:
            raise InputError(f"`cell` {self.cell}: choose 2 to {HOG_CHIP // 2} pixels")
        if self.dims < 0:
            raise InputError(f"`dims` {self.dims} must be 0 (whole descriptor) or positive")
        if self.synthetic is not None and self.dims == 0:
            raise InputError("`synthetic` pairs only shape the PCA: give `dims` too (with `dims` 0 the whole "
                             "descriptor is kept and synthetic pairs change nothing)")


def descriptors_of(chips: np.ndarray, options: HogOptions) -> np.ndarray:
    return descriptors(chips, options.cell, options.bins)


def paired_rows(faces: FaceSet) -> np.ndarray:
    """Rows of people who still have an image on both sides (after faces were found)."""
    if faces.domains is None:
        raise InputError("`init` hog matches two domains (sketches with photos): use a folder of pairs in two domains "
                         "(`pairs_path`, `domains`)")
    both = [label for label in np.unique(faces.labels)
            if len(np.unique(faces.domains[faces.labels == label])) == 2]
    rows = np.flatnonzero(np.isin(faces.labels, both))
    if len(both) < 4:
        raise InputError(f"only {len(both)} people have a face found on both sides ({faces.domain_names}): "
                         "at least 4 are needed to fit and check the projection")
    return rows


def synthetic_descriptors(folder: Path, cropper: FaceCropper, chips_dir: Path, options: HogOptions, workers: int,
                          progress: bool, key: Key | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors of synthetic sketch-photo pairs (:func:`faceid.train.siamese_data.synthetic_pairs`):
    ``(descriptors, domains)``, domain 0 the sketches."""
    sketch_chips, photo_chips = synthetic_pairs(folder, cropper, chips_dir, options.synthetic_limit, options.seed,
                                                workers, progress, key=key)
    descriptors = np.concatenate([descriptors_of(sketch_chips, options), descriptors_of(photo_chips, options)])
    return descriptors, np.repeat([0, 1], len(photo_chips))


def fit_hog(descriptors: np.ndarray, domains: np.ndarray, options: HogOptions,
            synthetic: tuple[np.ndarray, np.ndarray] | None) -> dict[str, np.ndarray]:
    """The projection from real pairs; synthetic pairs (centred on their own means, which are not
    the real domains') add samples to the PCA only."""
    projection = {"means": domain_means(descriptors, domains)}
    if not options.dims:
        return projection
    centred = descriptors - projection["means"][domains]
    if synthetic is not None:
        own = domain_means(*synthetic)
        centred = np.concatenate([centred, synthetic[0] - own[synthetic[1]]])
    return {**projection, **_pca(centred, options)}


def _pca(centred: np.ndarray, options: HogOptions) -> dict[str, np.ndarray]:
    PCA = require("sklearn.decomposition", "`dims` (the PCA of a HOG sketch model)").PCA

    if options.dims >= min(centred.shape):
        raise InputError(f"`dims` {options.dims} needs more than {options.dims} training images (have "
                         f"{len(centred)}): lower `dims`, add `synthetic` photos, or use 0 for the whole descriptor")
    pca = PCA(n_components=options.dims, random_state=options.seed).fit(centred)
    return {"mean": pca.mean_.astype(np.float32), "components": pca.components_.astype(np.float32)}


def pair_retrieval(query: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray,
                   gallery_labels: np.ndarray) -> dict[str, Any]:
    """Sketch -> photo retrieval metrics of vectors already embedded on their own side (cosine)."""
    scores = pairwise_scores(query, gallery, scorer="cosine")
    return retrieval_metrics(scores, query_labels[:, None] == gallery_labels[None, :])


def hog_extractor(projection: dict[str, np.ndarray], faces: FaceSet, options: HogOptions,
                  fields: dict[str, Any]) -> HogExtractor:
    output_dim = options.dims or descriptor_dim(HOG_CHIP, options.cell, options.bins)
    domains = list(faces.domain_names or ())
    manifest = hog_manifest({
        "input_size": HOG_CHIP, "align_padding": HOG_PADDING, "cell": options.cell, "bins": options.bins,
        "dims": options.dims, "output_dim": output_dim, "domains": domains,
        # HOG reads luminance only: both sides are greyscale by construction.
        "domain_color": {name: "grey" for name in domains},
        "weights_sha256": projection_digest(projection), **fields,
    })
    return HogExtractor(manifest, projection)


def train_hog(faces: FaceSet, output: Path, options: HogOptions, face_options, workers: int,
              progress: bool, synthetic_chips: Path | None = None, *, key: Key | None = None) -> dict[str, Any]:
    """Fit the HOG extractor on ``faces`` (a pairs layout) and write it to ``output``; returns the report.

    The projection is fitted on the training people and checked on the held-out ones (``report.json``:
    ``val``, against ``start``, the same descriptors with no learned centring), then fitted again on
    every person, which is the extractor written (nothing else is chosen on the held-out people).
    ``synthetic_chips``: where the synthetic photos' chips are kept (default ``output/training/synthetic``;
    cross-validation shares one folder between its folds). ``key``: the chips are sealed with it
    (:func:`faceid.train.siamese_data.prepare_chips`).
    """
    options.check()
    started = time.perf_counter()
    output = Path(output)
    cropper = FaceCropper(face_options, HOG_CHIP, HOG_PADDING)
    chipset = prepare_chips(faces, cropper, output / TRAINING_DIR, workers, progress, key=key)
    rows = paired_rows(chipset.faces)
    usable = chipset.faces.subset(rows)
    descriptors = descriptors_of(np.asarray(chipset.chips)[rows], options)
    domains, labels = usable.domains, usable.labels
    chips_dir = synthetic_chips or output / TRAINING_DIR / "synthetic"
    synthetic = (synthetic_descriptors(options.synthetic, cropper, chips_dir, options, workers, progress, key)
                 if options.synthetic is not None else None)

    train_rows, val_rows = split_faceset(usable, options.val_people, options.seed)
    fold = fit_hog(descriptors[train_rows], domains[train_rows], options, synthetic)
    val = _held_out(descriptors[val_rows], domains[val_rows], labels[val_rows], fold)
    start = _held_out(descriptors[val_rows], domains[val_rows], labels[val_rows],
                      {"means": np.zeros((2, descriptors.shape[1]), dtype=np.float32)})
    projection = fit_hog(descriptors, domains, options, synthetic)
    people = len(np.unique(labels))
    extractor = hog_extractor(projection, usable, options, {
        "seed": options.seed,
        "trained": {"layout": usable.layout, "people": people, "images": len(usable),
                    "synthetic_pairs": 0 if synthetic is None else len(synthetic[0]) // 2},
        "versions": library_versions(["numpy", "scikit-learn"]),
    })
    extractor.save(output, "hog")
    report = {
        "method": "hog",
        "val": val, "start": start,
        "settings": {**asdict(options), "synthetic": None if options.synthetic is None else str(options.synthetic),
                     "chip": HOG_CHIP, "padding": HOG_PADDING},
        "people": {"fitted_on": people, "check_train": len(np.unique(labels[train_rows])),
                   "check_val": len(np.unique(labels[val_rows]))},
        "images": {"used": len(usable), "skipped": chipset.skipped, "unpaired": len(chipset.faces) - len(usable)},
        "extractor_fingerprint": extractor.fingerprint,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(output / "report.json", report)
    return report


def _held_out(descriptors: np.ndarray, domains: np.ndarray, labels: np.ndarray,
              projection: dict[str, np.ndarray]) -> dict[str, Any]:
    query, gallery = domains == 0, domains == 1
    return pair_retrieval(project(descriptors[query], projection, 0), labels[query],
                          project(descriptors[gallery], projection, 1), labels[gallery])


# ---------------------------------------------------------------- cross-validation


def person_folds(labels: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """``folds`` disjoint groups of people (their label values), shuffled by ``seed``."""
    people = np.unique(labels)
    if folds < 2 or folds > len(people) // 2:
        raise InputError(f"`folds` {folds}: choose 2 to {len(people) // 2} folds for {len(people)} people")
    return np.array_split(np.random.default_rng(seed).permutation(people), folds)


def cross_validate(faces: FaceSet, output: Path, folds: int, seed: int, train_fold, face_options, workers: int,
                   progress: bool, *, key: Key | None = None) -> dict[str, Any]:
    """Train on all folds but one, score retrieval on the held-out people, for every fold.

    ``train_fold(faces, directory)`` trains one model (the method under test) into ``directory``.
    Each fold reports retrieval against the held-out people's photos, and against every photo (the
    held-out people's plus the training people's, which makes a gallery as large as the data);
    frozen dlib is measured on the same held-out images. Every image is found and aligned once (per chip
    shape), each fold's model embeds it once. Folds already trained are reused. ``key``: the chips
    are sealed with it (``train_fold`` is given its own).
    """
    from faceid.backbones.registry import create_extractor, load_extractor

    if faces.domains is None:
        raise InputError("`cross_validate` scores sketch -> photo retrieval: use a folder of pairs in two domains "
                         "(`pairs_path`, `domains`)")
    started = time.perf_counter()
    output = Path(output) / CROSSVAL_DIR
    results: dict[str, list[dict[str, Any]]] = {"method": [], "method_all_photos": [], "frozen_dlib": [],
                                                "frozen_dlib_all_photos": []}
    names = faces.domain_names or ("A", "B")
    # Every image is found and aligned once per chip shape; frozen dlib embeds them once.
    chip_sets: dict[tuple[int, float], tuple[np.ndarray, FaceSet]] = {}

    def chips_for(extractor) -> tuple[np.ndarray, FaceSet]:
        shape = (extractor.chip_size, extractor.align_padding)
        if shape not in chip_sets:
            chip_sets[shape] = _chips(faces, extractor, output / f"chips_{shape[0]}_{shape[1]}", face_options, workers,
                                      key)
        return chip_sets[shape]

    dlib = create_extractor("dlib")
    dlib_chips, dlib_kept = chips_for(dlib)
    dlib_vectors = dlib.embed(dlib_chips)
    seconds = []
    for index, held_people in enumerate(person_folds(faces.labels, folds, seed)):
        folder = output / f"fold{index}"
        fold_started = time.perf_counter()
        if not (folder / "report.json").is_file():
            train_fold(faces.subset(np.flatnonzero(~np.isin(faces.labels, held_people))), folder)
        seconds.append(round(time.perf_counter() - fold_started, 1))
        extractor = load_extractor(folder)
        chips, kept = chips_for(extractor)
        query = np.isin(kept.labels, held_people) & (kept.domains == 0)
        photos = kept.domains == 1
        q = extractor.for_domain(names[0]).embed(chips[query])
        every = extractor.for_domain(names[1]).embed(chips[photos])
        _score_fold(results, "method", q, kept.labels[query], every, kept.labels[photos], held_people)
        dquery = np.isin(dlib_kept.labels, held_people) & (dlib_kept.domains == 0)
        dphotos = dlib_kept.domains == 1
        _score_fold(results, "frozen_dlib", dlib_vectors[dquery], dlib_kept.labels[dquery], dlib_vectors[dphotos],
                    dlib_kept.labels[dphotos], held_people)
        if progress:
            print(f"fold {index + 1}/{folds}: rank-1 {results['method'][-1]['rank1']:.3f} "
                  f"(frozen dlib {results['frozen_dlib'][-1]['rank1']:.3f})", file=sys.stderr, flush=True)
    summary = {name: pooled(parts) for name, parts in results.items()}
    summary.update({"folds": folds, "seed": seed, "people": len(np.unique(faces.labels)),
                    "per_fold": results, "train_seconds_per_fold": seconds,
                    "seconds": round(time.perf_counter() - started, 1)})
    write_json(output.parent / CROSSVAL_FILE, summary)
    return summary


def _score_fold(results: dict[str, list[dict[str, Any]]], name: str, query: np.ndarray, query_labels: np.ndarray,
                photos: np.ndarray, photo_labels: np.ndarray, held_people: np.ndarray) -> None:
    """One fold's retrieval against the held-out people's photos (``name``) and every photo (``name_all_photos``)."""
    held = np.isin(photo_labels, held_people)
    results[name].append(pair_retrieval(query, query_labels, photos[held], photo_labels[held]))
    results[f"{name}_all_photos"].append(pair_retrieval(query, query_labels, photos, photo_labels))


def _chips(faces: FaceSet, extractor, folder: Path, face_options, workers: int,
           key: Key | None) -> tuple[np.ndarray, FaceSet]:
    chipset: ChipSet = prepare_chips(faces, FaceCropper(face_options, extractor.chip_size, extractor.align_padding),
                                     folder, workers, progress=False, key=key)
    return np.asarray(chipset.chips), chipset.faces


def pooled(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold results combined as if one run: rates weighted by each fold's queries."""
    weights = np.array([part["queries"] for part in parts], dtype=np.float64)
    total = weights.sum()
    result: dict[str, Any] = {key: float(np.dot(weights, [part[key] for part in parts]) / total)
                              for key in ("rank1", "rank5", "rank10", "map")}
    result["cmc"] = (weights[:, None] * np.array([part["cmc"] for part in parts])).sum(0).tolist()
    result["cmc"] = [value / total for value in result["cmc"]]
    result["queries"] = int(total)
    result["gallery_sizes"] = [part["gallery"] for part in parts]
    return result
