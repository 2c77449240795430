"""bench.py cluster: real LFW faces grown into synthetic people, clustered in fresh processes (no timing asserts)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import LFW, lfw_people

from faceid.benchmarks.cluster import build_vectors, real_people
from faceid.cli import bench
from faceid.features.cache import FeatureCache


@pytest.fixture(scope="module")
def lfw_eight(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lfw_eight")
    for name in lfw_people(min_images=5, count=8):
        (folder / name).symlink_to(LFW / name, target_is_directory=True)
    return folder


def test_bench_cluster_prints_time_memory_and_scores_per_size(lfw_eight, dlib_extractor_dir, tmp_path, capsys):
    assert bench.main(["cluster", "--faces_path", str(lfw_eight), "--model_path", str(dlib_extractor_dir),
                       "--work_dir", str(tmp_path), "--sizes", "40,500", "--methods", "chinese-whispers",
                       "--baseline_max", "40", "-q"]) == 0
    out = capsys.readouterr().out
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(record["size"], record["method"]) for record in records] == [
        (40, "linkage"), (40, "chinese-whispers"), (500, "linkage")]
    real = FeatureCache.load(next(tmp_path.glob("features-*")))
    n_real = sum(len(person.vectors) for person in real.people.values())
    for record in records:
        assert record["bench"] == "cluster" and record["seconds"] > 0 and record["peak_growth_mb"] >= 0
        assert record["rss_before_mb"] > 0 and 0 <= record["pairwise_f"] <= 1 and 0 <= record["bcubed_f"] <= 1
        assert 1 <= record["clusters"] <= record["size"]
        assert record["real_faces"] == min(n_real, record["size"])
    big = records[-1]
    # Beyond the real faces, synthetic people: many more people than the 8 real ones, scored on both.
    assert big["people"] > 8 * 500 / n_real / 2 and 0 <= big["real_bcubed_f"] <= 1
    assert out.strip().splitlines()[-1].startswith("{")


def test_synthetic_people_are_nested_unit_vectors_with_their_donors_spread(dlib_extractor, tmp_path, lfw_eight):
    from faceid.features.extract import extract_features

    extract_features(lfw_eight, dlib_extractor, tmp_path / "features", progress=False)
    people = real_people(FeatureCache.load(tmp_path / "features"))
    n_real = sum(len(person) for person in people)
    small, small_truth, real_rows = build_vectors(people, 300, np.random.default_rng(3))
    large, large_truth, _ = build_vectors(people, 900, np.random.default_rng(3))
    assert real_rows == n_real and small.shape == (300, people[0].shape[1])
    np.testing.assert_array_equal(large[:300], small)
    np.testing.assert_array_equal(large_truth[:300], small_truth)
    np.testing.assert_allclose(np.linalg.norm(large, axis=1), 1.0, atol=1e-5)
    # The real faces come first, unchanged; then new people, none a copy of a real face.
    real = np.concatenate(people)
    assert {tuple(row) for row in large[:n_real].round(5)} == {tuple(row) for row in real.round(5)}
    synthetic = large[n_real:]
    assert (synthetic @ real.T).max() < 0.999
    # Within a synthetic person the faces spread as a real person's do (same mean similarity, roughly).
    def mean_within(vectors, truth):
        values = [(vectors[truth == person] @ vectors[truth == person].T)[np.triu_indices((truth == person).sum(), 1)]
                  for person in np.unique(truth) if (truth == person).sum() >= 2]
        return float(np.concatenate(values).mean())
    assert mean_within(synthetic, large_truth[n_real:]) == pytest.approx(
        mean_within(large[:n_real], large_truth[:n_real]), abs=0.03)
