"""evaluate.py: fold thresholds and open-set numerics on hand-made scores, then each sub-command on real LFW faces.

EER, TAR@FAR, AUC and CMC themselves are checked against hand-made arrays in test_metrics.py;
here is what evaluation adds on top of them.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import LFW, lfw_people
from PIL import Image

from faceid.cli import evaluate
from faceid.detect.faces import DetectedFace, FaceBox, FaceOptions
from faceid.errors import InputError
from faceid.evaluate.common import Setup, run_settings
from faceid.evaluate.folds import fold_accuracy
from faceid.evaluate.identify import open_set_rates
from faceid.evaluate.images import centred_face
from faceid.evaluate.oneshot import oneshot_correct, wilson_interval
from faceid.evaluate.pairlist import read_pair_list
from faceid.features.cache import FeatureCache
from faceid.match.metrics import best_accuracy_threshold, best_balanced_threshold

# --------------------------------------------------------------------------------------
# Pure numerics
# --------------------------------------------------------------------------------------


def test_fold_threshold_is_chosen_on_the_other_folds_and_applied_to_the_held_out_one():
    # Fold 0 on its own separates perfectly (0.6 > 0.5); fold 1 does not (0.45 > 0.4).
    scores = np.array([0.9, 0.6, 0.5, 0.1, 0.8, 0.4, 0.45, 0.2])
    is_same = np.array([1, 1, 0, 0, 1, 1, 0, 0], dtype=bool)
    fold = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    result = fold_accuracy(scores, is_same, fold)
    # Fold 0 is judged at fold 1's best threshold (midpoint of 0.8 and 0.45, the higher of two
    # equally accurate gaps), which rejects its same pair at 0.6; fold 1 at fold 0's 0.55.
    np.testing.assert_allclose(result.thresholds, [0.625, 0.55])
    np.testing.assert_allclose(result.accuracies, [0.75, 0.75])
    assert result.mean == pytest.approx(0.75) and result.std == pytest.approx(0.0)


def test_fold_accuracy_scores_each_fold_with_its_own_scorer():
    is_same = np.array([1, 1, 0, 0, 1, 1, 0, 0], dtype=bool)
    fold = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    separating = np.where(is_same, 1.0, 0.0)
    blind = np.zeros(8)  # the head trained for fold 1 cannot tell anything apart
    result = fold_accuracy(np.stack([separating, blind]), is_same, fold)
    np.testing.assert_allclose(result.accuracies, [1.0, 0.5])


def test_balanced_threshold_equals_the_accuracy_threshold_on_balanced_pairs(rng):
    scores = rng.normal(size=200)
    is_same = np.arange(200) < 100
    scores[is_same] += 1.5
    threshold, balanced = best_balanced_threshold(scores, is_same)
    assert (threshold, balanced) == pytest.approx(best_accuracy_threshold(scores, is_same))


def test_balanced_threshold_does_not_accept_everything_when_same_pairs_dominate():
    same = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    scores = np.array(same + [0.65])
    is_same = np.array([True] * len(same) + [False])
    assert best_accuracy_threshold(scores, is_same)[0] == pytest.approx(0.2)  # 8/9 by accepting all
    threshold, balanced = best_balanced_threshold(scores, is_same)
    assert threshold == pytest.approx(0.675) and balanced == pytest.approx((3 / 8 + 1) / 2)


def test_open_set_identification_rate_at_the_strangers_threshold():
    known = np.array([[0.9, 0.1], [0.3, 0.6], [0.7, 0.8]])
    true_class = np.array([0, 1, 0])
    strangers = np.array([0.5, 0.75, 0.2, 0.4])
    rate, threshold = open_set_rates(known, true_class, strangers, target_far=0.25)
    # One stranger in four may pass: only 0.75 does, so the threshold sits just above 0.5;
    # probes 0 and 1 are right and above it, probe 2's best person is the wrong one.
    assert threshold == pytest.approx(0.5) and threshold > 0.5
    assert rate == pytest.approx(2 / 3)


def test_wilson_interval_matches_the_textbook_value():
    low, high = wilson_interval(50, 100)
    assert (low, high) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0


def test_oneshot_tie_with_the_own_person_counts_as_a_failure():
    scores = np.array([[0.9, 0.2, 0.3], [0.5, 0.5, 0.1], [0.1, 0.8, 0.2]])
    np.testing.assert_array_equal(oneshot_correct(scores), [True, False, False])


def test_centred_face_prefers_the_face_at_the_centre_over_the_largest():
    def face(left, top, side):
        return DetectedFace(FaceBox(left, top, left + side, top + side), np.zeros((5, 2), np.float32))

    largest_off_centre, small_centred = face(150, 20, 100), face(80, 85, 90)
    assert centred_face([largest_off_centre, small_centred], (250, 250, 3)) == 1
    assert centred_face([face(5, 170, 37)], (250, 250, 3)) is None


# --------------------------------------------------------------------------------------
# Pair lists
# --------------------------------------------------------------------------------------


def write_pair_list(path, same, different, header=None):
    """An LFW pair list: ``same`` = [(name, i, j)], ``different`` = [(name1, i, name2, j)]."""
    lines = [header or str(len(same))]
    lines += ["\t".join(map(str, pair)) for pair in same] + ["\t".join(map(str, pair)) for pair in different]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_single_list_is_cut_into_contiguous_folds_of_both_kinds(tmp_path):
    same = [("A", 1, 2), ("B", 1, 2), ("C", 1, 2), ("D", 1, 2)]
    different = [("A", 1, "B", 1), ("B", 2, "C", 1), ("C", 2, "D", 1), ("D", 2, "A", 2)]
    pairs = read_pair_list(write_pair_list(tmp_path / "pairs.txt", same, different), folds=2)
    np.testing.assert_array_equal(pairs.fold, [0, 0, 1, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(pairs.is_same, [True] * 4 + [False] * 4)
    assert pairs.first[4] == ("A", "A_0001.jpg") and pairs.second[4] == ("B", "B_0001.jpg")
    assert not pairs.folds_from_file and not pairs.person_disjoint()  # B is in both folds


def test_pairs_txt_folds_come_from_the_file_and_are_person_disjoint(tmp_path):
    # Header "2 1": two folds, each one same then one different pair.
    path = tmp_path / "pairs.txt"
    path.write_text("2 1\nA\t1\t2\nA\t1\tB\t1\nC\t1\t3\nC\t2\tD\t4\n")
    pairs = read_pair_list(path, folds=10)
    assert pairs.folds_from_file and pairs.n_folds == 2
    np.testing.assert_array_equal(pairs.fold, [0, 0, 1, 1])
    np.testing.assert_array_equal(pairs.is_same, [True, False, True, False])
    assert pairs.person_disjoint() and pairs.second[3] == ("D", "D_0004.jpg")


def test_malformed_pair_list_names_the_line(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("2\nA\t1\t2\nA\t1\tB\t1\nB\t1\t2\nC\t1\tD\t1\n")
    with pytest.raises(InputError, match=r"pairs.txt:3: expected a same-person"):
        read_pair_list(path, folds=2)


# --------------------------------------------------------------------------------------
# The script, end to end on LFW faces
# --------------------------------------------------------------------------------------


def run(args, capsys):
    code = evaluate.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1]) if code == 0 else None
    return code, result, captured


@pytest.fixture(scope="module")
def slice_people():
    """The people of conftest's cached LFW slice (40 people with 4+ images, first 6 cached)."""
    return lfw_people(min_images=4, count=40)


def easy_pairs(people, count):
    same = [(person, 1 + (k % 2) * 2, 2 + (k % 2) * 2) for k, person in enumerate(people[:count])]
    different = [(people[k], 1, people[(k + 7) % len(people)], 2) for k in range(count)]
    return same, different


def test_pairs_reports_every_method_reads_the_cache_and_writes_plots(
    tmp_path, capsys, slice_people, dlib_extractor_dir, lfw_cache_dir, trained_model_dir
):
    same, different = easy_pairs(slice_people, 20)
    same[0] = ("Al_Gore", 1, 7)  # image 7 is beyond the cached slice: it must be embedded
    pairs_file = write_pair_list(tmp_path / "pairs.txt", same, different)
    code, result, captured = run(
        [
            "pairs",
            "--pairs_file",
            pairs_file,
            "--images_root",
            LFW,
            "--model_path",
            dlib_extractor_dir,
            "--features",
            lfw_cache_dir,
            "--classification",
            trained_model_dir,
            "--folds",
            "5",
            "--face",
            "largest",
            "--json",
            tmp_path / "out.json",
            "--plots",
            tmp_path / "plots",
            "--html",
            tmp_path / "report.html",
            "-q",
        ],
        capsys,
    )
    assert code == 0, captured.err
    assert result["command"] == "pairs" and set(result["methods"]) == {"euclidean", "cosine", "head"}
    for metrics in result["methods"].values():
        assert {"accuracy", "accuracy_std", "auc", "eer", "tar_at_far", "no_face_share"} <= set(metrics)
        assert set(metrics["tar_at_far"]) == {"0.001", "0.01"} and len(metrics["fold_accuracy"]) == 5
    assert result["methods"]["euclidean"]["accuracy"] > 0.9 and result["methods"]["euclidean"]["auc"] > 0.95
    assert result["folds"] == {"count": 5, "from_file": False, "person_disjoint": False}
    assert result["pairs"] == {
        "listed": 40,
        "evaluated": 40,
        "same": 20,
        "different": 20,
        "missing_image": 0,
        "replaced": 0,
        "left_out": 0,
        "rejected_no_face": 0,
    }

    cache = FeatureCache.load(lfw_cache_dir)
    named = {image for pair in same for image in [(pair[0], pair[1]), (pair[0], pair[2])]}
    named |= {image for pair in different for image in [(pair[0], pair[1]), (pair[2], pair[3])]}
    cached = sum(f"{person}_{index:04d}.jpg" in cache.people[person].files for person, index in named)
    assert result["images"]["from_cache"] == cached and result["images"]["embedded"] == len(named) - cached >= 1

    assert json.loads((tmp_path / "out.json").read_text()) == result
    assert {path.name for path in (tmp_path / "plots").iterdir()} == {
        "roc.png",
        "hist_euclidean.png",
        "hist_cosine.png",
        "hist_head.png",
    }
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "person-disjoint" in page


def test_pairs_with_labels_unrelated_to_the_faces_score_near_chance(
    tmp_path, capsys, slice_people, dlib_extractor_dir, lfw_cache_dir
):
    # Every pair shows one person twice; half are listed as "different" (name1 == name2).
    # A scorer cannot beat chance here unless scores and labels got mixed up.
    rng = np.random.default_rng(3)
    candidates = [(person, i, j) for person in slice_people for i in range(1, 5) for j in range(i + 1, 5)]
    chosen = [candidates[index] for index in rng.permutation(len(candidates))[:80]]
    same, different = chosen[:40], [(person, i, person, j) for person, i, j in chosen[40:]]
    pairs_file = write_pair_list(tmp_path / "pairs.txt", same, different)
    code, result, captured = run(
        [
            "pairs",
            "--pairs_file",
            pairs_file,
            "--images_root",
            LFW,
            "--model_path",
            dlib_extractor_dir,
            "--features",
            lfw_cache_dir,
            "--face",
            "largest",
            "-q",
        ],
        capsys,
    )
    assert code == 0, captured.err
    euclidean = result["methods"]["euclidean"]
    assert 0.25 < euclidean["auc"] < 0.75 and euclidean["accuracy"] < 0.75


def test_pairs_train_per_fold_adds_a_head_trained_without_the_fold(
    tmp_path, capsys, slice_people, dlib_extractor_dir, lfw_cache_dir
):
    same, different = easy_pairs(slice_people, 20)
    pairs_file = write_pair_list(tmp_path / "pairs.txt", same, different)
    code, result, captured = run(
        [
            "pairs",
            "--pairs_file",
            pairs_file,
            "--images_root",
            LFW,
            "--model_path",
            dlib_extractor_dir,
            "--features",
            lfw_cache_dir,
            "--face",
            "largest",
            "--folds",
            "4",
            "--train_per_fold",
            "--head_epochs",
            "3",
            "-q",
        ],
        capsys,
    )
    assert code == 0, captured.err
    assert set(result["methods"]) == {"euclidean", "cosine", "head_per_fold"}
    per_fold = result["methods"]["head_per_fold"]
    assert len(per_fold["fold_accuracy"]) == 4 and per_fold["auc"] > 0.8 and per_fold["threshold"] is None


@pytest.fixture
def small_root(tmp_path):
    """Three LFW people with two images each, and "Nobody": one grey image without a face."""
    root = tmp_path / "lfw"
    for person in ("Aaron_Peirsol", "Adam_Sandler", "Al_Gore"):
        (root / person).mkdir(parents=True)
        for index in (1, 2):
            shutil.copy2(LFW / person / f"{person}_{index:04d}.jpg", root / person)
    (root / "Nobody").mkdir()
    Image.new("RGB", (250, 250), (128, 128, 128)).save(root / "Nobody" / "Nobody_0001.jpg")
    return root


def small_pairs(tmp_path, odd_one_out):
    same = [(person, 1, 2) for person in ("Aaron_Peirsol", "Adam_Sandler", "Al_Gore")]
    different = [
        ("Aaron_Peirsol", 1, *odd_one_out),
        ("Adam_Sandler", 1, "Al_Gore", 2),
        ("Al_Gore", 1, "Aaron_Peirsol", 2),
    ]
    return write_pair_list(tmp_path / "pairs.txt", same, different)


def test_faceless_image_is_embedded_from_the_centre_or_its_pair_rejected(
    tmp_path, capsys, small_root, dlib_extractor_dir
):
    base = [
        "pairs",
        "--pairs_file",
        small_pairs(tmp_path, ("Nobody", 1)),
        "--images_root",
        small_root,
        "--model_path",
        dlib_extractor_dir,
        "--folds",
        "3",
        "-q",
    ]
    code, skipped, captured = run([*base, "--no_face", "skip"], capsys)
    assert code == 0, captured.err
    assert skipped["images"]["no_face"] == 1 and skipped["images"]["no_face_share"] == pytest.approx(1 / 7)
    assert skipped["pairs"]["rejected_no_face"] == 1
    code, centred, captured = run([*base, "--no_face", "centre"], capsys)
    assert code == 0, captured.err
    assert centred["images"]["no_face_centre_crop"] == 1 and centred["pairs"]["rejected_no_face"] == 0


def test_missing_image_drops_its_pair_or_is_replaced_by_another_persons(
    tmp_path, capsys, small_root, dlib_extractor_dir
):
    # Two folds, so the first holds images of other people to draw a replacement from.
    base = [
        "pairs",
        "--pairs_file",
        small_pairs(tmp_path, ("Someone_Else", 1)),
        "--images_root",
        small_root,
        "--model_path",
        dlib_extractor_dir,
        "--folds",
        "2",
        "-q",
    ]
    code, dropped, captured = run([*base, "--missing", "drop"], capsys)
    assert code == 0, captured.err
    assert dropped["pairs"]["missing_image"] == 1 and dropped["pairs"]["left_out"] == 1
    assert dropped["pairs"]["evaluated"] == 5 and dropped["pairs"]["different"] == 2
    code, replaced, captured = run([*base, "--missing", "replace"], capsys)
    assert code == 0, captured.err
    assert replaced["pairs"]["replaced"] == 1 and replaced["pairs"]["evaluated"] == 6


def test_pairs_naming_missing_images_is_an_error_that_says_where(tmp_path, capsys, dlib_extractor_dir):
    pairs_file = write_pair_list(
        tmp_path / "pairs.txt",
        [("Nobody", 1, 2), ("Someone", 1, 2)],
        [("Nobody", 1, "Someone", 1), ("Nobody", 2, "Someone", 2)],
    )
    code, _, captured = run(
        [
            "pairs",
            "--pairs_file",
            pairs_file,
            "--images_root",
            tmp_path,
            "--model_path",
            dlib_extractor_dir,
            "--folds",
            "2",
            "-q",
        ],
        capsys,
    )
    assert code == 1 and "error:" in captured.err and "--images_root" in captured.err


def test_identify_reports_closed_and_open_set_rates(
    tmp_path, capsys, lfw_train_faces, dlib_extractor_dir, lfw_cache_dir, trained_model_dir
):
    code, result, captured = run(
        [
            "identify",
            "--faces_path",
            lfw_train_faces,
            "--model_path",
            dlib_extractor_dir,
            "--features",
            lfw_cache_dir,
            "--classification",
            trained_model_dir,
            "--gallery_per_person",
            "2",
            "--stranger_share",
            "0.25",
            "--euclidean_threshold",
            "0.6",
            "--plots",
            tmp_path / "plots",
            "--html",
            tmp_path / "report.html",
            "-q",
        ],
        capsys,
    )
    assert code == 0, captured.err
    assert result["command"] == "identify" and set(result["methods"]) == {"euclidean", "cosine", "head"}
    assert result["people"]["known"] == 30 and result["people"]["strangers"] == 10
    images = result["images"]  # every face came from the cache; faceless images were skipped, not retried
    assert images["embedded"] == 0 and images["from_cache"] == images["total"] - images["no_face_skipped"]
    for name, metrics in result["methods"].items():
        assert 0.85 < metrics["rank1"] <= metrics["rank5"] <= 1.0
        assert np.all(np.diff(metrics["cmc"]) >= 0) and 0.0 <= metrics["dir_at_far"] <= metrics["rank1"]
    euclidean, head = result["methods"]["euclidean"], result["methods"]["head"]
    # dlib's customary distance 0.6 turns away nearly every stranger and keeps the known people: 46 of the 49
    # strangers' probes. Of the 3 named, two are within 0.02 of 0.6; the third, Abdoulaye_Wade_0003, is a dark,
    # turned face that BlazeFace finds and HOG did not (with HOG it was no probe, and 47 of 48 were turned away).
    assert euclidean["threshold"] == -0.6
    assert euclidean["stranger_rejection_at_threshold"] >= 0.93 and euclidean["identified_at_threshold"] >= 0.95
    # The head is judged at the decision train.py saved; a threshold below the one that admits 1% of
    # these strangers must admit more than 1% of them (and the other way round).
    saved = json.loads((trained_model_dir / "head.json").read_text())["decision"]
    assert head["threshold"] == saved["threshold"] and head["identified_at_threshold"] >= 0.9
    if head["threshold"] < head["threshold_at_far"]:
        assert head["stranger_rejection_at_threshold"] < 0.99
    else:
        assert head["stranger_rejection_at_threshold"] >= 0.99
    assert result["methods"]["cosine"]["stranger_rejection_at_threshold"] is None
    assert {path.name for path in (tmp_path / "plots").iterdir()} == {"cmc.png", "det.png"}
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64,") == 2


def test_oneshot_beats_chance_by_far_with_an_honest_interval(
    capsys, lfw_train_faces, dlib_extractor_dir, lfw_cache_dir
):
    code, result, captured = run(
        [
            "oneshot",
            "--faces_path",
            lfw_train_faces,
            "--model_path",
            dlib_extractor_dir,
            "--features",
            lfw_cache_dir,
            "--way",
            "5",
            "--trials",
            "200",
            "-q",
        ],
        capsys,
    )
    assert code == 0, captured.err
    assert result["chance"] == pytest.approx(0.2) and set(result["methods"]) == {"euclidean", "cosine"}
    for metrics in result["methods"].values():
        low, high = metrics["ci95"]
        assert metrics["accuracy"] > 0.85 and low < metrics["accuracy"] <= high + 1e-12 and high - low < 0.15
        assert metrics["correct"] == round(metrics["accuracy"] * 200)


def test_oneshot_with_fewer_people_than_the_way_says_what_to_do(
    capsys, lfw_train_faces, dlib_extractor_dir, lfw_cache_dir
):
    code, _, captured = run(
        [
            "oneshot",
            "--faces_path",
            lfw_train_faces,
            "--model_path",
            dlib_extractor_dir,
            "--features",
            lfw_cache_dir,
            "--way",
            "500",
            "-q",
        ],
        capsys,
    )
    assert code == 1 and "lower --way" in captured.err


def test_the_library_never_reads_the_processes_command_line(monkeypatch, dlib_extractor):
    monkeypatch.setattr("sys.argv", ["some_program", "--not-an-evaluate-option"])
    setup = Setup(extractor=dlib_extractor, embedder=None, model=None, cache=None, cache_info={})
    from_python = run_settings(setup, "models/extractor", None, FaceOptions(), None, {})
    assert from_python["command_line"] is None
    from_script = run_settings(setup, "models/extractor", None, FaceOptions(), ["oneshot", "--way", "5"], {})
    assert from_script["command_line"] == "evaluate.py oneshot --way 5"
