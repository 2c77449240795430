"""Tests for faceid.match.metrics against hand-computed answers and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sklearn_metrics

from faceid.errors import InputError
from faceid.match.metrics import (
    accuracy_at,
    best_accuracy_threshold,
    cmc_curve,
    equal_error_rate,
    roc_auc,
    roc_curve,
    tar_at_far,
    threshold_at_far,
)

SEPARATED_SCORES = np.array([0.9, 0.8, 0.3, 0.1])
SEPARATED_SAME = np.array([True, True, False, False])
IMPOSTORS_WITH_TIES = np.array([0.1, 0.2, 0.3, 0.3, 0.4])


def _random_scores(seed: int, n_pairs: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping genuine/impostor scores, rounded so that many ties occur."""
    generator = np.random.default_rng(seed)
    is_same = generator.random(n_pairs) < 0.4
    scores = np.round(generator.normal(size=n_pairs) + 1.2 * is_same, 1)
    return scores, is_same


def test_perfect_separation_has_auc_one_and_eer_zero() -> None:
    assert roc_auc(SEPARATED_SCORES, SEPARATED_SAME) == 1.0
    assert equal_error_rate(SEPARATED_SCORES, SEPARATED_SAME) == 0.0


def test_reversed_scores_have_auc_zero_and_eer_one() -> None:
    assert roc_auc(-SEPARATED_SCORES, SEPARATED_SAME) == 0.0
    assert equal_error_rate(-SEPARATED_SCORES, SEPARATED_SAME) == 1.0


def test_roc_curve_treats_tied_scores_as_one_threshold() -> None:
    far, tar, thresholds = roc_curve(np.array([0.9, 0.5, 0.5, 0.1]), np.array([1, 1, 0, 0]))
    np.testing.assert_array_equal(thresholds, [np.inf, 0.9, 0.5, 0.1])
    np.testing.assert_array_equal(far, [0.0, 0.0, 0.5, 1.0])
    np.testing.assert_array_equal(tar, [0.0, 0.5, 1.0, 1.0])


def test_auc_counts_a_genuine_impostor_tie_as_half() -> None:
    # Genuine-impostor comparisons: 1 + 1 + 0.5 (the tie at 0.5) + 1 = 3.5 of 4.
    assert roc_auc(np.array([0.9, 0.5, 0.5, 0.1]), np.array([1, 1, 0, 0])) == 0.875


def test_auc_of_constant_scores_is_one_half() -> None:
    assert roc_auc(np.full(6, 0.3), np.array([1, 0, 1, 0, 0, 1])) == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_sklearn_on_random_scores_with_ties(seed: int) -> None:
    scores, is_same = _random_scores(seed)
    assert roc_auc(scores, is_same) == pytest.approx(sklearn_metrics.roc_auc_score(is_same, scores), abs=1e-12)


def test_roc_curve_equals_sklearn_on_random_scores_with_ties() -> None:
    scores, is_same = _random_scores(7)
    far, tar, thresholds = roc_curve(scores, is_same)
    expected_far, expected_tar, expected_thresholds = sklearn_metrics.roc_curve(
        is_same, scores, drop_intermediate=False
    )
    np.testing.assert_allclose(far, expected_far, atol=1e-12)
    np.testing.assert_allclose(tar, expected_tar, atol=1e-12)
    np.testing.assert_array_equal(thresholds[1:], expected_thresholds[1:])
    assert np.all(np.diff(thresholds) < 0)


def test_eer_when_far_and_frr_meet_at_a_roc_point() -> None:
    # Descending: .9 G, .8 G, .7 I, .4 G, .3 I, .2 I. At threshold .7: FAR 1/3, FRR 1/3.
    scores = np.array([0.9, 0.8, 0.4, 0.7, 0.3, 0.2])
    is_same = np.array([1, 1, 1, 0, 0, 0])
    assert equal_error_rate(scores, is_same) == pytest.approx(1 / 3)


def test_eer_interpolates_between_straddling_roc_points() -> None:
    # ROC: (0, 0) (0, 1/3) (0, 2/3) (1, 2/3) (1, 1). Between thresholds .8 and .5 FRR stays
    # 1/3 while FAR jumps 0 -> 1, so the curves cross at FAR = FRR = 1/3 (not at the
    # 1/6 that averaging the nearest point would give).
    scores = np.array([0.9, 0.8, 0.1, 0.5])
    is_same = np.array([1, 1, 1, 0])
    assert equal_error_rate(scores, is_same) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("target_far", "highest_rejected"),
    [
        (0.2, 0.3),  # FAR exactly 0.2 accepting only 0.4
        (0.5, 0.3),  # the two 0.3s go together: accepting them would give FAR 0.6
        (0.6, 0.2),  # now both 0.3s fit
        (0.0, 0.4),  # reject every impostor
    ],
)
def test_threshold_at_far_is_just_above_the_highest_rejected_impostor(
    target_far: float, highest_rejected: float
) -> None:
    threshold = threshold_at_far(IMPOSTORS_WITH_TIES, target_far)
    assert threshold == np.nextafter(highest_rejected, np.inf)
    assert np.mean(IMPOSTORS_WITH_TIES >= threshold) <= target_far
    # Any lower threshold accepts the rejected score and breaks the target.
    assert np.mean(IMPOSTORS_WITH_TIES >= highest_rejected) > target_far


def test_threshold_at_far_one_accepts_everything() -> None:
    assert threshold_at_far(IMPOSTORS_WITH_TIES, 1.0) == -np.inf


def test_threshold_at_far_keeps_float32_precision() -> None:
    impostors = IMPOSTORS_WITH_TIES.astype(np.float32)
    threshold = threshold_at_far(impostors, 0.2)
    # The threshold must still reject 0.3 after a round trip through float32.
    assert np.float32(threshold) > np.float32(0.3)
    assert np.mean(impostors >= np.float32(threshold)) == pytest.approx(0.2)


def test_tar_at_far_rejects_a_genuine_score_tied_with_a_rejected_impostor() -> None:
    genuine = np.array([0.95, 0.5, 0.35, 0.3])
    scores = np.concatenate((genuine, IMPOSTORS_WITH_TIES))
    is_same = np.concatenate((np.ones(4, bool), np.zeros(5, bool)))
    # Threshold just above 0.3: the genuine 0.3 is rejected, the other three accepted.
    assert tar_at_far(scores, is_same, 0.2) == 0.75
    assert tar_at_far(scores, is_same, 0.0) == 0.5


def test_best_accuracy_threshold_is_the_midpoint_of_the_best_gap() -> None:
    # Accuracy accepting >= .8: 3/4; >= .35 also 3/4; the higher threshold wins.
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    is_same = np.array([0, 0, 1, 1])
    threshold, accuracy = best_accuracy_threshold(scores, is_same)
    assert threshold == pytest.approx(0.6)
    assert accuracy == 0.75


def test_best_accuracy_threshold_separates_perfectly_separated_scores() -> None:
    threshold, accuracy = best_accuracy_threshold(SEPARATED_SCORES, SEPARATED_SAME)
    assert accuracy == 1.0
    assert threshold == pytest.approx(0.55)


def test_best_accuracy_threshold_can_reject_everything() -> None:
    scores = np.array([0.9, 0.8, 0.1])
    is_same = np.array([0, 0, 1])
    threshold, accuracy = best_accuracy_threshold(scores, is_same)
    assert accuracy == pytest.approx(2 / 3)
    assert threshold > 0.9
    assert accuracy_at(scores, is_same, threshold) == pytest.approx(2 / 3)


def test_best_accuracy_threshold_can_accept_everything() -> None:
    scores = np.array([0.1, 0.2, 0.9])
    is_same = np.array([1, 1, 0])
    assert best_accuracy_threshold(scores, is_same) == (0.1, pytest.approx(2 / 3))


@pytest.mark.parametrize("seed", [3, 4])
def test_best_accuracy_threshold_beats_every_candidate_threshold(seed: int) -> None:
    scores, is_same = _random_scores(seed, n_pairs=150)
    threshold, accuracy = best_accuracy_threshold(scores, is_same)
    candidates = np.concatenate((scores, [scores.max() + 1.0]))
    brute_force = max(np.mean((scores >= c) == is_same) for c in candidates)
    assert accuracy == pytest.approx(brute_force)
    assert accuracy_at(scores, is_same, threshold) == pytest.approx(accuracy)


def test_accuracy_at_accepts_scores_equal_to_the_threshold() -> None:
    scores = np.array([0.5, 0.5, 0.2])
    assert accuracy_at(scores, np.array([1, 1, 0]), 0.5) == 1.0
    assert accuracy_at(scores, np.array([1, 1, 0]), np.nextafter(0.5, 1.0)) == pytest.approx(1 / 3)


def test_cmc_counts_ranks_and_breaks_ties_against_the_probe() -> None:
    score_matrix = np.array(
        [
            [0.9, 0.1, 0.2, 0.3],  # true 0: rank 1
            [0.5, 0.4, 0.8, 0.1],  # true 1: two classes score higher, rank 3
            [0.2, 0.7, 0.7, 0.1],  # true 2: tied with class 1, counted as rank 2
        ]
    )
    rates = cmc_curve(score_matrix, np.array([0, 1, 2]), max_rank=4)
    np.testing.assert_allclose(rates, [1 / 3, 2 / 3, 1.0, 1.0])


def test_cmc_beyond_the_number_of_classes_stays_at_one() -> None:
    rates = cmc_curve(np.array([[0.1, 0.9], [0.3, 0.2]]), np.array([0, 0]), max_rank=5)
    np.testing.assert_allclose(rates, [0.5, 1.0, 1.0, 1.0, 1.0])


def test_cmc_rejects_out_of_range_classes() -> None:
    with pytest.raises(InputError, match="column indices"):
        cmc_curve(np.zeros((2, 3)), np.array([0, 3]), max_rank=1)


@pytest.mark.parametrize(
    "metric",
    [roc_curve, roc_auc, equal_error_rate, best_accuracy_threshold, accuracy_at],
)
def test_empty_scores_are_an_input_error(metric) -> None:
    arguments = (np.array([]), np.array([], dtype=bool))
    if metric is accuracy_at:
        arguments = (*arguments, 0.5)
    with pytest.raises(InputError, match="empty"):
        metric(*arguments)


@pytest.mark.parametrize("metric", [roc_curve, roc_auc, equal_error_rate, best_accuracy_threshold])
def test_one_class_only_is_an_input_error(metric) -> None:
    with pytest.raises(InputError, match="only genuine pairs"):
        metric(np.array([0.1, 0.2]), np.array([True, True]))
    with pytest.raises(InputError, match="only impostor pairs"):
        metric(np.array([0.1, 0.2]), np.array([False, False]))


def test_tar_at_far_needs_both_classes() -> None:
    with pytest.raises(InputError, match="only impostor pairs"):
        tar_at_far(np.array([0.1, 0.2]), np.array([0, 0]), 0.1)


def test_threshold_at_far_rejects_empty_scores_and_bad_targets() -> None:
    with pytest.raises(InputError, match="empty"):
        threshold_at_far(np.array([]), 0.1)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        threshold_at_far(IMPOSTORS_WITH_TIES, 1.5)


def test_nan_scores_are_an_input_error() -> None:
    with pytest.raises(InputError, match="NaN"):
        roc_auc(np.array([0.1, np.nan]), np.array([0, 1]))


def test_mismatched_labels_are_an_input_error() -> None:
    with pytest.raises(InputError, match="one label per score"):
        roc_auc(np.array([0.1, 0.2, 0.3]), np.array([0, 1]))
