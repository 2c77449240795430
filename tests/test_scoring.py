"""Per-person scoring and the Gallery decision (pure numerics: hand-made arrays)."""

from __future__ import annotations

import numpy as np
import pytest

from faceid.errors import InputError, NotFittedError
from faceid.match.gallery import Gallery
from faceid.match.scoring import Rule, pairwise_scores, person_scores


def test_topk_rule_averages_the_k_best_scores_of_each_person():
    scores = np.array([[0.9, 0.1, 0.5, 0.2, 0.8]], dtype=np.float32)
    labels = np.array([0, 0, 0, 1, 1])
    result = person_scores(scores, labels, 2, Rule("topk", top_k=2))
    np.testing.assert_allclose(result, [[0.7, 0.5]], atol=1e-6)


def test_topk_rule_caps_k_at_the_number_of_photos():
    result = person_scores(np.array([[0.4, 0.9]]), np.array([0, 1]), 2, Rule("topk", top_k=3))
    np.testing.assert_allclose(result, [[0.4, 0.9]], atol=1e-6)


def test_vote_rule_is_the_share_of_vectors_above_the_vote_score():
    scores = np.array([[0.85, 0.81, 0.2, 0.95]], dtype=np.float32)
    result = person_scores(scores, np.array([0, 0, 0, 1]), 2, Rule("vote", vote_score=0.8))
    np.testing.assert_allclose(result, [[2 / 3, 1.0]], atol=1e-6)


def test_excluded_entries_do_not_count_and_empty_people_score_minus_infinity():
    scores = np.array([[1.0, 0.3, 0.6]], dtype=np.float32)
    exclude = np.array([[True, False, True]])
    result = person_scores(scores, np.array([0, 0, 1]), 3, Rule("topk", top_k=3), exclude=exclude)
    assert result[0, 0] == pytest.approx(0.3)
    assert result[0, 1] == -np.inf and result[0, 2] == -np.inf


def test_pairwise_scores_without_head_are_minus_euclidean_distances():
    queries = np.array([[0.0, 0.0], [3.0, 4.0]])
    references = np.array([[3.0, 4.0], [0.0, 1.0]])
    np.testing.assert_allclose(pairwise_scores(queries, references), [[-5.0, -1.0], [0.0, -np.sqrt(18)]], atol=1e-5)


class _SumHead:
    """A stand-in head: 'similarity' = 1 - mean |difference|, to check the plumbing."""

    input_dim = 2

    def predict(self, differences):
        return 1.0 - differences.mean(axis=1)


def test_pairwise_scores_feed_absolute_differences_to_the_head():
    scores = pairwise_scores(np.array([[0.2, 0.4]]), np.array([[0.2, 0.4], [0.6, 0.0]]), head=_SumHead())
    np.testing.assert_allclose(scores, [[1.0, 0.6]], atol=1e-6)


def test_gallery_names_the_best_person_or_unknown():
    vectors = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0]])
    gallery = Gallery(threshold=-0.5).fit(vectors, ["ann", "ann", "bob"])
    assert list(gallery.predict(np.array([[0.05, 0.0], [5.0, 5.2], [2.5, 2.5]]))) == ["ann", "bob", "unknown"]
    result = gallery.identify(np.array([[2.5, 2.5]]))[0]
    assert result.best_person in {"ann", "bob"} and result.score < -0.5


def test_gallery_vote_rule_needs_more_than_the_share():
    gallery = Gallery(head=_SumHead(), rule=Rule("vote", vote_score=0.8, vote_share=0.5))
    gallery.fit(np.array([[0.0, 0.0], [1.0, 1.0]]), ["ann", "ann"])
    # Exactly half of ann's vectors vote: not *more than* 0.5.
    assert gallery.predict(np.array([[0.0, 0.0]]))[0] == "unknown"


def test_gallery_refuses_use_before_fit_and_topk_without_threshold():
    with pytest.raises(NotFittedError):
        Gallery(threshold=0.5).predict(np.zeros((1, 2)))
    with pytest.raises(InputError, match="threshold"):
        Gallery().fit(np.zeros((2, 2)), ["a", "b"])


def test_head_with_other_input_size_is_refused():
    with pytest.raises(InputError, match="train.py"):
        pairwise_scores(np.zeros((1, 3)), np.zeros((2, 3)), head=_SumHead())
