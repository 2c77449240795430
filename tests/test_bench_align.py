"""bench.py align: chips aligned from BlazeFace's boxes (dlib's landmarks) or its keypoints, scored on LFW pairs."""

from __future__ import annotations

import json

import numpy as np
from conftest import DATA, LFW

from faceid.benchmarks.align import VARIANTS, fit_keypoint_template, landmarks_from_keypoints, similarity_transform
from faceid.cli import bench


def _rotation(angle: float) -> np.ndarray:
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def test_similarity_transform_recovers_rotation_scale_and_shift():
    source = np.array([[30.0, 40.0], [70.0, 41.0], [50.0, 62.0], [51.0, 80.0]])
    matrix = 1.7 * _rotation(0.3)
    target = source @ matrix.T + [12.0, -5.0]
    found_matrix, found_offset = similarity_transform(source, target)
    np.testing.assert_allclose(found_matrix, matrix, atol=1e-9)
    np.testing.assert_allclose(found_offset, [12.0, -5.0], atol=1e-9)


def test_template_carries_landmarks_exactly_between_similar_faces():
    # Faces that differ only by a similarity: the template must give back each face's own landmarks.
    keypoints = np.array([[30.0, 40.0], [70.0, 40.0], [50.0, 60.0], [50.0, 78.0]])
    landmarks = np.array([[25.0, 41.0], [38.0, 41.0], [75.0, 41.0], [62.0, 41.0], [50.0, 66.0]])
    moves = [(scale * _rotation(angle), np.array(shift))
             for scale, angle, shift in [(1.0, 0.0, (0, 0)), (2.0, 0.4, (10, 3)), (0.6, -0.2, (-7, 9))]]
    canonical, template = fit_keypoint_template([keypoints @ m.T + t for m, t in moves],
                                                [landmarks @ m.T + t for m, t in moves])
    matrix, offset = 1.3 * _rotation(-0.5), np.array([4.0, 2.0])
    predicted = landmarks_from_keypoints(keypoints @ matrix.T + offset, canonical, template)
    np.testing.assert_allclose(predicted, landmarks @ matrix.T + offset, atol=1e-4)


def test_bench_align_scores_the_three_landmark_sources_on_lfw_pairs(capsys):
    assert bench.main(["align", "--pairs_file", str(DATA / "lfw_pairsDevTrain.txt"), "--images_root", str(LFW),
                       "--limit", "20", "--template_images", "40", "-q"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("{")
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [record["variant"] for record in records] == list(VARIANTS)
    for record in records:
        assert record["bench"] == "align" and record["pairs"] == 20
        for metric in ("euclidean_acc", "cosine_acc", "euclidean_auc", "cosine_auc"):
            assert 0.0 <= record[metric] <= 1.0
        assert record["no_face"] <= record["images"]
    by_variant = {record["variant"]: record for record in records}
    assert by_variant["hog"]["landmark_dist_to_hog_pct"] == 0.0
    # Both BlazeFace variants see the same detections, so the same images lack a face.
    assert by_variant["dlib5"]["no_face"] == by_variant["keypoints"]["no_face"]
    assert by_variant["dlib5"]["landmark_dist_to_hog_pct"] > 0.0
    for variant in VARIANTS:
        assert f"\n{variant} " in out  # a row of the table
