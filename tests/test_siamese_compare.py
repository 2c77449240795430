"""train_siamese.py's choice between the fine-tuned and the starting network (faceid/train/compare.py),
on dlib's vectors of real LFW faces: a gain is kept only when it is beyond the paired bootstrap's noise."""

from __future__ import annotations

import numpy as np
import pytest

from faceid.train.compare import compare, decide, figures, held_out_split, measure
from faceid.train.siamese import pair_scores


def euclidean(vectors, first, second):
    return pair_scores(vectors, first, second, None)


@pytest.fixture(scope="module")
def lfw(lfw_cache_dir, dlib_extractor):
    """dlib's vectors of 40 LFW people (4-6 photos each) and their person ids."""
    from faceid.features.cache import FeatureCache

    vectors, labels, _ = FeatureCache.load(lfw_cache_dir, dlib_extractor.manifest).matrix()
    return vectors.astype(np.float32), np.asarray(labels)


def _blurred(vectors: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """The vectors with Gaussian noise: the same faces seen by a worse network."""
    noise = np.random.default_rng(seed).normal(size=vectors.shape).astype(np.float32)
    return vectors + strength * float(np.linalg.norm(vectors, axis=1).mean()) / np.sqrt(vectors.shape[1]) * noise


def test_the_same_network_twice_gains_nothing_and_is_not_kept(lfw):
    vectors, labels = lfw
    split = held_out_split(labels, seed=0)
    measured = measure(vectors, split, euclidean)
    result = compare(measured, measured, split, resamples=200, seed=0)
    assert result["start"] == result["fine_tuned"] and result["people"] == 40
    for gain in result["gain"].values():
        assert gain["value"] == gain["low"] == gain["high"] == 0.0  # paired: both networks on each resample
    keep, why = decide(result)
    assert not keep and "within the noise" in why
    # dlib tells these people apart: the figures are those of a good network.
    assert result["start"]["pair_auc"] > 0.98 and result["start"]["rank1"] > 0.9


def test_a_clearly_better_network_is_kept_and_a_worse_one_is_not(lfw):
    vectors, labels = lfw
    split = held_out_split(labels, seed=0)
    clean, noisy = measure(vectors, split, euclidean), measure(_blurred(vectors, 1.0, seed=1), split, euclidean)
    better = compare(noisy, clean, split, resamples=300, seed=0)
    keep, why = decide(better)
    assert keep, why
    auc = better["gain"]["pair_auc"]
    assert auc["low"] > 0 and auc["low"] <= auc["value"] <= auc["high"]
    worse = compare(clean, noisy, split, resamples=300, seed=0)
    keep, why = decide(worse)
    assert not keep and worse["gain"]["pair_auc"]["high"] < 0


def test_a_gain_within_the_people_noise_is_not_kept(lfw):
    """Two networks as good as each other (the same blur, different noise): one of them scores a
    little higher on these pairs, but the interval over 40 people spans zero, so neither is kept."""
    vectors, labels = lfw
    split = held_out_split(labels, seed=0)
    one = measure(_blurred(vectors, 0.5, seed=2), split, euclidean)
    other = measure(_blurred(vectors, 0.5, seed=3), split, euclidean)
    for start, candidate in ((one, other), (other, one)):
        result = compare(start, candidate, split, resamples=300, seed=0)
        auc = result["gain"]["pair_auc"]
        assert auc["value"] != 0 and auc["low"] < 0 < auc["high"], auc
        keep, why = decide(result)
        assert not keep and "within the noise" in why


def test_the_anchor_layout_counts_the_anchor_persons_misses_at_the_strangers_rate(lfw):
    """One person is "you": a gallery of some of their faces, the rest as probes, everyone else strangers."""
    vectors, labels = lfw
    you = int(np.bincount(labels).argmax())
    yours = np.flatnonzero(labels == you)
    gallery, probes = yours[:2], yours[2:]
    held = np.sort(np.concatenate([probes, np.flatnonzero(labels != you)]))
    relabelled = np.where(labels[held] == you, 0, labels[held] + 1)
    split = held_out_split(relabelled, own=0, seed=0)
    assert len(np.unique(split.units[split.labels == 0])) == len(probes)  # each of your faces is a unit
    measured = measure(vectors[held], split, euclidean, gallery=vectors[gallery], target_fpir=0.05)
    result = figures(measured, split)
    assert 0.0 <= result["own_fnir"] <= 0.5
    # A network that cannot see you (your faces blurred beyond recognition) misses you far more often.
    blind = vectors.copy()
    blind[probes] = _blurred(vectors[probes], 4.0, seed=3)
    worse = figures(measure(blind[held], split, euclidean, gallery=vectors[gallery], target_fpir=0.05), split)
    assert worse["own_fnir"] > result["own_fnir"]


def _comparison(**gains):
    return {"gain": {name: {"value": (low + high) / 2, "low": low, "high": high, "resamples": 1000}
                     for name, (low, high) in gains.items()}}


def test_a_real_auc_gain_is_kept_unless_another_figure_is_worse_beyond_its_noise():
    keep, why = decide(_comparison(pair_auc=(0.01, 0.05), rank1=(-0.07, 0.02), tar_at_far=(0.0, 0.2)))
    assert keep, why  # one probe of 14 lost is within rank-1's noise
    keep, why = decide(_comparison(pair_auc=(0.01, 0.05), rank1=(0.0, 0.1), tar_at_far=(-0.03, -0.001)))
    assert not keep and "tar_at_far" in why and "worse" in why
    keep, why = decide(_comparison(pair_auc=(0.01, 0.05), own_fnir=(0.01, 0.2)))  # more of you missed
    assert not keep and "own_fnir" in why
    keep, why = decide(_comparison(pair_auc=(-0.01, 0.05)))
    assert not keep and "within the noise" in why
    keep, why = decide(_comparison(pair_auc=(-0.05, -0.01)))
    assert not keep and "worse" in why
