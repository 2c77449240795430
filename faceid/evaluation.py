"""Accuracy the way the field measures it: LFW pair verification, identification, N-way one-shot.

Three evaluations share one set-up (an extractor, optionally a similarity model and a
feature cache) and compare the same *methods* side by side:

* ``euclidean``: minus the Euclidean distance of the two vectors;
* ``cosine``: the dot product of the L2-normalised vectors;
* ``head``: the similarity model given with ``--classification`` (its head on
  ``|z(a) - z(b)|``, with the normaliser it was trained with);
* ``head_per_fold`` (pairs only, ``--train_per_fold``): a fresh head trained for each
  fold on the other folds' pairs, LFW's *restricted* protocol.

Higher scores always mean "more likely the same person" and a pair is accepted when
``score >= threshold`` (the convention of :mod:`faceid.metrics`).

**Pairs** (:func:`evaluate_pairs`) reads an LFW pair list. ``pairs.txt`` (header
``10 300``) brings its own 10 person-disjoint folds. A single list such as
``pairsDevTrain.txt`` (header ``1100``) is cut into ``folds`` contiguous chunks of its
same pairs and of its different pairs; such folds share people (the summary says so
under ``folds.person_disjoint``, which is computed, not assumed), so their spread is
a little optimistic. Per fold, the threshold with the best accuracy on the *other*
folds is applied to the fold; accuracy is the mean (and sample std) over folds. ROC
AUC, EER and TAR at fixed FARs are computed on the pooled scores, each pair scored
by a model that did not train on it.

Images are taken from a feature cache made by the same extractor when it holds them
(same person folder, file name and sha256), and embedded otherwise, with the same
detection and alignment as extraction. Which face is the person's: the largest, as
extraction takes it (``face_choice="largest"``, the default for identification), or the
one at the image centre (``"centre"``, the default for pairs: LFW labels the centred
face, which is not always the largest; this detects every image again and reuses a
cached vector only when the two choices agree). An image with no (centred) face is,
with ``no_face="centre"``, embedded from a landmark-aligned box where dlib's
detector puts faces in LFW's deep-funnelled photos (what dlib's own LFW evaluation did
with detector misses); with ``no_face="skip"`` it is left out, and a pair that needs it
is *rejected* (scored below every other pair). Either way the share of such images is
reported. A listed image that does not exist is dropped with its pair, or, for a
different pair with ``missing="replace"``, swapped for a random image of another
person from the same fold.

**Identify** (:func:`evaluate_identify`) enrols ``gallery_per_person`` images of each
known person and scores every other image by the per-person score of
:func:`faceid.scoring.person_scores`: rank-1, rank-5 and the CMC curve (closed set), and,
with a share of people held out as strangers, the detection-and-identification rate
at 1 % of strangers accepted and the stranger rejection rate at a fixed threshold
(open set).

**One-shot** (:func:`evaluate_oneshot`): Koch et al.'s N-way one-shot task.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from faceid.backbones import Extractor, load_extractor
from faceid.cache import NO_FACE, UNREADABLE, FeatureCache, describe_extractor
from faceid.embedding import FaceEmbedder, FaceOptions
from faceid.errors import ImageReadError, InputError
from faceid.faces import DetectedFace, FaceBox, face_at, list_people, read_image
from faceid.head import HeadArchitecture, SimilarityHead, score_pairs, train_head
from faceid.manifest import sha256_file
from faceid.metrics import (
    accuracy_at,
    best_accuracy_threshold,
    best_balanced_threshold,
    cmc_curve,
    equal_error_rate,
    roc_auc,
    roc_curve,
    tar_at_far,
    threshold_at_far,
)
from faceid.pairs import PairSet
from faceid.scoring import Rule, pairwise_scores, person_scores
from faceid.settings import DEFAULTS
from faceid.similarity import SimilarityModel

logger = logging.getLogger(__name__)

__all__ = [
    "Evaluation",
    "FoldAccuracy",
    "Method",
    "PairList",
    "best_balanced_threshold",
    "evaluate_identify",
    "evaluate_oneshot",
    "evaluate_pairs",
    "fold_accuracy",
    "open_set_rates",
    "read_pair_list",
    "wilson_interval",
]

ImageKey = tuple[str, str]  # (person folder, file name)

NO_FACE_POLICIES = ("centre", "skip")
# Which detected face is the labelled one: the largest (what extraction and live
# identification use) or the one at the image centre (LFW's definition of its label).
FACE_CHOICES = ("largest", "centre")
MISSING_POLICIES = ("drop", "replace")
DEFAULT_FAR_TARGETS = (1e-3, 1e-2)
# Ranks kept for the CMC curve and its plot.
CMC_MAX_RANK = 20

# Where dlib's HOG detector puts the face in LFW's deep-funnelled 250x250 photos (median
# box over 60 random DevTrain images: 109 px wide, centred at (121, 134)), as shares of
# the image. Used only when the detector finds nothing (no_face="centre").
CENTRE_BOX_SIDE = 0.44
CENTRE_BOX_X = 0.486
CENTRE_BOX_Y = 0.536

# Image states after embedding. Only the first two give a vector.
DETECTED, CENTRE, SKIPPED, MISSING = "detected", "centre", "no face (skipped)", "missing"


# --------------------------------------------------------------------------------------
# Scoring methods
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """One way of scoring two faces.

    Attributes:
        name: key in the results (``euclidean``, ``cosine``, ``head``, ``head_per_fold``).
        kind: ``euclidean`` (minus the distance), ``cosine`` or ``head``.
        head: the similarity head, for ``kind="head"``.
        normalizer: z-score the head was trained with (applied before differencing).
        rule: how a person's vectors become one per-person score in identification.
        threshold: per-person acceptance threshold for the open-set rejection rate
            (the model's calibrated one for a head; ``None`` reports null).
        accepts_above: the vote rule accepts *more than* its share; topk accepts ``>=``.
    """

    name: str
    kind: str
    head: SimilarityHead | None = None
    normalizer: Callable[[np.ndarray], np.ndarray] | None = None
    rule: Rule = field(default_factory=Rule)
    threshold: float | None = None
    accepts_above: bool = False

    def pair_scores(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Score row ``k`` of ``first`` against row ``k`` of ``second``: ``(n,) float32``."""
        first = np.asarray(first, dtype=np.float32)
        second = np.asarray(second, dtype=np.float32)
        if self.kind == "cosine":
            return np.sum(_unit(first) * _unit(second), axis=1).astype(np.float32)
        if self.kind == "euclidean":
            return -np.linalg.norm(first - second, axis=1).astype(np.float32)
        if self.normalizer is not None:
            first, second = self.normalizer(first), self.normalizer(second)
        return score_pairs(self.head, first, second)

    def score_matrix(self, queries: np.ndarray, references: np.ndarray) -> np.ndarray:
        """Every query against every reference: ``(m, n) float32``."""
        if self.kind == "cosine":
            return (_unit(np.asarray(queries, np.float32)) @ _unit(np.asarray(references, np.float32)).T).astype(
                np.float32
            )
        # Euclidean and head scores come from the one scoring implementation.
        return pairwise_scores(queries, references, head=self.head, normalizer=self.normalizer)

    def accepts(self, scores: np.ndarray, threshold: float) -> np.ndarray:
        return scores > threshold if self.accepts_above else scores >= threshold


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def build_methods(
    model: SimilarityModel | None,
    euclidean_threshold: float | None = None,
    cosine_threshold: float | None = None,
) -> list[Method]:
    """Euclidean and cosine always; the head when a similarity model is given.

    ``euclidean_threshold`` is a *distance* (dlib's customary 0.6); it becomes the
    score ``-distance``.
    """
    methods = [
        Method(
            "euclidean", "euclidean", threshold=None if euclidean_threshold is None else -float(euclidean_threshold)
        ),
        Method("cosine", "cosine", threshold=cosine_threshold),
    ]
    if model is not None:
        methods.append(
            Method(
                "head",
                "head",
                head=model.head,
                normalizer=model.normalizer,
                rule=model.rule,
                threshold=model.threshold if model.rule.name == "topk" else model.rule.vote_share,
                accepts_above=model.rule.name == "vote",
            )
        )
    return methods


# --------------------------------------------------------------------------------------
# Pair lists
# --------------------------------------------------------------------------------------


def lfw_file_name(person: str, index: int) -> str:
    """LFW's file name for image ``index`` (1-based) of ``person``: ``name_0001.jpg``."""
    return f"{person}_{index:04d}.jpg"


@dataclass(frozen=True)
class PairList:
    """An LFW pair list.

    Attributes:
        first, second: ``(person, file name)`` of each pair's two images.
        is_same: ``(n_pairs,) bool``; True for a same-person line.
        fold: ``(n_pairs,) int`` fold of each pair, in ``[0, n_folds)``.
        n_folds: number of folds.
        folds_from_file: True when the file defines the folds (``pairs.txt``), False when
            a single list was cut into folds here.
    """

    first: tuple[ImageKey, ...]
    second: tuple[ImageKey, ...]
    is_same: np.ndarray
    fold: np.ndarray
    n_folds: int
    folds_from_file: bool

    def __len__(self) -> int:
        return len(self.first)

    def person_disjoint(self) -> bool:
        """Whether no person appears in two folds (true for LFW's own ``pairs.txt`` folds)."""
        seen: dict[str, int] = {}
        for (person_a, _), (person_b, _), fold in zip(self.first, self.second, self.fold):
            for person in (person_a, person_b):
                if seen.setdefault(person, int(fold)) != int(fold):
                    return False
        return True

    def images(self) -> list[ImageKey]:
        """Every image the list names, once, in order of first appearance."""
        return list(dict.fromkeys([*self.first, *self.second]))


def read_pair_list(path: str | Path, folds: int = 10) -> PairList:
    """Parse an LFW pair list.

    Format: a header ``N`` (one list: ``N`` same-person lines, then ``N`` different-person
    lines) or ``F N`` (``F`` folds, each ``N`` same then ``N`` different lines); then
    ``name<TAB>i<TAB>j`` for a same pair and ``name1<TAB>i<TAB>name2<TAB>j`` for a different
    pair, image ``i`` of ``name`` being ``name/name_%04d.jpg``.

    Args:
        path: the pair list.
        folds: how many folds to cut a single list into (ignored when the file has folds).
            Same pairs and different pairs are each cut into contiguous chunks, so a fold
            keeps the file's order (alphabetical in LFW: a person's same pairs mostly stay
            in one fold), and every fold gets the same mix of the two kinds.

    Raises:
        InputError: the file is missing or does not follow the format (the message names
            the line).
    """
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the pair list {path} ({error}): pass --pairs_file an LFW pairs file") from error
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line]
    if not numbered:
        raise InputError(f"pair list {path} is empty: expected a header line like '1100' or '10 300'")
    header_number, header = numbered[0]
    try:
        counts = [int(field_) for field_ in header.split()]
    except ValueError:
        counts = []
    if len(counts) not in (1, 2) or min(counts) < 1:
        raise InputError(
            f"{path}:{header_number}: header {header!r} is not an LFW pair-list header: "
            "expected 'N' (N same then N different pairs) or 'FOLDS N' (as in pairs.txt)"
        )
    file_folds, per_kind = (1, counts[0]) if len(counts) == 1 else counts
    body = numbered[1:]
    if len(body) != file_folds * 2 * per_kind:
        raise InputError(
            f"{path}: header {header!r} announces {file_folds * 2 * per_kind} pairs but the file has {len(body)} "
            "pair lines: the file is truncated or not an LFW pair list"
        )
    first: list[ImageKey] = []
    second: list[ImageKey] = []
    is_same = np.zeros(len(body), dtype=bool)
    for position, (number, line) in enumerate(body):
        fields_ = line.split()
        expect_same = position % (2 * per_kind) < per_kind
        try:
            if len(fields_) == 3:
                person_a = person_b = fields_[0]
                index_a, index_b = int(fields_[1]), int(fields_[2])
            elif len(fields_) == 4:
                person_a, person_b = fields_[0], fields_[2]
                index_a, index_b = int(fields_[1]), int(fields_[3])
            else:
                raise ValueError(f"{len(fields_)} fields")
        except ValueError as error:
            raise InputError(f"{path}:{number}: {line!r} is not 'name i j' or 'name1 i name2 j' ({error})") from None
        if (len(fields_) == 3) != expect_same:
            kind = "same-person ('name i j')" if expect_same else "different-person ('name1 i name2 j')"
            raise InputError(
                f"{path}:{number}: expected a {kind} line here: each block holds {per_kind} same then "
                f"{per_kind} different pairs, as the header {header!r} says"
            )
        first.append((person_a, lfw_file_name(person_a, index_a)))
        second.append((person_b, lfw_file_name(person_b, index_b)))
        is_same[position] = expect_same

    if file_folds > 1:
        fold = np.arange(len(body)) // (2 * per_kind)
        if folds != file_folds:
            logger.info("%s defines %d folds: using them (--folds applies to single lists only)", path, file_folds)
        return PairList(tuple(first), tuple(second), is_same, fold, file_folds, True)
    if per_kind < 2:
        raise InputError(f"{path} lists {per_kind} pair of each kind: at least 2 are needed to cut it into folds")
    if not 2 <= folds <= per_kind:
        raise InputError(f"--folds must be between 2 and {per_kind} (the pairs of each kind); got {folds}")
    fold = np.empty(len(body), dtype=np.int64)
    for rows in (np.flatnonzero(is_same), np.flatnonzero(~is_same)):
        for index, chunk in enumerate(np.array_split(rows, folds)):
            fold[chunk] = index
    return PairList(tuple(first), tuple(second), is_same, fold, folds, False)


# --------------------------------------------------------------------------------------
# Fold accuracy (pure numerics)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FoldAccuracy:
    """Per-fold results of :func:`fold_accuracy`, each ``(n_folds,) float64``."""

    accuracies: np.ndarray  # accuracy on the fold at the threshold chosen on the other folds
    thresholds: np.ndarray  # that threshold (accept when score >= it)
    balanced_accuracies: np.ndarray  # mean of TAR and TNR at the balanced threshold of the other folds
    balanced_thresholds: np.ndarray

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        """Sample standard deviation over folds (0 for a single fold)."""
        return float(np.std(self.accuracies, ddof=1)) if len(self.accuracies) > 1 else 0.0


def _balanced_accuracy_at(scores: np.ndarray, is_same: np.ndarray, threshold: float) -> float:
    """Mean of the per-class rates decided correctly; a fold with one class gives that class's rate."""
    rates = [
        np.mean(scores[mask] >= threshold) if same else np.mean(scores[mask] < threshold)
        for same, mask in ((True, is_same), (False, ~is_same))
        if mask.any()
    ]
    return float(np.mean(rates))


def fold_accuracy(scores: np.ndarray, is_same: np.ndarray, fold: np.ndarray) -> FoldAccuracy:
    """Accuracy of each fold at the threshold chosen on the other folds.

    Args:
        scores: ``(n_pairs,)`` scores from one scorer for every fold, or
            ``(n_folds, n_pairs)`` where row ``k`` scores every pair with the scorer used
            for fold ``k`` (a head trained without fold ``k``); row ``k`` then provides both
            the training folds' scores (threshold) and fold ``k``'s (accuracy).
        is_same: ``(n_pairs,) bool``.
        fold: ``(n_pairs,) int`` in ``[0, n_folds)``; every fold must be non-empty.

    Raises:
        InputError: fewer than two folds, an empty fold, or training folds lacking one kind of pair.
    """
    is_same = np.asarray(is_same, dtype=bool)
    fold = np.asarray(fold)
    n_folds = int(fold.max()) + 1 if len(fold) else 0
    if n_folds < 2:
        raise InputError("fold accuracy needs at least two folds")
    scores = np.asarray(scores)
    per_fold = scores if scores.ndim == 2 else np.broadcast_to(scores, (n_folds, len(scores)))
    if per_fold.shape != (n_folds, len(is_same)):
        raise InputError(f"scores of shape {scores.shape} do not match {n_folds} folds of {len(is_same)} pairs")
    results = np.zeros((4, n_folds))
    for k in range(n_folds):
        test = fold == k
        if not test.any():
            raise InputError(f"fold {k} has no pair left to evaluate: use fewer --folds")
        train = ~test
        threshold, _ = best_accuracy_threshold(per_fold[k][train], is_same[train])
        balanced_threshold, _ = best_balanced_threshold(per_fold[k][train], is_same[train])
        results[:, k] = (
            accuracy_at(per_fold[k][test], is_same[test], threshold),
            threshold,
            _balanced_accuracy_at(per_fold[k][test], is_same[test], balanced_threshold),
            balanced_threshold,
        )
    return FoldAccuracy(*results)


# --------------------------------------------------------------------------------------
# Embedding, with the feature cache
# --------------------------------------------------------------------------------------


@dataclass
class EmbeddedImages:
    """Vectors of a set of images and what happened to each."""

    vectors: dict[ImageKey, np.ndarray]
    status: dict[ImageKey, str]  # DETECTED, CENTRE, SKIPPED, MISSING or UNREADABLE
    from_cache: int = 0
    embedded: int = 0
    several_faces: int = 0  # among the images detected in this run (cached ones are not detected again)
    off_centre: int = 0  # faces found, none at the centre (face_choice="centre"): counted as no face

    def counts(self) -> dict[str, Any]:
        """The ``images`` block of the summary."""
        states = list(self.status.values())
        found = sum(state not in (MISSING, UNREADABLE) for state in states)
        no_face = sum(state in (CENTRE, SKIPPED) for state in states)
        return {
            "total": len(states),
            "from_cache": self.from_cache,
            "embedded": self.embedded,
            "no_face": no_face,
            "no_face_centre_crop": states.count(CENTRE),
            "no_face_skipped": states.count(SKIPPED),
            "no_face_share": no_face / found if found else 0.0,
            "several_faces": self.several_faces,
            "off_centre_faces_only": self.off_centre,
            "missing": states.count(MISSING),
            "unreadable": states.count(UNREADABLE),
        }


def _cache_index(features: Path | None, extractor: Extractor) -> tuple[dict[ImageKey, tuple[str, Any]], dict[str, Any]]:
    """``(person, file) -> (sha256, vector or skip reason)`` of a cache made by ``extractor``."""
    if features is None:
        return {}, {"path": None, "used": False}
    cache = FeatureCache.load(features)
    if cache.fingerprint != extractor.fingerprint:
        logger.warning(
            "feature cache %s was made by %s, not by the extractor given (%s): ignoring it and embedding every image",
            features,
            describe_extractor(cache.manifest["extractor"]),
            describe_extractor(extractor.manifest),
        )
        return {}, {"path": str(features), "used": False, "reason": "made by another extractor"}
    index: dict[ImageKey, tuple[str, Any]] = {}
    for name, person in cache.people.items():
        for file_name, digest, vector in zip(person.files, person.hashes, person.vectors):
            index[(name, file_name)] = (digest, vector)
        for file_name, (digest, reason) in person.skipped.items():
            index[(name, file_name)] = (digest, reason)
    return index, {"path": str(features), "used": True}


def centre_face(image_rgb: np.ndarray) -> DetectedFace | None:
    """A face where LFW's deep-funnelled photos have it, with landmarks found inside that box.

    For images the detector missed: dlib's 5-point predictor still places the eyes and
    nose inside a box given to it, so the chip is aligned like a detected face's.
    ``None`` when the image is too small to hold a face there.
    """
    height, width = image_rgb.shape[:2]
    side = CENTRE_BOX_SIDE * min(height, width)
    centre_x, centre_y = CENTRE_BOX_X * width, CENTRE_BOX_Y * height
    box = FaceBox(
        left=round(centre_x - side / 2),
        top=round(centre_y - side / 2),
        right=round(centre_x + side / 2),
        bottom=round(centre_y + side / 2),
    )
    return face_at(image_rgb, box)


def centred_face(faces: Sequence[DetectedFace], image_shape: tuple[int, ...]) -> int | None:
    """Index of the face whose box holds the image centre, nearest first; None when no box does.

    LFW labels the face at the centre of each photo; it is usually, not always, the largest.
    """
    height, width = image_shape[:2]
    centre_x, centre_y = width / 2, height / 2
    holding = [
        (
            math.hypot(
                (face.box.left + face.box.right) / 2 - centre_x, (face.box.top + face.box.bottom) / 2 - centre_y
            ),
            index,
        )
        for index, face in enumerate(faces)
        if face.box.left <= centre_x < face.box.right and face.box.top <= centre_y < face.box.bottom
    ]
    return min(holding)[1] if holding else None


def embed_images(
    keys: Sequence[ImageKey],
    root: Path,
    embedder: FaceEmbedder,
    cache_index: dict[ImageKey, tuple[str, Any]],
    *,
    no_face: str = "centre",
    face_choice: str = "largest",
    batch_size: int = DEFAULTS.batch_size,
    progress: bool = True,
) -> EmbeddedImages:
    """Vectors of ``root/person/file`` for every key: from the cache when it holds the same bytes, else embedded.

    Detection and alignment are those of extraction. ``face_choice="largest"`` takes the
    largest face, as extraction does, so a cached vector is used without detecting again;
    ``"centre"`` takes the face at the image centre (LFW's labelled face), which needs
    detection for every image: the cached vector is reused only when that face is also
    the largest, and an image whose faces all lie off-centre counts as having no face.
    With ``no_face="centre"`` an image without a (centred) face is embedded from
    :func:`centre_face`; with ``"skip"`` it gets no vector.
    """
    from tqdm import tqdm

    if no_face not in NO_FACE_POLICIES:
        raise InputError(f"unknown no-face policy {no_face!r}: choose one of {', '.join(NO_FACE_POLICIES)}")
    if face_choice not in FACE_CHOICES:
        raise InputError(f"unknown face choice {face_choice!r}: choose one of {', '.join(FACE_CHOICES)}")
    result = EmbeddedImages(vectors={}, status={})
    pending: list[tuple[ImageKey, np.ndarray]] = []

    def flush() -> None:
        if pending:
            vectors = embedder.embed_chips(np.stack([chip for _, chip in pending]))
            for (key, _), vector in zip(pending, vectors):
                result.vectors[key] = vector
            result.embedded += len(pending)
            pending.clear()

    with tqdm(keys, desc="embed", unit="img", disable=None if progress else True) as bar:
        for key in bar:
            path = root / key[0] / key[1]
            if not path.is_file():
                result.status[key] = MISSING
                continue
            cached = cache_index.get(key)
            cached_vector, known_reason = None, None
            if cached is not None and cached[0] == sha256_file(path):
                if isinstance(cached[1], np.ndarray):
                    cached_vector = cached[1]
                else:
                    known_reason = cached[1]  # the cache already knows this exact file failed
            if cached_vector is not None and face_choice == "largest":
                result.vectors[key] = cached_vector
                result.status[key] = DETECTED
                result.from_cache += 1
                continue
            if known_reason == UNREADABLE:
                result.status[key] = UNREADABLE
                continue
            try:
                image = read_image(path)
            except ImageReadError as error:
                logger.warning("skipping %s", error)
                result.status[key] = UNREADABLE
                continue
            faces = [] if known_reason == NO_FACE else embedder.find_faces(image)
            if len(faces) > 1:
                result.several_faces += 1
            chosen = (0 if faces else None) if face_choice == "largest" else centred_face(faces, image.shape)
            if faces and chosen is None:
                result.off_centre += 1
            if chosen is not None:
                result.status[key] = DETECTED
                if chosen == 0 and cached_vector is not None:
                    result.vectors[key] = cached_vector
                    result.from_cache += 1
                    continue
                face = faces[chosen]
            elif no_face == "centre" and (face := centre_face(image)) is not None:
                logger.info("no %sface found in %s/%s: using the centre crop", "centred " * bool(faces), *key)
                result.status[key] = CENTRE
            else:
                logger.info("no %sface found in %s/%s: skipped", "centred " * bool(faces), *key)
                result.status[key] = SKIPPED
                continue
            pending.append((key, embedder.chips(image, [face])[0]))
            if len(pending) >= batch_size:
                flush()
        flush()
    return result


# --------------------------------------------------------------------------------------
# Shared set-up and the result object
# --------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """What one evaluation produced.

    Attributes:
        summary: the JSON object printed and written with ``--json``.
        curves: per-method arrays for the plots (``roc``, ``genuine``/``impostor`` scores,
            ``cmc``, ``open_set``), keyed by method name.
        settings: what the HTML page lists under "how this was measured".
    """

    summary: dict[str, Any]
    curves: dict[str, dict[str, Any]]
    settings: dict[str, Any]


@dataclass
class _Setup:
    extractor: Extractor
    embedder: FaceEmbedder
    model: SimilarityModel | None
    cache_index: dict[ImageKey, tuple[str, Any]]
    cache_info: dict[str, Any]


def _set_up(
    model_path: str | Path, classification: str | Path | None, features: str | Path | None, face_options: FaceOptions
) -> _Setup:
    extractor = load_extractor(model_path)
    model = None
    if classification is not None:
        model = SimilarityModel.load(classification)
        model.check_extractor(extractor.manifest, f"extractor {model_path}")
    index, cache_info = _cache_index(Path(features) if features is not None else None, extractor)
    return _Setup(extractor, FaceEmbedder(extractor, face_options), model, index, cache_info)


def _settings(
    setup: _Setup,
    model_path,
    classification,
    face_options: FaceOptions,
    argv: Sequence[str] | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """What the HTML page lists under "how this was measured"."""
    model_summary = None
    if setup.model is not None:
        model_summary = {
            "path": str(classification),
            "threshold": setup.model.threshold,
            "rule": f"{setup.model.rule.name} (top_k {setup.model.rule.top_k})",
            "normalize": setup.model.normalizer is not None,
            "target_far": setup.model.target_far,
            "hidden_units": list(setup.model.head.architecture.hidden_units),
        }
    return {
        "command_line": " ".join(["evaluate.py", *(sys.argv[1:] if argv is None else argv)]),
        "generated": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        "extractor": {"path": str(model_path), "description": describe_extractor(setup.extractor.manifest)},
        "model": model_summary,
        "feature_cache": setup.cache_info,
        "detection": {
            "detect": face_options.detect,
            "upsample": face_options.upsample,
            "detector": face_options.detector,
        },
        **extra,
    }


def _summary_head(command: str, setup: _Setup, model_path, classification, images: EmbeddedImages) -> dict[str, Any]:
    return {
        "command": command,
        "extractor": {
            "path": str(model_path),
            "backbone": setup.extractor.name,
            "fingerprint": setup.extractor.fingerprint,
        },
        "model": None if classification is None else str(classification),
        "feature_cache": setup.cache_info,
        "images": images.counts(),
    }


# --------------------------------------------------------------------------------------
# pairs
# --------------------------------------------------------------------------------------


def _replace_missing(
    pairs: PairList, available: dict[ImageKey, bool], embedded: set[ImageKey], rng: np.random.Generator
) -> tuple[list[ImageKey], list[ImageKey], int]:
    """Swap the unavailable images of different pairs for random images of other people in the same fold.

    Only missing or unreadable images are swapped (an image without a face stays, so the
    no-face policy still applies to it); replacements are drawn from the fold's embedded
    images, so person-disjoint folds stay disjoint, and a pair whose fold has no image of
    another person is left out. Same pairs are never changed: no other image is known to
    show the same person.
    """
    first, second = list(pairs.first), list(pairs.second)
    replaced = 0
    for k in range(pairs.n_folds):
        rows = np.flatnonzero(pairs.fold == k)
        pool = [
            key
            for key in dict.fromkeys([first[row] for row in rows] + [second[row] for row in rows])
            if key in embedded
        ]
        for row in rows:
            if pairs.is_same[row] or (available[first[row]] and available[second[row]]):
                continue
            for side, other in ((first, second), (second, first)):
                if not available[side[row]]:
                    candidates = [key for key in pool if key[0] != other[row][0]]
                    if candidates:
                        side[row] = candidates[rng.integers(len(candidates))]
            replaced += int(available.get(first[row], False) and available.get(second[row], False))
    return first, second, replaced


def _train_fold_heads(
    features: np.ndarray,
    first_rows: np.ndarray,
    second_rows: np.ndarray,
    is_same: np.ndarray,
    fold: np.ndarray,
    trainable: np.ndarray,
    epochs: int,
    seed: int,
    progress: bool,
) -> list[SimilarityHead]:
    """One head per fold, trained on the other folds' listed pairs (both images embedded).

    The minority kind of pair is repeated until both kinds are equally many, so a list
    that lost pairs (missing images) does not teach the head to say "same" by default.
    """
    from tqdm import tqdm

    heads = []
    n_folds = int(fold.max()) + 1
    for k in tqdm(range(n_folds), desc="heads", unit="fold", disable=None if progress else True):
        rows = np.flatnonzero((fold != k) & trainable)
        positives, negatives = rows[is_same[rows]], rows[~is_same[rows]]
        if len(positives) == 0 or len(negatives) == 0:
            raise InputError(
                f"fold {k}: the other folds hold no {'same' if len(positives) == 0 else 'different'} "
                "pair with both images embedded, so no head can be trained for it"
            )
        size = max(len(positives), len(negatives))
        rows = np.concatenate([np.resize(positives, size), np.resize(negatives, size)])
        pair_set = PairSet(first=first_rows[rows], second=second_rows[rows], label=is_same[rows].astype(np.float32))
        head, _ = train_head(
            features,
            pair_set,
            None,
            architecture=HeadArchitecture(),
            epochs=epochs,
            batch_size=DEFAULTS.train_batch_size,
            learning_rate=DEFAULTS.learning_rate,
            seed=seed + k,
            progress=False,
        )
        heads.append(head)
    return heads


def _verification_metrics(
    scores: np.ndarray, pooled: np.ndarray, is_same: np.ndarray, fold: np.ndarray, far_targets: Sequence[float]
) -> dict[str, Any]:
    folds = fold_accuracy(scores, is_same, fold)
    n_folds = len(folds.accuracies)
    threshold, _ = best_accuracy_threshold(pooled, is_same)
    return {
        "accuracy": folds.mean,
        "accuracy_std": folds.std,
        "accuracy_sem": folds.std / math.sqrt(n_folds),
        "fold_accuracy": [float(value) for value in folds.accuracies],
        "fold_threshold": [float(value) for value in folds.thresholds],
        "balanced_accuracy": float(np.mean(folds.balanced_accuracies)),
        "balanced_accuracy_std": float(np.std(folds.balanced_accuracies, ddof=1)),
        "auc": roc_auc(pooled, is_same),
        "eer": equal_error_rate(pooled, is_same),
        "tar_at_far": {f"{target:g}": tar_at_far(pooled, is_same, target) for target in far_targets},
        "threshold": threshold,
    }


def evaluate_pairs(
    pairs_file: str | Path,
    images_root: str | Path,
    model_path: str | Path,
    *,
    classification: str | Path | None = None,
    features: str | Path | None = None,
    folds: int = 10,
    train_per_fold: bool = False,
    head_epochs: int = 10,
    missing: str = "drop",
    no_face: str = "centre",
    face_choice: str = "centre",
    far_targets: Sequence[float] = DEFAULT_FAR_TARGETS,
    face_options: FaceOptions | None = None,
    batch_size: int = DEFAULTS.batch_size,
    seed: int = DEFAULTS.seed,
    progress: bool = True,
    argv: Sequence[str] | None = None,
) -> Evaluation:
    """Verification accuracy on an LFW pair list, every method side by side.

    See the module docstring for the protocol. ``head_per_fold`` (``train_per_fold``)
    trains, for fold ``k``, a fresh head (``HeadArchitecture()``, raw features, Adam
    with the training defaults, ``head_epochs`` epochs, seed ``seed + k``) on the pairs
    of every other fold exactly as the file lists them, with the file's labels.

    Raises:
        InputError: unreadable pair list, no pair left to evaluate, or a fold without pairs.
        ManifestMismatchError: the similarity model was trained on another extractor.
    """
    started = time.perf_counter()
    if missing not in MISSING_POLICIES:
        raise InputError(f"unknown missing-image policy {missing!r}: choose one of {', '.join(MISSING_POLICIES)}")
    if head_epochs < 1:
        raise InputError(f"--head_epochs must be at least 1, got {head_epochs}")
    pairs = read_pair_list(pairs_file, folds)
    images_root = Path(images_root)
    if not images_root.is_dir():
        raise InputError(
            f"images root {images_root} is not a folder: pass --images_root DIR holding <name>/<name>_0001.jpg"
        )
    face_options = face_options or FaceOptions()
    setup = _set_up(model_path, classification, features, face_options)
    images = embed_images(
        pairs.images(),
        images_root,
        setup.embedder,
        setup.cache_index,
        no_face=no_face,
        face_choice=face_choice,
        batch_size=batch_size,
        progress=progress,
    )

    # "Available": the file exists and could be read. Pairs naming an unavailable image are
    # left out (or, for different pairs with missing="replace", repaired first).
    available = {key: state not in (MISSING, UNREADABLE) for key, state in images.status.items()}
    n_missing = sum(not (available[a] and available[b]) for a, b in zip(pairs.first, pairs.second))
    first, second, replaced = list(pairs.first), list(pairs.second), 0
    if missing == "replace":
        first, second, replaced = _replace_missing(pairs, available, set(images.vectors), np.random.default_rng(seed))
    keep = np.array([available.get(a, False) and available.get(b, False) for a, b in zip(first, second)])
    n_dropped = int(np.count_nonzero(~keep))
    if n_missing:
        logger.warning(
            "%d of %d pairs name an image that is missing or unreadable under %s: %d replaced, %d left out",
            n_missing,
            len(pairs),
            images_root,
            replaced,
            n_dropped,
        )
    rows = np.flatnonzero(keep)
    is_same, fold = pairs.is_same[rows], pairs.fold[rows]
    if not is_same.any() or is_same.all():
        raise InputError(
            f"after leaving out pairs with missing images, {int(is_same.sum())} same and {int((~is_same).sum())} "
            f"different pairs remain: --images_root {images_root} must hold the images the pair list names"
        )
    kept_first = [first[row] for row in rows]
    kept_second = [second[row] for row in rows]
    # Pairs whose image has no vector (no face, --no_face skip) are rejected by every method.
    scored = np.array([a in images.vectors and b in images.vectors for a, b in zip(kept_first, kept_second)])
    keys = list(dict.fromkeys([key for key in kept_first + kept_second if key in images.vectors]))
    row_of = {key: index for index, key in enumerate(keys)}
    dim = setup.extractor.output_dim
    matrix = (
        np.stack([images.vectors[key] for key in keys]).astype(np.float32) if keys else np.zeros((0, dim), np.float32)
    )
    first_rows = np.array([row_of.get(key, -1) for key in kept_first])
    second_rows = np.array([row_of.get(key, -1) for key in kept_second])

    def finish(raw: np.ndarray) -> np.ndarray:
        """Scores of every kept pair; rejected pairs go below every scored one."""
        full = np.empty(len(rows), dtype=np.float64)
        full[scored] = raw
        floor = float(raw.min()) - 1.0 if len(raw) else 0.0
        full[~scored] = floor
        return full

    methods = build_methods(setup.model)
    scores_by_method: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> (scores for fold_accuracy, pooled)
    for method in methods:
        pooled = finish(method.pair_scores(matrix[first_rows[scored]], matrix[second_rows[scored]]))
        scores_by_method[method.name] = (pooled, pooled)
    if train_per_fold:
        heads = _train_fold_heads(matrix, first_rows, second_rows, is_same, fold, scored, head_epochs, seed, progress)
        per_fold = np.stack(
            [
                finish(
                    Method("head_per_fold", "head", head=head).pair_scores(
                        matrix[first_rows[scored]], matrix[second_rows[scored]]
                    )
                )
                for head in heads
            ]
        )
        pooled = per_fold[fold, np.arange(len(rows))]
        scores_by_method["head_per_fold"] = (per_fold, pooled)

    no_face_share = images.counts()["no_face_share"]
    results: dict[str, Any] = {}
    curves: dict[str, dict[str, Any]] = {}
    for name, (scores, pooled) in scores_by_method.items():
        results[name] = _verification_metrics(scores, pooled, is_same, fold, far_targets)
        results[name]["no_face_share"] = no_face_share
        if name == "euclidean":
            results[name]["distance_threshold"] = -results[name]["threshold"]
        if name == "head_per_fold":
            results[name]["threshold"] = None  # ten heads, ten scales: no single threshold to deploy
        far, tar, _ = roc_curve(pooled, is_same)
        curves[name] = {"roc": (far, tar), "genuine": pooled[is_same & scored], "impostor": pooled[~is_same & scored]}

    n_different = int(np.count_nonzero(~is_same))
    for target in far_targets:
        if target * n_different < 1:
            logger.warning(
                "TAR at FAR %g rests on %d different pairs: it means 'no different pair accepted'", target, n_different
            )
    summary = _summary_head("pairs", setup, model_path, classification, images)
    summary.update(
        {
            "pairs_file": str(pairs_file),
            "images_root": str(images_root),
            "folds": {
                "count": pairs.n_folds,
                "from_file": pairs.folds_from_file,
                "person_disjoint": pairs.person_disjoint(),
            },
            "pairs": {
                "listed": len(pairs),
                "evaluated": len(rows),
                "same": int(is_same.sum()),
                "different": n_different,
                "missing_image": n_missing,
                "replaced": replaced,
                "left_out": n_dropped,
                "rejected_no_face": int(np.count_nonzero(~scored)),
            },
            "no_face_policy": no_face,
            "face_choice": face_choice,
            "missing_policy": missing,
            "head_per_fold": {
                "epochs": head_epochs,
                "architecture": list(HeadArchitecture().hidden_units),
                "trained_on": "the other folds' listed pairs, minority kind repeated to balance",
            }
            if train_per_fold
            else None,
            "methods": results,
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    fold_source = "from the file" if pairs.folds_from_file else "contiguous chunks of a single list"
    settings = _settings(
        setup,
        model_path,
        classification,
        face_options,
        argv,
        {
            "pairs_file": str(pairs_file),
            "images_root": str(images_root),
            "folds": f"{pairs.n_folds} ({fold_source}; person-disjoint: {pairs.person_disjoint()})",
            "no_face": no_face,
            "face_choice": face_choice,
            "missing": missing,
            "train_per_fold": train_per_fold,
            "seed": seed,
        },
    )
    return Evaluation(summary, curves, settings)


# --------------------------------------------------------------------------------------
# identify
# --------------------------------------------------------------------------------------


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
    best = np.argmax(known_scores, axis=1)
    best_score = known_scores[np.arange(len(known_scores)), best]
    return float(np.mean((best == true_class) & (best_score >= threshold))), threshold


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


def _folder_vectors(
    faces_path: Path, setup: _Setup, no_face: str, face_choice: str, batch_size: int, progress: bool
) -> tuple[dict[str, list[np.ndarray]], EmbeddedImages]:
    people = list_people(faces_path)
    keys = [(name, path.name) for name, files in people.items() for path in files]
    images = embed_images(
        keys,
        faces_path,
        setup.embedder,
        setup.cache_index,
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
    setup = _set_up(model_path, classification, features, face_options)
    vectors_by_person, images = _folder_vectors(faces_path, setup, no_face, face_choice, batch_size, progress)
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
                    np.mean(~method.accepts(stranger_best, method.threshold))
                )
                entry["identified_at_threshold"] = float(
                    np.mean(correct & method.accepts(best_score, method.threshold))
                )
            curves[method.name]["open_set"] = _open_set_curve(correct, best_score, stranger_best)
        results[method.name] = entry

    summary = _summary_head("identify", setup, model_path, classification, images)
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
    settings = _settings(
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


# --------------------------------------------------------------------------------------
# oneshot
# --------------------------------------------------------------------------------------


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
    progress: bool = True,
    argv: Sequence[str] | None = None,
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
        raise InputError(f"--way must be at least 2 and --trials at least 1; got {way} and {trials}")
    faces_path = Path(faces_path)
    face_options = face_options or FaceOptions()
    setup = _set_up(model_path, classification, features, face_options)
    vectors_by_person, images = _folder_vectors(faces_path, setup, no_face, face_choice, batch_size, progress)
    eligible = sorted(name for name, vectors in vectors_by_person.items() if len(vectors) >= 2)
    if len(eligible) < way:
        raise InputError(
            f"{way}-way one-shot needs {way} people with 2 or more usable images; {faces_path} has "
            f"{len(eligible)}: lower --way or add people"
        )
    rng = np.random.default_rng(seed)
    probes, supports = [], []
    for _ in range(trials):
        people = rng.choice(len(eligible), way, replace=False)
        own = vectors_by_person[eligible[people[0]]]
        probe_index, support_index = rng.choice(len(own), 2, replace=False)
        probes.append(own[probe_index])
        row = [own[support_index]]
        for person in people[1:]:
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

    summary = _summary_head("oneshot", setup, model_path, classification, images)
    summary.update(
        {
            "faces_path": str(faces_path),
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
    settings = _settings(
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
