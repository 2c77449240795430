"""evaluate.py cluster: real LFW people's faces clustered without their labels, scored against their folders."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from conftest import LFW, lfw_people

from faceid.cli import evaluate
from faceid.features.cache import FeatureCache
from faceid.io.images import list_people

PEOPLE = 12


@pytest.fixture(scope="module")
def lfw_twelve(tmp_path_factory):
    """The first 12 LFW people with at least 5 photos, as links to their folders."""
    folder = tmp_path_factory.mktemp("lfw_twelve")
    for name in lfw_people(min_images=5, count=PEOPLE):
        (folder / name).symlink_to(LFW / name, target_is_directory=True)
    return folder


@pytest.fixture(scope="module")
def clustered(lfw_twelve, dlib_extractor_dir, tmp_path_factory):
    """One run with a cache, a baseline, --json and --plots: its exit code, stdout, files."""
    work = tmp_path_factory.mktemp("evaluate_cluster")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = evaluate.main(["cluster", "--faces_path", str(lfw_twelve), "--model_path", str(dlib_extractor_dir),
                              "--features", str(work / "features"), "--methods", "chinese-whispers",
                              "--json", str(work / "result.json"), "--plots", str(work / "plots"), "-q"])
    return code, out.getvalue(), work


def test_cluster_reports_each_method_against_the_person_folders(clustered, lfw_twelve):
    code, out, work = clustered
    assert code == 0
    result = json.loads((work / "result.json").read_text())
    assert json.loads(out.strip().splitlines()[-1]) == result
    keys = ("pairwise_f", "pairwise_precision", "pairwise_recall", "bcubed_f", "bcubed_precision", "bcubed_recall",
            "clusters", "people", "faces")
    assert set(keys) <= set(result)
    assert result["method"] == "linkage" and set(result["methods"]) == {"linkage", "chinese-whispers"}
    assert {key: result[key] for key in keys} == {key: result["methods"]["linkage"][key] for key in keys}
    # Every face the cache holds for these people is clustered, and the people are the folders.
    cache = FeatureCache.load(work / "features")
    assert result["faces"] == sum(len(person.vectors) for person in cache.people.values())
    assert result["images"]["photos"] == sum(len(files) for files in list_people(lfw_twelve).values())
    for name, row in result["methods"].items():
        assert row["people"] == PEOPLE and row["faces"] == result["faces"], name
        assert 1 <= row["clusters"] <= row["faces"] and row["seconds"] >= 0
        for kind in ("pairwise", "bcubed"):
            precision, recall = row[f"{kind}_precision"], row[f"{kind}_recall"]
            assert 0 <= precision <= 1 and 0 <= recall <= 1
            assert row[f"{kind}_f"] == pytest.approx(2 * precision * recall / (precision + recall))
    # Twelve well-separated people: the default groups them nearly as the folders do (all in one
    # cluster would give a BCubed precision near 1/12, every face alone a pairwise recall of 0).
    assert result["bcubed_f"] > 0.9 and result["pairwise_f"] > 0.9
    assert "linkage (default)" in out and "chinese-whispers" in out
    for name in ("f_by_method.png", "cluster_sizes.png"):
        assert (work / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cluster_reuses_the_cache_and_keeps_the_people_it_was_not_asked_about(clustered, lfw_twelve,
                                                                           dlib_extractor_dir, tmp_path, capsys):
    _, _, work = clustered
    half = tmp_path / "half"
    half.mkdir()
    names = sorted(path.name for path in lfw_twelve.iterdir())[:6]
    for name in names:
        (half / name).symlink_to(LFW / name, target_is_directory=True)
    assert evaluate.main(["cluster", "--faces_path", str(half), "--model_path", str(dlib_extractor_dir),
                          "--features", str(work / "features"), "-q"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["people"] == 6 and set(result["methods"]) == {"linkage"}
    assert result["images"]["embedded"] == 0 and result["images"]["from_cache"] == result["faces"] > 0
    assert len(FeatureCache.load(work / "features").people) == PEOPLE


@pytest.mark.parametrize("layout, says", [
    ("missing", "does not exist"),
    ("empty", "no person folders"),
    ("one person", "at least 2 people"),
])
def test_cluster_without_two_people_exits_with_a_message(layout, says, lfw_twelve, dlib_extractor_dir, tmp_path,
                                                        capsys):
    faces = tmp_path / "faces"
    if layout != "missing":
        faces.mkdir()
    if layout == "one person":
        first = sorted(lfw_twelve.iterdir())[0].name
        (faces / first).symlink_to(LFW / first, target_is_directory=True)
    code = evaluate.main(["cluster", "--faces_path", str(faces), "--model_path", str(dlib_extractor_dir), "-q"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error:") and says in err


def test_cluster_names_an_unknown_method_by_its_flag(lfw_twelve, dlib_extractor_dir, capsys):
    code = evaluate.main(["cluster", "--faces_path", str(lfw_twelve), "--model_path", str(dlib_extractor_dir),
                          "--methods", "kmeans", "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "kmeans" in err and "--methods" in err and "chinese-whispers" in err


def test_cluster_scores_only_the_people_asked_for(clustered, lfw_twelve, dlib_extractor_dir, tmp_path, capsys):
    _, _, work = clustered
    names = sorted(path.name for path in lfw_twelve.iterdir())
    (tmp_path / "people.txt").write_text("\n".join(names[3:6]) + "\nNobody_Here\n")
    assert evaluate.main(["cluster", "--faces_path", str(lfw_twelve), "--model_path", str(dlib_extractor_dir),
                          "--features", str(work / "features"), "--people", str(tmp_path / "people.txt"),
                          "--min_photos", "5", "-q"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cache = FeatureCache.load(work / "features")
    assert result["people"] == 3 and result["faces"] == sum(len(cache.people[name].vectors) for name in names[3:6])
    code = evaluate.main(["cluster", "--faces_path", str(lfw_twelve), "--model_path", str(dlib_extractor_dir),
                          "--min_photos", "10000", "-q"])
    assert code == 1 and "at least 2 people" in capsys.readouterr().err
