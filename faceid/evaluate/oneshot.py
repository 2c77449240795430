"""Koch et al.'s N-way one-shot task (:func:`evaluate_oneshot`)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceid.detect.faces import FaceOptions
from faceid.errors import InputError
from faceid.evaluate.common import Evaluation, run_settings, set_up, summary_head
from faceid.evaluate.identify import folder_vectors
from faceid.evaluate.methods import build_methods
from faceid.io.sealed import Key
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % with the default ``z``)."""
    if trials <= 0:
        return 0.0, 1.0
    share = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (share + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def oneshot_correct(scores: np.ndarray) -> np.ndarray:
    """``(n_trials, way)`` scores with the own person in column 0 -> ``(n_trials,) bool``.

    Correct only when the own person scores strictly highest: a tie is a failure, as
    the task cannot be solved by a scorer that cannot tell the candidates apart.
    """
    return scores[:, 0] > scores[:, 1:].max(axis=1)


def evaluate_oneshot(
    faces_path: str | Path,
    model_path: str | Path,
    *,
    way: int = 20,
    trials: int = 1000,
    classification: str | Path | None = None,
    features: str | Path | None = None,
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
    """N-way one-shot accuracy (Koch et al. 2015), every method on the same trials.

    A trial draws ``way`` people with at least two usable images; the probe is an image
    of the first, and each of the ``way`` people contributes one *other* image. The trial
    is correct when the probe's own person scores strictly highest.

    Raises:
        InputError: fewer than ``way`` people with two usable images, or a bad option.
    """
    started = time.perf_counter()
    if way < 2 or trials < 1:
        raise InputError(f"`way` must be at least 2 and `trials` at least 1; got {way} and {trials}")
    faces_path = Path(faces_path)
    face_options = face_options or FaceOptions()
    setup = set_up(model_path, classification, features, face_options, key=key)
    vectors_by_person, images = folder_vectors(faces_path, setup, no_face, face_choice, batch_size, progress, people)
    eligible = sorted(name for name, vectors in vectors_by_person.items() if len(vectors) >= 2)
    if len(eligible) < way:
        raise InputError(
            f"{way}-way one-shot needs {way} people with 2 or more usable images; {faces_path} has "
            f"{len(eligible)}: lower `way` or add people"
        )
    rng = np.random.default_rng(seed)
    probes, supports = [], []
    for _ in range(trials):
        chosen = rng.choice(len(eligible), way, replace=False)
        own = vectors_by_person[eligible[chosen[0]]]
        probe_index, support_index = rng.choice(len(own), 2, replace=False)
        probes.append(own[probe_index])
        row = [own[support_index]]
        for person in chosen[1:]:
            candidates = vectors_by_person[eligible[person]]
            row.append(candidates[rng.integers(len(candidates))])
        supports.append(np.stack(row))
    probe_matrix = np.stack(probes)  # (trials, dim)
    support_tensor = np.stack(supports)  # (trials, way, dim)

    results: dict[str, Any] = {}
    curves: dict[str, dict[str, Any]] = {}
    for method in build_methods(setup.model):
        scores = method.pair_scores(np.repeat(probe_matrix, way, axis=0), support_tensor.reshape(trials * way, -1))
        correct = oneshot_correct(scores.reshape(trials, way))
        low, high = wilson_interval(int(correct.sum()), trials)
        results[method.name] = {
            "accuracy": float(correct.mean()),
            "ci95": [low, high],
            "correct": int(correct.sum()),
            "no_face_share": images.counts()["no_face_share"],
        }
        curves[method.name] = {"oneshot": (float(correct.mean()), low, high)}

    summary = summary_head("oneshot", setup, model_path, classification, images)
    summary.update(
        {
            "faces_path": str(faces_path),
            "only_people": people is not None,
            "way": way,
            "trials": trials,
            "chance": 1.0 / way,
            "people": len(eligible),
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
            "way": way,
            "trials": trials,
            "no_face": no_face,
            "face_choice": face_choice,
            "seed": seed,
        },
    )
    return Evaluation(summary, curves, settings)
