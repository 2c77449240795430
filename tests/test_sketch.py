"""Sketch -> photo retrieval on real CUHK pairs: synthesis, the HOG extractor, retrieve.py, evaluate.py retrieve."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, LFW

from faceid.backbones import load_extractor
from faceid.cli import evaluate as evaluate_cli
from faceid.cli import photo2sketch as photo2sketch_cli
from faceid.cli import retrieve as retrieve_cli
from faceid.cli import train_siamese as train_cli
from faceid.errors import InputError
from faceid.io.images import read_image
from faceid.match.retrieval import average_precision, first_relevant_ranks, retrieval_metrics, top_matches
from faceid.retrieve.gallery import FLAT, gallery_layout

CUHK = DATA / "cuhk_train"


def _pairs(root: Path, stems: list[str]) -> Path:
    for domain in ("sketches", "photos"):
        (root / domain).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            shutil.copy2(CUHK / domain / f"{stem}.png", root / domain / f"{stem}.png")
    return root


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cuhk12(tmp_path_factory) -> Path:
    return _pairs(tmp_path_factory.mktemp("cuhk12"), [f"{index:02d}" for index in range(12)])


@pytest.fixture(scope="module")
def hog_model(cuhk12, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("models") / "sketch"
    assert train_cli.main(["--pairs_path", str(cuhk12), "--domains", "sketches", "photos", "--output", str(output),
                           "--workers", "0", "-q"]) == 0
    return output


# ---------------------------------------------------------------- synthesis


def test_photo2sketch_writes_one_greyscale_image_per_photo_same_size_and_never_overwrites(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for stem in ("00", "01", "02"):
        shutil.copy2(CUHK / "photos" / f"{stem}.png", photos / f"{stem}.png")
    (photos / "notes.png").write_text("not an image")
    output = tmp_path / "sketches"
    (output).mkdir()
    (output / "02.png").write_bytes(b"mine")  # the user's own file: must survive
    assert photo2sketch_cli.main(["--photos", str(photos), "--output", str(output), "-q"]) == 0
    result = _last_json(capsys)
    assert result["written"] == 2 and result["existing_kept"] == 1 and result["unreadable"] == 1
    assert (output / "02.png").read_bytes() == b"mine"
    for stem in ("00", "01"):
        photo, sketch = read_image(photos / f"{stem}.png"), read_image(output / f"{stem}.png")
        assert sketch.shape == photo.shape
        assert np.array_equal(sketch[..., 0], sketch[..., 1]) and np.array_equal(sketch[..., 1], sketch[..., 2])
        # Paper is white: the sketch is much lighter than the photo, with dark strokes left.
        assert sketch.mean() > photo.mean() + 40 and (sketch < 80).mean() > 0.01
    before = (output / "00.png").stat().st_mtime_ns
    assert photo2sketch_cli.main(["--photos", str(photos), "--output", str(output), "-q"]) == 0
    assert _last_json(capsys)["written"] == 0 and (output / "00.png").stat().st_mtime_ns == before


def test_photo2sketch_refuses_writing_into_the_photos_folder(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy2(CUHK / "photos" / "00.png", photos / "00.png")
    assert photo2sketch_cli.main(["--photos", str(photos), "--output", str(photos), "-q"]) == 1
    assert "must differ" in capsys.readouterr().err


# ---------------------------------------------------------------- metrics


def test_rank_and_map_match_hand_computed_values():
    scores = np.array([[0.9, 0.1, 0.5, 0.3],    # relevant col 2: rank 2 -> AP 1/2
                       [0.2, 0.8, 0.7, 0.1],    # relevant col 1: rank 1 -> AP 1
                       [0.4, 0.4, 0.1, 0.9]])   # relevant col 0, tied with col 1 (irrelevant) -> rank 3, AP 1/3
    relevant = np.zeros_like(scores, dtype=bool)
    relevant[0, 2] = relevant[1, 1] = relevant[2, 0] = True
    assert first_relevant_ranks(scores, relevant).tolist() == [2, 1, 3]
    assert np.allclose(average_precision(scores, relevant), [0.5, 1.0, 1 / 3])
    result = retrieval_metrics(scores, relevant, missed=1, max_rank=4)
    assert result["rank1"] == pytest.approx(1 / 4) and result["rank5"] == pytest.approx(3 / 4)
    assert result["map"] == pytest.approx((0.5 + 1 + 1 / 3) / 4)
    assert result["cmc"] == pytest.approx([0.25, 0.5, 0.75, 0.75])


def test_average_precision_with_two_relevant_photos_and_constant_scores():
    scores = np.array([[0.9, 0.8, 0.7, 0.6]])
    relevant = np.array([[False, True, False, True]])
    assert average_precision(scores, relevant)[0] == pytest.approx((1 / 2 + 2 / 4) / 2)
    flat = retrieval_metrics(np.zeros((2, 3)), np.eye(2, 3, dtype=bool))
    assert flat["rank1"] == 0.0  # ties count against the query
    with pytest.raises(InputError, match="at least one relevant"):
        retrieval_metrics(np.zeros((1, 3)), np.zeros((1, 3), dtype=bool))


def test_top_matches_is_exact_across_blocks(monkeypatch):
    from faceid.match import retrieval

    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((1000, 16)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries = gallery[[5, 700]] + 0.01
    monkeypatch.setattr(retrieval, "_GALLERY_BLOCK", 128)
    rows, scores = top_matches(queries, gallery, 7)
    expected = np.argsort(-(queries @ gallery.T), axis=1)[:, :7]
    assert np.array_equal(rows, expected) and rows[0, 0] == 5 and rows[1, 0] == 700
    assert np.all(np.diff(scores, axis=1) <= 0)


# ---------------------------------------------------------------- the model


def test_hog_model_records_its_domains_and_embeds_each_side_its_own_way(hog_model, cuhk12):
    extractor = load_extractor(hog_model)
    manifest = json.loads((hog_model / "manifest.json").read_text())
    assert manifest["backbone"] == "hog" and manifest["domains"] == ["sketches", "photos"]
    assert manifest["domain_color"] == {"sketches": "grey", "photos": "grey"}
    sketches, photos = extractor.for_domain("sketches"), extractor.for_domain("photos")
    assert photos.fingerprint == extractor.fingerprint and sketches.fingerprint != extractor.fingerprint
    from faceid.detect.faces import FaceCropper, FaceOptions

    cropper = FaceCropper(FaceOptions(), extractor.chip_size, extractor.align_padding)
    chip = cropper.largest_chip(cuhk12 / "photos" / "00.png")[None]
    assert not np.allclose(sketches.embed(chip), photos.embed(chip))  # each side has its own centre
    with pytest.raises(InputError, match="not 'paintings'"):
        extractor.for_domain("paintings")
    report = json.loads((hog_model / "report.json").read_text())
    assert report["people"]["fitted_on"] == 12


def test_a_tampered_projection_is_refused(hog_model, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(hog_model, copy, ignore=shutil.ignore_patterns("training"))
    with np.load(copy / "projection.npz") as data:
        arrays = {key: data[key] for key in data.files}
    arrays["means"] = arrays["means"] + 1
    np.savez(copy / "projection.npz", **arrays)
    with pytest.raises(InputError, match="does not match"):
        load_extractor(copy)


def test_hog_needs_two_domains_and_synthetic_needs_dims(tmp_path, capsys, cuhk12):
    faces = tmp_path / "faces"
    shutil.copytree(LFW / min(path.name for path in LFW.iterdir()), faces / "a")
    assert train_cli.main(["--faces_path", str(faces), "--init", "hog", "--output", str(tmp_path / "m"), "-q"]) == 1
    assert "(--pairs_path, --domains)" in capsys.readouterr().err
    assert train_cli.main(["--pairs_path", str(cuhk12), "--domains", "sketches", "photos", "--synthetic", str(LFW),
                           "--output", str(tmp_path / "m2"), "-q"]) == 1
    assert "give --dims too" in capsys.readouterr().err


# ---------------------------------------------------------------- evaluate.py retrieve


def test_trained_model_ranks_each_sketch_first_and_a_shuffled_mapping_near_chance(hog_model, cuhk12, tmp_path, capsys):
    args = ["retrieve", "--queries", str(cuhk12 / "sketches"), "--model_path", str(hog_model), "--workers", "0", "-q"]
    assert evaluate_cli.main([*args, "--gallery", str(cuhk12 / "photos"), "--features", str(tmp_path / "f1")]) == 0
    result = _last_json(capsys)
    assert result["rank1"] == 1.0 and result["map"] == 1.0 and len(result["cmc"]) == 20
    assert {"rank1", "rank5", "rank10", "map", "cmc"} <= set(result)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    stems = sorted(path.stem for path in (cuhk12 / "photos").iterdir())
    for stem, other in zip(stems, np.random.default_rng(1).permutation(stems)):
        shutil.copy2(cuhk12 / "photos" / f"{stem}.png", shuffled / f"{other}.png")
    assert evaluate_cli.main([*args, "--gallery", str(shuffled), "--features", str(tmp_path / "f2")]) == 0
    assert _last_json(capsys)["rank1"] <= 0.25  # chance is 1/12


def test_model_fitted_on_other_people_finds_held_out_sketches(hog_model, tmp_path, capsys):
    held = _pairs(tmp_path / "held", [f"{index:02d}" for index in range(40, 52)])
    assert evaluate_cli.main(["retrieve", "--queries", str(held / "sketches"), "--gallery", str(held / "photos"),
                              "--model_path", str(hog_model), "--features", str(tmp_path / "f"), "--workers", "0",
                              "-q"]) == 0
    assert _last_json(capsys)["rank1"] >= 0.9  # 5-fold CV on the 88: 100% (README)


def test_person_folders_match_like_file_stems_and_distractors_grow_the_gallery(hog_model, cuhk12, tmp_path, capsys):
    queries, gallery, distractors = tmp_path / "q", tmp_path / "g", tmp_path / "d"
    for index in range(6):
        stem = f"{index:02d}"
        (queries / f"p{stem}").mkdir(parents=True)
        (gallery / f"p{stem}").mkdir(parents=True)
        shutil.copy2(cuhk12 / "sketches" / f"{stem}.png", queries / f"p{stem}" / "sketch.png")
        shutil.copy2(cuhk12 / "photos" / f"{stem}.png", gallery / f"p{stem}" / "photo.png")
    people = sorted(path.name for path in LFW.iterdir())[:8]
    for person in people:
        shutil.copytree(LFW / person, distractors / person)
    assert evaluate_cli.main(["retrieve", "--queries", str(queries), "--gallery", str(gallery), "--model_path",
                              str(hog_model), "--distractors", str(distractors), "--features", str(tmp_path / "f"),
                              "--distractor_features", str(tmp_path / "fd"), "--workers", "0",
                              "--html", str(tmp_path / "r.html"), "--plots", str(tmp_path / "plots"), "-q"]) == 0
    result = _last_json(capsys)
    assert result["gallery"]["photos"] == 6 and result["gallery"]["distractors"] > 8
    sizes = [row["gallery"] for row in result["by_gallery_size"]]
    assert sizes[0] == 6 and sizes[-1] == result["gallery"]["size"] and sizes == sorted(sizes)
    assert result["rank1"] >= 5 / 6
    page = (tmp_path / "r.html").read_text()
    assert page.count("<section>") == 6 and "data:image/jpeg;base64," in page
    assert (tmp_path / "plots" / "cmc.png").stat().st_size > 1000


def test_mismatched_names_unreadable_gallery_files_and_faceless_queries_are_reported(hog_model, cuhk12, tmp_path,
                                                                                      capsys, caplog):
    queries, gallery = tmp_path / "q", tmp_path / "g"
    shutil.copytree(cuhk12 / "sketches", queries)
    shutil.copytree(cuhk12 / "photos", gallery)
    (gallery / "broken.png").write_bytes(b"\x89PNG not really")
    shutil.copy2(cuhk12 / "sketches" / "00.png", queries / "stranger.png")  # no photo of "stranger"
    grey = np.full((250, 200, 3), 128, dtype=np.uint8)
    from faceid.io.images import encode_png

    (gallery / "blank.png").write_bytes(encode_png(grey))
    (queries / "blank.png").write_bytes(encode_png(grey))  # matches gallery "blank", but holds no face
    args = ["retrieve", "--queries", str(queries), "--model_path", str(hog_model), "--workers", "0", "-q",
            "--features", str(tmp_path / "f")]
    assert evaluate_cli.main([*args, "--gallery", str(gallery)]) == 0
    result = _last_json(capsys)
    # broken.png is unreadable and blank.png has no face: both skipped, and so "blank" has no gallery
    # photo; with "stranger" two queries are unmatched and left out: only real pairs are scored.
    assert result["gallery"]["skipped"] == 2 and result["queries"]["unmatched"] == 2
    assert result["queries"]["total"] == 14 and result["queries"]["no_face"] == 0
    assert result["queries"]["scored"] == 12 and result["rank1"] == 1.0
    empty = tmp_path / "other"
    empty.mkdir()
    shutil.copy2(cuhk12 / "photos" / "00.png", empty / "zz.png")
    assert evaluate_cli.main([*args, "--gallery", str(empty), "--features", str(tmp_path / "f3")]) == 1
    assert "by file-name stem" in capsys.readouterr().err


def test_a_faceless_query_counts_as_a_miss(hog_model, cuhk12, tmp_path, capsys):
    from faceid.io.images import encode_png

    queries = tmp_path / "q"
    shutil.copytree(cuhk12 / "sketches", queries)
    sketch = read_image(queries / "03.png")
    blank = np.full_like(sketch, 255)
    blank[:40] = sketch[:40]  # the top of the hair only: no face
    (queries / "03.png").write_bytes(encode_png(blank))
    assert evaluate_cli.main(["retrieve", "--queries", str(queries), "--gallery", str(cuhk12 / "photos"),
                              "--model_path", str(hog_model), "--features", str(tmp_path / "f"), "--workers", "0",
                              "-q"]) == 0
    result = _last_json(capsys)
    assert result["queries"]["no_face"] == 1 and result["rank1"] == pytest.approx(11 / 12)


# ---------------------------------------------------------------- retrieve.py


def test_retrieve_lists_candidates_caches_the_gallery_incrementally_and_writes_a_contact_sheet(hog_model, cuhk12,
                                                                                               tmp_path, capsys):
    gallery = tmp_path / "g"
    shutil.copytree(cuhk12 / "photos", gallery)
    features = tmp_path / "f"
    args = ["--gallery", str(gallery), "--model_path", str(hog_model), "--features", str(features), "--workers", "0"]
    query = cuhk12 / "sketches" / "04.png"
    assert retrieve_cli.main(["--query", str(query), *args, "--top", "3", "--json"]) == 0
    first = _last_json(capsys)
    candidates = first["results"][0]["candidates"]
    assert [c["rank"] for c in candidates] == [1, 2, 3] and candidates[0]["identity"] == "04"
    assert candidates[0]["score"] > candidates[1]["score"] and first["embedded_now"] == 12
    shutil.copy2(CUHK / "photos" / "60.png", gallery / "60.png")
    assert retrieve_cli.main(["--query", str(query), str(CUHK / "sketches" / "60.png"), *args, "--json",
                              "--html", str(tmp_path / "sheet.html")]) == 0
    second = _last_json(capsys)
    assert second["embedded_now"] == 1 and second["gallery_photos"] == 13
    assert second["results"][1]["candidates"][0]["identity"] == "60"
    page = (tmp_path / "sheet.html").read_text()
    assert page.count("<section>") == 2 and page.count("<figure") == 2 * (1 + 10)
    assert retrieve_cli.main(["--query", str(query), *args]) == 0
    assert "  1  " in capsys.readouterr().out


def test_retrieve_says_when_the_query_has_no_face_or_the_cache_is_another_models(hog_model, cuhk12, tmp_path,
                                                                                  capsys, dlib_extractor_dir):
    blank = tmp_path / "blank.png"
    from faceid.io.images import encode_png

    blank.write_bytes(encode_png(np.full((250, 200, 3), 200, dtype=np.uint8)))
    features = tmp_path / "f"
    args = ["--gallery", str(cuhk12 / "photos"), "--features", str(features), "--workers", "0", "-q"]
    assert retrieve_cli.main(["--query", str(blank), "--model_path", str(hog_model), *args]) == 1
    assert "no face found in query" in capsys.readouterr().err
    assert retrieve_cli.main(["--query", str(cuhk12 / "sketches" / "00.png"), "--model_path",
                              str(dlib_extractor_dir), *args]) == 1
    assert "--rebuild" in capsys.readouterr().err  # the cache holds the hog model's vectors: nothing changed
    assert retrieve_cli.main(["--query", str(cuhk12 / "sketches" / "00.png"), "--model_path", str(hog_model),
                              "--gallery", str(tmp_path / "missing"), "--features", str(features), "-q"]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_gallery_layout_mixes_flat_photos_and_person_folders(tmp_path):
    (tmp_path / "ann").mkdir()
    shutil.copy2(CUHK / "photos" / "00.png", tmp_path / "01.png")
    shutil.copy2(CUHK / "photos" / "02.png", tmp_path / "ann" / "a.png")
    layout = gallery_layout(tmp_path)
    assert set(layout) == {FLAT, "ann"}
    (tmp_path / FLAT).mkdir()
    shutil.copy2(CUHK / "photos" / "03.png", tmp_path / FLAT / "x.png")
    with pytest.raises(InputError, match="may not be named"):
        gallery_layout(tmp_path)


# ---------------------------------------------------------------- cross-validation


def test_cross_validation_trains_per_fold_and_reports_frozen_dlib_beside_it(cuhk12, tmp_path, capsys):
    assert train_cli.main(["--pairs_path", str(cuhk12), "--domains", "sketches", "photos", "--cross_validate", "3",
                           "--output", str(tmp_path / "cv"), "--workers", "0", "-q"]) == 0
    result = _last_json(capsys)
    assert result["folds"] == 3 and result["method"]["queries"] == 12
    assert result["method"]["rank1"] >= 0.9 and result["method_all_photos"]["gallery_sizes"] == [12, 12, 12]
    assert 0 <= result["frozen_dlib"]["rank1"] <= 1
    folds = json.loads((tmp_path / "cv" / "crossval.json").read_text())["per_fold"]["method"]
    assert [part["gallery"] for part in folds] == [4, 4, 4]


def test_synthetic_pairs_join_a_network_s_training_people_but_never_its_validation(cuhk12, tmp_path, capsys):
    synthetic = tmp_path / "lfw"
    for person in sorted(path.name for path in LFW.iterdir())[:3]:
        shutil.copytree(LFW / person, synthetic / person)
    output = tmp_path / "dlib"
    assert train_cli.main(["--pairs_path", str(cuhk12), "--domains", "sketches", "photos", "--init", "dlib",
                           "--loss", "triplet", "--epochs", "1", "--synthetic", str(synthetic), "--synthetic_limit", "5",
                           "--export", "none", "--workers", "0", "--output", str(output), "-q"]) == 0
    report = json.loads((output / "report.json").read_text())
    split = json.loads((output / "training" / "split.json").read_text())
    assert report["images"]["train"] == 2 * (12 - len(split["val"])) + 2 * 5
    assert report["images"]["val"] == 2 * len(split["val"]) and not any("synthetic" in name for name in split["val"])
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["domains"] == ["sketches", "photos"] and manifest["trained"]["images"] == 24 + 10
