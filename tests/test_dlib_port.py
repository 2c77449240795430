"""dlib's face network read from its file and rebuilt: the same vectors as dlib, on real faces."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import DATA, LFW, REPO, run_process

from faceid.backbones import BackboneOptions, create_extractor, load_extractor
from faceid.backbones.dlib_resnet import face_resnet
from faceid.cli import extract_features, network
from faceid.detect.faces import RECOGNITION_MODEL, dlib_model_path
from faceid.errors import InputError
from faceid.features.cache import FeatureCache
from faceid.features.embedding import FaceEmbedder
from faceid.io.images import read_image
from faceid.nets.dlib_format import DlibModelError, read_dlib_network
from faceid.nets.dlib_graph import face_resnet_type, read_face_resnet

CUHK_PHOTOS = DATA / "cuhk_train" / "photos"


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory):
    """A dlib extractor without test-time augmentation: its vectors are dlib's own."""
    directory = tmp_path_factory.mktemp("dlib_plain")
    assert network.main(["--backbone", "dlib", "--tta", "none", "--output", str(directory), "-q"]) == 0
    return directory


@pytest.fixture(scope="module")
def lfw_chips(dlib_extractor) -> np.ndarray:
    """Aligned chips of 60 real LFW faces (the first image of 60 people)."""
    embedder = FaceEmbedder(dlib_extractor)
    chips = []
    for folder in sorted(LFW.iterdir()):
        image = read_image(min(folder.iterdir()))
        faces = embedder.find_faces(image)
        if faces:
            chips.append(embedder.chips(image, faces[:1])[0])
        if len(chips) == 60:
            break
    return np.stack(chips)


@pytest.fixture(scope="module")
def reference(lfw_chips) -> np.ndarray:
    """dlib's own compute_face_descriptor on the chips."""
    import dlib

    model = dlib.face_recognition_model_v1(str(dlib_model_path(RECOGNITION_MODEL)))
    return np.asarray(model.compute_face_descriptor([np.ascontiguousarray(chip) for chip in lfw_chips]), np.float32)


def test_reader_walks_the_whole_file_into_the_face_network():
    parsed = read_dlib_network(dlib_model_path(RECOGNITION_MODEL))
    assert parsed.loss.record == "loss_metric_2" and parsed.layers[0].kind == "input"
    assert len(parsed.layers) == len(face_resnet_type())
    assert parsed.layers[0].attributes["mean_rgb"] == pytest.approx((122.782, 117.001, 104.298), abs=1e-3)
    first_con = parsed.layers[1]
    assert first_con.arrays["filters"].shape == (32, 3, 7, 7) and first_con.attributes["stride_y"] == 2
    network_ = read_face_resnet(dlib_model_path(RECOGNITION_MODEL))
    # ~5.6 M parameters (29 convolutions with biases, 29 affines, a 256x128 fc).
    assert 5_500_000 < network_.parameter_count < 5_700_000 and network_.output_dim == 128


@pytest.mark.parametrize("runtime", ["onnx", "keras"])
def test_port_gives_dlibs_own_vectors_on_real_faces(plain_dir, lfw_chips, reference, runtime):
    extractor = load_extractor(plain_dir, runtime=runtime)
    assert extractor.runtime == runtime
    vectors = extractor.embed(lfw_chips)
    assert vectors.shape == (60, 128) and vectors.dtype == np.float32
    assert np.abs(vectors - reference).max() <= 1e-5
    # Batched and one face at a time agree too.
    assert np.abs(extractor.embed(lfw_chips[:3], batch_size=1) - reference[:3]).max() <= 1e-5


def test_runtime_does_not_change_the_fingerprint(dlib_extractor_dir):
    fingerprints = {load_extractor(dlib_extractor_dir, runtime=runtime).fingerprint for runtime in ("onnx", "dlib", "auto")}
    assert len(fingerprints) == 1


def test_fingerprint_of_an_extractor_made_before_tta_and_precision_is_kept(plain_dir, tmp_path):
    manifest = json.loads((plain_dir / "manifest.json").read_text())
    old = {key: value for key, value in manifest.items() if key not in ("tta", "precision", "parameters")}
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    extractor = load_extractor(tmp_path)
    assert extractor.fingerprint == manifest["fingerprint"] and extractor.tta == "none" and extractor.precision == "fp32"
    # ...and a fresh plain fp32 extractor has the same fingerprint, while flip (the default) gets its own.
    assert create_extractor("dlib", BackboneOptions(tta="none")).fingerprint == manifest["fingerprint"]
    assert create_extractor("dlib").tta == "flip"
    assert create_extractor("dlib").fingerprint != manifest["fingerprint"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda path, real: path.write_bytes(real[: len(real) // 2]), "ends inside"),
        (lambda path, real: path.write_bytes(b""), "empty"),
        (lambda path, real: path.write_text("name,vector\nalice,0.1 0.2\n"), "not a dlib DNN model"),
        (lambda path, real: path.write_bytes(b"BZh91AY&SY" + real[:100]), "bzip2"),
    ],
    ids=["truncated", "empty", "text", "bz2"],
)
def test_reader_refuses_a_broken_file_naming_it(tmp_path, make, message):
    path = tmp_path / "model.dat"
    make(path, dlib_model_path(RECOGNITION_MODEL).read_bytes())
    with pytest.raises(DlibModelError, match=message) as error:
        read_face_resnet(path)
    assert str(path) in str(error.value)


def test_reader_refuses_dlibs_detector_as_the_face_network():
    detector = dlib_model_path("mmod_human_face_detector.dat")
    with pytest.raises(DlibModelError, match="mmod_human_face_detector.dat") as error:
        read_face_resnet(detector)
    assert "loss_mmod" in str(error.value)


def test_gradient_reaches_every_trainable_weight_of_the_keras_model(lfw_chips):
    import tensorflow as tf

    from faceid.backbones.dlib_resnet import preprocess_dlib
    from faceid.nets.dlib_keras import face_resnet_keras

    model = face_resnet_keras(face_resnet())
    assert model.count_params() == face_resnet().parameter_count
    first, second = preprocess_dlib(lfw_chips[:4]), preprocess_dlib(lfw_chips[4:8])
    same = tf.constant([1.0, 0.0, 0.0, 0.0])  # a contrastive pair loss, margin 0.6 (dlib's threshold)
    with tf.GradientTape() as tape:
        distance = tf.norm(model(first, training=True) - model(second, training=True) + 1e-9, axis=1)
        loss = tf.reduce_mean(same * distance**2 + (1 - same) * tf.nn.relu(0.6 - distance) ** 2)
    gradients = tape.gradient(loss, model.trainable_weights)
    assert len(model.trainable_weights) == 29 * 4 + 1  # con kernel + bias, affine gamma + beta; fc
    missing = [weight.path for weight, gradient in zip(model.trainable_weights, gradients)
               if gradient is None or not np.any(np.asarray(gradient))]
    assert missing == []
    before = [np.asarray(weight).copy() for weight in model.trainable_weights]
    tf.keras.optimizers.SGD(0.01).apply_gradients(zip(gradients, model.trainable_weights))
    assert all(not np.array_equal(old, np.asarray(new)) for old, new in zip(before, model.trainable_weights))


def test_flip_averages_the_chip_and_its_mirror(plain_dir, lfw_chips, reference):
    flip = create_extractor("dlib", BackboneOptions(tta="flip"))
    plain = load_extractor(plain_dir, runtime="onnx")
    expected = (plain.embed(lfw_chips) + plain.embed(lfw_chips[:, :, ::-1])) / 2
    vectors = flip.embed(lfw_chips)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    # Close to the fp32 vectors, not equal: measured on these 60 chips, max L2 distance 0.155
    # (dlib's same-person threshold is 0.6); the bound leaves a margin of ~1.6x.
    distances = np.linalg.norm(vectors - reference, axis=1)
    assert distances.min() > 1e-3 and distances.max() < 0.25


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dlib_int8")
    assert network.main(["--backbone", "dlib", "--tta", "none", "--precision", "int8", "--calibration_faces", str(CUHK_PHOTOS),
                         "--output", str(directory), "-q"]) == 0
    return directory


def test_int8_is_close_to_fp32_and_has_its_own_fingerprint(int8_dir, plain_dir, lfw_chips, reference):
    manifest = json.loads((int8_dir / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and (int8_dir / manifest["onnx_file"]).is_file()
    assert manifest["calibration"]["faces"] >= 80  # CUHK's 88 photos, one face each
    extractor = load_extractor(int8_dir)
    assert extractor.fingerprint != load_extractor(plain_dir).fingerprint
    distances = np.linalg.norm(extractor.embed(lfw_chips) - reference, axis=1)
    # Measured on these 60 chips: mean 0.042, max 0.055 (dlib's threshold is 0.6); bounds ~2x and ~2.7x.
    assert distances.min() > 1e-4 and distances.max() < 0.15 and distances.mean() < 0.08
    with pytest.raises(InputError, match="int8"):
        load_extractor(int8_dir, runtime="keras")


def test_int8_needs_face_photos_to_calibrate_on(tmp_path):
    with pytest.raises(InputError, match="`calibration_faces`"):
        create_extractor("dlib", BackboneOptions(precision="int8"))
    (tmp_path / "notes.txt").write_text("no faces here")
    with pytest.raises(InputError, match="0 face chips"):
        create_extractor("dlib", BackboneOptions(precision="int8", calibration_faces=str(tmp_path)))
    with pytest.raises(InputError, match="does not exist"):
        create_extractor("dlib", BackboneOptions(precision="int8", calibration_faces=str(tmp_path / "missing")))


def test_caches_from_either_runtime_are_the_same(dlib_extractor_dir, tmp_path, capsys):
    faces = tmp_path / "faces"
    for person in sorted(LFW.iterdir())[:3]:
        (faces / person.name).mkdir(parents=True)
        for image in sorted(person.iterdir())[:2]:
            (faces / person.name / image.name).write_bytes(image.read_bytes())
    common = ["--faces_path", str(faces), "--model_path", str(dlib_extractor_dir), "-q", "--workers", "0"]
    assert extract_features.main([*common, "--features", str(tmp_path / "dlib"), "--runtime", "dlib"]) == 0
    assert extract_features.main([*common, "--features", str(tmp_path / "onnx"), "--runtime", "onnx"]) == 0
    by_dlib, by_onnx = FeatureCache.load(tmp_path / "dlib"), FeatureCache.load(tmp_path / "onnx")
    for person in by_dlib.people:
        assert np.abs(by_dlib.people[person].vectors - by_onnx.people[person].vectors).max() <= 1e-5
    # The onnx runtime accepts the cache dlib made: nothing is embedded again.
    capsys.readouterr()
    assert extract_features.main([*common, "--features", str(tmp_path / "dlib"), "--runtime", "onnx", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["embedded"] == 0 and summary["reused"] == 6


def test_dlib_backbone_runs_without_tensorflow(dlib_extractor_dir):
    code = (
        "import sys\n"
        "for name in ('tensorflow', 'keras', 'tf2onnx'): sys.modules[name] = None\n"
        "import numpy as np\n"
        "from faceid.backbones import load_extractor\n"
        f"extractor = load_extractor({str(dlib_extractor_dir)!r})\n"
        "print(extractor.runtime, extractor.embed(np.zeros((2, 150, 150, 3), np.uint8)).shape)\n"
    )
    result = run_process([sys.executable, "-c", code], cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["onnx", "(2,", "128)"]
