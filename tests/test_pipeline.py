"""The scripts in order, in-process, on real faces: network -> extract -> compute_mean -> train -> test."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import KNOWN, LFW, ORL, VIDEO, copy_people, lfw_people

from faceid.benchmarks.common import load_truth
from faceid.cli import compute_mean, extract_features, network, train
from faceid.cli import identify as identify_script
from faceid.features.cache import FeatureCache
from faceid.features.stats import load_stats
from faceid.match.model import SimilarityModel


def run(script, args, capsys):
    code = script.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_resnet50_pipeline_runs_end_to_end_with_random_weights(tmp_path, capsys):
    """Mechanics of the original design: ResNet50 cut at conv5_block2_out, 2048-d, head, identification."""
    extractor = tmp_path / "extractor"
    code, out, _ = run(network, ["--backbone", "resnet50", "--weights", "none", "--output", extractor, "--print_model", "1"], capsys)
    assert code == 0 and "conv5_block2_out" in out and "2048-d" in out
    manifest = json.loads((extractor / "manifest.json").read_text())
    assert manifest["layer"] == "conv5_block2_out" and manifest["layer_shape"] == [7, 7, 2048]
    assert manifest["output_dim"] == 2048 and manifest["pooling"] == "avg" and manifest["weights"] == "none (random)"
    assert (extractor / manifest["model_file"]).is_file()

    faces = copy_people(ORL, tmp_path / "faces", [f"s{i}" for i in range(1, 9)], max_images=4)
    features = tmp_path / "features"
    code, out, _ = run(extract_features, ["--faces_path", faces, "--model_path", extractor, "--features", features, "-q"], capsys)
    assert code == 0 and "people: 8" in out
    cache = FeatureCache.load(features)
    assert cache.dim == 2048 and all(person.vectors.shape[1] == 2048 for person in cache.people.values())

    assert run(compute_mean, ["--features_path", features], capsys)[0] == 0
    model_dir = tmp_path / "similarity"
    code, out, _ = run(train, ["--features_path", features, "--output_model", model_dir, "--epochs", "2",
                               "--normalize", "1", "--val_people", "0.25", "-q"], capsys)
    assert code == 0, out
    model = SimilarityModel.load(model_dir)
    assert model.head.input_dim == 2048 and model.normalizer is not None

    jsonl = tmp_path / "faces.jsonl"
    code, out, err = run(identify_script, ["--features", features, "--model", extractor, "--classification", model_dir,
                                           "--images", faces / "s2", "--jsonl", jsonl, "--no_display", "-q"], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert records and all(record["name"] in {"unknown", *cache.people} for record in records)


def test_dlib_pipeline_identifies_people_the_head_never_saw(tmp_path, capsys, trained_model_dir, dlib_extractor_dir):
    """Enrol unseen LFW people with one photo each; their other photos are named correctly."""
    report = json.loads((trained_model_dir / "report.json").read_text())
    assert report["people"]["val"] >= 2
    unseen = lfw_people(min_images=4, count=6, skip=60)  # disjoint from the training slice (first 40)
    enrol = copy_people(LFW, tmp_path / "enrol", unseen, max_images=1)
    features = tmp_path / "features"
    assert run(extract_features, ["--faces_path", enrol, "--model_path", dlib_extractor_dir, "--features", features, "-q"], capsys)[0] == 0

    probes = tmp_path / "probes"
    probes.mkdir()
    expected = {}
    for person in unseen:
        for image in sorted((LFW / person).iterdir())[1:3]:
            (probes / image.name).write_bytes(image.read_bytes())
            expected[image.name] = person
    jsonl = tmp_path / "probes.jsonl"
    code, _, err = run(identify_script, ["--features", features, "--model", dlib_extractor_dir, "--classification",
                                         trained_model_dir, "--images", probes, "--jsonl", jsonl, "--no_display", "-q"], capsys)
    assert code == 0, err
    named = {}
    for record in map(json.loads, jsonl.read_text().splitlines()):
        # Keep the largest face of each photo (the labelled one in LFW).
        box_area = record["box"][2] * record["box"][3]
        if record["source"] not in named or box_area > named[record["source"]][1]:
            named[record["source"]] = (record["name"], box_area)
    correct = sum(named.get(name, ("", 0))[0] == person for name, person in expected.items())
    assert correct >= 0.75 * len(expected), named


def test_compute_mean_saves_stats_that_round_trip(lfw_cache_dir, capsys):
    code, out, _ = run(compute_mean, ["--features_path", lfw_cache_dir], capsys)
    assert code == 0 and "global mean" in out
    cache = FeatureCache.load(lfw_cache_dir)
    stats = load_stats(lfw_cache_dir, cache)
    vectors, _, _ = cache.matrix()
    np.testing.assert_allclose(stats.normalizer.mean, vectors.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats.normalizer.std, vectors.std(0), atol=1e-6)
    assert stats.global_mean == pytest.approx(float(vectors.astype(np.float64).mean()), abs=1e-9)
    normalised = stats.normalizer(vectors)
    np.testing.assert_allclose(normalised.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(normalised.std(0), 1, atol=1e-3)


def test_train_report_has_the_promised_numbers(trained_model_dir):
    report = json.loads((trained_model_dir / "report.json").read_text())
    for key in ("val_auc", "val_accuracy", "threshold", "val_auc_euclidean"):
        assert isinstance(report[key], float)
    # dlib features separate people well even with a head trained on 32 people.
    assert report["val_auc"] > 0.9 and report["val_auc_euclidean"] > 0.9
    assert 0.0 < report["threshold"] < 1.0
    assert report["calibration"]["head"]["far_at_threshold"] <= report["target_far"] + 1e-9


def test_clip_known_person_is_named_in_most_face_frames(tmp_path, capsys, trained_model_dir, dlib_extractor_dir):
    features = tmp_path / "known_features"
    assert run(extract_features, ["--faces_path", KNOWN, "--model_path", dlib_extractor_dir, "--features", features, "-q"], capsys)[0] == 0
    jsonl = tmp_path / "clip.jsonl"
    # HOG: this session's head (8 epochs on 32 LFW people) names Lacamoire's profile, which only BlazeFace
    # finds, Miranda in ~11 frames; the demo's head (15 epochs, all of LFW DevTrain) names nobody wrongly with
    # BlazeFace and any scorer (docs/results.md; docs/limits.md says what a head trained on few people risks).
    code, _, err = run(identify_script, ["--features", features, "--model", dlib_extractor_dir, "--classification",
                                         trained_model_dir, "--video_path", VIDEO, "--max_frames", "120",
                                         "--detector", "hog", "--jsonl", jsonl, "--no_display", "-q"], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    by_frame: dict[int, list[dict]] = {}
    for record in records:
        by_frame.setdefault(record["frame"], []).append(record)
    # The clip's hand-made truth: frames 0-19 (far) and 82-119 (close up) are Miranda's shots, 20-81
    # Lacamoire's profile, which HOG does not find.
    his_shots = [shot for shot in load_truth(VIDEO)["shots"] if shot["person"] == "lin-manuel-miranda"]
    his_frames = [frame for frame in range(120) if any(shot["first"] <= frame <= shot["last"] for shot in his_shots)]
    # Miranda is the largest face whenever he is on screen (centre stage, close up).
    largest = [max(by_frame[frame], key=lambda r: r["box"][2] * r["box"][3])
               for frame in his_frames if frame in by_frame]
    named = sum(face["name"] == "lin-manuel-miranda" for face in largest)
    # Observed: a face in all 58 of his frames, 45 named Miranda, the rest unknown or "…": this session's
    # head (its own default scorer) scores him near its threshold (median 0.33, threshold 0.26); with
    # BlazeFace 44. The demo's head names him in 147 of his 149 frames (docs/results.md).
    assert len(largest) >= 0.9 * len(his_frames)
    assert named >= 0.7 * len(largest), f"{named}/{len(largest)} of his face frames named lin-manuel-miranda"
    # Nobody else is named Miranda. Observed: in his shot Lacamoire is named alex-lacamoire or unknown.
    wrong = [(record["frame"], record["box"]) for record in records
             if record["name"] == "lin-manuel-miranda" and record["frame"] not in his_frames]
    assert not wrong, f"faces outside Miranda's shots named lin-manuel-miranda: {wrong}"
