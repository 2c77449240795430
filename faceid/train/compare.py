"""Is the fine-tuned network really better than the one it started from? (train_siamese.py)

Both networks embed the same held-out faces; their figures are measured on the same pairs and
probes, and the uncertainty of each difference is a **paired bootstrap over people**: a resample
draws the people (with replacement, as many as there are), every pair and probe of a drawn person
comes with it, and both networks are scored on that same resample. People, not pairs, are the
unit because pairs of one person are not independent (one odd photo spoils all its pairs).

The figures:

- ``pair_auc``: ROC AUC of same- vs different-person pairs (the early-stopping measure);
- ``pair_accuracy``: accuracy at a threshold chosen on one half of the pairs, measured on the
  other (both ways, averaged);
- ``tar_at_far``: same-person pairs accepted at the threshold that accepts ``FAR`` (1%) of the
  different-person pairs;
- ``rank1``: identification, leave one out: each face is a probe, every other face of the split
  the gallery; a hit when its best match is its own person (people with one face are gallery only);
- ``own_fnir`` (the anchor layout only): the anchor person's held-out faces missed by a gallery of
  their training faces, at the threshold that names ``target_fpir`` of the strangers in the split.

:func:`decide` is the rule that keeps the fine-tuned network or the starting one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from faceid.match.metrics import accuracy_at, best_accuracy_threshold, roc_auc, tar_at_far, threshold_at_far
from faceid.train.siamese_data import validation_pairs

# The false accept rate of the pair figure tar_at_far (LFW practice: TAR at FAR 1%).
PAIR_FAR = 0.01
# The two-sided interval of a gain: 95%.
CONFIDENCE = 0.95
# Figures where lower is better.
LOWER_IS_BETTER = ("own_fnir",)

# scores(vectors, first, second) -> same-person score of each pair (higher: more alike)
PairScorer = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Split:
    """The faces one comparison is measured on: their people, the pairs among them, the bootstrap unit.

    ``units``: per face, what a bootstrap resample draws (the person; in the anchor layout each of
    the anchor person's faces is its own unit, as that person is the whole positive side).
    ``own``: the anchor layout's person (label), whose faces ``own_fnir`` counts.
    """

    labels: np.ndarray
    units: np.ndarray
    first: np.ndarray
    second: np.ndarray
    is_same: np.ndarray
    half: np.ndarray  # bool per pair: the half whose threshold is measured on the other
    own: int | None = None
    domains: np.ndarray | None = None  # cross-domain pairs: 0 (queries, e.g. sketches) or 1 (gallery) per face


def held_out_split(labels: np.ndarray, domains: np.ndarray | None = None, *, own: int | None = None,
                   neg_ratio: float = 1.5, seed: int = 0) -> Split:
    """The held-out faces of ``labels`` as they are measured: the pairs the validation samples among
    them (:func:`faceid.train.siamese_data.validation_pairs`, seeded ``seed + 1``), the half each
    accuracy threshold is chosen on (seeded ``seed``), the bootstrap units. ``own``: the anchor
    layout's person, the whole positive side, so each of their faces is a unit of its own."""
    labels = np.asarray(labels, dtype=np.int64)
    pairs = validation_pairs(labels, domains, neg_ratio, seed + 1)
    units = labels.copy()
    if own is not None:
        mine = np.flatnonzero(labels == own)
        units[mine] = int(labels.max()) + 1 + np.arange(len(mine))
    half = np.random.default_rng(seed).random(len(pairs)) < 0.5
    return Split(labels=labels, units=units, first=pairs.first, second=pairs.second, is_same=pairs.label.astype(bool),
                 half=half, own=own, domains=domains)


def measure(vectors: np.ndarray, split: Split, scores: PairScorer, *, gallery: np.ndarray | None = None,
            target_fpir: float = 0.01) -> dict[str, Any]:
    """Every figure of one network on ``split``, plus what the bootstrap needs (per pair, per probe)."""
    pair_scores = scores(vectors, split.first, split.second)
    probes, hits = _leave_one_out(vectors, split.labels, split.domains, scores)
    result: dict[str, Any] = {"pair_scores": pair_scores, "probes": probes, "hits": hits}
    if split.own is not None and gallery is not None and len(gallery):
        own_rows = np.flatnonzero(split.labels == split.own)
        stranger_rows = np.flatnonzero(split.labels != split.own)
        result["own_rows"], result["stranger_rows"] = own_rows, stranger_rows
        result["best"] = _best_against(vectors, gallery, scores)
        result["target_fpir"] = target_fpir
    return result


def figures(measured: dict[str, Any], split: Split) -> dict[str, float]:
    """The figures of one network from :func:`measure`."""
    return _figures(measured, split, None)


def _figures(measured: dict[str, Any], split: Split, resample: dict[str, np.ndarray] | None) -> dict[str, float]:
    """The figures on everything, or on a bootstrap ``resample`` (positions of pairs and probes, the
    anchor layout's own and stranger faces)."""
    pairs = slice(None) if resample is None else resample["pairs"]
    probes = slice(None) if resample is None else resample["probes"]
    scores, is_same, half = measured["pair_scores"][pairs], split.is_same[pairs], split.half[pairs]
    result: dict[str, float] = {}
    if is_same.any() and (~is_same).any():
        result["pair_auc"] = roc_auc(scores, is_same)
        result["tar_at_far"] = tar_at_far(scores, is_same, PAIR_FAR)
        accuracy = half_split_accuracy(scores, is_same, half)
        if np.isfinite(accuracy):
            result["pair_accuracy"] = accuracy
    hits = measured["hits"][probes]
    if len(hits):
        result["rank1"] = float(np.mean(hits))
    if "best" in measured:
        own = measured["own_rows"] if resample is None else resample["own"]
        strangers = measured["stranger_rows"] if resample is None else resample["strangers"]
        if len(own) and len(strangers):
            threshold = threshold_at_far(measured["best"][strangers], measured["target_fpir"])
            result["own_fnir"] = float(np.mean(measured["best"][own] < threshold))
    return result


def half_split_accuracy(scores: np.ndarray, is_same: np.ndarray, half: np.ndarray) -> float:
    """Pair accuracy at the threshold chosen on one half of the pairs, measured on the other, both
    ways, averaged (NaN when neither half has both kinds of pairs)."""
    accuracies = []
    for chosen, measured_on in ((half, ~half), (~half, half)):
        if len(np.unique(is_same[chosen])) == 2 and len(np.unique(is_same[measured_on])) == 2:
            threshold, _ = best_accuracy_threshold(scores[chosen], is_same[chosen])
            accuracies.append(accuracy_at(scores[measured_on], is_same[measured_on], threshold))
    return float(np.mean(accuracies)) if accuracies else float("nan")


def compare(start: dict[str, Any], candidate: dict[str, Any], split: Split, *, resamples: int,
            seed: int) -> dict[str, Any]:
    """Both networks' figures and each gain (candidate minus start) with its paired bootstrap interval."""
    start_figures, candidate_figures = _figures(start, split, None), _figures(candidate, split, None)
    draws = {name: [] for name in start_figures if name in candidate_figures}
    rng = np.random.default_rng([seed, 37])
    for resample in _resamples(split, start, resamples, rng):
        a, b = _figures(start, split, resample), _figures(candidate, split, resample)
        for name in draws:
            if name in a and name in b:
                draws[name].append(b[name] - a[name])
    low, high = (1.0 - CONFIDENCE) / 2.0, 1.0 - (1.0 - CONFIDENCE) / 2.0
    gains = {}
    for name, values in draws.items():
        gain = {"value": candidate_figures[name] - start_figures[name], "resamples": len(values)}
        if values:
            gain["low"], gain["high"] = (float(value) for value in np.quantile(values, [low, high]))
        gains[name] = gain
    return {"start": start_figures, "fine_tuned": candidate_figures, "gain": gains, **sizes(split)}


def sizes(split: Split) -> dict[str, int]:
    """How many people, faces, pairs and same-person pairs ``split`` holds."""
    return {"people": int(len(np.unique(split.labels))), "faces": int(len(split.labels)),
            "pairs": int(len(split.first)), "pairs_same": int(split.is_same.sum())}


def decide(comparison: dict[str, Any]) -> tuple[bool, str]:
    """Keep the fine-tuned network? ``(keep, why)``.

    Kept only when its pair AUC gain is beyond the uncertainty (the whole 95% paired bootstrap
    interval above zero) and no other figure measured on the same faces got worse beyond its own
    uncertainty (TAR at FAR 1%, accuracy, rank-1, and the anchor person's misses where there is one:
    a whole interval on the wrong side of zero). Otherwise the starting network is the safer one: a
    gain within the noise is no gain.
    """
    gains = comparison["gain"]
    auc = gains.get("pair_auc")
    if auc is None or "low" not in auc:
        return False, "the validation faces have no pairs of both kinds to compare the networks on"
    interval = f"95% interval {auc['low']:+.5f} to {auc['high']:+.5f}, a bootstrap over the validation people"
    if auc["high"] < 0.0:
        return False, f"the fine-tuned network is worse: pair AUC {auc['value']:+.5f} ({interval})"
    if auc["low"] <= 0.0:
        return False, f"pair AUC gain {auc['value']:+.5f} is within the noise ({interval})"
    worse = [name for name, gain in gains.items() if name != "pair_auc" and "low" in gain
             and (gain["low"] > 0 if name in LOWER_IS_BETTER else gain["high"] < 0)]
    if worse:
        described = ", ".join(f"{name} {gains[name]['value']:+.4f} ({gains[name]['low']:+.4f} to "
                              f"{gains[name]['high']:+.4f})" for name in worse)
        return False, f"pair AUC gain {auc['value']:+.5f} is beyond the noise but {described} got worse beyond it"
    return True, (f"pair AUC gain {auc['value']:+.5f} beyond the noise ({interval}), no other figure worse "
                  "beyond its own")


def _resamples(split: Split, measured: dict[str, Any], count: int, rng: np.random.Generator):
    """Index sets of ``count`` bootstrap resamples over ``split.units`` (pairs by their first face's unit)."""
    units, unit_of_face = np.unique(split.units, return_inverse=True)
    groups = {
        "pairs": _group(unit_of_face[split.first], len(units)),
        "probes": _group(unit_of_face[measured["probes"]], len(units)),
    }
    if "own_rows" in measured:
        groups["own"] = _group(unit_of_face[measured["own_rows"]], len(units), measured["own_rows"])
        groups["strangers"] = _group(unit_of_face[measured["stranger_rows"]], len(units), measured["stranger_rows"])
    for _ in range(count):
        drawn = rng.integers(0, len(units), len(units))
        yield {name: np.concatenate([members[unit] for unit in drawn]) for name, members in groups.items()}


def _group(unit_of_item: np.ndarray, count: int, values: np.ndarray | None = None) -> list[np.ndarray]:
    """Per unit, the items (their positions, or ``values`` at them) belonging to it."""
    order = np.argsort(unit_of_item, kind="stable")
    bounds = np.searchsorted(unit_of_item[order], np.arange(count + 1))
    items = order if values is None else values[order]
    return [items[bounds[unit]:bounds[unit + 1]] for unit in range(count)]


def _leave_one_out(vectors: np.ndarray, labels: np.ndarray, domains: np.ndarray | None, scores: PairScorer,
                   chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Probes (faces whose person has another face) and whether each one's best other face is its person's.

    Cross-domain (``domains``): the probes are the queries (domain 0), the gallery every face of domain 1.
    """
    if domains is None:
        counts = np.bincount(labels)
        probes = np.flatnonzero(counts[labels] >= 2)
        others = np.arange(len(labels))
    else:
        others = np.flatnonzero(domains == 1)
        probes = np.flatnonzero((domains == 0) & np.isin(labels, labels[others]))
    hits = np.zeros(len(probes), dtype=bool)
    for start, block, matrix in _score_blocks(vectors, probes, others, scores, chunk):
        matrix[block[:, None] == others[None, :]] = -np.inf
        hits[start:start + len(block)] = labels[np.argmax(matrix, axis=1)] == labels[block]
    return probes, hits


def _best_against(vectors: np.ndarray, gallery: np.ndarray, scores: PairScorer, chunk: int = 256) -> np.ndarray:
    """Each face's best score against the gallery's faces (the anchor person's training faces)."""
    both = np.concatenate([vectors, gallery])
    others = np.arange(len(vectors), len(both))
    best = np.empty(len(vectors), dtype=np.float64)
    for start, block, matrix in _score_blocks(both, np.arange(len(vectors)), others, scores, chunk):
        best[start:start + len(block)] = matrix.max(axis=1)
    return best


def _score_blocks(vectors: np.ndarray, rows: np.ndarray, columns: np.ndarray, scores: PairScorer, chunk: int):
    """``(start, block, matrix)`` for each ``chunk`` of ``rows``: the scores of its rows against every column."""
    for start in range(0, len(rows), chunk):
        block = rows[start:start + chunk]
        matrix = scores(vectors, np.repeat(block, len(columns)), np.tile(columns, len(block)))
        yield start, block, matrix.reshape(len(block), len(columns)).astype(np.float64)


__all__ = ["CONFIDENCE", "PAIR_FAR", "Split", "compare", "decide", "figures", "half_split_accuracy",
           "held_out_split", "measure", "sizes"]
