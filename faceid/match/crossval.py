"""Open-set identification measured person-disjoint, cross-validated: how the decision rules,
the scorers and the gallery-aware threshold do on people no calibration saw.

:func:`cross_validate_open_set` cuts the people into folds. For each fold:

* **calibration**: every other fold's people (:func:`faceid.match.openset.calibrate_open_set`);
* **known people**: the fold's people with more than ``photos`` vectors: ``photos`` random
  ones enrolled, the rest (at most ``probes_per_person``) are probes;
* **strangers**: the fold's other people (at most ``probes_per_person`` probes each), never enrolled;
* **gallery of N people**: the known people plus *distractors*, other folds' people enrolled
  with up to ``photos`` vectors, to reach ``N`` (a synthetic gallery: the distractors bring no
  probes, they only give strangers and known probes more people to be mistaken for).

Probes of every fold are pooled per (scorer, N) and reported as FNIR (known probes missed or
misnamed) at FPIR (strangers named) for the best-score rule and the margin rule, at an oracle
threshold (the strangers' own quantile: the rule's quality) and at the calibrated gallery-aware
and per-person thresholds (what a user gets). train.py runs it on its held-out people to pick
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
# The decision rules compared: the best per-person score alone, and best + w * (best - second).
RULES = ("best", "margin")


def _fold_split(labels: np.ndarray, folds: np.ndarray, fold: int, photos: int, probes: int, rng: np.random.Generator):
    people = np.unique(labels)
    in_fold = people[folds == fold]
    counts = np.bincount(np.searchsorted(people, labels), minlength=len(people))
    known = in_fold[counts[np.searchsorted(people, in_fold)] > photos]
    strangers = np.setdiff1d(in_fold, known)
    enrolled, probe_rows, probe_people, stranger_rows = [], [], [], []
    for person in known:
        rows = rng.permutation(np.flatnonzero(labels == person))
        enrolled += list(rows[:photos])
        rest = rows[photos : photos + probes] if probes else rows[photos:]
        probe_rows += list(rest)
        probe_people += [person] * len(rest)
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
    margin: float = DEFAULTS.margin_weight,
    rule: Rule = Rule(),
    seed: int = DEFAULTS.seed,
    progress: bool = False,
) -> dict[str, Any]:
    """Person-disjoint open-set results per scorer and gallery size (``None``: the known people only).

    Args:
        vectors, labels: ``(n, dim)`` vectors and ``(n,)`` person labels.
        scorers: ``{name: {"scorer": ..., "head": ..., "normalizer": ...}}`` (keyword arguments
            of :func:`faceid.match.scoring.pairwise_scores`).

    Returns:
        ``{"<scorer>@<N>": {...}}`` with rank-1, ``fnir_at_fpir`` per rule at :data:`FPIR_POINTS`,
        and ``calibrated`` results (FNIR/FPIR at the gallery-aware threshold per rule, and at
        the per-person threshold of one enrolled person), plus the probe counts.

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
            calibration = calibrate_open_set(vectors[other_rows], labels[other_rows], options["scorer"],
                                              head=options.get("head"), normalizer=options.get("normalizer"),
                                              rule=rule, photos=photos, margin=margin, seed=seed + fold)
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

                def scores(rows: np.ndarray) -> np.ndarray:
                    pair = pairwise_scores(vectors[rows], vectors[gallery], scorer=options["scorer"],
                                           head=options.get("head"), normalizer=options.get("normalizer"))
                    return person_scores(pair, dense, len(gallery_people), rule)

                counts = np.bincount(dense)
                entry = pooled.setdefault((name, size), {"known": [], "true": [], "strangers": [], "thresholds": [],
                                                         "enrolled": []})
                entry["known"].append(scores(probe_rows[probes]))
                entry["true"].append(np.searchsorted(gallery_people, probe_people[probes]))
                entry["strangers"].append(scores(stranger_rows))
                entry["enrolled"].append(len(gallery_people))
                entry["thresholds"].append({
                    "margin": calibration.threshold(counts, target_fpir),
                    "best": best_only.threshold(counts, target_fpir),
                    "per_person": best_only.threshold(np.array([photos]), target_fpir),
                })
        if progress:
            logger.info("open-set fold %d/%d done", fold + 1, folds)
    return {f"{name}@{'known' if size is None else size}": _summarise(entry, margin, rule)
            for (name, size), entry in pooled.items()}


def _summarise(entry: dict[str, list], margin: float, rule: Rule) -> dict[str, Any]:
    decisions = {"best": Decision(0.0, rule), "margin": Decision(0.0, rule, margin=margin)}
    correct, known_stat, stranger_stat = {}, {}, {}
    for name, decision in decisions.items():
        hits, known, strangers = [], [], []
        for known_scores, true, stranger_scores in zip(entry["known"], entry["true"], entry["strangers"]):
            best, statistic = decision.statistic(known_scores)
            hits.append(best == true)
            known.append(statistic)
            strangers.append(decision.statistic(stranger_scores)[1])
        correct[name], known_stat[name], stranger_stat[name] = hits, known, strangers
    result: dict[str, Any] = {
        "rank1": float(np.mean(np.concatenate(correct["best"]))),
        "known_probes": int(sum(len(t) for t in entry["true"])),
        "stranger_probes": int(sum(len(s) for s in entry["strangers"])),
        "enrolled": [int(n) for n in entry["enrolled"]],
        "fnir_at_fpir": {},
        "calibrated": {},
    }
    for name in RULES:
        pooled = [np.concatenate(values) for values in (correct[name], known_stat[name], stranger_stat[name])]
        result["fnir_at_fpir"][name] = {str(point): fnir_at_fpir(*pooled, point)[0] for point in FPIR_POINTS}
    for which, rule_name in (("margin", "margin"), ("best", "best"), ("per_person", "best")):
        missed = named = 0.0
        for fold, thresholds in enumerate(entry["thresholds"]):
            fnir, fpir = open_set_rates(correct[rule_name][fold], known_stat[rule_name][fold],
                                        stranger_stat[rule_name][fold], thresholds[which])
            missed += fnir * len(known_stat[rule_name][fold])
            named += fpir * len(stranger_stat[rule_name][fold])
        result["calibrated"][which] = {"fnir": missed / result["known_probes"],
                                       "fpir": named / result["stranger_probes"]}
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
    key = str(target_fpir)
    try:
        trial = cross_validate_open_set(vectors, labels, scorers, folds=2, photos=photos, rule=rule,
                                        target_fpir=target_fpir, seed=seed)
        measured = {name: trial[f"{name}@known"] for name in scorers}
        fnir = {name: result["fnir_at_fpir"]["margin"][key] if key in result["fnir_at_fpir"]["margin"]
                else result["calibrated"]["margin"]["fnir"] for name, result in measured.items()}
        how = f"FNIR at FPIR {target_fpir} (margin rule), 2 person-disjoint halves, each calibrated on the other"
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
