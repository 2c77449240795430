"""Open-set identification measured person-disjoint, cross-validated: how the decision rules,
the scorers and the gallery-aware threshold do on people no calibration saw.

:func:`cross_validate_open_set` cuts the people into folds. For each fold:

* **calibration**: every other fold's people (:func:`faceid.match.openset.calibrate_open_set`);
* **strangers**: half of the fold's people, those with too few vectors to be known first (at
  most ``probes_per_person`` probes each), never enrolled;
* **known people**: the other half's people with more than ``photos`` vectors: ``photos``
  random ones enrolled, the rest (at most ``probes_per_person``) are probes;
* **gallery of N people**: the known people plus *distractors*, other folds' people enrolled
  with up to ``photos`` vectors, to reach ``N`` (a synthetic gallery: the distractors bring no
  probes, they only give strangers and known probes more people to be mistaken for).

Probes of every fold are pooled per (scorer, N) and reported as FNIR (known probes missed or
misnamed) at FPIR (strangers named) for each margin weight of the statistic
``best + w * (best - second)``, and for cohort-normalised scores (``znorm``), at an oracle threshold (the strangers' own quantile: the rule's
quality), and at calibrated thresholds (what a user gets): the gallery-aware decision (its
margin weight chosen by the calibration), the gallery-aware threshold of the best score alone,
and the per-person threshold (strangers against one person). train.py runs it on its held-out people to pick
the default scorer; ``evaluate.py openset`` on a whole feature cache.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from faceid.errors import InputError
from faceid.match.decision import Decision
from faceid.match.metrics import fnir_at_fpir, open_set_rates
from faceid.match.openset import OpenSetCalibration, calibrate_open_set
from faceid.match.scoring import Rule, pairwise_scores, person_scores
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

FPIR_POINTS = (0.001, 0.01, 0.1)
# Background faces per fold for the cohort-normalised (Z-norm) rule.
COHORT = 1500


def _fold_split(labels: np.ndarray, folds: np.ndarray, fold: int, photos: int, probes: int, rng: np.random.Generator):
    people = np.unique(labels)
    in_fold = rng.permutation(people[folds == fold])
    counts = np.bincount(np.searchsorted(people, labels), minlength=len(people))
    # Strangers: half the fold, people with too few images to be known first.
    few = counts[np.searchsorted(people, in_fold)] <= photos
    ordered = np.concatenate([in_fold[few], in_fold[~few]])
    strangers = np.sort(ordered[: len(in_fold) // 2])
    rest = ordered[len(in_fold) // 2 :]
    known = rest[counts[np.searchsorted(people, rest)] > photos]
    enrolled, probe_rows, probe_people, stranger_rows = [], [], [], []
    for person in known:
        rows = rng.permutation(np.flatnonzero(labels == person))
        enrolled += list(rows[:photos])
        chosen = rows[photos : photos + probes] if probes else rows[photos:]
        probe_rows += list(chosen)
        probe_people += [person] * len(chosen)
    for person in strangers:
        rows = rng.permutation(np.flatnonzero(labels == person))
        stranger_rows += list(rows[:probes] if probes else rows)
    return known, np.array(enrolled, int), np.array(probe_rows, int), np.array(probe_people), np.array(stranger_rows, int)


def cross_validate_open_set(
    vectors: np.ndarray,
    labels: np.ndarray,
    scorers: dict[str, dict[str, Any]],
    *,
    folds: int = 5,
    gallery_sizes: tuple[int | None, ...] = (None,),
    photos: int = DEFAULTS.top_k,
    probes_per_person: int = 10,
    target_fpir: float = DEFAULTS.target_fpir,
    rule: Rule = Rule(),
    seed: int = DEFAULTS.seed,
    calibrate_as: int | None = None,
    cohort: int = COHORT,
    progress: bool = False,
) -> dict[str, Any]:
    """Person-disjoint open-set results per scorer and gallery size (``None``: the known people only).

    Args:
        vectors, labels: ``(n, dim)`` vectors and ``(n,)`` person labels.
        scorers: ``{name: {"scorer": ..., "head": ..., "normalizer": ...}}`` (keyword arguments
            of :func:`faceid.match.scoring.pairwise_scores`); ``"train": f`` instead of a head trains
            one per fold, ``f(rows)`` on the other folds' rows (the head never sees the fold's people).
        calibrate_as: derive every threshold as if each person had this many photos (what
            ignoring the photo count costs); ``None``: their real counts.
        cohort: other folds' faces scored against each enrolled person for the cohort-normalised
            rule (``znorm``: each person's scores standardised by their cohort mean and spread).

    Returns:
        ``{"<scorer>@<N>": {...}}`` with rank-1, ``fnir_at_fpir`` per margin weight (``"w=0"`` ...)
        at :data:`FPIR_POINTS`, and ``calibrated`` results (FNIR/FPIR of the gallery-aware decision,
        ``chosen``, with the weights it chose per fold; of the best score alone, ``best``; and of the
        per-person threshold, ``per_person``), plus the probe counts.

    Raises:
        InputError: too few people for the folds or a gallery size.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    labels = np.asarray(labels)
    people = np.unique(labels)
    if folds < 2 or len(people) < 2 * folds:
        raise InputError(f"{len(people)} people are too few for {folds} person-disjoint folds (need at least 2 per fold)")
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(len(people)) % folds
    pooled: dict[tuple[str, int | None], dict[str, list]] = {}
    for fold in range(folds):
        split_rng = np.random.default_rng(seed + 100 + fold)
        known, enrolled, probe_rows, probe_people, stranger_rows = _fold_split(
            labels, fold_of, fold, photos, probes_per_person, split_rng
        )
        if len(known) == 0 or len(probe_rows) == 0 or len(stranger_rows) == 0:
            raise InputError(f"fold {fold} has no known person with more than {photos} vectors, or no stranger: "
                             "use fewer folds or more people")
        other = people[fold_of != fold]
        other_rows = np.flatnonzero(np.isin(labels, other))
        distractors = split_rng.permutation(other)
        for name, options in scorers.items():
            if "train" in options:
                options = {**options, "head": options["train"](other_rows)}
            calibration = calibrate_open_set(vectors[other_rows], labels[other_rows], options["scorer"],
                                              head=options.get("head"), normalizer=options.get("normalizer"),
                                              rule=rule, photos=max(photos, calibrate_as or 0), seed=seed + fold)
            best_only = replace(calibration, margin=0.0)
            for size in gallery_sizes:
                n_known = len(known) if size is None else min(size, len(known))
                n_distractors = 0 if size is None else size - n_known
                if n_distractors > len(distractors):
                    raise InputError(f"a gallery of {size} people needs {n_distractors} distractors besides "
                                     f"{n_known} known people, but the other folds hold {len(distractors)}")
                keep = np.isin(labels[enrolled], known[:n_known])
                gallery_rows = [enrolled[keep]]
                for person in distractors[:n_distractors]:
                    gallery_rows.append(np.random.default_rng(int(seed + np.searchsorted(people, person)))
                                        .permutation(np.flatnonzero(labels == person))[:photos])
                gallery = np.concatenate(gallery_rows)
                gallery_people, dense = np.unique(labels[gallery], return_inverse=True)
                probes = np.isin(probe_people, known[:n_known])

                counts = np.bincount(dense) if calibrate_as is None else np.full(len(gallery_people), calibrate_as)
                # Z-norm: each enrolled person's score against other folds' faces (not their own).
                cohort_rows = np.random.default_rng(seed + fold).permutation(other_rows)[:cohort]
                background = _person_scores(vectors, cohort_rows, gallery, dense, options, rule)
                background[labels[cohort_rows][:, None] == gallery_people[None, :]] = np.nan
                entry = pooled.setdefault((name, size), {"known": [], "true": [], "strangers": [], "thresholds": [],
                                                         "enrolled": [], "cohort": []})
                entry["cohort"].append((np.nanmean(background, axis=0), np.nanstd(background, axis=0) + 1e-6))
                entry["known"].append(_person_scores(vectors, probe_rows[probes], gallery, dense, options, rule))
                entry["true"].append(np.searchsorted(gallery_people, probe_people[probes]))
                entry["strangers"].append(_person_scores(vectors, stranger_rows, gallery, dense, options, rule))
                entry["enrolled"].append(len(gallery_people))
                chosen = calibration.decision(counts, target_fpir)
                entry["thresholds"].append({
                    "chosen": (chosen.threshold, chosen.margin),
                    "best": (best_only.threshold(counts, target_fpir), 0.0),
                    "per_person": (best_only.threshold(np.array([photos]), target_fpir), 0.0),
                })
        if progress:
            logger.info("open-set fold %d/%d done", fold + 1, folds)
    return {f"{name}@{'known' if size is None else size}": _summarise(entry, rule)
            for (name, size), entry in pooled.items()}


def _person_scores(vectors, rows, gallery, dense, options, rule) -> np.ndarray:
    pair = pairwise_scores(vectors[rows], vectors[gallery], scorer=options["scorer"], head=options.get("head"),
                           normalizer=options.get("normalizer"))
    return person_scores(pair, dense, int(dense.max()) + 1, rule)


def _rates(entry: dict[str, list], fold: int, rule: Rule, margin: float, znorm: bool = False):
    decision = Decision(0.0, rule, margin=margin)
    known, strangers = entry["known"][fold], entry["strangers"][fold]
    if znorm:
        mean, spread = entry["cohort"][fold]
        known, strangers = (known - mean) / spread, (strangers - mean) / spread
    best, statistic = decision.statistic(known)
    return best == entry["true"][fold], statistic, decision.statistic(strangers)[1]


def _summarise(entry: dict[str, list], rule: Rule) -> dict[str, Any]:
    folds = range(len(entry["known"]))
    plain = [_rates(entry, fold, rule, 0.0) for fold in folds]
    result: dict[str, Any] = {
        "rank1": float(np.mean(np.concatenate([correct for correct, _, _ in plain]))),
        "known_probes": int(sum(len(t) for t in entry["true"])),
        "stranger_probes": int(sum(len(s) for s in entry["strangers"])),
        "enrolled": [int(n) for n in entry["enrolled"]],
        "fnir_at_fpir": {},
        "calibrated": {},
    }
    for margin in DEFAULTS.margin_weights:
        rates = [_rates(entry, fold, rule, margin) for fold in folds]
        pooled = [np.concatenate([rate[part] for rate in rates]) for part in range(3)]
        result["fnir_at_fpir"][f"w={margin:g}"] = {str(point): fnir_at_fpir(*pooled, point)[0] for point in FPIR_POINTS}
    rates = [_rates(entry, fold, rule, 0.0, znorm=True) for fold in folds]
    pooled = [np.concatenate([rate[part] for rate in rates]) for part in range(3)]
    result["fnir_at_fpir"]["znorm"] = {str(point): fnir_at_fpir(*pooled, point)[0] for point in FPIR_POINTS}
    for which in ("chosen", "best", "per_person"):
        missed = named = 0.0
        for fold in folds:
            threshold, margin = entry["thresholds"][fold][which]
            correct, known, strangers = _rates(entry, fold, rule, margin)
            fnir, fpir = open_set_rates(correct, known, strangers, threshold)
            missed += fnir * len(known)
            named += fpir * len(strangers)
        result["calibrated"][which] = {"fnir": missed / result["known_probes"],
                                       "fpir": named / result["stranger_probes"]}
    result["calibrated"]["chosen"]["margins"] = [thresholds["chosen"][1] for thresholds in entry["thresholds"]]
    return result


def calibrate_scorers(
    vectors: np.ndarray,
    labels: np.ndarray,
    scorers: dict[str, dict[str, Any]],
    *,
    rule: Rule = Rule(),
    target_fpir: float = DEFAULTS.target_fpir,
    seed: int = DEFAULTS.seed,
    source: dict[str, Any] | None = None,
) -> tuple[dict[str, OpenSetCalibration], str, dict[str, Any]]:
    """Open-set calibration of each scorer on people no user enrols, and which one wins there.

    ``scorers`` as for :func:`cross_validate_open_set`. The winner has the lowest FNIR at
    ``target_fpir`` (margin rule, oracle threshold) on two person-disjoint halves of the people,
    each calibrated on the other. With too few people for halves holding known people and
    strangers, the measure is each calibration's own leave-one-out miss rate at the
    gallery-aware threshold for every person enrolled. The calibrations (on all the people)
    record the winner in their ``source["default_scorer"]``.

    Returns:
        ``(calibrations, winner, report)``.
    """
    photos = rule.top_k if rule.name == "topk" else DEFAULTS.top_k
    calibrations = {
        name: calibrate_open_set(vectors, labels, options["scorer"], head=options.get("head"),
                                 normalizer=options.get("normalizer"), rule=rule, photos=photos, seed=seed,
                                 source=source)
        for name, options in scorers.items()
    }
    try:
        trial = cross_validate_open_set(vectors, labels, scorers, folds=2, photos=photos, rule=rule,
                                        target_fpir=target_fpir, seed=seed)
        measured = {name: trial[f"{name}@known"] for name in scorers}
        fnir = {name: result["calibrated"]["chosen"]["fnir"] for name, result in measured.items()}
        how = (f"FNIR of the gallery-aware decision at FPIR {target_fpir}, 2 person-disjoint halves, "
               "each calibrated on the other")
    except InputError as error:
        logger.warning("too few people for the open-set trial (%s): choosing by the calibration's miss rate", error)
        n_people = len(np.unique(labels))
        measured = {}
        fnir = {name: calibration.miss_rate(calibration.threshold(n_people, target_fpir))
                for name, calibration in calibrations.items()}
        how = f"leave-one-out miss rate at the FPIR {target_fpir} threshold for {n_people} people"
    # Ties go to the head (it was trained for these people's kind of faces), then by name.
    winner = min(fnir, key=lambda name: (fnir[name], name != "head", name))
    calibrations = {name: replace(calibration, source={**calibration.source, "default_scorer": winner})
                    for name, calibration in calibrations.items()}
    return calibrations, winner, {"measure": how, "fnir": fnir, "winner": winner, "trial": measured}
