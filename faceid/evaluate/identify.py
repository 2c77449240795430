"""Closed- and open-set identification (:func:`evaluate_identify`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceid.detect.faces import FaceOptions
from faceid.errors import InputError
from faceid.evaluate.common import CMC_MAX_RANK, Evaluation, Setup, run_settings, set_up, summary_head
from faceid.evaluate.images import EmbeddedImages, embed_images
from faceid.evaluate.methods import build_methods
from faceid.io.images import list_people
from faceid.io.sealed import Key
from faceid.match.crossval import FPIR_POINTS
from faceid.match.decision import Decision
from faceid.match.metrics import cmc_curve, det_curve, fnir_at_fpir
from faceid.match.metrics import open_set_rates as open_set_rates_at
from faceid.match.openset import OpenSetCalibration, backbone_calibrations, check_target_fpir, default_scorer
from faceid.match.scoring import Rule, person_scores
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)


def open_set_rates(
    known_scores: np.ndarray, true_class: np.ndarray, stranger_best: np.ndarray, target_far: float
) -> tuple[float, float]:
    """Detection-and-identification rate (1 - FNIR) of the best-score rule at the threshold
    naming ``target_far`` of strangers, and that threshold (accept when ``score >= it``).

    Args:
        known_scores: ``(n_known_probes, n_people)`` per-person scores of enrolled people's probes.
        true_class: ``(n_known_probes,)`` column of each probe's person.
        stranger_best: ``(n_stranger_probes,)`` best per-person score of each stranger probe.
    """
    best, best_score = Decision(0.0).statistic(known_scores)
    fnir, threshold = fnir_at_fpir(best == true_class, best_score, stranger_best, target_far)
    return 1.0 - fnir, threshold


def _split_gallery(
    vectors_by_person: dict[str, list[np.ndarray]],
    gallery_per_person: int,
    min_images: int,
    stranger_share: float,
    max_probes: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Known people (enrolled, with probes), strangers (probes only) and distractors (people
    with too few images to have probes: enrolled only, to grow a gallery for --gallery_sizes)."""
    eligible = sorted(name for name, vectors in vectors_by_person.items() if len(vectors) >= min_images)
    n_strangers = round(stranger_share * len(eligible))
    if stranger_share > 0:
        n_strangers = max(n_strangers, 1)
    if len(eligible) - n_strangers < 2:
        raise InputError(
            f"{len(eligible)} people have at least {min_images} usable images: too few to enrol 2 or more "
            f"and hold {n_strangers} out as strangers. Add people, lower `gallery_per_person`/`min_images` "
            "or `stranger_share`"
        )
    shuffled = list(rng.permutation(eligible))
    strangers, known = sorted(shuffled[:n_strangers]), sorted(shuffled[n_strangers:])

    def capped(items: list[np.ndarray]) -> list[np.ndarray]:
        return items[:max_probes] if max_probes else items

    gallery, gallery_labels, probes, probe_labels, stranger_probes = [], [], [], [], []
    for label, name in enumerate(known):
        order = rng.permutation(len(vectors_by_person[name]))
        chosen = [vectors_by_person[name][index] for index in order]
        gallery += chosen[:gallery_per_person]
        gallery_labels += [label] * gallery_per_person
        rest = capped(chosen[gallery_per_person:])
        probes += rest
        probe_labels += [label] * len(rest)
    for name in strangers:
        order = rng.permutation(len(vectors_by_person[name]))
        stranger_probes += capped([vectors_by_person[name][index] for index in order])
    others = [name for name in vectors_by_person if name not in set(eligible) and vectors_by_person[name]]
    distractors = [
        np.stack([vectors_by_person[name][index] for index in rng.permutation(len(vectors_by_person[name]))][
            :gallery_per_person])
        for name in rng.permutation(sorted(others))
    ]
    return {
        "known": known,
        "strangers": strangers,
        "excluded": len(vectors_by_person) - len(eligible),
        "gallery": np.stack(gallery),
        "gallery_labels": np.array(gallery_labels),
        "probes": np.stack(probes),
        "probe_labels": np.array(probe_labels),
        "stranger_probes": np.stack(stranger_probes) if stranger_probes else None,
        "distractors": distractors,
    }


def _sized_gallery(split: dict[str, Any], size: int) -> dict[str, Any]:
    """The first ``min(size, known)`` known people plus distractors up to ``size`` people."""
    n_known = min(size, len(split["known"]))
    n_distractors = size - n_known
    if n_distractors > len(split["distractors"]):
        raise InputError(
            f"`gallery_sizes` {size}: {len(split['known'])} known people and {len(split['distractors'])} people "
            f"with too few images to be probed make at most {len(split['known']) + len(split['distractors'])}"
        )
    keep = split["gallery_labels"] < n_known
    extra = split["distractors"][:n_distractors]
    vectors = np.concatenate([split["gallery"][keep], *extra]) if extra else split["gallery"][keep]
    labels = np.concatenate([split["gallery_labels"][keep],
                             *[np.full(len(block), n_known + index) for index, block in enumerate(extra)]])
    probes = split["probe_labels"] < n_known
    return {"vectors": vectors, "labels": labels.astype(np.int64), "people": size,
            "probes": split["probes"][probes], "probe_labels": split["probe_labels"][probes]}


def _shipped(setup: Setup, backbone: dict[str, OpenSetCalibration]) -> tuple[str | None, Any, str]:
    """The decision the toolkit uses by default with this extractor (and model): its scorer,
    its open-set calibration (or a fixed Decision for a model saved before them), and where it came from."""
    if setup.model is not None:
        scorer = setup.model.default_scorer
        calibration = setup.model.calibrations.get(scorer) or backbone.get(scorer)
        if calibration is not None:
            return scorer, calibration, "the model's default scorer and its open-set calibration"
        return setup.model.decision.scorer, setup.model.decision, "the model's per-person decision (saved before calibrations)"
    if backbone:
        scorer = default_scorer(backbone)
        return scorer, backbone[scorer], "the backbone's calibration (evaluate.py calibrate)"
    return None, None, "no calibration for this extractor: run evaluate.py calibrate, or give a similarity model (classification)"


def _operating_point(decision: Decision, scores: np.ndarray, true_class: np.ndarray, stranger_scores: np.ndarray
                     ) -> dict[str, float]:
    best, statistic = decision.statistic(scores)
    stranger = decision.statistic(stranger_scores)[1]
    fnir, fpir = open_set_rates_at(best == true_class, statistic, stranger, decision.threshold)
    return {"threshold": decision.threshold, "fnir": fnir, "fpir": fpir}


def folder_vectors(
    faces_path: Path, setup: Setup, no_face: str, face_choice: str, batch_size: int, progress: bool,
    only: list[str] | None = None,
) -> tuple[dict[str, list[np.ndarray]], EmbeddedImages]:
    """Every usable vector of each person folder (``only``: of these people alone)."""
    people = list_people(faces_path)
    if only is not None:
        wanted = set(only)
        missing = sorted(wanted - set(people))
        if missing:
            raise InputError(f"`people` names {len(missing)} people with no folder in {faces_path} (e.g. {missing[0]})")
        people = {name: files for name, files in people.items() if name in wanted}
    keys = [(name, path.name) for name, files in people.items() for path in files]
    images = embed_images(
        keys,
        faces_path,
        setup.embedder,
        setup.cache,
        no_face=no_face,
        face_choice=face_choice,
        batch_size=batch_size,
        progress=progress,
        key=setup.key,
    )
    vectors_by_person: dict[str, list[np.ndarray]] = {name: [] for name in people}
    for key in keys:
        if key in images.vectors:
            vectors_by_person[key[0]].append(images.vectors[key])
    return vectors_by_person, images


def evaluate_identify(
    faces_path: str | Path,
    model_path: str | Path,
    *,
    gallery_per_person: int = 2,
    classification: str | Path | None = None,
    features: str | Path | None = None,
    min_images: int | None = None,
    stranger_share: float = 0.2,
    target_fpir: float = DEFAULTS.target_fpir,
    scorers: Sequence[str] | None = None,
    gallery_sizes: Sequence[int] | None = None,
    max_probes_per_person: int = 10,
    euclidean_threshold: float | None = None,
    cosine_threshold: float | None = None,
    no_face: str = "skip",
    face_choice: str = "largest",
    face_options: FaceOptions | None = None,
    batch_size: int = DEFAULTS.batch_size,
    seed: int = DEFAULTS.seed,
    people: list[str] | None = None,
    progress: bool = True,
    argv: Sequence[str] | None = None,
    key: Key | None = None,
) -> Evaluation:
    """Closed- and open-set identification on a folder of people, per scorer.

    People with at least ``min_images`` usable images (default ``gallery_per_person + 1``)
    take part; ``stranger_share`` of them are held out as strangers (never enrolled).
    Each other person enrols ``gallery_per_person`` random images; their remaining images
    (at most ``max_probes_per_person``, 0 = all) are probes. Strangers' images (same cap)
    are stranger probes. Images without a usable face are left out.

    Each scorer reports rank-1/5, FNIR at FPIR 0.1%, 1% and 10% (NIST FRVT 1:N: the share of
    known probes missed or misnamed when the threshold names that share of strangers) for the
    margin rule the toolkit decides with (and the best score alone), and, where the scorer has a
    calibration, what its gallery-aware threshold gives. ``shipped`` is the default decision
    (the model's default scorer, else the backbone's calibration). ``gallery_sizes`` repeats the
    open-set measures with galleries of those sizes: the known people plus *distractors* (people
    of the folder with fewer than ``min_images`` images, enrolled with up to
    ``gallery_per_person``), comparing the gallery-aware threshold with the one fixed for the
    smallest size.

    Raises:
        InputError: too few people with enough images, or a bad option.
    """
    started = time.perf_counter()
    if gallery_per_person < 1:
        raise InputError(f"`gallery_per_person` must be at least 1, got {gallery_per_person}")
    if not 0.0 <= stranger_share < 1.0:
        raise InputError(f"`stranger_share` must be in [0, 1), got {stranger_share}")
    check_target_fpir(target_fpir)
    min_images = gallery_per_person + 1 if min_images is None else min_images
    if min_images <= gallery_per_person:
        raise InputError(
            f"`min_images` ({min_images}) must exceed `gallery_per_person` ({gallery_per_person}): "
            "every enrolled person needs a probe"
        )
    if gallery_sizes and stranger_share == 0:
        raise InputError("`gallery_sizes` measures how many strangers are named: it needs `stranger_share` above 0")
    if gallery_sizes and min(gallery_sizes) < 1:
        raise InputError(f"`gallery_sizes` are numbers of people, at least 1; got {list(gallery_sizes)}")
    faces_path = Path(faces_path)
    model_path = Path(model_path)
    face_options = face_options or FaceOptions()
    setup = set_up(model_path, classification, features, face_options, key=key)
    vectors_by_person, images = folder_vectors(faces_path, setup, no_face, face_choice, batch_size, progress, people)
    split = _split_gallery(
        vectors_by_person,
        gallery_per_person,
        min_images,
        stranger_share,
        max_probes_per_person,
        np.random.default_rng(seed),
    )
    n_known = len(split["known"])
    methods = build_methods(setup.model, euclidean_threshold, cosine_threshold)
    if scorers:
        unknown = sorted(set(scorers) - {method.name for method in methods})
        if unknown:
            raise InputError(f"`scorers` {', '.join(unknown)}: not available here (the head needs `classification`)")
        methods = [method for method in methods if method.name in scorers]
    backbone = backbone_calibrations(setup.extractor.manifest, model_path)
    shipped_scorer, shipped_calibration, shipped_from = _shipped(setup, backbone)
    calibrations = {**backbone, **(setup.model.calibrations if setup.model is not None else {})}
    gallery_counts = np.bincount(split["gallery_labels"])
    strangers = split["stranger_probes"]

    results: dict[str, Any] = {}
    curves: dict[str, dict[str, Any]] = {}
    shipped: dict[str, Any] | None = None
    for method in methods:
        rule = method.rule if method.name == "head" else (calibrations[method.name].rule if method.name in calibrations else Rule())
        known_scores = person_scores(
            method.score_matrix(split["probes"], split["gallery"]), split["gallery_labels"], n_known, rule
        )
        cmc = cmc_curve(known_scores, split["probe_labels"], CMC_MAX_RANK)
        entry: dict[str, Any] = {
            "rank1": float(cmc[0]),
            "rank5": float(cmc[4]),
            "cmc": [float(v) for v in cmc[:10]],
            "no_face_share": images.counts()["no_face_share"],
        }
        curves[method.name] = {"cmc": cmc}
        if strangers is not None:
            stranger_scores = person_scores(method.score_matrix(strangers, split["gallery"]), split["gallery_labels"],
                                            n_known, rule)
            # Each scorer's statistic uses the margin weight its calibration chooses for this gallery
            # (none without one: the best score alone).
            calibration = calibrations.get(method.name)
            aware = calibration.decision(gallery_counts, target_fpir) if calibration is not None else None
            decide = Decision(0.0, rule, margin=aware.margin if aware is not None else 0.0)
            best, statistic = decide.statistic(known_scores)
            correct = best == split["probe_labels"]
            stranger_statistic = decide.statistic(stranger_scores)[1]
            plain_best, plain = Decision(0.0, rule).statistic(known_scores)
            plain_strangers = stranger_scores.max(axis=1)
            entry["margin_weight"] = decide.margin
            entry["fnir_at_fpir"] = {str(point): fnir_at_fpir(correct, statistic, stranger_statistic, point)[0]
                                     for point in FPIR_POINTS}
            entry["fnir_at_fpir_best_score"] = {
                str(point): fnir_at_fpir(plain_best == split["probe_labels"], plain, plain_strangers, point)[0]
                for point in FPIR_POINTS}
            dir_rate, far_threshold = open_set_rates(known_scores, split["probe_labels"], plain_strangers, target_fpir)
            entry.update({"dir_at_far": dir_rate, "threshold_at_far": far_threshold, "threshold": method.threshold,
                          "stranger_rejection_at_threshold": None, "identified_at_threshold": None})
            if method.decision is not None:
                point = _operating_point(method.decision, known_scores, split["probe_labels"], stranger_scores)
                entry["stranger_rejection_at_threshold"] = 1.0 - point["fpir"]
                entry["identified_at_threshold"] = 1.0 - point["fnir"]
            if aware is not None:
                entry["gallery_aware"] = _operating_point(aware, known_scores, split["probe_labels"], stranger_scores)
            curves[method.name]["det"] = det_curve(correct, statistic, stranger_statistic)
            if method.name == shipped_scorer and shipped_calibration is not None:
                if shipped_calibration is calibration:
                    decision = aware  # already derived for this gallery
                elif isinstance(shipped_calibration, OpenSetCalibration):
                    decision = shipped_calibration.decision(gallery_counts, target_fpir)
                else:
                    decision = shipped_calibration
                shipped = {"scorer": shipped_scorer, "target_fpir": target_fpir, "enrolled": n_known,
                           "source": shipped_from, "threshold_source": decision.source, "margin": decision.margin,
                           **_operating_point(decision, known_scores, split["probe_labels"], stranger_scores)}
                curves[method.name]["shipped"] = (shipped["fpir"], shipped["fnir"])
        results[method.name] = entry

    sized = _gallery_sizes(split, methods, calibrations, gallery_sizes, target_fpir) if gallery_sizes else None
    summary = summary_head("identify", setup, model_path, classification, images)
    summary.update(
        {
            "faces_path": str(faces_path),
            "gallery_per_person": gallery_per_person,
            "people": {
                "known": n_known,
                "strangers": len(split["strangers"]),
                "too_few_images": split["excluded"],
                "min_images": min_images,
            },
            "probes": {
                "known": len(split["probes"]),
                "strangers": 0 if strangers is None else len(strangers),
                "gallery_vectors": len(split["gallery"]),
                "max_per_person": max_probes_per_person,
            },
            "target_fpir": target_fpir,
            "target_far": target_fpir,
            "no_face_policy": no_face,
            "face_choice": face_choice,
            "methods": results,
            "shipped": shipped if shipped is not None else {"scorer": shipped_scorer, "threshold": None, "fnir": None,
                                                            "fpir": None, "source": shipped_from},
            "gallery_sizes": sized,
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    settings = run_settings(
        setup,
        model_path,
        classification,
        face_options,
        argv,
        {
            "faces_path": str(faces_path),
            "gallery_per_person": gallery_per_person,
            "stranger_share": stranger_share,
            "min_images": min_images,
            "max_probes_per_person": max_probes_per_person,
            "no_face": no_face,
            "face_choice": face_choice,
            "seed": seed,
            "target_fpir": target_fpir,
            "gallery_sizes": list(gallery_sizes or []),
        },
    )
    return Evaluation(summary, curves, settings)


def _gallery_sizes(split, methods, calibrations, sizes, target_fpir) -> dict[str, Any]:
    """Open-set results per gallery size: oracle FNIR at FPIR, and each calibrated scorer's
    gallery-aware threshold against the threshold fixed for the smallest size."""
    results: dict[str, Any] = {}
    smallest = min(sizes)
    smallest_counts = np.bincount(_sized_gallery(split, smallest)["labels"])
    # The decision set for the smallest gallery, kept as the gallery grows.
    fixed = {method.name: calibrations[method.name].decision(smallest_counts, target_fpir)
             for method in methods if method.name in calibrations}
    for size in sorted(sizes):
        gallery = _sized_gallery(split, size)
        counts = np.bincount(gallery["labels"])
        per_scorer: dict[str, Any] = {}
        for method in methods:
            calibration = calibrations.get(method.name)
            rule = method.rule if method.name == "head" else (calibration.rule if calibration else Rule())
            known = person_scores(method.score_matrix(gallery["probes"], gallery["vectors"]), gallery["labels"], size, rule)
            strangers = person_scores(method.score_matrix(split["stranger_probes"], gallery["vectors"]),
                                      gallery["labels"], size, rule)
            aware = calibration.decision(counts, target_fpir) if calibration is not None else None
            decide = Decision(0.0, rule, margin=aware.margin if aware is not None else 0.0)
            best, statistic = decide.statistic(known)
            entry: dict[str, Any] = {"margin_weight": decide.margin, "fnir_at_fpir": {
                str(point): fnir_at_fpir(best == gallery["probe_labels"], statistic, decide.statistic(strangers)[1], point)[0]
                for point in FPIR_POINTS}}
            if aware is not None:
                entry["gallery_aware"] = _operating_point(aware, known, gallery["probe_labels"], strangers)
                entry[f"fixed_at_{smallest}"] = _operating_point(fixed[method.name], known, gallery["probe_labels"],
                                                                 strangers)
            per_scorer[method.name] = entry
        results[str(size)] = {"enrolled": size, "known_with_probes": min(size, len(split["known"])),
                              "known_probes": len(gallery["probes"]), "methods": per_scorer}
    return results
