"""train_siamese.py: layouts, losses, checkpoints and the extractor it writes, on real faces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, LFW, ORL, copy_people, lfw_people

from faceid.cli import train_siamese as cli
from faceid.detect.faces import FaceCropper, FaceOptions
from faceid.train.siamese_data import (
    BatchSampler,
    load_anchor_layout,
    load_domain_pairs,
    load_faces,
    prepare_chips,
    split_faceset,
    split_three,
)

CUHK = DATA / "cuhk_train"


def _orl(tmp_path: Path, people: int = 12) -> Path:
    return copy_people(ORL, tmp_path / "orl", [f"s{index}" for index in range(1, people + 1)])


def _anchor_layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """ORL s1 as the user (anchor: images 1-5, positive: 6-10); negatives flat (one image of each of
    s2..s9) and as LFW person folders."""
    anchor, positive, negative = (tmp_path / name for name in ("anchor", "positive", "negative"))
    for folder in (anchor, positive, negative):
        folder.mkdir()
    for index in range(1, 11):
        shutil.copy2(ORL / "s1" / f"{index}.pgm", (anchor if index <= 5 else positive) / f"{index}.pgm")
    for person in range(2, 10):
        shutil.copy2(ORL / f"s{person}" / "1.pgm", negative / f"s{person}_1.pgm")
    copy_people(LFW, negative, lfw_people(min_images=3, count=4), max_images=3)
    return anchor, positive, negative


def test_anchor_layout_is_one_person_against_everyone_else_and_splits_by_person(tmp_path):
    faces = load_anchor_layout(*_anchor_layout(tmp_path))
    assert faces.names[0] == "anchor" and int(np.sum(faces.labels == 0)) == 10
    assert len(faces.names) == 1 + 8 + 4  # the user, 8 flat negatives (one person each), 4 LFW people
    train, val = split_faceset(faces, 0.25, seed=0)
    assert not set(train) & set(val) and len(train) + len(val) == len(faces)
    # The user's images are on both sides; every other person is on one side only.
    assert np.sum(faces.labels[train] == 0) >= 2 and np.sum(faces.labels[val] == 0) >= 2
    others_train = set(faces.labels[train]) - {0}
    others_val = set(faces.labels[val]) - {0}
    assert others_val and not others_train & others_val
    # A third split (--test_people): the user's images on all three sides, everyone else on one.
    train3, val3, test3 = split_three(faces, 0.25, 0.25, seed=0)
    assert sorted(np.concatenate([train3, val3, test3])) == list(range(len(faces)))
    sides = [set(faces.labels[rows]) - {0} for rows in (train3, val3, test3)]
    assert all(sides) and not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert all(np.sum(faces.labels[rows] == 0) >= 2 for rows in (train3, val3, test3))
    # No test share: the same split as before the option existed.
    same_train, same_val, none = split_three(faces, 0.25, 0.0, seed=0)
    assert list(same_train) == list(train) and list(same_val) == list(val) and len(none) == 0


def test_paired_domains_pair_by_name_cross_domains_and_split_by_person(tmp_path, caplog):
    root = tmp_path / "cuhk"
    for domain in ("sketches", "photos"):
        (root / domain).mkdir(parents=True)
        for path in sorted((CUHK / domain).iterdir())[:20]:
            shutil.copy2(path, root / domain / path.name)
    extra = sorted((CUHK / "photos").iterdir())[30]
    shutil.copy2(extra, root / "photos" / extra.name)  # a photo without its sketch
    faces = load_domain_pairs(root, ("sketches", "photos"))
    assert len(faces) == 40 and len(faces.names) == 20 and "no partner" in caplog.text
    for label in range(20):
        rows = np.flatnonzero(faces.labels == label)
        assert sorted(faces.domains[rows]) == [0, 1]
        assert faces.paths[rows[0]].name == faces.paths[rows[1]].name
    train, val = split_faceset(faces, 0.2, seed=3)
    assert not set(faces.labels[train]) & set(faces.labels[val])
    assert len(set(faces.labels[val])) == 4


def test_sampler_batches_hold_positives_and_are_reproducible():
    labels = np.repeat(np.arange(30), 5)
    sampler = BatchSampler(labels, batch_size=32, per_person=4, seed=1)
    first = list(sampler.epoch(1))
    assert len(first) == sampler.steps == 5
    assert all(np.array_equal(a, b) for a, b in zip(first, BatchSampler(labels, 32, 4, 1).epoch(1)))
    for rows in first:
        counts = np.bincount(labels[rows])
        assert len(rows) == 32 and np.sum(counts >= 2) >= 4 and len(set(rows)) == 32
    assert not all(np.array_equal(a, b) for a, b in zip(first, sampler.epoch(2)))


@pytest.fixture(scope="module")
def orl_chips(tmp_path_factory):
    """ORL crops (no detection: they are crops already), at Koch's smallest size and at dlib's."""
    root = _orl(tmp_path_factory.mktemp("orl"), people=12)
    faces = load_faces(root)
    return {size: prepare_chips(faces, FaceCropper(FaceOptions(detect=False), size, 0.25),
                                tmp_path_factory.mktemp(f"chips{size}"), workers=0, progress=False)
            for size in (68, 150)}


@pytest.mark.parametrize("init,loss,mining", [("koch", "bce", "semi-hard"), ("dlib", "contrastive", "semi-hard"),
                                              ("dlib", "triplet", "semi-hard"), ("dlib", "triplet", "batch-hard")])
def test_a_few_steps_of_each_loss_lower_it_on_a_fixed_batch(orl_chips, tmp_path, init, loss, mining):
    from faceid.train.siamese import SiameseOptions, SiameseTrainer, build_tower

    options = SiameseOptions(init=init, loss=loss, mining=mining, input_size=68 if init == "koch" else None,
                             learning_rate=1e-3 if init == "koch" else 1e-4, batch_size=24, seed=0)
    tower = build_tower(options)
    chipset = orl_chips[tower.chip_size]
    rows = np.arange(len(chipset.faces))
    trainer = SiameseTrainer(chipset, rows, rows, options, tmp_path, tower, augment=False)
    batch = next(trainer.sampler.epoch(0))
    before = trainer.loss_on(batch)
    for _ in range(6):
        trainer.train_on(batch)
    after = trainer.loss_on(batch)
    assert np.isfinite(before) and after < 0.9 * before, (before, after)


def test_training_is_reproducible_with_a_seed(orl_chips, tmp_path):
    """Same seed: the same initial weights, batches and augmentation, so the same losses."""
    from faceid.train.siamese import SiameseOptions, SiameseTrainer, build_tower

    options = SiameseOptions(init="koch", loss="contrastive", input_size=68, batch_size=24, epochs=1, seed=5)
    chipset = orl_chips[68]
    train, val = split_faceset(chipset.faces, 0.25, options.seed)
    runs = []
    for index in range(2):
        trainer = SiameseTrainer(chipset, train, val, options, tmp_path / str(index), build_tower(options), augment=True)
        runs.append(trainer.fit(None, progress=False)["history"])
    assert [row["loss"] for row in runs[0]] == [row["loss"] for row in runs[1]]
    assert runs[0][1]["val_auc"] == runs[1][1]["val_auc"]


def _train(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_saved_tower_reloads_embeds_identically_and_resume_continues(tmp_path, capsys):
    from faceid.backbones import load_extractor
    from faceid.backbones.siamese import preprocessing
    from faceid.io.store import load_npz
    from faceid.train.siamese import SiameseOptions, build_tower

    output = tmp_path / "koch"
    argv = ["--faces_path", str(_orl(tmp_path)), "--no_detect", "--workers", "0", "--init", "koch", "--loss", "bce",
            "--input_size", "68", "--batch_size", "24", "--output", str(output), "-q"]
    code, out, err = _train([*argv, "--epochs", "1"], capsys)
    assert code == 0, err
    summary = json.loads(out.splitlines()[-2])
    report = json.loads((output / "report.json").read_text())
    assert [row["epoch"] for row in report["history"]] == [0, 1]
    assert report["start"]["val_auc"] == report["history"][0]["val_auc"] and summary["val_auc"] == report["val_auc"]
    assert np.isfinite(report["calibration"]["threshold_one_person"])
    assert report["calibration"]["default_scorer"] in ("head", "euclidean", "cosine")
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["backbone"] == "siamese" and manifest["tower"] == "koch" and manifest["output_dim"] == 4096

    # The saved tower (Keras and ONNX) gives the vectors of the weights it kept (the best epoch's, or the
    # start's when the gain was within the noise), averaged with the mirror image's (--tta flip, the default).
    assert manifest["tta"] == "flip" and report["kept"] in ("start", "fine-tuned")
    assert report["improved"] == (report["kept"] == "fine-tuned") and report["decision"]
    chips = np.stack([np.asarray(chip) for chip in np.load(output / "training" / "chips.npy", mmap_mode="r")[:6]])
    tower = build_tower(SiameseOptions(init="koch", loss="bce", input_size=68))
    arrays = load_npz(output / "training" / ("best.npz" if report["improved"] else "start.npz"), "weights", "")
    for index, weight in enumerate(tower.model.weights):
        weight.assign(arrays[f"tower.{index}"])
    preprocess = preprocessing(manifest["preprocessing"])
    expected = (np.asarray(tower.model(preprocess(chips), training=False))
                + np.asarray(tower.model(preprocess(chips[:, :, ::-1]), training=False))) / 2
    keras_vectors = load_extractor(output, runtime="keras").embed(chips)
    onnx_vectors = load_extractor(output, runtime="onnx").embed(chips)
    np.testing.assert_allclose(keras_vectors, expected, atol=1e-6)
    np.testing.assert_allclose(onnx_vectors, expected, atol=1e-4)

    # Training into a used output needs --resume; --resume goes on from epoch 1, not from scratch.
    code, _, err = _train([*argv, "--epochs", "2"], capsys)
    assert code == 1 and "--resume" in err
    code, _, err = _train([*argv, "--epochs", "2", "--resume"], capsys)
    assert code == 0, err
    resumed = json.loads((output / "report.json").read_text())
    assert [row["epoch"] for row in resumed["history"]] == [0, 1, 2]
    assert resumed["history"][:2] == report["history"]


def test_a_test_split_measures_the_start_the_fine_tuned_and_the_written_network(tmp_path, capsys):
    """--test_people: people held out of training and of the choice, named in training/test_people.txt;
    the report (and the printed table) gives all three networks' figures on them."""
    output = tmp_path / "koch"
    code, out, err = _train(["--faces_path", str(_orl(tmp_path, people=16)), "--no_detect", "--workers", "0",
                             "--init", "koch", "--loss", "contrastive", "--input_size", "68", "--batch_size", "24",
                             "--epochs", "2", "--test_people", "0.25", "--bootstrap", "200", "--export", "none",
                             "--output", str(output), "-q"], capsys)
    assert code == 0, err
    report = json.loads((output / "report.json").read_text())
    split = json.loads((output / "training" / "split.json").read_text())
    assert len(split["test"]) == 4 and len(split["val"]) == 3 and len(split["train"]) == 9
    assert not set(split["test"]) & (set(split["train"]) | set(split["val"])) and not set(split["val"]) & set(split["train"])
    assert (output / "training" / "test_people.txt").read_text().split() == split["test"]
    test = report["test"]
    assert test["people"] == 4 and test["faces"] == 40 and report["images"]["test"] == 40
    for network in ("start", "fine_tuned", "written"):
        assert set(test[network]) == {"pair_auc", "pair_accuracy", "tar_at_far", "rank1"}
    # What was written is one of the two, measured again from its directory (as the scripts run it).
    chosen = test["fine_tuned"] if report["improved"] else test["start"]
    for name, value in test["written"].items():
        assert value == pytest.approx(chosen[name], abs=1e-3)
    for part in (report["validation"], test):
        for gain in part["gain"].values():
            assert gain["low"] <= gain["value"] <= gain["high"] and gain["resamples"] == 200
    assert "kept the" in out and "test: 4 people, 40 faces" in out and "written" in out
    kept = json.loads((output / "manifest.json").read_text())["trained"]["kept"]
    assert kept == report["kept"] and (output / "training" / "fine_tuned").is_dir() != report["improved"]


def test_when_training_does_not_help_the_frozen_starting_network_is_written(tmp_path, capsys, dlib_extractor):
    """A triplet run whose steps are too small to change anything: the gain is no gain, so what is
    written is dlib's network as network.py ships it (no unit-length layer, flip TTA): the same vectors."""
    output = tmp_path / "dlib"
    code, out, err = _train(["--faces_path", str(_orl(tmp_path, people=10)), "--no_detect", "--workers", "0",
                             "--init", "dlib", "--loss", "triplet", "--epochs", "1", "--learning_rate", "1e-12",
                             "--bootstrap", "200", "--output", str(output), "-q"], capsys)
    assert code == 0, err
    report = json.loads((output / "report.json").read_text())
    assert report["improved"] is False and report["kept"] == "start" and "within the noise" in report["decision"]
    assert json.loads(out.splitlines()[-2])["improved"] is False and "kept the starting network" in out
    # The fine-tuned network is kept beside the run, calibrated: test.py can use it on purpose.
    assert (output / "training" / "fine_tuned" / "calibration.npz").is_file()
    from faceid.backbones import load_extractor

    chips = np.asarray(np.load(output / "training" / "chips.npy", mmap_mode="r")[:8])
    written = load_extractor(output)
    assert written.manifest["tta"] == "flip" and written.manifest["trained"]["kept"] == "start"
    np.testing.assert_allclose(written.embed(chips), dlib_extractor.embed(chips), atol=2e-4)


def test_test_time_augmentation_is_part_of_a_trained_towers_fingerprint():
    from faceid.backbones.siamese import siamese_manifest

    fields = {"tower": "dlib", "input_size": 150, "align_padding": 0.25, "alignment": "dlib", "preprocessing": "dlib",
              "weights_sha256": "0" * 64}
    flipped, plain = siamese_manifest({**fields, "tta": "flip"}), siamese_manifest({**fields, "tta": "none"})
    assert flipped["tta"] == "flip" and plain["tta"] == "none" and flipped["fingerprint"] != plain["fingerprint"]
    assert siamese_manifest(dict(fields))["fingerprint"] == plain["fingerprint"]  # before --tta: none


def test_bad_input_gets_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "alice").mkdir(parents=True)
    code, _, err = _train(["--faces_path", str(empty), "--output", str(tmp_path / "o1"), "-q"], capsys)
    assert code == 1 and "no images" in err

    anchor, positive, negative = _anchor_layout(tmp_path)
    for path in positive.iterdir():
        path.unlink()
    code, _, err = _train(["--anchor", str(anchor), "--positive", str(positive), "--negative", str(negative),
                           "--output", str(tmp_path / "o2"), "-q"], capsys)
    assert code == 1 and "--positive" in err and "empty" in err

    pairs = tmp_path / "pairs"
    for domain, names in (("sketches", ["01.png", "02.png"]), ("photos", ["11.png", "12.png"])):
        (pairs / domain).mkdir(parents=True)
        for name, source in zip(names, sorted((CUHK / domain).iterdir())):
            shutil.copy2(source, pairs / domain / name)
    code, _, err = _train(["--pairs_path", str(pairs), "--domains", "sketches", "photos",
                           "--output", str(tmp_path / "o3"), "-q"], capsys)
    assert code == 1 and "no file names in common" in err

    faces = _orl(tmp_path / "single", people=6)
    for path in sorted((faces / "s3").iterdir())[1:]:
        path.unlink()
    code, _, err = _train(["--faces_path", str(faces), "--no_detect", "--workers", "0", "--loss", "triplet",
                           "--output", str(tmp_path / "o4"), "-q"], capsys)
    assert code == 1 and "s3" in err and "two images per person" in err

    code, _, err = _train(["--faces_path", str(faces), "--anchor", str(anchor), "--output", str(tmp_path / "o5"), "-q"],
                          capsys)
    assert code == 1 and "one data layout" in err

    # Shares that leave nobody to train on are refused before any face is looked for.
    code, _, err = _train(["--faces_path", str(faces), "--no_detect", "--val_people", "0.5", "--test_people", "0.5",
                           "--output", str(tmp_path / "o6"), "-q"], capsys)
    assert code == 1 and "--test_people 0.5" in err and not (tmp_path / "o6").exists()


def test_resnet50_without_weights_says_where_to_get_them(tmp_path, capsys):
    code, _, err = _train(["--faces_path", str(_orl(tmp_path, people=4)), "--no_detect", "--workers", "0",
                           "--init", "resnet50", "--weights", str(tmp_path / "missing.h5"),
                           "--output", str(tmp_path / "o"), "-q"], capsys)
    assert code == 1 and "missing.h5" in err and "--init dlib" in err


def test_a_verifier_for_one_person_names_them_and_no_one_else(tmp_path, capsys):
    """The webcam-app flow on LFW: one person's photos as anchor/positive, other people as negatives,
    dlib fine-tuned with bce; test.py with that person alone enrolled answers "X" / "not X"."""
    from faceid.cli import extract_features, identify

    person = lfw_people(min_images=40, count=1)[0]
    photos = sorted((LFW / person).iterdir())
    anchor, positive, negative, probes = (tmp_path / name for name in ("anchor", "positive", "negative", "probes"))
    for folder, files in ((anchor, photos[:12]), (positive, photos[12:24]), (probes, photos[24:34])):
        folder.mkdir()
        for path in files:
            shutil.copy2(path, folder / path.name)
    copy_people(LFW, negative, lfw_people(min_images=3, count=24, skip=40), max_images=3)
    strangers = lfw_people(min_images=2, count=10, skip=200)
    for stranger in strangers:
        shutil.copy2(sorted((LFW / stranger).iterdir())[0], probes / f"stranger_{stranger}.jpg")
    model = tmp_path / "me"
    code, _, err = _train(["--anchor", str(anchor), "--positive", str(positive), "--negative", str(negative),
                           "--init", "dlib", "--loss", "bce", "--epochs", "1", "--workers", "0", "--output", str(model),
                           "-q"], capsys)
    assert code == 0, err
    assert (model / "head" / "head.json").is_file()
    # The distance layer is warmed up on the frozen tower first: epoch 0 already tells faces apart.
    report = json.loads((model / "report.json").read_text())
    assert report["start"]["val_auc"] > 0.9
    # Your own held-out faces, missed at the strangers' rate, for each network (a gallery of your training faces).
    assert 0.0 <= report["validation"]["start"]["own_fnir"] <= 0.5 and "own_fnir" in report["validation"]["fine_tuned"]
    enrol = tmp_path / "enrol" / person
    shutil.copytree(anchor, enrol)
    assert extract_features.main(["--faces_path", str(enrol.parent), "--model_path", str(model),
                                  "--features", str(tmp_path / "features"), "-q"]) == 0
    capsys.readouterr()
    jsonl = tmp_path / "faces.jsonl"
    assert identify.main(["--images", str(probes), "--model", str(model), "--features", str(tmp_path / "features"),
                          "--jsonl", str(jsonl), "--no_display", "-q"]) == 0
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    named: dict[str, list[str]] = {}
    for row in rows:  # one line per face
        named.setdefault(row["source"], []).append(row["name"])
    own = [names for key, names in named.items() if "stranger_" not in str(key)]
    others = [names for key, names in named.items() if "stranger_" in str(key)]
    assert len(own) >= 8 and len(others) >= 8
    assert sum(person in names for names in own) >= 0.7 * len(own)
    assert sum(person in names for names in others) <= 1


def test_pairs_can_be_drawn_from_the_validation_people_of_a_run(tmp_path):
    """evaluate.py sample_pairs: an LFW-format list over the people train_siamese.py never trained on."""
    from faceid.evaluate.pairlist import read_pair_list, read_people, sample_pair_list

    people = lfw_people(min_images=3, count=6)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["someone_else"], "val": people}))
    assert read_people(split) == people
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text(sample_pair_list(LFW, read_people(split), per_kind=12, seed=0))
    pairs = read_pair_list(pairs_file, folds=3)
    assert len(pairs) == 24 and int(pairs.is_same.sum()) == 12
    for (first, name_a), (second, name_b), same in zip(pairs.first, pairs.second, pairs.is_same):
        assert {first, second} <= set(people)
        assert (first == second) == bool(same)
        assert not same or name_a != name_b
        assert (LFW / first / name_a).is_file() and (LFW / second / name_b).is_file()


def test_ctrl_c_keeps_the_best_epoch_as_the_model(tmp_path, capsys, monkeypatch):
    from faceid.train.augment import Augmentation

    calls = {"count": 0}
    original = Augmentation.apply

    def interrupting(self, chips, rng):
        calls["count"] += 1
        if calls["count"] > 5:  # epoch 1 has 5 batches (100 training faces, 24 a batch): stop in epoch 2
            raise KeyboardInterrupt
        return original(self, chips, rng)

    monkeypatch.setattr(Augmentation, "apply", interrupting)
    output = tmp_path / "koch"
    code, _, err = _train(["--faces_path", str(_orl(tmp_path)), "--no_detect", "--workers", "0", "--init", "koch",
                           "--loss", "contrastive", "--input_size", "68", "--batch_size", "24", "--augment", "on",
                           "--export", "none", "--output", str(output), "-q"], capsys)
    assert code == 130 and "interrupted" in err
    report = json.loads((output / "report.json").read_text())
    assert "interrupted" in report["stopped"] and [row["epoch"] for row in report["history"]] == [0, 1]
    assert (output / "manifest.json").is_file() and (output / "tower.keras").is_file()
    from faceid.backbones import load_extractor

    assert load_extractor(output).embed(np.zeros((1, 68, 68, 3), np.uint8)).shape == (1, 4096)
