"""Tests for faceid.match.head: NumPy inference, save/load, training on a separable toy problem."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_process

from faceid.errors import InputError
from faceid.match.head import HeadArchitecture, SimilarityHead, score_pairs
from faceid.match.metrics import roc_auc
from faceid.train.head import build_keras_head, train_head
from faceid.train.pairs import PairSet, pair_features, sample_pairs

SMALL_ARCHITECTURE = HeadArchitecture(hidden_units=(32, 16), dropout=(0.2, 0.0))
FEATURE_DIMS = 16
TRAIN_PEOPLE = 24
VAL_PEOPLE = 10
IMAGES_PER_PERSON = 6
TRAINING = {"architecture": SMALL_ARCHITECTURE, "epochs": 6, "batch_size": 64,
            "learning_rate": 3e-3, "seed": 7, "progress": False}  # fmt: skip


def _random_head(input_dim: int, architecture: HeadArchitecture, seed: int):
    """Keras head with random (non-zero) biases, so the bias path is exercised too."""
    model = build_keras_head(input_dim, architecture, seed=seed)
    generator = np.random.default_rng(seed)
    model.set_weights([w + 0.1 * generator.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _people_features(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two-level Gaussian "people": one centre per person, images scattered tightly around it."""
    generator = np.random.default_rng(seed)
    n_people = TRAIN_PEOPLE + VAL_PEOPLE
    centres = generator.normal(size=(n_people, FEATURE_DIMS))
    person = np.repeat(np.arange(n_people), IMAGES_PER_PERSON)
    features = centres[person] + 0.35 * generator.normal(size=(len(person), FEATURE_DIMS))
    return features.astype(np.float32), person


def _split_pairs(person: np.ndarray) -> tuple[PairSet, PairSet]:
    """Person-disjoint train and validation pairs over one shared feature matrix."""
    rows = np.arange(len(person))
    subsets = []
    for members in (person < TRAIN_PEOPLE, person >= TRAIN_PEOPLE):
        local = sample_pairs(person[members], rng=0)
        subsets.append(PairSet(rows[members][local.first], rows[members][local.second], local.label))
    return subsets[0], subsets[1]


@pytest.fixture(scope="module")
def toy_problem() -> tuple[np.ndarray, PairSet, PairSet]:
    features, person = _people_features()
    train_pairs, val_pairs = _split_pairs(person)
    return features, train_pairs, val_pairs


@pytest.fixture(scope="module")
def trained(toy_problem) -> tuple[SimilarityHead, dict[str, list[float]]]:
    features, train_pairs, val_pairs = toy_problem
    return train_head(features, train_pairs, val_pairs, **TRAINING)


def test_importing_the_head_module_does_not_import_keras() -> None:
    code = "import sys, faceid.match.head; print('keras' in sys.modules, 'tensorflow' in sys.modules)"
    result = run_process([sys.executable, "-c", code], cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_numpy_predict_matches_keras_predict() -> None:
    model = _random_head(20, HeadArchitecture(), seed=3)
    abs_diff = np.abs(np.random.default_rng(1).normal(size=(300, 20))).astype(np.float32)
    expected = model.predict(abs_diff, verbose=0)[:, 0]
    predicted = SimilarityHead.from_keras(model).predict(abs_diff)
    assert predicted.dtype == np.float32 and predicted.shape == (300,)
    np.testing.assert_allclose(predicted, expected, atol=1e-5)
    # Random inputs must not all saturate to 0/1, or the comparison would prove little.
    assert np.ptp(expected) > 0.05


def test_from_keras_recovers_the_architecture() -> None:
    architecture = HeadArchitecture(hidden_units=(8, 6, 4), dropout=(0.5, 0.0, 0.25))
    head = SimilarityHead.from_keras(build_keras_head(5, architecture, seed=0))
    assert head.architecture == architecture
    assert head.input_dim == 5


def test_predict_rejects_features_of_the_wrong_dimension() -> None:
    head = SimilarityHead.from_keras(build_keras_head(5, SMALL_ARCHITECTURE, seed=0))
    with pytest.raises(InputError, match=r"\(n_pairs, 5\)"):
        head.predict(np.zeros((3, 6), dtype=np.float32))


def test_predict_stays_finite_for_saturated_logits() -> None:
    head = SimilarityHead(
        kernels=[np.ones((2, 1), np.float32)],
        biases=[np.zeros(1, np.float32)],
        architecture=HeadArchitecture(hidden_units=(), dropout=()),
    )
    probabilities = head.predict(np.array([[500.0, 500.0], [-500.0, -500.0], [0.0, 0.0]]))
    np.testing.assert_array_equal(probabilities, [1.0, 0.0, 0.5])


def test_score_pairs_is_predict_on_absolute_differences() -> None:
    head = SimilarityHead.from_keras(_random_head(4, SMALL_ARCHITECTURE, seed=2))
    generator = np.random.default_rng(0)
    features_a = generator.normal(size=(10, 4)).astype(np.float32)
    features_b = generator.normal(size=(10, 4)).astype(np.float32)
    scores = score_pairs(head, features_a, features_b)
    np.testing.assert_array_equal(scores, head.predict(np.abs(features_a - features_b)))
    np.testing.assert_array_equal(scores, score_pairs(head, features_b, features_a))


def test_save_then_load_gives_identical_predictions(tmp_path: Path) -> None:
    head = SimilarityHead.from_keras(_random_head(6, SMALL_ARCHITECTURE, seed=4))
    # "format" is the caller's own key (the similarity model uses it): it must round-trip.
    extra = {"format": "faceid-similarity-model", "backbone": "dlib", "normalize": True}
    head.save(tmp_path, extra_manifest=extra)
    loaded, manifest = SimilarityHead.load(tmp_path)
    abs_diff = np.abs(np.random.default_rng(2).normal(size=(40, 6))).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(abs_diff), head.predict(abs_diff))
    assert loaded.architecture == SMALL_ARCHITECTURE
    assert {key: manifest[key] for key in extra} == extra
    assert manifest["input_dim"] == 6
    assert manifest["n_layers"] == 3


def test_save_writes_named_arrays_and_a_keras_copy(tmp_path: Path) -> None:
    head = SimilarityHead.from_keras(_random_head(6, SMALL_ARCHITECTURE, seed=4))
    head.save(tmp_path)
    with np.load(tmp_path / "head.npz", allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(
            f"layer{layer}_{kind}" for layer in range(3) for kind in ("kernel", "bias")
        )
        np.testing.assert_array_equal(archive["layer1_kernel"], head.kernels[1])
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "head.json",
        "head.keras",
        "head.npz",
    ]


def test_resaving_a_loaded_head_keeps_its_keras_copy_only_for_the_same_weights(tmp_path: Path) -> None:
    SimilarityHead.from_keras(_random_head(6, SMALL_ARCHITECTURE, seed=4)).save(tmp_path)
    loaded, _ = SimilarityHead.load(tmp_path)
    loaded.save(tmp_path, extra_manifest={"threshold": 0.7})
    assert (tmp_path / "head.keras").exists()
    assert SimilarityHead.load(tmp_path)[1]["keras_file"] == "head.keras"

    other = SimilarityHead.from_keras(_random_head(6, SMALL_ARCHITECTURE, seed=5))
    other.keras_model = None
    other.save(tmp_path)
    # The old head.keras belongs to other weights: it must not survive beside the new ones.
    assert not (tmp_path / "head.keras").exists()
    assert SimilarityHead.load(tmp_path)[1]["keras_file"] is None


def test_extra_manifest_may_not_overwrite_the_heads_own_keys(tmp_path: Path) -> None:
    head = SimilarityHead.from_keras(build_keras_head(3, SMALL_ARCHITECTURE, seed=0))
    with pytest.raises(InputError, match="input_dim"):
        head.save(tmp_path, extra_manifest={"input_dim": 99})


def test_loading_a_truncated_head_npz_is_an_input_error(tmp_path: Path) -> None:
    SimilarityHead.from_keras(_random_head(6, SMALL_ARCHITECTURE, seed=4)).save(tmp_path)
    weights = tmp_path / "head.npz"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(InputError, match=r"head\.npz.*train\.py"):
        SimilarityHead.load(tmp_path)


def test_loading_a_missing_head_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"head\.json is missing.*train\.py"):
        SimilarityHead.load(tmp_path)


def test_weights_from_a_different_save_are_detected(tmp_path: Path) -> None:
    SimilarityHead.from_keras(_random_head(6, SMALL_ARCHITECTURE, seed=4)).save(tmp_path / "a")
    SimilarityHead.from_keras(_random_head(6, SMALL_ARCHITECTURE, seed=5)).save(tmp_path / "b")
    shutil.copy(tmp_path / "b" / "head.npz", tmp_path / "a" / "head.npz")
    with pytest.raises(InputError, match="does not match"):
        SimilarityHead.load(tmp_path / "a")


def test_a_manifest_that_disagrees_with_the_weights_is_an_input_error(tmp_path: Path) -> None:
    SimilarityHead.from_keras(_random_head(6, SMALL_ARCHITECTURE, seed=4)).save(tmp_path)
    manifest_path = tmp_path / "head.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["architecture"]["hidden_units"] = [32, 8]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="corrupt or inconsistent"):
        SimilarityHead.load(tmp_path)


def test_an_interrupted_save_leaves_the_previous_head_intact(tmp_path: Path) -> None:
    old_head = SimilarityHead.from_keras(_random_head(6, SMALL_ARCHITECTURE, seed=4))
    old_head.save(tmp_path)
    files_before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}

    class DiesMidSave:
        """Stands in for a Keras model whose save is interrupted half-way through writing."""

        def save(self, path: Path) -> None:
            Path(path).write_bytes(b"half a model")
            raise KeyboardInterrupt

    new_head = SimilarityHead.from_keras(_random_head(6, SMALL_ARCHITECTURE, seed=9))
    new_head.keras_model = DiesMidSave()
    with pytest.raises(KeyboardInterrupt):
        new_head.save(tmp_path)

    # Nothing half-written and no temporary file is left: the old head is exactly as it was.
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == files_before
    loaded, _ = SimilarityHead.load(tmp_path)
    abs_diff = np.abs(np.random.default_rng(2).normal(size=(20, 6))).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(abs_diff), old_head.predict(abs_diff))


def test_training_separates_unseen_people(toy_problem, trained) -> None:
    features, _, val_pairs = toy_problem
    head, _ = trained
    probabilities = head.predict(pair_features(features, val_pairs, slice(None)))
    assert roc_auc(probabilities, val_pairs.label == 1.0) > 0.95


def test_training_history_has_one_value_per_epoch(trained) -> None:
    _, history = trained
    for name in ("loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"):
        assert len(history[name]) == TRAINING["epochs"], name
    assert history["loss"][-1] < history["loss"][0]


def test_training_is_reproducible_with_the_same_seed(toy_problem, trained) -> None:
    # With op determinism on and a single-threaded input pipeline, TF on CPU reproduces the
    # weights bit for bit; observed exactly equal, so this asserts equality.
    features, train_pairs, val_pairs = toy_problem
    first_head, _ = trained
    second_head, _ = train_head(features, train_pairs, val_pairs, **TRAINING)
    for first, second in zip(first_head.kernels, second_head.kernels, strict=True):
        np.testing.assert_array_equal(first, second)
    for first, second in zip(first_head.biases, second_head.biases, strict=True):
        np.testing.assert_array_equal(first, second)


def test_training_with_another_seed_gives_another_head(toy_problem, trained) -> None:
    features, train_pairs, _ = toy_problem
    first_head, _ = trained
    other_head, _ = train_head(features, train_pairs, None, **{**TRAINING, "seed": 8})
    assert not np.array_equal(first_head.kernels[0], other_head.kernels[0])


def test_trained_head_saves_its_keras_model_which_predicts_the_same(tmp_path: Path, toy_problem, trained) -> None:
    import keras

    features, _, val_pairs = toy_problem
    head, _ = trained
    head.save(tmp_path)
    abs_diff = pair_features(features, val_pairs, slice(0, 50))
    reloaded = keras.saving.load_model(tmp_path / "head.keras")
    np.testing.assert_allclose(reloaded.predict(abs_diff, verbose=0)[:, 0], head.predict(abs_diff), atol=1e-5)


def test_training_on_one_class_is_an_input_error(toy_problem) -> None:
    features, train_pairs, _ = toy_problem
    positives = train_pairs.label == 1.0
    only_positive = PairSet(train_pairs.first[positives], train_pairs.second[positives], train_pairs.label[positives])
    with pytest.raises(InputError, match="both classes"):
        train_head(features, only_positive, None, **TRAINING)
