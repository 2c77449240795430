"""Training the head: person-level split, calibration, reproducibility, and the errors around it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import ORL, copy_people

from faceid.cli import compute_mean, extract_features, network, train
from faceid.cli import identify as identify_script
from faceid.errors import InputError
from faceid.evaluate.methods import build_methods
from faceid.features.cache import FeatureCache
from faceid.features.stats import Normalizer
from faceid.match.decision import Decision
from faceid.match.head import HeadArchitecture, SimilarityHead
from faceid.match.model import SimilarityModel
from faceid.match.scoring import Rule
from faceid.settings import DEFAULTS
from faceid.train.trainer import calibrate, split_people


def test_split_holds_out_whole_people():
    labels = np.repeat(np.arange(10), 3)
    train_rows, val_rows = split_people(labels, 0.3, seed=1)
    assert set(labels[train_rows]).isdisjoint(labels[val_rows])
    assert len(set(labels[val_rows])) == 3 and len(train_rows) + len(val_rows) == 30
    again = split_people(labels, 0.3, seed=1)
    assert np.array_equal(again[1], val_rows)


def test_split_refuses_too_few_people():
    with pytest.raises(InputError, match="too few"):
        split_people(np.array([0, 0, 1, 1, 2, 2]), 0.5, seed=0)


def test_calibrated_threshold_accepts_at_most_the_target_share_of_strangers():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(30, 8)) * 3
    labels = np.repeat(np.arange(30), 4)
    vectors = centres[labels] + rng.normal(size=(120, 8))
    result = calibrate(vectors, labels, None, None, Rule("topk", top_k=2), target_far=0.05, seed=0)
    assert result["far_at_threshold"] <= 0.05
    assert result["n_genuine"] == 120 and result["n_impostor"] == 120 * 29
    # Well-separated clusters: nearly every probe is accepted as itself.
    assert result["tar_at_threshold"] > 0.9 and result["rank1"] > 0.95


def test_training_is_reproducible_with_a_seed(lfw_cache_dir, tmp_path, capsys):
    reports = []
    for run_name in ("first", "second"):
        out = tmp_path / run_name
        assert train.main(["--features_path", str(lfw_cache_dir), "--output_model", str(out), "--epochs", "2", "-q"]) == 0
        reports.append(json.loads((out / "report.json").read_text()))
    for key in ("val_auc", "val_accuracy", "threshold"):
        assert reports[0][key] == pytest.approx(reports[1][key], abs=1e-6)
    assert reports[0]["pairs"] == reports[1]["pairs"]


def test_training_pairs_follow_the_negative_ratio(trained_model_dir):
    pairs = json.loads((trained_model_dir / "report.json").read_text())["pairs"]
    assert pairs["train_negative"] == round(1.5 * pairs["train_positive"])


def test_normalize_without_statistics_names_compute_mean(tmp_path, lfw_cache_dir, capsys):
    features = tmp_path / "features"
    shutil.copytree(lfw_cache_dir, features)
    for name in ("stats.npz", "stats.json"):
        (features / name).unlink(missing_ok=True)
    code = train.main(["--features_path", str(features), "--output_model", str(tmp_path / "m"), "--normalize", "1", "-q"])
    assert code == 1 and "compute_mean.py" in capsys.readouterr().err


def test_stale_statistics_are_refused(tmp_path, dlib_extractor_dir, capsys):
    faces = copy_people(ORL, tmp_path / "faces", ["s2", "s3", "s4", "s5", "s6"], max_images=3)
    features = tmp_path / "features"
    args = ["--faces_path", str(faces), "--model_path", str(dlib_extractor_dir), "--features", str(features), "-q"]
    assert extract_features.main(args) == 0
    assert compute_mean.main(["--features_path", str(features)]) == 0
    shutil.copy2(ORL / "s2" / "9.pgm", faces / "s2")
    assert extract_features.main(args) == 0
    capsys.readouterr()
    code = train.main(["--features_path", str(features), "--output_model", str(tmp_path / "m"), "--normalize", "1", "-q"])
    assert code == 1 and "earlier state of the cache" in capsys.readouterr().err


def test_head_trained_on_another_extractor_is_refused_by_test_py(tmp_path, trained_model_dir, capsys):
    extractor = tmp_path / "resnet"
    assert network.main(["--backbone", "resnet50", "--weights", "none", "--input_size", "64", "--export", "none", "--output", str(extractor)]) == 0
    faces = copy_people(ORL, tmp_path / "faces", ["s7", "s8"], max_images=2)
    features = tmp_path / "features"
    assert extract_features.main(["--faces_path", str(faces), "--model_path", str(extractor), "--features", str(features), "-q"]) == 0
    capsys.readouterr()
    code = identify_script.main(["--features", str(features), "--model", str(extractor), "--classification",
                                 str(trained_model_dir), "--images", str(faces / "s7"), "--no_display", "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "error:" in err and "trained on" in err
    assert FeatureCache.load(features).dim == 2048  # nothing was touched


# --- review defects: one saved decision, read by everyone ------------------------------------


def test_vote_rule_threshold_calibrated_by_train_py_is_the_one_identification_uses(lfw_cache_dir, tmp_path, capsys):
    out = tmp_path / "vote"
    assert train.main(["--features_path", str(lfw_cache_dir), "--output_model", str(out), "--rule", "vote",
                       "--epochs", "1", "-q"]) == 0
    report = json.loads((out / "report.json").read_text())
    model = SimilarityModel.load(out)
    assert model.rule.name == "vote" and model.decision.source == "calibrated"
    assert model.threshold == report["threshold"]
    gallery = model.gallery(scorer="head")
    vectors, labels, names = FeatureCache.load(lfw_cache_dir).matrix()
    gallery.fit(vectors, np.array(names)[labels])
    # The head's open-set calibration for the vote rule, its threshold set for the people enrolled,
    # accepted from the threshold up (>=), not the original rule's "more than 0.85".
    expected = model.calibrations["head"].decision(np.bincount(labels), DEFAULTS.target_fpir)
    assert gallery.decision_ == expected and gallery.decision_.rule.name == "vote"
    assert gallery.decision_.enrolled == len(names) and gallery.decision_.comparison == ">="
    assert gallery.accepts(np.array([expected.threshold], np.float32)).all()
    (head_method,) = [method for method in build_methods(model) if method.name == "head"]
    assert head_method.decision == model.decision


def test_an_interrupted_model_save_keeps_the_previous_normaliser(tmp_path):
    directory = tmp_path / "model"
    head = SimilarityHead([np.ones((4, 1), np.float32), np.ones((1, 1), np.float32)],
                          [np.zeros(1, np.float32), np.zeros(1, np.float32)], HeadArchitecture((1,), (0.0,)))
    decision = Decision.calibrated(0.5, Rule(), 0.01)
    first = Normalizer.from_arrays(np.zeros(4), np.ones(4))
    SimilarityModel(head, first, decision, {"fingerprint": "a"}).save(directory)
    before = {path.name: path.read_bytes() for path in directory.iterdir()}
    # A manifest that cannot be written (not JSON) fails the save after the normaliser was prepared.
    second = Normalizer.from_arrays(np.full(4, 7.0), np.full(4, 2.0))
    with pytest.raises(InputError, match="JSON"):
        SimilarityModel(head, second, decision, {"fingerprint": object()}).save(directory)
    with pytest.raises(InputError, match="JSON"):
        SimilarityModel(head, None, decision, {"fingerprint": object()}).save(directory)
    assert {path.name: path.read_bytes() for path in directory.iterdir()} == before
    np.testing.assert_array_equal(SimilarityModel.load(directory).normalizer.mean, first.mean)
