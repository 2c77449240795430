"""Nothing unsafe to load: every model file is checked against its manifest's hash before use,
and nothing in the package loads with pickle or Keras' unsafe mode."""

from __future__ import annotations

import ast
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from faceid.backbones import BackboneOptions, create_extractor, load_extractor
from faceid.backbones.hog import HogExtractor, descriptor_dim, hog_manifest, projection_digest
from faceid.errors import InputError
from faceid.features.stats import Normalizer
from faceid.match.decision import Decision
from faceid.match.head import HeadArchitecture, SimilarityHead
from faceid.match.model import SimilarityModel
from faceid.match.openset import backbone_calibrations, calibrate_open_set, save_calibrations
from faceid.match.scoring import Rule

PACKAGE = REPO / "faceid"
TAMPERED = "does not match"  # what a hash check says (a parser's own error on a broken file says something else)


def flip_byte(path: Path) -> None:
    """Flip one bit of the byte in the middle of ``path`` (same size, same name)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def edit_json(path: Path, **changes) -> None:
    manifest = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    path.write_text(json.dumps(manifest))


# ---------------------------------------------------------------- the package's source


def _keyword_is(call: ast.Call, key: str, value: object) -> bool:
    """Whether ``call`` passes ``key=value`` with ``value`` a literal constant."""
    return any(keyword.arg == key and isinstance(keyword.value, ast.Constant) and keyword.value.value is value
               for keyword in call.keywords)


def unsafe_loading(source: str, name: str = "<source>") -> list[str]:
    """What in ``source`` could run code from a file it loads: pickle-based modules, unsafe flags,
    ``load_model`` without ``safe_mode=True``, ``np.load`` that could unpickle."""
    found = []
    for text in ("import pickle", "allow_pickle=True", "safe_mode=False", "enable_unsafe_deserialization"):
        if text in source:
            found.append(f"{name}: {text}")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{name}:{node.lineno}: imports {module}" for module in modules
                      if module.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "shelve", "cloudpickle")]
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        if node.func.attr == "load_model" and not _keyword_is(node, "safe_mode", True):
            found.append(f"{name}:{node.lineno}: load_model without safe_mode=True")
        if node.func.attr == "load" and owner == "torch":
            found.append(f"{name}:{node.lineno}: torch.load")
        # A memory-mapped .npy cannot hold Python objects (NumPy refuses to map them), so it cannot unpickle.
        if node.func.attr == "load" and owner in ("np", "numpy") and not (
            _keyword_is(node, "allow_pickle", False) or any(keyword.arg == "mmap_mode" for keyword in node.keywords)
        ):
            found.append(f"{name}:{node.lineno}: np.load without allow_pickle=False")
    return found


def test_the_scanner_finds_each_unsafe_pattern():
    bad = (
        "import pickle\nfrom joblib import load\nimport numpy as np\nimport torch\n"
        "np.load(path)\nnp.load(path, allow_pickle=True)\ntorch.load(path)\n"
        "keras.models.load_model(path)\nkeras.saving.load_model(path, safe_mode=False)\n"
    )
    found = unsafe_loading(bad)
    for expected in ("import pickle", "imports joblib", "np.load without", "allow_pickle=True", "torch.load",
                     "load_model without safe_mode=True", "safe_mode=False"):
        assert any(expected in line for line in found), expected
    safe = ("np.load(path, allow_pickle=False)\nnp.load(path, mmap_mode='r')\n"
            "keras.models.load_model(p, compile=False, safe_mode=True)\n")
    assert unsafe_loading(safe) == []


def test_no_module_of_the_package_loads_anything_unsafely():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50  # the whole package, not an empty folder
    found = [line for path in files for line in unsafe_loading(path.read_text(), str(path.relative_to(REPO)))]
    assert found == []


# ---------------------------------------------------------------- extractors: dlib


@pytest.fixture
def int8_dlib_dir(tmp_path, monkeypatch) -> Path:
    """An int8 dlib extractor as network.py saves one, quickly: the quantiser is skipped (the saved
    graph is dlib's fp32 one) and the calibration chips are blank."""
    from faceid.backbones import quantize

    monkeypatch.setattr(quantize, "calibration_chips", lambda *args: np.zeros((8, 150, 150, 3), np.uint8))
    monkeypatch.setattr(quantize, "quantize_int8", lambda model, chips, preprocess: model)
    directory = tmp_path / "int8"
    create_extractor("dlib", BackboneOptions(tta="none", precision="int8", calibration_faces="faces")).save(
        directory, "extractor")
    return directory


def test_int8_onnx_file_is_checked_against_its_manifest(int8_dlib_dir):
    manifest = json.loads((int8_dlib_dir / "manifest.json").read_text())
    assert manifest["onnx_file"] == "extractor.int8.onnx" and len(manifest["onnx_sha256"]) == 64
    assert load_extractor(int8_dlib_dir).fingerprint == manifest["fingerprint"]
    flip_byte(int8_dlib_dir / "extractor.int8.onnx")
    with pytest.raises(InputError, match=rf"extractor\.int8\.onnx {TAMPERED}.*re-export it with network\.py"):
        load_extractor(int8_dlib_dir)


def test_an_extractor_saved_before_file_hashes_loads_with_a_warning(int8_dlib_dir, caplog):
    edit_json(int8_dlib_dir / "manifest.json", onnx_sha256=None)
    with caplog.at_level(logging.WARNING):
        extractor = load_extractor(int8_dlib_dir)
    assert extractor.precision == "int8"
    assert "extractor.int8.onnx cannot be verified" in caplog.text


def test_a_dlib_extractor_made_with_other_model_files_is_refused(dlib_extractor_dir, tmp_path):
    shutil.copy2(dlib_extractor_dir / "manifest.json", tmp_path / "manifest.json")
    assert load_extractor(tmp_path).fingerprint == load_extractor(dlib_extractor_dir).fingerprint
    edit_json(tmp_path / "manifest.json", weights_sha256="0" * 32)
    with pytest.raises(InputError, match=r"dlib_face_recognition_resnet_model_v1.dat.*network.py \(backbone dlib\)"):
        load_extractor(tmp_path, runtime="dlib")


# ---------------------------------------------------------------- extractors: a trained tower (Keras, ONNX)


def _tower_dir(directory: Path, seed: int) -> Path:
    """A tiny tower saved the way train_siamese.py saves one (tower.keras, tower.onnx, manifest.json)."""
    import keras

    from faceid.backbones.runtime import KerasExtractor, weights_digest
    from faceid.backbones.siamese import preprocess_unit_rgb, siamese_manifest

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(), keras.layers.Dense(4)])
    manifest = siamese_manifest({
        "tower": "koch", "loss": "contrastive", "input_size": 16, "output_dim": 4, "align_padding": 0.25,
        "alignment": "none", "preprocessing": "unit-rgb", "weights_sha256": weights_digest(model),
    })
    fingerprint = manifest["fingerprint"]
    KerasExtractor(manifest, model, preprocess_unit_rgb).save(directory, "tower", export_onnx=True)
    assert json.loads((directory / "manifest.json").read_text())["fingerprint"] == fingerprint  # hashes stay out of it
    return directory


@pytest.fixture(scope="module")
def towers(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("towers")
    return _tower_dir(root / "a", seed=1), _tower_dir(root / "b", seed=2)


@pytest.mark.parametrize("file_name, runtime", [("tower.keras", "keras"), ("tower.onnx", "onnx")])
@pytest.mark.parametrize("tamper", ["flip", "replace"])
def test_a_changed_tower_file_is_refused_naming_it(towers, tmp_path, file_name, runtime, tamper):
    tower = shutil.copytree(towers[0], tmp_path / "tower")
    chips = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    assert load_extractor(tower, runtime=runtime).embed(chips).shape == (2, 4)
    if tamper == "flip":
        flip_byte(tower / file_name)
    else:  # another valid model under the same name: nothing but the hash tells them apart
        shutil.copy2(towers[1] / file_name, tower / file_name)
    with pytest.raises(InputError, match=rf"{file_name} {TAMPERED}.*changed after it was saved.*train_siamese\.py"):
        load_extractor(tower, runtime=runtime)


# ---------------------------------------------------------------- extractors: HOG


def _hog_dir(directory: Path, shift: float = 0.0) -> Path:
    dim = descriptor_dim(32, 8, 9)
    projection = {"means": np.full((2, dim), shift, np.float32)}
    manifest = hog_manifest({
        "input_size": 32, "align_padding": 0.25, "cell": 8, "bins": 9, "dims": None, "output_dim": dim,
        "domains": ["sketches", "photos"], "domain_color": {"sketches": "grey", "photos": "grey"},
        "weights_sha256": projection_digest(projection),
    })
    HogExtractor(manifest, projection).save(directory, "hog")
    return directory


@pytest.mark.parametrize("tamper", ["flip", "replace"])
def test_a_changed_hog_projection_is_refused_naming_it(tmp_path, tamper):
    model = _hog_dir(tmp_path / "hog")
    assert load_extractor(model).output_dim == descriptor_dim(32, 8, 9)
    if tamper == "flip":
        flip_byte(model / "projection.npz")
    else:
        shutil.copy2(_hog_dir(tmp_path / "other", shift=1.0) / "projection.npz", model / "projection.npz")
    with pytest.raises(InputError, match=r"projection\.npz .*re-run train_siamese\.py"):
        load_extractor(model)


# ---------------------------------------------------------------- similarity models


def _similarity_model(directory: Path, seed: int, calibrated: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    architecture = HeadArchitecture(hidden_units=(4,), dropout=(0.0,))
    head = SimilarityHead([rng.normal(size=(8, 4)), rng.normal(size=(4, 1))], [np.zeros(4), np.zeros(1)], architecture)
    vectors = rng.normal(size=(24, 8)).astype(np.float32)
    labels = np.repeat(np.arange(8), 3)
    calibrations = {"cosine": calibrate_open_set(vectors, labels, "cosine", photos=1, seed=seed)} if calibrated else {}
    SimilarityModel(head=head, normalizer=Normalizer.from_arrays(vectors.mean(0), vectors.std(0)),
                    decision=Decision.calibrated(0.5, Rule(), 0.01), extractor={"fingerprint": "f" * 32},
                    calibrations=calibrations, default_scorer="cosine" if calibrated else "head").save(directory)
    return directory


@pytest.fixture(scope="module")
def similarity_models(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("similarity")
    return _similarity_model(root / "a", seed=1), _similarity_model(root / "b", seed=2)


def test_head_json_records_the_hash_of_every_file_it_reads(similarity_models):
    manifest = json.loads((similarity_models[0] / "head.json").read_text())
    assert all(len(manifest[key]) == 64 for key in ("weights_sha256", "normalizer_sha256", "calibration_sha256"))
    model = SimilarityModel.load(similarity_models[0])
    assert model.normalizer is not None and set(model.calibrations) == {"cosine"}


@pytest.mark.parametrize("file_name", ["head.npz", "normalizer.npz", "calibration.npz"])
@pytest.mark.parametrize("tamper", ["flip", "replace"])
def test_a_changed_similarity_model_file_is_refused_naming_it(similarity_models, tmp_path, file_name, tamper):
    model = shutil.copytree(similarity_models[0], tmp_path / "model")
    if tamper == "flip":
        flip_byte(model / file_name)
    else:
        shutil.copy2(similarity_models[1] / file_name, model / file_name)
    with pytest.raises(InputError, match=rf"{file_name} {TAMPERED}.*train\.py"):
        SimilarityModel.load(model)


def test_a_model_saved_before_file_hashes_loads_with_a_warning(similarity_models, tmp_path, caplog):
    model = shutil.copytree(similarity_models[0], tmp_path / "old")
    edit_json(model / "head.json", normalizer_sha256=None, calibration_sha256=None)
    with caplog.at_level(logging.WARNING):
        loaded = SimilarityModel.load(model)
    assert loaded.normalizer is not None and set(loaded.calibrations) == {"cosine"}
    assert "normalizer.npz cannot be verified" in caplog.text and "calibration.npz cannot be verified" in caplog.text


def test_a_calibration_added_to_or_removed_from_a_saved_model_is_refused(similarity_models, tmp_path):
    uncalibrated = _similarity_model(tmp_path / "uncalibrated", seed=3, calibrated=False)
    assert json.loads((uncalibrated / "head.json").read_text())["calibration_sha256"] is None
    shutil.copy2(similarity_models[0] / "calibration.npz", uncalibrated / "calibration.npz")
    with pytest.raises(InputError, match=r"calibration\.npz is not part of what"):
        SimilarityModel.load(uncalibrated)
    incomplete = shutil.copytree(similarity_models[0], tmp_path / "incomplete")
    (incomplete / "calibration.npz").unlink()
    with pytest.raises(InputError, match=r"calibration\.npz is missing"):
        SimilarityModel.load(incomplete)


# ---------------------------------------------------------------- an extractor's own calibration


def _calibrations(fingerprint: str, seed: int):
    rng = np.random.default_rng(seed)
    vectors, labels = rng.normal(size=(24, 8)).astype(np.float32), np.repeat(np.arange(8), 3)
    return {"euclidean": calibrate_open_set(vectors, labels, "euclidean", photos=1, seed=seed,
                                            source={"extractor_fingerprint": fingerprint})}


@pytest.mark.parametrize("tamper", ["flip", "replace"])
def test_an_extractor_calibration_is_recorded_in_its_manifest_and_checked(tmp_path, tamper):
    directory = _hog_dir(tmp_path / "hog")
    fingerprint = load_extractor(directory).fingerprint
    save_calibrations(directory / "calibration.npz", _calibrations(fingerprint, seed=1))
    extractor = load_extractor(directory)
    assert extractor.fingerprint == fingerprint and len(extractor.manifest["calibration_sha256"]) == 64
    assert set(backbone_calibrations(extractor.manifest, directory)) == {"euclidean"}
    if tamper == "flip":
        flip_byte(directory / "calibration.npz")
    else:  # written without the manifest knowing (save_calibrations elsewhere, then copied in)
        save_calibrations(tmp_path / "calibration.npz", _calibrations(fingerprint, seed=2))
        assert not (tmp_path / "manifest.json").exists()
        shutil.copy2(tmp_path / "calibration.npz", directory / "calibration.npz")
    with pytest.raises(InputError, match=rf"calibration\.npz {TAMPERED}.*evaluate\.py calibrate"):
        backbone_calibrations(load_extractor(directory).manifest, directory)


def test_an_extractor_calibration_older_than_its_hash_loads_with_a_warning(tmp_path, caplog):
    directory = _hog_dir(tmp_path / "hog")
    fingerprint = load_extractor(directory).fingerprint
    save_calibrations(tmp_path / "calibration.npz", _calibrations(fingerprint, seed=1))
    shutil.copy2(tmp_path / "calibration.npz", directory / "calibration.npz")
    with caplog.at_level(logging.WARNING):
        calibrations = backbone_calibrations(load_extractor(directory).manifest, directory)
    assert set(calibrations) == {"euclidean"} and "calibration.npz cannot be verified" in caplog.text
