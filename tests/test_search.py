"""Two-stage search (faceid/search.py, Gallery(shortlist=...)) against the exhaustive head, on real faces."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from faceid.cli import bench
from faceid.errors import InputError
from faceid.features.cache import FeatureCache
from faceid.match import search
from faceid.match.gallery import Gallery
from faceid.match.model import SimilarityModel
from faceid.match.search import ShortlistIndex

ENROLLED = 3  # images enrolled per person; the rest of each person's images are probes


@pytest.fixture(scope="module")
def real_gallery(lfw_cache_dir, trained_model_dir):
    """dlib vectors of the LFW slice: 3 enrolled images per person, the others held out as probes."""
    cache = FeatureCache.load(lfw_cache_dir)
    enrolled, names, probes, probe_names = [], [], [], []
    for name, person in sorted(cache.people.items()):
        enrolled.append(person.vectors[:ENROLLED])
        names += [name] * len(person.vectors[:ENROLLED])
        probes.append(person.vectors[ENROLLED:])
        probe_names += [name] * len(person.vectors[ENROLLED:])
    return (np.concatenate(enrolled), np.array(names), np.concatenate(probes), np.array(probe_names),
            SimilarityModel.load(trained_model_dir))


def _gallery(model: SimilarityModel, **search_options) -> Gallery:
    return Gallery(head=model.head, normalizer=model.normalizer, decision=model.decision,
                   **search_options)


def test_two_stage_keeps_the_exhaustive_top1_and_scores_on_real_faces(real_gallery):
    vectors, names, probes, probe_names, model = real_gallery
    n_people = len(set(names))
    exhaustive = _gallery(model).fit(vectors, names)
    two_stage = _gallery(model, shortlist=8, search_backend="numpy").fit(vectors, names)
    assert two_stage.index_ is not None and 8 < n_people

    exhaustive_scores = exhaustive.score_people(probes)
    two_stage_scores = two_stage.score_people(probes)

    np.testing.assert_array_equal(two_stage_scores.argmax(axis=1), exhaustive_scores.argmax(axis=1))
    assert list(two_stage.predict(probes)) == list(exhaustive.predict(probes))
    # Shortlisted people get the exhaustive path's scores; everyone else -inf.
    shortlisted = np.isfinite(two_stage_scores)
    assert (shortlisted.sum(axis=1) == 8).all()
    np.testing.assert_allclose(two_stage_scores[shortlisted], exhaustive_scores[shortlisted], rtol=1e-6, atol=1e-7)
    # The real faces are recognised, so the agreement is not agreement on noise.
    assert np.mean(exhaustive.classes_[exhaustive_scores.argmax(axis=1)] == probe_names) > 0.9


def test_a_shortlist_of_everyone_is_the_exhaustive_path(real_gallery):
    vectors, names, probes, _, model = real_gallery
    exhaustive = _gallery(model).fit(vectors, names).score_people(probes)
    for shortlist in (0, len(set(names)), len(set(names)) + 5):
        gallery = _gallery(model, shortlist=shortlist).fit(vectors, names)
        assert gallery.index_ is None
        np.testing.assert_array_equal(gallery.score_people(probes), exhaustive)


@pytest.mark.parametrize("top_k", [1, 3])
def test_faiss_and_numpy_shortlist_the_same_people(real_gallery, top_k):
    pytest.importorskip("faiss")
    vectors, names, probes, _, _ = real_gallery
    _, labels = np.unique(names, return_inverse=True)
    exact = ShortlistIndex(backend="numpy", dims=32, top_k=top_k).fit(vectors, labels)
    # Scanning every cluster makes the inverted-file index exact.
    scanned = ShortlistIndex(backend="faiss", dims=32, faiss_nprobe=10_000, top_k=top_k).fit(vectors, labels)
    assert exact.backend_ == "numpy" and scanned.backend_ == "faiss"
    np.testing.assert_array_equal(scanned.shortlist(probes, 6), exact.shortlist(probes, 6))


def test_numpy_shortlist_ranks_people_by_their_nearest_vector():
    vectors = np.array([[0.0, 0.0], [10.0, 0.0], [1.0, 0.0], [5.0, 5.0], [0.0, 3.0]], dtype=np.float32)
    labels = np.array([0, 0, 1, 2, 3])
    index = ShortlistIndex(backend="numpy", dims=0).fit(vectors, labels)
    np.testing.assert_array_equal(index.shortlist(np.array([[9.0, 0.0]]), 3), [[0, 2, 1]])
    np.testing.assert_array_equal(index.shortlist(np.array([[0.0, 2.0]]), 2), [[3, 0]])


def test_shortlist_ranks_by_the_mean_of_each_persons_top_k_nearest_vectors():
    # ann: one vector on the face, two far away; bob: three vectors moderately near.
    vectors = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]], dtype=np.float32)
    labels = np.array([0, 0, 0, 1, 1, 1])
    face = np.zeros((1, 2), dtype=np.float32)
    nearest = ShortlistIndex(backend="numpy", dims=0, top_k=1).fit(vectors, labels)
    three = ShortlistIndex(backend="numpy", dims=0, top_k=3).fit(vectors, labels)
    np.testing.assert_array_equal(nearest.shortlist(face, 2), [[0, 1]])
    np.testing.assert_array_equal(three.shortlist(face, 2), [[1, 0]])


def test_missing_faiss_falls_back_to_numpy_with_a_warning(real_gallery, monkeypatch, caplog):
    vectors, names, _, _, _ = real_gallery
    monkeypatch.setattr(search, "faiss_module", lambda: None)
    with caplog.at_level(logging.WARNING, logger="faceid.match.search"):
        index = ShortlistIndex(backend="faiss").fit(vectors, np.unique(names, return_inverse=True)[1])
    assert index.backend_ == "numpy"
    assert "faiss-cpu is not installed" in caplog.text


def test_gallery_rejects_a_negative_shortlist_and_asks_for_one_before_shortlisting():
    vectors = np.array([[0.0, 0.0], [1.0, 1.0]])
    with pytest.raises(InputError, match="shortlist"):
        Gallery(threshold=-1.0, shortlist=-1).fit(vectors, ["ann", "bob"])
    with pytest.raises(InputError, match="shortlist=M"):
        Gallery(threshold=-1.0).fit(vectors, ["ann", "bob"]).shortlist_people(vectors)


def _json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_bench_match_prints_one_json_line_per_gallery_size(lfw_cache_dir, trained_model_dir, capsys):
    # 20 enrolled people, so each gives one of the 20 probes (its first held-out image). With 10, up to 3
    # probes each, there were 20 only because HOG found no face in Abdoulaye_Wade_0003, which changed who
    # the benchmark enrols (every other person with more than 3 vectors): with BlazeFace there were 13.
    code = bench.main(["match", "--features", str(lfw_cache_dir), "--classification", str(trained_model_dir),
                       "--dim", "0", "--sizes", "200,1000", "--probes", "20", "--people", "20",
                       "--shortlist", "5", "-q"])
    assert code == 0
    out = capsys.readouterr().out
    records = _json_lines(out)
    assert [record["gallery"] for record in records] == [200, 1000]
    for record in records:
        assert {"bench", "gallery", "p50_ms", "p95_ms", "exhaustive_p50_ms", "top1_agreement"} <= set(record)
        assert record["bench"] == "match" and record["dim"] == 128 and record["probes"] == 20
        # The shortlist keeps the exhaustive search's best person for (nearly) every real probe.
        assert record["agreement_probes"] == 20 and record["top1_agreement"] >= 0.95, record
        assert record["p50_ms"] > 0 and record["exhaustive_p50_ms"] > 0
    assert out.strip().splitlines()[-1].startswith("{")
    assert "synthetic" in out  # says how the gallery was made


def test_bench_match_maps_vectors_up_and_trains_a_head_for_them(lfw_cache_dir, tmp_path, capsys):
    code = bench.main(["match", "--features", str(lfw_cache_dir), "--dim", "256", "--sizes", "300",
                       "--probes", "10", "--people", "10", "--head_epochs", "1", "--work_dir", str(tmp_path), "-q"])
    assert code == 0
    (record,) = _json_lines(capsys.readouterr().out)
    assert record["dim"] == 256 and record["gallery"] == 300
    assert len(list(tmp_path.glob("head-256d-*/head.npz"))) == 1  # kept for the next run
