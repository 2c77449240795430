"""From an extractor and enrolled vectors to a fitted, calibrated gallery: the one recipe.

``test.py``, the Python API (`faceid.FaceID`) and everything built on them make
their gallery here, so they pick the same similarity model, scorer and calibration and
derive the same threshold for the people enrolled.

What is used, in order:

1. a similarity model: ``classification`` when given; otherwise, unless a metric
   scorer (``euclidean``, ``cosine``) was asked for, the extractor's own ``head/``
   (``train_siamese.py --loss bce``), then ``default_model`` (normally
   ``models/similarity``) when it exists;
2. without one, the backbone alone, decided by its metric calibration (the
   extractor directory's ``calibration.npz``, else the one faceid ships for that
   extractor's fingerprint).

The threshold is derived at ``target_fpir`` for the people enrolled
(`faceid.match.openset.OpenSetCalibration.decision`) unless ``threshold`` is given.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from faceid.errors import InputError, ManifestMismatchError
from faceid.features.cache import describe_extractor
from faceid.match.gallery import Gallery
from faceid.match.model import SimilarityModel
from faceid.match.openset import backbone_calibrations, default_scorer
from faceid.match.scoring import METRIC_SCORERS, SCORERS, Rule
from faceid.settings import DEFAULTS, EXTRACTOR_HEAD_DIR


@dataclasses.dataclass(frozen=True)
class GalleryOptions:
    """How a gallery decides; every field ``None`` means "what the model or calibration says".

    Attributes:
        classification: a similarity model directory (train.py); ``None``: look for a default one.
        scorer: ``head``, ``euclidean`` or ``cosine``.
        target_fpir: share of strangers that may be given a name, whatever the number enrolled.
        threshold: a fixed decision threshold instead of the one derived from ``target_fpir``.
        rule, top_k, vote_score, vote_share: override the calibrated per-person rule.
        normalize: 0 or 1; must agree with how the similarity head was trained.
        shortlist: two-stage search: people kept by the first stage (``None``/0: every person).
        default_model: the similarity model used when none is given and it exists.
    """

    classification: str | Path | None = None
    scorer: str | None = None
    target_fpir: float = DEFAULTS.target_fpir
    threshold: float | None = None
    rule: str | None = None
    top_k: int | None = None
    vote_score: float | None = None
    vote_share: float | None = None
    normalize: int | None = None
    shortlist: int | None = None
    default_model: str | Path | None = DEFAULTS.similarity_path


def similarity_model_dir(extractor_dir: str | Path | None, options: GalleryOptions) -> Path | None:
    """The similarity model ``options`` lead to, or ``None`` for the backbone alone."""
    if options.classification is not None:
        return Path(options.classification)
    # A metric scorer asked for without a model means the backbone alone, even if a default model exists.
    if options.scorer in METRIC_SCORERS:
        return None
    places = [] if extractor_dir is None else [Path(extractor_dir, EXTRACTOR_HEAD_DIR)]
    if options.default_model is not None:
        places.append(Path(options.default_model))
    for place in places:
        if (place / "head.json").is_file():
            return place
    return None


def fit_gallery(
    vectors: np.ndarray,
    names: np.ndarray | list[str],
    extractor_manifest: dict[str, Any],
    extractor_dir: str | Path | None = None,
    options: GalleryOptions = GalleryOptions(),
) -> Gallery:
    """A `Gallery` fitted on ``vectors (n, dim)`` of people ``names (n,)``.

    Args:
        vectors: the enrolled people's vectors, made by the extractor of ``extractor_manifest``.
        names: the person of each row.
        extractor_manifest: the extractor's manifest (its fingerprint must match the model's).
        extractor_dir: the extractor directory (its own ``head/`` and ``calibration.npz``);
            ``None`` for an extractor built in memory (the shipped calibrations still apply).
        options: what to decide with (`GalleryOptions`).

    Returns:
        The fitted gallery; ``gallery.decision_.describe()`` says what its threshold promises.

    Raises:
        InputError: no model and no calibration to decide with, or an impossible combination.
        ManifestMismatchError: the similarity model was trained on another extractor's vectors.
    """
    if options.scorer is not None and options.scorer not in SCORERS:
        raise InputError(f"unknown `scorer` {options.scorer!r}: choose one of {', '.join(SCORERS)}")
    names = np.asarray(names)
    classification = similarity_model_dir(extractor_dir, options)
    where = "this extractor" if extractor_dir is None else f"extractor {extractor_dir}"
    if classification is None and options.scorer == "head":
        raise InputError("the head scorer needs a similarity model: train one with train.py and pass "
                         "`classification`, or choose `scorer` euclidean or cosine")
    backbone = backbone_calibrations(extractor_manifest, extractor_dir)
    shortlist = options.shortlist or None
    if classification is None:
        if options.normalize:
            raise InputError("`normalize` 1 applies to a similarity head: without `classification` there is none")
        scorer = options.scorer or default_scorer(backbone)
        if scorer is None:
            raise InputError(
                f"no similarity model and no metric calibration for {where} ({describe_extractor(extractor_manifest)}): "
                "pass `classification` (a model directory from train.py), calibrate the backbone with evaluate.py "
                "calibrate, or give `scorer` euclidean and a `threshold`")
        base = backbone[scorer].rule if scorer in backbone else Rule()
        rule = _rule(options, base)
        if scorer in backbone:
            gallery = Gallery(calibration=backbone[scorer], target_fpir=options.target_fpir,
                              threshold=options.threshold, rule=None if rule == base else rule, shortlist=shortlist)
        elif options.threshold is not None:
            gallery = Gallery(rule=rule, threshold=options.threshold, scorer=scorer, shortlist=shortlist)
        else:
            raise InputError(f"no {scorer} calibration for {where}: calibrate it with evaluate.py calibrate, "
                             "or pass `threshold`")
        return gallery.fit(vectors, names)
    model = SimilarityModel.load(classification)
    model.check_extractor(extractor_manifest, where)
    trained_with = int(model.normalizer is not None)
    if options.normalize is not None and options.normalize != trained_with:
        raise ManifestMismatchError(
            f"`normalize` {options.normalize} contradicts {classification}, whose head was trained with "
            f"normalize {trained_with}: the head only works on features normalised the way it was trained; "
            f"leave `normalize` out, or train a head with train.py with normalize {options.normalize}")
    scorer = options.scorer or model.default_scorer
    calibration = model.calibrations.get(scorer) or backbone.get(scorer)
    base = calibration.rule if calibration is not None else model.rule
    rule = _rule(options, base)
    gallery = model.gallery(None if rule == base else rule, options.threshold, shortlist=shortlist, scorer=scorer,
                            target_fpir=options.target_fpir, fallback=backbone)
    return gallery.fit(vectors, names)


def _rule(options: GalleryOptions, base: Rule) -> Rule:
    """The calibrated rule with what the caller changed (the threshold was calibrated for ``base``)."""
    overrides = {"name": options.rule, "top_k": options.top_k, "vote_score": options.vote_score,
                 "vote_share": options.vote_share}
    return dataclasses.replace(base, **{key: value for key, value in overrides.items() if value is not None})
