"""Open-set calibration: a threshold that keeps strangers nameless for the gallery at hand.

A stranger is compared with *every* enrolled person and is named when the best of those
scores passes the threshold, so the share of strangers named (FPIR, NIST FRVT 1:N) grows
with the number of people enrolled at a fixed threshold. An :class:`OpenSetCalibration`
holds what is needed to pick the threshold for any gallery size:

* for each calibration probe (a face of a held-out person, scored against every *other*
  held-out person, ``compared`` of them), its per-person scores at fixed ranks (``ranks``:
  every one of the first ``TAIL``, then log-spaced down to the last): the probe's own
  distribution of scores against people who are not it. They are kept for each number of
  enrolled photos per person (1 .. ``photos``): the rule's score of a person with one photo
  is spread wider than the mean of three (1-photo galleries calibrated as 3-photo ones named
  up to 2.6% of strangers for a 1% target; README, "Open-set identification").
* A gallery of ``N`` new people is ``N`` independent draws of "another person" for each
  probe; the probe is named when the decision statistic of the best two draws
  (:meth:`faceid.match.decision.Decision.statistic`) reaches the threshold. For the best
  score alone that happens with probability ``1 - (1 - s_p(t))^N`` (:meth:`fpir_exact`);
  :meth:`simulate` draws the two best of ``N`` from each probe's distribution. Probes that
  resemble many people (and those that resemble few) keep their own rate, so the
  correlation between a stranger's scores is not assumed away; only the enrolled people are
  assumed new to the calibration.
* :meth:`choose_margin` picks the statistic's margin weight for the gallery by the FNIR it
  predicts (the probes as known people: their own score against ``N - 1`` draws);
  :meth:`threshold` is the lowest threshold whose predicted FPIR is at most the target;
  :meth:`decision` wraps both as the one :class:`~faceid.match.decision.Decision`.

The calibration is a plain ``.npz`` (arrays plus one JSON string; no pickle). train.py saves
one per scorer with the similarity model; the toolkit ships one per metric scorer of the dlib
backbone, measured on LFW DevTrain (``faceid/match/calibrations``, ``evaluate.py calibrate``),
so a metric scorer needs no training and no TensorFlow.

A ``calibration.npz`` changes decisions, so the manifest beside it records its SHA-256
(``calibration_sha256``: in ``head.json`` for a similarity model, in the extractor's
``manifest.json`` when :func:`save_calibrations` writes into an extractor directory), and it is
checked before it is read (:func:`backbone_calibrations`, :meth:`SimilarityModel.load
<faceid.match.model.SimilarityModel.load>`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceid.errors import InputError
from faceid.io.manifest import check_file_sha256, sha256_file
from faceid.io.store import StagedFiles, json_bytes, load_npz, read_json, save_npz
from faceid.match.decision import Decision
from faceid.match.metrics import threshold_at_far
from faceid.match.scoring import SCORERS, Rule, pairwise_scores, person_scores
from faceid.settings import DEFAULTS

CALIBRATION_FORMAT = "faceid-openset/1"
# The calibration file of a similarity model (train.py) or an extractor directory (evaluate.py calibrate).
CALIBRATION_FILE = "calibration.npz"
# An extractor directory's manifest and its format (faceid.backbones.registry's: match imports no backbone).
EXTRACTOR_MANIFEST = "manifest.json"
EXTRACTOR_FORMAT = "faceid-extractor/1"
# What the toolkit ships: the metric scorers of each backbone it can calibrate here, measured on
# LFW DevTrain (evaluate.py calibrate), one file per extractor fingerprint.
PACKAGED_CALIBRATIONS = Path(__file__).with_name("calibrations")
# Ranks of a probe's per-person scores kept exactly (its most similar people, where every
# threshold lies), and log-spaced ranks after them down to its least similar person.
TAIL = 32
SPARSE_RANKS = 24
# Calibration probes scored against every other person (leave-one-out): thousands of
# strangers and millions of impostor per-person scores in seconds for metric scorers.
MAX_PROBES = 2000


@dataclass(frozen=True)
class OpenSetCalibration:
    """Each calibration probe's highest impostor per-person scores, for one scorer and rule.

    Attributes:
        scorer: the scorer the scores come from (:data:`faceid.match.scoring.SCORERS`).
        rule: the per-person rule (the decision built from this calibration uses it).
        tails: ``(photos, P, len(ranks)) float32``: for people enrolled with ``c + 1`` photos,
            each probe's impostor per-person scores at ``ranks`` (descending).
        ranks: ``(J,) int``, increasing ranks from 0 (the probe's most similar person) to
            ``compared - 1``.
        compared: people each probe was scored against.
        genuine: ``(photos, P) float32``: each probe's score for its own person enrolled with
            ``c + 1`` other photos (NaN where it has too few): what a known person scores.
        margin: the decision's margin weight (:meth:`Decision.statistic`); ``None``: chosen for
            each gallery (:meth:`choose_margin`).
        source: what it was measured on (faces, people, images, extractor fingerprint ...).
    """

    scorer: str
    rule: Rule
    tails: np.ndarray
    ranks: np.ndarray
    compared: int
    genuine: np.ndarray
    margin: float | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scorer not in SCORERS:
            raise InputError(f"unknown scorer {self.scorer!r} in an open-set calibration")
        if self.tails.ndim != 3 or self.tails.shape[1] == 0 or self.tails.shape[2] != len(self.ranks):
            raise InputError("an open-set calibration needs at least one probe with its per-person scores")
        if self.compared < 1 or self.ranks[0] != 0 or self.ranks[-1] != self.compared - 1 or np.any(np.diff(self.ranks) <= 0):
            raise InputError("an open-set calibration's ranks must rise from 0 to the people compared - 1")

    @property
    def photos(self) -> int:
        """Enrolled photos per person the calibration has tails for (more count as this many)."""
        return int(self.tails.shape[0])

    @property
    def fingerprint(self) -> str | None:
        """Fingerprint of the extractor whose vectors were calibrated (``None`` if unrecorded)."""
        return self.source.get("extractor_fingerprint")

    def people_by_photos(self, gallery: int | np.ndarray) -> np.ndarray:
        """``(photos,)`` people enrolled with 1, 2, ... ``photos`` (or more) photos.

        ``gallery``: a number of people (each with ``photos`` photos), or each person's photo count.
        """
        if np.ndim(gallery) == 0:
            counts = np.full(int(gallery), self.photos)
        else:
            counts = np.asarray(gallery, dtype=np.int64)
        if len(counts) < 1 or np.any(counts < 1):
            raise InputError("a gallery needs at least one person with at least one photo")
        return np.bincount(np.minimum(counts, self.photos) - 1, minlength=self.photos)

    def fpir_exact(self, threshold: float, gallery: int | np.ndarray) -> float:
        """Predicted FPIR of the best score alone (margin 0): mean over probes of
        ``1 - prod_c (1 - s_pc(t))^n_c``, ``s_pc`` the share of people the probe scores ``>= t``
        (read off its ranks, as :meth:`simulate` reads them)."""
        people = self.people_by_photos(gallery)
        survival = np.ones(self.tails.shape[1])
        for photos, n in enumerate(people):
            if n:
                share = np.array([self._people_above(row, threshold) for row in self.tails[photos]]) / self.compared
                survival *= np.power(1.0 - share, n)
        return float(np.mean(1.0 - survival))

    def _people_above(self, values: np.ndarray, threshold: float) -> float:
        """How many people a probe with these rank scores scores ``>= threshold`` against."""
        if threshold > values[0]:
            return 0.0
        if threshold <= values[-1]:
            return float(self.compared)
        return float(np.interp(threshold, values[::-1], self.ranks[::-1].astype(np.float64)) + 0.5)

    def _two_best(self, people: np.ndarray, rng: np.random.Generator, replicates: int) -> tuple[np.ndarray, np.ndarray]:
        """Each probe's two best per-person scores among ``people[c]`` new people with ``c + 1``
        photos: ``(P, replicates)`` each (``-inf`` where fewer people).

        The two best of ``n`` draws from a probe's scores are order statistics of uniforms,
        ``u1 = 1 - U^(1/n)`` and ``u2 = u1 + (1 - u1)(1 - V^(1/(n-1)))``, read off the probe's
        ranks at ``u * compared`` (interpolated); then the two best over all photo counts.
        """
        n_probes = self.tails.shape[1]
        candidates = [np.full((n_probes, replicates), -np.inf, dtype=np.float32)] * 2
        for photos, n in enumerate(people):
            if n == 0:
                continue
            first = (1.0 - rng.random((n_probes, replicates)) ** (1.0 / n)) * self.compared
            candidates.append(self._read(photos, first))
            if n >= 2:
                second = first + (self.compared - first) * (1.0 - rng.random((n_probes, replicates)) ** (1.0 / (n - 1)))
                # The best two are two people: the second is read at least one person further down.
                candidates.append(self._read(photos, np.maximum(second, np.maximum(first, 0.5) + 1.0)))
        ordered = -np.sort(-np.stack(candidates, axis=-1), axis=-1)
        return ordered[..., 0], ordered[..., 1]

    @staticmethod
    def _statistic(best: np.ndarray, second: np.ndarray, margin: float) -> np.ndarray:
        """:meth:`Decision.statistic` on simulated best and second-best scores."""
        if margin == 0.0:
            return best.astype(np.float32)
        gap = np.where(np.isfinite(second), best - second, 0.0)
        return (best + np.float32(margin) * gap).astype(np.float32)

    def simulate(self, gallery: int | np.ndarray, margin: float | None = None,
                 replicates: int = DEFAULTS.calibration_replicates, seed: int = DEFAULTS.seed) -> np.ndarray:
        """Decision statistics of calibration strangers against simulated galleries: ``(P * replicates,)``.

        ``margin``: the statistic's margin weight (default: the calibration's fixed one, else 0).
        """
        margin = (self.margin or 0.0) if margin is None else margin
        best, second = self._two_best(self.people_by_photos(gallery), np.random.default_rng(seed), replicates)
        return self._statistic(best, second, margin).ravel()

    def simulate_known(self, gallery: int | np.ndarray, margin: float, replicates: int = DEFAULTS.calibration_replicates,
                       seed: int = DEFAULTS.seed + 1) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """Calibration probes as *known* people of simulated galleries: for each photo count ``c``
        enrolled people have, ``(share of people with c, correct (P', R), statistic (P', R))`` where
        a probe is correct when its own score (``genuine``) beats the best of the others."""
        people = self.people_by_photos(gallery)
        rng = np.random.default_rng(seed)
        results = []
        for photos, n in enumerate(people):
            if n == 0:
                continue
            genuine = self.genuine[photos]
            usable = np.isfinite(genuine)
            if not usable.any():
                continue
            others = people.copy()
            others[photos] -= 1
            if others.sum() == 0:
                best = np.full((self.tails.shape[1], replicates), -np.inf, dtype=np.float32)
            else:
                best, _ = self._two_best(others, rng, replicates)
            own = genuine[usable][:, None]
            best = best[usable]
            results.append((n / people.sum(), own > best, self._statistic(np.broadcast_to(own, best.shape), best, margin)))
        return results

    def choose_margin(self, gallery: int | np.ndarray, target_fpir: float) -> tuple[float, float, float]:
        """The margin weight (of ``DEFAULTS.margin_weights``) with the lowest predicted FNIR at
        ``target_fpir`` for this gallery, its threshold and that FNIR. A calibration with a fixed
        margin keeps it."""
        candidates = DEFAULTS.margin_weights if self.margin is None else (self.margin,)
        best_choice = None
        for margin in candidates:
            threshold = threshold_at_far(self.simulate(gallery, margin), target_fpir)
            known = self.simulate_known(gallery, margin)
            fnir = (sum(share * (1.0 - float(np.mean(correct & (statistic >= np.float32(threshold)))))
                        for share, correct, statistic in known) / sum(share for share, _, _ in known)) if known else 1.0
            if best_choice is None or fnir < best_choice[2] - 1e-9:
                best_choice = (float(margin), threshold, fnir)
        return best_choice

    def _read(self, photos: int, rank: np.ndarray) -> np.ndarray:
        """The probe's score at continuous ``rank (P, R)`` (people expected above it), interpolated
        between its kept ranks; a rank before its best reads its best (no extrapolation: the
        realised FPIR of a gallery of 1,000 measured within a factor of 2 of the target, README)."""
        tails = self.tails[photos]
        ranks = self.ranks.astype(np.float64)
        position = np.clip(rank - 0.5, 0.0, ranks[-1])
        if len(ranks) == 1:
            return np.broadcast_to(tails[:, :1], rank.shape).astype(np.float32)
        segment = np.clip(np.searchsorted(ranks, position, side="right") - 1, 0, len(ranks) - 2)
        fraction = ((position - ranks[segment]) / (ranks[segment + 1] - ranks[segment])).astype(np.float32)
        rows = np.arange(tails.shape[0])[:, None]
        lower, upper = tails[rows, segment], tails[rows, segment + 1]
        return lower + fraction * (upper - lower)

    def threshold(self, gallery: int | np.ndarray, target_fpir: float, margin: float | None = None) -> float:
        """Lowest threshold (accept ``statistic >= it``) naming at most ``target_fpir`` of the
        simulated strangers of this gallery (:func:`faceid.match.metrics.threshold_at_far`), for
        ``margin`` (default: the calibration's fixed one, else the one :meth:`choose_margin` picks)."""
        check_target_fpir(target_fpir)
        if margin is None and self.margin is None:
            return self.choose_margin(gallery, target_fpir)[1]
        return threshold_at_far(self.simulate(gallery, margin), target_fpir)

    def miss_rate(self, threshold: float, photos: int | None = None) -> float:
        """Share of known people's probes whose own score falls under ``threshold`` (a lower
        bound on the miss rate: a known face can also be out-scored by someone else)."""
        genuine = self.genuine[(photos or self.photos) - 1]
        genuine = genuine[np.isfinite(genuine)]
        return float(np.mean(genuine < np.float32(threshold))) if len(genuine) else float("nan")

    def decision(self, gallery: int | np.ndarray, target_fpir: float = DEFAULTS.target_fpir) -> Decision:
        """The gallery-aware decision: ``gallery`` people (or their photo counts) at ``target_fpir``,
        with the margin weight that predicts the fewest misses there."""
        check_target_fpir(target_fpir)
        enrolled = int(self.people_by_photos(gallery).sum())
        margin, threshold, _ = self.choose_margin(gallery, target_fpir)
        return Decision.for_gallery(threshold, self.rule, self.scorer, target_fpir, enrolled, margin)

    # --- storage --------------------------------------------------------------------------
    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        meta = {"format": CALIBRATION_FORMAT, "scorer": self.scorer, "rule": asdict(self.rule),
                "margin": self.margin, "source": self.source}
        return {
            # Half precision on disk (the shipped files stay small): 5e-4 at a cosine of 0.9.
            f"{prefix}tails": self.tails.astype(np.float16), f"{prefix}ranks": self.ranks.astype(np.int64),
            f"{prefix}compared": np.array(self.compared, dtype=np.int64),
            f"{prefix}genuine": self.genuine.astype(np.float16), f"{prefix}meta": np.array(json.dumps(meta)),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str, where: str) -> OpenSetCalibration:
        try:
            meta = json.loads(str(arrays[f"{prefix}meta"]))
            if meta.get("format") != CALIBRATION_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
            return cls(
                scorer=meta["scorer"], rule=Rule(**meta["rule"]), tails=np.asarray(arrays[f"{prefix}tails"], np.float32),
                ranks=np.asarray(arrays[f"{prefix}ranks"], np.int64), compared=int(arrays[f"{prefix}compared"]),
                genuine=np.asarray(arrays[f"{prefix}genuine"], np.float32),
                margin=None if meta.get("margin") is None else float(meta["margin"]),
                source=dict(meta.get("source", {})),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"{where} holds no usable open-set calibration ({error}): re-create it") from error


def check_target_fpir(target_fpir: float) -> None:
    if not 0.0 < target_fpir < 1.0:
        raise InputError(f"`target_fpir` is a share of strangers, strictly between 0 and 1; got {target_fpir}")


def calibration_arrays(calibrations: dict[str, OpenSetCalibration]) -> dict[str, np.ndarray]:
    """Calibrations keyed by scorer as the arrays of one ``.npz``."""
    arrays: dict[str, np.ndarray] = {}
    for scorer, calibration in calibrations.items():
        arrays.update(calibration.arrays(f"{scorer}."))
    return arrays


def save_calibrations(path: str | Path, calibrations: dict[str, OpenSetCalibration]) -> None:
    """Write calibrations keyed by scorer into one ``.npz`` (atomically).

    Written as an extractor directory's ``calibration.npz``, its SHA-256 goes into that extractor's
    ``manifest.json`` (``calibration_sha256``), both committed together; the fingerprint is unchanged.
    """
    path = Path(path)
    arrays = calibration_arrays(calibrations)
    manifest_path = path.parent / EXTRACTOR_MANIFEST
    manifest = None
    if path.name == CALIBRATION_FILE and manifest_path.is_file():
        try:
            manifest = read_json(manifest_path, "extractor manifest", "re-create it with network.py")
        except InputError:
            manifest = None
    if manifest is None or manifest.get("format") != EXTRACTOR_FORMAT:
        save_npz(path, **arrays)
        return
    with StagedFiles(path.parent) as staged:
        digest: list[str] = []

        def write_and_hash(temporary: Path) -> None:
            np.savez(temporary, **arrays)
            digest.append(sha256_file(temporary))

        staged.write_with(path.name, write_and_hash)
        staged.write_bytes(EXTRACTOR_MANIFEST, json_bytes({**manifest, "calibration_sha256": digest[0]}))


def load_calibrations(path: str | Path, fix: str) -> dict[str, OpenSetCalibration]:
    """Read what :func:`save_calibrations` wrote: ``{scorer: calibration}``."""
    arrays = load_npz(path, "open-set calibration", fix)
    scorers = sorted({name.split(".", 1)[0] for name in arrays if name.endswith(".meta")})
    if not scorers:
        raise InputError(f"{path} holds no open-set calibration: {fix}")
    return {scorer: OpenSetCalibration.from_arrays(arrays, f"{scorer}.", str(path)) for scorer in scorers}


def backbone_calibrations(extractor_manifest: dict[str, Any], extractor_dir: str | Path | None = None) -> dict[str, OpenSetCalibration]:
    """The metric scorers' calibrations of an extractor: ``{scorer: calibration}`` (may be empty).

    Looked for in the extractor directory (``evaluate.py calibrate --output DIR/calibration.npz``),
    then among the calibrations the toolkit ships, by the extractor's fingerprint.
    The extractor directory's file is checked first against the manifest's ``calibration_sha256``
    (a manifest older than that field: a warning); the shipped ones are part of the package.
    """
    fingerprint = extractor_manifest.get("fingerprint", "")
    places = [] if extractor_dir is None else [Path(extractor_dir) / CALIBRATION_FILE]
    places.append(PACKAGED_CALIBRATIONS / f"{fingerprint}.npz")
    for path in places:
        if not path.is_file():
            continue
        fix = f"re-create it with evaluate.py calibrate, writing {path}"
        if path.parent != PACKAGED_CALIBRATIONS:
            check_file_sha256(path, extractor_manifest, "calibration_sha256", path.parent / EXTRACTOR_MANIFEST, fix)
        calibrations = load_calibrations(path, fix)
        for scorer, calibration in calibrations.items():
            if calibration.fingerprint != fingerprint:
                raise InputError(
                    f"{path} calibrates the {scorer} scorer for extractor {calibration.fingerprint}, not this one "
                    f"({fingerprint}): {fix}"
                )
        return calibrations
    return {}


def kept_ranks(compared: int) -> np.ndarray:
    """Ranks kept per probe: the first :data:`TAIL`, then :data:`SPARSE_RANKS` log-spaced to the last."""
    dense = np.arange(min(TAIL, compared))
    if compared <= TAIL:
        return dense
    sparse = np.unique(np.round(np.geomspace(TAIL, compared - 1, SPARSE_RANKS)).astype(np.int64))
    return np.concatenate([dense, sparse[sparse >= TAIL]])


def default_scorer(calibrations: dict[str, OpenSetCalibration]) -> str | None:
    """The scorer a set of calibrations recommends (``source["default_scorer"]``, written by
    :func:`faceid.match.crossval.calibrate_scorers`), else the first by name; ``None`` if empty."""
    if not calibrations:
        return None
    return next(iter(calibrations.values())).source.get("default_scorer", sorted(calibrations)[0])


def calibrate_open_set(
    vectors: np.ndarray,
    labels: np.ndarray,
    scorer: str,
    *,
    head=None,
    normalizer=None,
    rule: Rule = Rule(),
    photos: int = DEFAULTS.top_k,
    margin: float | None = None,
    max_probes: int = MAX_PROBES,
    seed: int = DEFAULTS.seed,
    source: dict[str, Any] | None = None,
) -> OpenSetCalibration:
    """Leave-one-out open-set calibration on labelled vectors of people no user enrols.

    Each person's vectors are put in a random order; "enrolled with ``c`` photos" is the first
    ``c`` of them. Each probe (up to ``max_probes`` vectors, drawn at random) is scored against
    every person but its own, for each ``c`` in 1 .. ``photos``: its impostor per-person scores
    (kept at :func:`kept_ranks`). Its genuine score is against its own person's first ``c`` vectors
    other than itself.

    Raises:
        InputError: fewer than two people, or a bad option.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    people, dense = np.unique(np.asarray(labels), return_inverse=True)
    if len(people) < 2:
        raise InputError(f"open-set calibration needs at least two people, got {len(people)}")
    if photos < 1:
        raise InputError(f"calibration needs at least one photo per person, got {photos}")
    rng = np.random.default_rng(seed)
    probes = np.arange(len(vectors))
    if len(probes) > max_probes:
        probes = np.sort(rng.choice(probes, max_probes, replace=False))
    # Each vector's place in its person's random order (0 = enrolled first).
    place = np.empty(len(vectors), dtype=np.int64)
    for person in range(len(people)):
        rows = np.flatnonzero(dense == person)
        place[rng.permutation(rows)] = np.arange(len(rows))
    ranks = kept_ranks(len(people) - 1)
    tails = np.empty((photos, len(probes), len(ranks)), dtype=np.float32)
    genuine = np.full((photos, len(probes)), np.nan, dtype=np.float32)
    everyone = np.arange(len(vectors))
    for start in range(0, len(probes), 256):
        chunk = probes[start : start + 256]
        rows = slice(start, start + len(chunk))
        pair = pairwise_scores(vectors[chunk], vectors, head=head, normalizer=normalizer, scorer=scorer)
        own = dense[chunk][:, None] == dense[None, :]
        itself = chunk[:, None] == everyone[None, :]
        # A probe's own person, enrolled without the probe: the others move up one place.
        own_place = place[None, :] - (own & (place[None, :] > place[chunk][:, None]))
        for c in range(photos):
            impostor = person_scores(pair, dense, len(people), rule, exclude=own | (place[None, :] > c))
            # Every other person is compared (own person's column is -inf, sorted last and dropped).
            ranked = -np.sort(-impostor, axis=1)[:, : len(people) - 1]
            tails[c, rows] = ranked[:, ranks]
            mated = person_scores(pair, dense, len(people), rule, exclude=~own | itself | (own_place > c))
            mine = mated[np.arange(len(chunk)), dense[chunk]]
            genuine[c, rows] = np.where(np.isfinite(mine), mine, np.nan)
    return OpenSetCalibration(
        scorer=scorer, rule=rule, tails=tails, ranks=ranks, compared=len(people) - 1,
        genuine=genuine, margin=None if margin is None else float(margin),
        source={**(source or {}), "people": len(people), "vectors": len(vectors), "probes": len(probes)},
    )
