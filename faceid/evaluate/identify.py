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
from faceid.match.decision import Decision
from faceid.match.metrics import (
    cmc_curve,
    threshold_at_far,
)
from faceid.match.scoring import person_scores
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)


def open_set_rates(
    known_scores: np.ndarray, true_class: np.ndarray, stranger_best: np.ndarray, target_far: float
) -> tuple[float, float]:
    """Detection-and-identification rate at the threshold accepting ``target_far`` of strangers.

    Args:
        known_scores: ``(n_known_probes, n_people)`` per-person scores of enrolled people's probes.
        true_class: ``(n_known_probes,)`` column of each probe's person.
        stranger_best: ``(n_stranger_probes,)`` best per-person score of each stranger probe.
        target_far: share of strangers that may be accepted.

    Returns:
        ``(dir, threshold)``: share of known probes whose best person is theirs *and*
        scores at least the threshold, and that threshold (accept when ``score >= it``).
    """
    threshold = threshold_at_far(stranger_best, target_far)
    decision = Decision(threshold)
    best = np.argmax(known_scores, axis=1)
    best_score = known_scores[np.arange(len(known_scores)), best]
    return float(np.mean((best == true_class) & decision.accepts(best_score))), threshold


def _open_set_curve(known_correct: np.ndarray, known_best: np.ndarray, stranger_best: np.ndarray):
    """Share of strangers accepted vs share of known probes identified, over every threshold."""
    thresholds = np.unique(np.concatenate([known_best, stranger_best]))[::-1]
    stranger_sorted = np.sort(stranger_best)
    false_alarm = (len(stranger_sorted) - np.searchsorted(stranger_sorted, thresholds, side="left")) / len(
        stranger_sorted
    )
    correct_sorted = np.sort(known_best[known_correct])
    identified = (len(correct_sorted) - np.searchsorted(correct_sorted, thresholds, side="left")) / len(known_best)
    return false_alarm, identified


def _split_gallery(
    vectors_by_person: dict[str, list[np.ndarray]],
    gallery_per_person: int,
    min_images: int,
    stranger_share: float,
    max_probes: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    eligible = sorted(name for name, vectors in vectors_by_person.items() if len(vectors) >= min_images)
    n_strangers = round(stranger_share * len(eligible))
    if stranger_share > 0:
        n_strangers = max(n_strangers, 1)
    if len(eligible) - n_strangers < 2:
        raise InputError(
            f"{len(eligible)} people have at least {min_images} usable images: too few to enrol 2 or more "
            f"and hold {n_strangers} out as strangers. Add people, lower --gallery_per_person/--min_images "
            "or --stranger_share"
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
    return {
        "known": known,
        "strangers": strangers,
        "excluded": len(vectors_by_person) - len(eligible),
        "gallery": np.stack(gallery),
        "gallery_labels": np.array(gallery_labels),
        "probes": np.stack(probes),
        "probe_labels": np.array(probe_labels),
        "stranger_probes": np.stack(stranger_probes) if stranger_probes else None,
    }


def folder_vectors(
    faces_path: Path, setup: Setup, no_face: str, face_choice: str, batch_size: int, progress: bool
) -> tuple[dict[str, list[np.ndarray]], EmbeddedImages]:
    people = list_people(faces_path)
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
    target_far: float = 0.01,
    max_probes_per_person: int = 10,
    euclidean_threshold: float | None = None,
    cosine_threshold: float | None = None,
    no_face: str = "skip",
    face_choice: str = "largest",
    face_options: FaceOptions | None = None,
    batch_size: int = DEFAULTS.batch_size,
    seed: int = DEFAULTS.seed,
    progress: bool = True,
    argv: Sequence[str] | None = None,
) -> Evaluation:
    """Closed- and open-set identification on a folder of people.

    People with at least ``min_images`` usable images (default ``gallery_per_person + 1``)
    take part; ``stranger_share`` of them are held out as strangers (never enrolled).
    Each other person enrols ``gallery_per_person`` random images; their remaining images
    (at most ``max_probes_per_person``, 0 = all) are probes. Strangers' images (same cap)
    are stranger probes. Per-person scores follow each method's rule (the model's for the
    head, ``Rule()`` otherwise). Images without a usable face are left out.

    Raises:
        InputError: too few people with enough images, or a bad option.
    """
    started = time.perf_counter()
    if gallery_per_person < 1:
        raise InputError(f"--gallery_per_person must be at least 1, got {gallery_per_person}")
    if not 0.0 <= stranger_share < 1.0:
        raise InputError(f"--stranger_share must be in [0, 1), got {stranger_share}")
    min_images = gallery_per_person + 1 if min_images is None else min_images
    if min_images <= gallery_per_person:
        raise InputError(
            f"--min_images ({min_images}) must exceed --gallery_per_person ({gallery_per_person}): "
            "every enrolled person needs a probe"
        )
    faces_path = Path(faces_path)
    face_options = face_options or FaceOptions()
    setup = set_up(model_path, classification, features, face_options)
    vectors_by_person, images = folder_vectors(faces_path, setup, no_face, face_choice, batch_size, progress)
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

    results: dict[str, Any] = {}
    curves: dict[str, dict[str, Any]] = {}
    for method in methods:
        known_scores = person_scores(
            method.score_matrix(split["probes"], split["gallery"]), split["gallery_labels"], n_known, method.rule
        )
        cmc = cmc_curve(known_scores, split["probe_labels"], CMC_MAX_RANK)
        entry: dict[str, Any] = {
            "rank1": float(cmc[0]),
            "rank5": float(cmc[4]),
            "cmc": [float(v) for v in cmc[:10]],
            "no_face_share": images.counts()["no_face_share"],
        }
        curves[method.name] = {"cmc": cmc}
        if split["stranger_probes"] is not None:
            stranger_best = person_scores(
                method.score_matrix(split["stranger_probes"], split["gallery"]),
                split["gallery_labels"],
                n_known,
                method.rule,
            ).max(axis=1)
            dir_rate, far_threshold = open_set_rates(known_scores, split["probe_labels"], stranger_best, target_far)
            best = np.argmax(known_scores, axis=1)
            best_score = known_scores[np.arange(len(known_scores)), best]
            correct = best == split["probe_labels"]
            entry.update(
                {
                    "dir_at_far": dir_rate,
                    "threshold_at_far": far_threshold,
                    "threshold": method.threshold,
                    "stranger_rejection_at_threshold": None,
                    "identified_at_threshold": None,
                }
            )
            if method.threshold is not None:
                entry["stranger_rejection_at_threshold"] = float(
                    np.mean(~method.accepts(stranger_best))
                )
                entry["identified_at_threshold"] = float(
                    np.mean(correct & method.accepts(best_score))
                )
            curves[method.name]["open_set"] = _open_set_curve(correct, best_score, stranger_best)
        results[method.name] = entry

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
                "strangers": 0 if split["stranger_probes"] is None else len(split["stranger_probes"]),
                "gallery_vectors": len(split["gallery"]),
                "max_per_person": max_probes_per_person,
            },
            "target_far": target_far,
            "no_face_policy": no_face,
            "face_choice": face_choice,
            "methods": results,
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
            "target_far": target_far,
        },
    )
    return Evaluation(summary, curves, settings)
