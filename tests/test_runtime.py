"""The ONNX Runtime extractor gives the Keras extractor's vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import LFW

from faceid.backbones import load_extractor
from faceid.cli import network
from faceid.errors import InputError
from faceid.features.embedding import FaceEmbedder
from faceid.io.images import read_image


@pytest.fixture(scope="module")
def exported_extractor(tmp_path_factory):
    directory = tmp_path_factory.mktemp("resnet_onnx")
    assert network.main(["--backbone", "resnet50", "--weights", "none", "--output", str(directory), "-q"]) == 0
    return directory


def real_chips(extractor, count=6):
    embedder = FaceEmbedder(extractor)
    chips = []
    for path in sorted((LFW / "Aaron_Sorkin").iterdir())[:count]:
        image = read_image(path)
        chips.append(embedder.chips(image, embedder.find_faces(image)[:1])[0])
    return np.stack(chips)


def test_network_writes_onnx_beside_keras(exported_extractor):
    manifest = json.loads((exported_extractor / "manifest.json").read_text())
    assert (exported_extractor / manifest["onnx_file"]).is_file()
    assert (exported_extractor / manifest["model_file"]).is_file()
    assert type(load_extractor(exported_extractor)).__name__ == "OnnxExtractor"


def test_onnx_and_keras_extractors_agree_on_real_faces(exported_extractor):
    onnx_extractor = load_extractor(exported_extractor, runtime="onnx")
    keras_extractor = load_extractor(exported_extractor, runtime="keras")
    assert onnx_extractor.fingerprint == keras_extractor.fingerprint
    chips = real_chips(keras_extractor)
    onnx_vectors = onnx_extractor.embed(chips)
    keras_vectors = keras_extractor.embed(chips)
    assert onnx_vectors.shape == (len(chips), 2048)
    np.testing.assert_allclose(onnx_vectors, keras_vectors, atol=1e-4)
    # Batched and one-by-one inference give the same vectors.
    np.testing.assert_allclose(onnx_extractor.embed(chips[:1]), onnx_vectors[:1], atol=1e-5)


def test_onnx_runtime_without_export_is_refused(tmp_path):
    assert network.main(["--backbone", "resnet50", "--weights", "none", "--input_size", "64",
                         "--export", "none", "--output", str(tmp_path), "-q"]) == 0
    assert type(load_extractor(tmp_path)).__name__ == "KerasExtractor"
    with pytest.raises(InputError, match="no ONNX export"):
        load_extractor(tmp_path, runtime="onnx")


def test_resnet50_int8_runs_on_onnx_runtime_only(tmp_path):
    calibration = LFW.parent / "cuhk_train" / "photos"
    assert network.main(["--backbone", "resnet50", "--weights", "none", "--input_size", "64", "--tta", "none",
                         "--precision", "int8", "--calibration_faces", str(calibration),
                         "--output", str(tmp_path / "int8"), "-q"]) == 0
    assert network.main(["--backbone", "resnet50", "--weights", "none", "--input_size", "64", "--tta", "none",
                         "--output", str(tmp_path / "fp32"), "-q"]) == 0
    manifest = json.loads((tmp_path / "int8" / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and "model_file" not in manifest
    int8, fp32 = load_extractor(tmp_path / "int8"), load_extractor(tmp_path / "fp32")
    assert int8.runtime == "onnx" and int8.fingerprint != fp32.fingerprint
    chips = real_chips(fp32)
    quantized, plain = int8.embed(chips), fp32.embed(chips)
    assert quantized.shape == plain.shape == (len(chips), 2048)
    # Random weights carry no identity, but the quantised network must still compute the same function.
    cosine = np.sum(quantized * plain, axis=1) / np.linalg.norm(quantized, axis=1) / np.linalg.norm(plain, axis=1)
    assert cosine.min() > 0.95 and not np.allclose(quantized, plain)
    with pytest.raises(InputError, match="int8"):
        load_extractor(tmp_path / "int8", runtime="keras")
