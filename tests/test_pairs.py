"""Tests for faceid.train.pairs: pair sampling, labels, caps, batching."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faceid.errors import InputError
from faceid.train.pairs import PairSet, iter_pair_batches, pair_features, sample_pairs

# Uneven group sizes on purpose: a big person, small ones, and singletons that can only ever be
# the "other" side of a negative.
IMAGES_PER_PERSON = [7, 2, 5, 1, 3, 1, 12, 4]


def _labels(images_per_person: list[int], shuffle_seed: int | None = 3) -> np.ndarray:
    labels = np.repeat(np.arange(len(images_per_person)) * 10 + 4, images_per_person)
    if shuffle_seed is not None:
        # Person ids interleaved in the feature matrix, as in a real cache, and not 0..n-1.
        labels = np.random.default_rng(shuffle_seed).permutation(labels)
    return labels


def _all_positive_count(images_per_person: list[int]) -> int:
    return sum(math.comb(n, 2) for n in images_per_person)


def test_every_pair_label_says_whether_both_images_show_the_same_person() -> None:
    labels = _labels(IMAGES_PER_PERSON)
    pairs = sample_pairs(labels, rng=1)
    expected = (labels[pairs.first] == labels[pairs.second]).astype(np.float32)
    np.testing.assert_array_equal(pairs.label, expected)
    assert pairs.n_positive > 0 and pairs.n_negative > 0


def test_negatives_never_pair_a_person_with_themselves() -> None:
    # Two people with many images each: a sampler that ignored identity would hit the
    # same person about half the time.
    labels = _labels([30, 30, 2])
    pairs = sample_pairs(labels, neg_ratio=3.0, rng=5)
    negative = pairs.label == 0.0
    assert np.all(labels[pairs.first[negative]] != labels[pairs.second[negative]])


def test_positives_are_same_person_pairs_with_first_below_second() -> None:
    labels = _labels(IMAGES_PER_PERSON)
    pairs = sample_pairs(labels, rng=2)
    positive = pairs.label == 1.0
    assert np.all(labels[pairs.first[positive]] == labels[pairs.second[positive]])
    assert np.all(pairs.first[positive] < pairs.second[positive])


def test_dtypes_and_length_match_the_pairset_contract() -> None:
    pairs = sample_pairs(_labels(IMAGES_PER_PERSON), rng=0)
    assert pairs.first.dtype == np.int64 and pairs.second.dtype == np.int64
    assert pairs.label.dtype == np.float32
    assert len(pairs) == pairs.n_positive + pairs.n_negative == len(pairs.first)


@pytest.mark.parametrize("neg_ratio", [1.5, 1.0, 3.0, 0.37])
def test_negative_count_is_neg_ratio_times_positive_count(neg_ratio: float) -> None:
    pairs = sample_pairs(_labels(IMAGES_PER_PERSON), neg_ratio=neg_ratio, rng=0)
    assert pairs.n_negative == round(neg_ratio * pairs.n_positive)


def test_zero_neg_ratio_gives_only_positives() -> None:
    pairs = sample_pairs(_labels(IMAGES_PER_PERSON), neg_ratio=0.0, rng=0)
    assert pairs.n_negative == 0
    assert pairs.n_positive == _all_positive_count(IMAGES_PER_PERSON)


def test_negatives_per_person_follow_that_persons_share_of_positives() -> None:
    # Person 0 has 20 images (190 positives), person 1 has 4 (6 positives): person 0's images
    # must anchor about 190/196 of the negatives, not half.
    labels = _labels([20, 4, 1, 1])
    pairs = sample_pairs(labels, neg_ratio=2.0, rng=0)
    negative = pairs.label == 0.0
    anchors_of_person_0 = np.count_nonzero(labels[pairs.first[negative]] == labels.min())
    assert anchors_of_person_0 == pytest.approx(2.0 * 190, abs=1)


def test_singletons_are_never_negative_anchors() -> None:
    labels = _labels(IMAGES_PER_PERSON)
    pairs = sample_pairs(labels, rng=0)
    singleton_images = np.flatnonzero(np.isin(labels, [34, 54]))  # the two 1-image people
    negative = pairs.label == 0.0
    assert not np.isin(pairs.first[negative], singleton_images).any()


def test_all_same_person_pairs_are_present_when_uncapped() -> None:
    labels = _labels(IMAGES_PER_PERSON)
    pairs = sample_pairs(labels, max_positive_per_person=None, rng=0)
    positive = pairs.label == 1.0
    found = set(zip(pairs.first[positive].tolist(), pairs.second[positive].tolist(), strict=True))
    expected = {(i, j) for i in range(len(labels)) for j in range(i + 1, len(labels)) if labels[i] == labels[j]}
    assert pairs.n_positive == _all_positive_count(IMAGES_PER_PERSON)
    assert found == expected


def test_cap_bounds_positives_per_person() -> None:
    # 530 images like LFW's George W Bush: 140,185 pairs, capped to 50.
    images_per_person = [530, 6, 3]
    labels = _labels(images_per_person)
    pairs = sample_pairs(labels, max_positive_per_person=50, rng=0)
    positive = pairs.label == 1.0
    ids, per_person = np.unique(labels[pairs.first[positive]], return_counts=True)
    assert dict(zip(ids.tolist(), per_person.tolist(), strict=True)) == {4: 50, 14: 15, 24: 3}


def test_capped_positives_are_distinct_unordered_same_person_pairs() -> None:
    labels = _labels([530, 6])
    pairs = sample_pairs(labels, max_positive_per_person=2000, rng=4)
    positive = pairs.label == 1.0
    first, second = pairs.first[positive], pairs.second[positive]
    assert np.all(first < second)
    assert np.all(labels[first] == labels[second])
    unordered = set(zip(first.tolist(), second.tolist(), strict=True))
    assert len(unordered) == len(first) == 2000 + 15


def test_capped_positives_cover_the_whole_person() -> None:
    # A uniform subset of pairs touches images from both ends of the index range; an
    # unranking bug that only produced low indices would not.
    labels = _labels([300], shuffle_seed=None)
    labels = np.concatenate((labels, [99]))
    pairs = sample_pairs(labels, max_positive_per_person=500, rng=0)
    positive = pairs.label == 1.0
    used = np.union1d(pairs.first[positive], pairs.second[positive])
    assert used.min() < 10 and used.max() > 289
    assert pairs.second[positive].max() <= 299


def test_same_seed_gives_identical_pairs() -> None:
    labels = _labels([40, 9, 3, 1, 7])
    first_run = sample_pairs(labels, max_positive_per_person=100, rng=11)
    second_run = sample_pairs(labels, max_positive_per_person=100, rng=11)
    np.testing.assert_array_equal(first_run.first, second_run.first)
    np.testing.assert_array_equal(first_run.second, second_run.second)
    np.testing.assert_array_equal(first_run.label, second_run.label)


def test_different_seeds_give_different_negatives() -> None:
    labels = _labels([40, 9, 3, 1, 7])
    first_run = sample_pairs(labels, rng=11)
    second_run = sample_pairs(labels, rng=12)
    assert not np.array_equal(first_run.second, second_run.second)


def test_one_person_is_an_input_error() -> None:
    with pytest.raises(InputError, match="at least 2 people"):
        sample_pairs(np.zeros(5, dtype=np.int64))


def test_only_singletons_is_an_input_error() -> None:
    with pytest.raises(InputError, match="no person has 2 or more images"):
        sample_pairs(np.arange(6))


def test_non_integer_labels_are_an_input_error() -> None:
    with pytest.raises(InputError, match="integer"):
        sample_pairs(np.array(["ann", "ann", "bob"]))


def test_pair_features_are_absolute_differences_as_float32() -> None:
    features = np.array([[0.0, 1.0], [3.0, -1.0], [1.5, 1.5]])
    pairs = PairSet(first=np.array([0, 2]), second=np.array([1, 0]), label=np.array([0.0, 1.0]))
    difference = pair_features(features, pairs, slice(None))
    assert difference.dtype == np.float32
    np.testing.assert_array_equal(difference, [[3.0, 2.0], [1.5, 0.5]])


def test_pair_features_rejects_pairs_beyond_the_feature_matrix() -> None:
    features = np.zeros((3, 2), dtype=np.float32)
    pairs = PairSet(first=np.array([0]), second=np.array([3]), label=np.array([0.0]))
    with pytest.raises(InputError, match="only 3 rows"):
        pair_features(features, pairs, np.array([0]))


@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_cover_every_pair_once_with_the_right_differences(shuffle: bool) -> None:
    labels = _labels(IMAGES_PER_PERSON)
    n_images = len(labels)
    # Image k is (k + 1) on axis k and 0 elsewhere, so |f_a - f_b| holds a + 1 and b + 1 at
    # axes a and b: each yielded row reveals exactly which pair it came from.
    features = np.diag(np.arange(1, n_images + 1)).astype(np.float32)
    pairs = sample_pairs(labels, rng=0)
    yielded: list[tuple[int, int, float]] = []
    batch_sizes = []
    all_labels = []
    for difference, label in iter_pair_batches(features, pairs, 16, shuffle=shuffle, rng=3):
        assert difference.dtype == np.float32 and label.dtype == np.float32
        batch_sizes.append(len(label))
        all_labels.append(label)
        for row, row_label in zip(difference, label, strict=True):
            axes = np.flatnonzero(row)
            np.testing.assert_array_equal(row[axes], axes + 1)
            yielded.append((int(axes[0]), int(axes[1]), float(row_label)))
    expected = [
        (min(a, b), max(a, b), label)
        for a, b, label in zip(pairs.first.tolist(), pairs.second.tolist(), pairs.label.tolist(), strict=True)
    ]
    assert sorted(yielded) == sorted(expected)
    assert batch_sizes[:-1] == [16] * (len(batch_sizes) - 1) and 0 < batch_sizes[-1] <= 16
    visit_labels = np.concatenate(all_labels)
    # Positives come first in a PairSet, so an unshuffled pass keeps them first and a
    # shuffled one does not.
    assert np.array_equal(visit_labels, pairs.label) != shuffle
