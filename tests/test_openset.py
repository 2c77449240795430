"""Open-set identification: FNIR/FPIR, the decision statistic, the gallery-aware threshold,
and the scripts that use them (test.py with the backbone alone, evaluate.py identify/openset)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import KNOWN, LFW, VIDEO, copy_people, lfw_people
from scipy.stats import binom

from faceid.errors import InputError
from faceid.match.decision import GALLERY, Decision
from faceid.match.gallery import Gallery
from faceid.match.metrics import det_curve, fnir_at_fpir, open_set_rates
from faceid.match.openset import OpenSetCalibration, backbone_calibrations, calibrate_open_set, kept_ranks
from faceid.match.scoring import Rule

# --- hand-made score matrices --------------------------------------------------------------------


def test_open_set_rates_on_a_hand_made_matrix():
    # 4 known probes of people 0, 1, 2, 0 against 3 people; 5 strangers.
    known = np.array([[0.9, 0.1, 0.2],   # correct, 0.9
                      [0.3, 0.8, 0.1],   # correct, 0.8
                      [0.7, 0.2, 0.6],   # wrong (best is 0), 0.7
                      [0.5, 0.4, 0.1]])  # correct, 0.5
    true = np.array([0, 1, 2, 0])
    strangers = np.array([0.95, 0.6, 0.55, 0.3, 0.2])
    best, statistic = Decision(0.0).statistic(known)
    correct = best == true
    assert correct.tolist() == [True, True, False, True]
    # Threshold 0.6: known hits 0.9, 0.8 (the wrong 0.7 is a misname); strangers 0.95 and 0.6 named.
    fnir, fpir = open_set_rates(correct, statistic, strangers, 0.6)
    assert fnir == pytest.approx(0.5) and fpir == pytest.approx(0.4)
    # FPIR at most 20%: the threshold must reject 0.6, so it is just above it; hits 0.9, 0.8.
    fnir, threshold = fnir_at_fpir(correct, statistic, strangers, 0.2)
    assert threshold == pytest.approx(np.nextafter(np.float64(0.6), np.inf)) and fnir == pytest.approx(0.5)
    # FPIR 0: above every stranger (0.95): nobody known is named.
    assert fnir_at_fpir(correct, statistic, strangers, 0.0)[0] == pytest.approx(1.0)
    # FPIR 100%: everyone accepted; only the misnamed probe is a failure.
    assert fnir_at_fpir(correct, statistic, strangers, 1.0)[0] == pytest.approx(0.25)
    fpir_curve, fnir_curve = det_curve(correct, statistic, strangers)
    assert np.all(np.diff(fpir_curve) >= 0) and np.all(np.diff(fnir_curve) <= 0)
    assert fpir_curve[-1] == 1.0 and fnir_curve[-1] == pytest.approx(0.25)


def test_margin_statistic_by_hand():
    scores = np.array([[0.9, 0.5, 0.1], [0.6, 0.55, 0.2]], dtype=np.float32)
    best, statistic = Decision(0.0, margin=1.0).statistic(scores)
    assert best.tolist() == [0, 0]
    assert statistic == pytest.approx([0.9 + 0.4, 0.6 + 0.05])
    # One person enrolled: no second, the margin adds nothing.
    assert Decision(0.0, margin=2.0).statistic(scores[:, :1])[1] == pytest.approx([0.9, 0.6])


# --- the gallery-aware threshold on a synthetic score model with a known answer ------------------


def uniform_calibration(compared: int = 100_000, probes: int = 2000, photos: int = 1, margin=0.0) -> OpenSetCalibration:
    """Every probe's scores against other people are uniform on [0, 1): rank r scores 1 - (r + 0.5) / M."""
    ranks = kept_ranks(compared)
    values = (1.0 - (ranks + 0.5) / compared).astype(np.float32)
    tails = np.broadcast_to(values, (photos, probes, len(ranks))).copy()
    genuine = np.full((photos, probes), 0.999, dtype=np.float32)
    return OpenSetCalibration("cosine", Rule(), tails, ranks, compared, genuine, margin=margin)


@pytest.mark.parametrize("enrolled", [1, 10, 100, 1000])
def test_gallery_aware_threshold_matches_the_known_answer(enrolled):
    # A stranger's best of N uniform scores passes t with probability 1 - t^N: the threshold for
    # FPIR a is (1 - a)^(1/N), and the per-person one (N = 1) names 1 - (1 - a)^N of strangers.
    calibration = uniform_calibration()
    target = 0.01
    expected = (1.0 - target) ** (1.0 / enrolled)
    threshold = calibration.threshold(enrolled, target)
    assert threshold == pytest.approx(expected, abs=0.25 * (1 - expected) + 2e-4)
    assert calibration.fpir_exact(threshold, enrolled) == pytest.approx(target, rel=0.25)
    fixed = calibration.threshold(1, target)
    assert calibration.fpir_exact(fixed, enrolled) == pytest.approx(1 - (1 - target) ** enrolled, rel=0.1, abs=1e-3)
    decision = calibration.decision(enrolled, target)
    assert decision.source == GALLERY and decision.enrolled == enrolled and decision.target_fpir == target


def test_threshold_rises_with_the_gallery_and_photo_counts_are_kept_apart():
    calibration = uniform_calibration(photos=2)
    # Photos-per-person tails: make two-photo people score higher against strangers.
    calibration.tails[1] = np.sqrt(calibration.tails[1])
    small, large = calibration.threshold(10, 0.01), calibration.threshold(1000, 0.01)
    assert large > small
    one = calibration.threshold(np.full(100, 1), 0.01)
    two = calibration.threshold(np.full(100, 2), 0.01)
    assert two > one
    assert calibration.people_by_photos(np.array([1, 2, 5, 1])).tolist() == [2, 2]
    with pytest.raises(InputError, match="target_fpir"):
        calibration.threshold(10, 0.0)


def test_margin_weight_is_chosen_by_predicted_misses():
    calibration = uniform_calibration(margin=None)
    margin, threshold, fnir = calibration.choose_margin(100, 0.01)
    assert margin in (0.0, 0.5, 1.0, 2.0) and 0.0 <= fnir <= 1.0
    decision = calibration.decision(100, 0.01)
    assert decision.margin == margin and decision.threshold == pytest.approx(threshold)


def test_calibration_round_trip(tmp_path):
    from faceid.match.openset import load_calibrations, save_calibrations

    calibration = uniform_calibration(margin=None)
    save_calibrations(tmp_path / "c.npz", {"cosine": calibration})
    loaded = load_calibrations(tmp_path / "c.npz", "fix")["cosine"]
    assert loaded.margin is None and loaded.compared == calibration.compared
    assert loaded.threshold(50, 0.01) == pytest.approx(calibration.threshold(50, 0.01), abs=1e-3)
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(InputError):
        load_calibrations(tmp_path / "bad.npz", "fix")


# --- real LFW slices ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lfw_open_set(tmp_path_factory, dlib_extractor, lfw_cache_dir):
    """Calibration people, known people (the session's LFW cache) and strangers: three disjoint LFW slices."""
    from faceid.features.cache import FeatureCache
    from faceid.features.extract import extract_features

    known_people = set(FeatureCache.load(lfw_cache_dir).people)
    few = [name for name in lfw_people(min_images=2, count=400) if name not in known_people]
    slices = {"calibration": few[:150], "strangers": few[150:280]}
    caches = {}
    for name, people in slices.items():
        faces = copy_people(LFW, tmp_path_factory.mktemp(name), people, max_images=3 if name == "calibration" else 2)
        caches[name] = tmp_path_factory.mktemp(f"{name}_features")
        extract_features(faces, dlib_extractor, caches[name], progress=False)
    return {name: FeatureCache.load(path).matrix() for name, path in caches.items()} | {
        "known": FeatureCache.load(lfw_cache_dir).matrix()}


@pytest.mark.parametrize("scorer", ["euclidean", "cosine"])
def test_real_strangers_named_within_the_target(lfw_open_set, scorer):
    vectors, labels, _ = lfw_open_set["calibration"]
    calibration = calibrate_open_set(vectors, labels, scorer)
    known_vectors, known_labels, known_names = lfw_open_set["known"]
    enrol = np.zeros(len(known_labels), dtype=bool)
    for person in np.unique(known_labels):
        enrol[np.flatnonzero(known_labels == person)[:3]] = True
    target = 0.05
    gallery = Gallery(calibration=calibration, target_fpir=target).fit(
        known_vectors[enrol], np.array(known_names)[known_labels[enrol]])
    assert gallery.decision_.enrolled == len(known_names) and gallery.decision_.scorer == scorer
    strangers = lfw_open_set["strangers"][0]
    named = sum(result.known for result in gallery.identify(strangers))
    # No more strangers named than the target allows, within its binomial interval (99.5%).
    assert named <= binom.ppf(0.995, len(strangers), target), (named, len(strangers))
    probes = gallery.identify(known_vectors[~enrol])
    truth = np.array(known_names)[known_labels[~enrol]]
    identified = np.mean([result.known and result.name == name for result, name in zip(probes, truth)])
    assert identified > 0.7, identified


# --- scripts ------------------------------------------------------------------------------------


def test_test_py_with_the_backbone_alone(tmp_path, dlib_extractor_dir, dlib_extractor, capsys, monkeypatch):
    """test.py --scorer euclidean with no --classification: the backbone's shipped calibration names people."""
    from faceid.cli import identify
    from faceid.features.extract import extract_features

    assert backbone_calibrations(dlib_extractor.manifest), "the dlib backbone ships its metric calibration"
    monkeypatch.chdir(tmp_path)  # no models/similarity here
    extract_features(KNOWN, dlib_extractor, tmp_path / "known", progress=False)
    code = identify.main(["--features", str(tmp_path / "known"), "--model", str(dlib_extractor_dir),
                          "--scorer", "euclidean", "--video_path", str(VIDEO), "--max_frames", "120",
                          "--no_display", "--json", "--jsonl", str(tmp_path / "faces.jsonl"), "-q"])
    captured = capsys.readouterr()
    assert code == 0
    # With --json the promise goes to stderr, and stdout stays one JSON line.
    assert "2 people enrolled: threshold" in captured.err and "for FPIR 1%" in captured.err
    assert json.loads(captured.out)["frames"] == 120
    rows = [json.loads(line) for line in (tmp_path / "faces.jsonl").read_text().splitlines()]
    # Frames 82-119 are a close-up of Lin-Manuel Miranda (the clip's truth): he is named there.
    close_up = [row["name"] for row in rows if 90 <= row["frame"] < 120]
    assert close_up and all(name == "lin-manuel-miranda" for name in close_up)
    # Without a calibration for the extractor and no threshold, a clear error.
    code = identify.main(["--features", str(tmp_path / "known"), "--model", str(dlib_extractor_dir),
                          "--scorer", "head", "--video_path", str(VIDEO), "--max_frames", "1", "--no_display", "-q"])
    assert code != 0 and "needs a similarity model" in capsys.readouterr().err


def test_train_py_calibrates_every_scorer(trained_model_dir):
    from faceid.match.model import SimilarityModel

    model = SimilarityModel.load(trained_model_dir)
    assert set(model.calibrations) == {"head", "euclidean", "cosine"}
    report = json.loads((trained_model_dir / "report.json").read_text())
    assert model.default_scorer == report["default_scorer"] == report["open_set"]["winner"]
    # The winner misses least on the held-out people (a tie goes to the head).
    fnir = report["open_set"]["fnir"]
    assert fnir[model.default_scorer] == min(fnir.values())
    gallery = model.gallery().fit(np.eye(128, dtype=np.float32)[:6], np.array(list("aabbcc")))
    assert gallery.decision_.source == GALLERY and gallery.decision_.enrolled == 3


def test_evaluate_identify_json_interface(tmp_path, lfw_train_faces, lfw_cache_dir, dlib_extractor_dir):
    from faceid.cli import evaluate

    output = tmp_path / "identify.json"
    code = evaluate.main(["identify", "--faces_path", str(lfw_train_faces), "--model_path", str(dlib_extractor_dir),
                          "--features", str(lfw_cache_dir), "--gallery_per_person", "2", "--gallery_sizes", "5,20",
                          "--json", str(output), "--plots", str(tmp_path / "plots"), "-q"])
    assert code == 0
    result = json.loads(output.read_text())
    for scorer in ("euclidean", "cosine"):
        assert set(result["methods"][scorer]["fnir_at_fpir"]) == {"0.001", "0.01", "0.1"}
        assert all(0.0 <= value <= 1.0 for value in result["methods"][scorer]["fnir_at_fpir"].values())
    shipped = result["shipped"]
    assert shipped["scorer"] in ("euclidean", "cosine")
    assert {"threshold", "fnir", "fpir"} <= set(shipped) and 0.0 <= shipped["fpir"] <= 1.0
    assert set(result["gallery_sizes"]) == {"5", "20"}
    assert (tmp_path / "plots" / "det.png").is_file()


def test_evaluate_openset_and_calibrate(tmp_path, lfw_cache_dir, capsys):
    from faceid.cli import evaluate

    code = evaluate.main(["openset", "--features", str(lfw_cache_dir), "--folds", "2", "--gallery_sizes", "5",
                          "--photos", "2", "--json", str(tmp_path / "o.json"), "-q"])
    assert code == 0
    result = json.loads((tmp_path / "o.json").read_text())
    assert set(result["results"]) == {"euclidean@5", "cosine@5"}
    assert set(result["results"]["cosine@5"]["calibrated"]) == {"chosen", "best", "per_person"}
    code = evaluate.main(["calibrate", "--features", str(lfw_cache_dir), "--output", str(tmp_path / "c.npz"), "-q"])
    assert code == 0 and (tmp_path / "c.npz").is_file()
    # The default output goes beside the extractor only when the cache is that extractor's.
    code = evaluate.main(["calibrate", "--features", str(lfw_cache_dir), "--model_path", str(tmp_path / "none"), "-q"])
    assert code != 0 and "extractor manifest" in capsys.readouterr().err
