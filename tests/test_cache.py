"""The per-person feature cache: incremental updates, mismatches, bad input, interruptions."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import LFW, ORL, copy_people

from faceid.backbones import BackboneOptions, create_extractor
from faceid.detect.faces import NO_FACE, FaceCropper, FaceOptions
from faceid.errors import InputError, ManifestMismatchError
from faceid.features.cache import FeatureCache
from faceid.features.extract import extract_features
from faceid.io.images import UNREADABLE


@pytest.fixture
def orl_faces(tmp_path):
    return copy_people(ORL, tmp_path / "faces", ["s3", "s4", "s5"], max_images=4)


def test_cache_holds_one_file_per_person_with_names_and_hashes(orl_faces, dlib_extractor, tmp_path):
    summary = extract_features(orl_faces, dlib_extractor, tmp_path / "features", progress=False)
    cache = FeatureCache.load(tmp_path / "features", dlib_extractor.manifest)
    assert sorted(cache.people) == ["s3", "s4", "s5"]
    assert sorted(path.name for path in (tmp_path / "features" / "people").iterdir()) == [
        "s3.npz",
        "s4.npz",
        "s5.npz",
    ]
    person = cache.people["s3"]
    assert person.vectors.shape == (len(person.files), 128) and person.vectors.dtype == np.float32
    assert len(set(person.hashes)) == len(person.files) and all(
        len(digest) == 64 for digest in person.hashes
    )
    assert summary.embedded + sum(len(files) for files in summary.skipped.values()) == 12


def test_cache_skips_unchanged_images(orl_faces, dlib_extractor, tmp_path, monkeypatch):
    extract_features(orl_faces, dlib_extractor, tmp_path / "features", progress=False)
    before = FeatureCache.load(tmp_path / "features").people["s4"].vectors.copy()
    calls = []
    original = type(dlib_extractor).embed
    monkeypatch.setattr(type(dlib_extractor), "embed", lambda self, chips, **kw: calls.append(len(chips)) or original(self, chips, **kw))
    summary = extract_features(orl_faces, dlib_extractor, tmp_path / "features", progress=False)
    assert calls == [] and summary.embedded == 0 and summary.reused > 0
    assert np.array_equal(FeatureCache.load(tmp_path / "features").people["s4"].vectors, before)


def test_cache_embeds_added_and_changed_images_and_drops_removed(
    orl_faces, dlib_extractor, tmp_path
):
    features = tmp_path / "features"
    extract_features(orl_faces, dlib_extractor, features, progress=False)
    shutil.copy2(ORL / "s3" / "9.pgm", orl_faces / "s3" / "9.pgm")  # added
    shutil.copy2(ORL / "s4" / "8.pgm", orl_faces / "s4" / "1.pgm")  # same name, new content
    (orl_faces / "s5" / "3.pgm").unlink()  # removed
    summary = extract_features(orl_faces, dlib_extractor, features, progress=False)
    assert summary.embedded == 2 and summary.removed_images == 1
    cache = FeatureCache.load(features)
    assert "9.pgm" in cache.people["s3"].files and "3.pgm" not in cache.people["s5"].files
    changed = cache.people["s4"]
    fresh = extract_features(orl_faces, dlib_extractor, tmp_path / "fresh", progress=False)
    assert fresh.embedded >= summary.embedded
    reference = FeatureCache.load(tmp_path / "fresh").people["s4"]
    np.testing.assert_allclose(changed.vectors, reference.vectors, atol=1e-5)


def test_cache_drops_people_whose_folder_was_removed(orl_faces, dlib_extractor, tmp_path):
    extract_features(orl_faces, dlib_extractor, tmp_path / "features", progress=False)
    shutil.rmtree(orl_faces / "s5")
    summary = extract_features(orl_faces, dlib_extractor, tmp_path / "features", progress=False)
    assert summary.removed_people == ["s5"]
    assert sorted(FeatureCache.load(tmp_path / "features").people) == ["s3", "s4"]


def test_cache_from_another_extractor_stops_without_changing_anything(
    orl_faces, dlib_extractor, tmp_path
):
    features = tmp_path / "features"
    extract_features(orl_faces, dlib_extractor, features, progress=False)
    snapshot = {path.name: path.read_bytes() for path in (features / "people").iterdir()}
    resnet = create_extractor("resnet50", BackboneOptions(weights="none", input_size=64))
    with pytest.raises(ManifestMismatchError, match="`rebuild`") as error:
        extract_features(orl_faces, resnet, features, progress=False)
    assert "dlib" in str(error.value) and "resnet50" in str(error.value)
    assert {path.name: path.read_bytes() for path in (features / "people").iterdir()} == snapshot
    with pytest.raises(ManifestMismatchError):
        FeatureCache.load(features, resnet.manifest)
    extract_features(orl_faces, resnet, features, rebuild=True, progress=False)
    assert FeatureCache.load(features, resnet.manifest).dim == 2048


def test_unreadable_and_faceless_images_are_reported_and_remembered(
    orl_faces, dlib_extractor, tmp_path, monkeypatch
):
    (orl_faces / "s3" / "notes.jpg").write_text("this is not a picture")
    np_blank = np.full((120, 120), 128, dtype=np.uint8)
    from PIL import Image

    Image.fromarray(np_blank).save(orl_faces / "s4" / "blank.png")
    summary = extract_features(orl_faces, dlib_extractor, tmp_path / "features", progress=False)
    assert "s3/notes.jpg" in summary.skipped[UNREADABLE]
    assert "s4/blank.png" in summary.skipped[NO_FACE]
    assert "notes.jpg" not in FeatureCache.load(tmp_path / "features").people["s3"].files
    # Second run: the failures are remembered by content hash, not retried.
    monkeypatch.setattr(FaceCropper, "find_faces", lambda *args: pytest.fail("image re-processed"))
    again = extract_features(orl_faces, dlib_extractor, tmp_path / "features", workers=0, progress=False)
    assert "s4/blank.png" in again.skipped[NO_FACE] and again.embedded == 0


def test_fingerprint_mismatch_names_the_settings_that_differ(tmp_path):
    from faceid.backbones import create_extractor

    faces = copy_people(ORL, tmp_path / "faces", ["s1"], max_images=2)
    plain = create_extractor("dlib", BackboneOptions(tta="none"))
    extract_features(faces, plain, tmp_path / "features", workers=0, progress=False)
    flipped = create_extractor("dlib", BackboneOptions(tta="flip"))
    with pytest.raises(ManifestMismatchError) as error:
        FeatureCache.load(tmp_path / "features", flipped.manifest)
    message = str(error.value)
    assert "tta: none ≠ flip" in message
    # the other settings are the same, so they are not listed as differences
    assert "backbone:" not in message and "object at 0x" not in message


def test_person_with_no_usable_image_is_reported_not_enrolled(tmp_path, dlib_extractor, caplog):
    faces = copy_people(ORL, tmp_path / "faces", ["s6", "s7"], max_images=3)
    (faces / "ghost").mkdir()
    (faces / "ghost" / "readme.txt").write_text("no photos yet")
    (faces / "empty").mkdir()
    summary = extract_features(faces, dlib_extractor, tmp_path / "features", progress=False)
    assert sorted(summary.not_enrolled) == ["empty", "ghost"] and "ghost" not in summary.too_few
    assert "not enrolled (no usable image, so never identified): 2: empty, ghost" in summary.report()
    assert any("ghost is not enrolled" in record.getMessage() for record in caplog.records)
    # Identification names who was left out, and enrols only the others.
    cache = FeatureCache.load(tmp_path / "features")
    assert cache.not_enrolled == ["empty", "ghost"]
    assert cache.matrix()[2] == ["s6", "s7"]


def test_several_faces_use_the_largest(tmp_path, dlib_extractor):
    from PIL import Image

    big = np.asarray(Image.open(LFW / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg"))
    small = np.asarray(
        Image.open(LFW / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg").resize((160, 160))
    )
    canvas = np.zeros((250, 420, 3), dtype=np.uint8)
    canvas[:, :250] = big
    canvas[45:205, 260:420] = small
    (tmp_path / "faces" / "sorkin").mkdir(parents=True)
    Image.fromarray(canvas).save(tmp_path / "faces" / "sorkin" / "group.png")
    shutil.copy2(LFW / "Aaron_Sorkin" / "Aaron_Sorkin_0002.jpg", tmp_path / "faces" / "sorkin")
    summary = extract_features(
        tmp_path / "faces", dlib_extractor, tmp_path / "features", progress=False
    )
    assert summary.several_faces == ["sorkin/group.png"]
    vectors = FeatureCache.load(tmp_path / "features").people["sorkin"].vectors
    # The group photo's vector is Sorkin's (the larger face): close to his other photo.
    assert np.linalg.norm(vectors[0] - vectors[1]) < 0.6


def test_no_detect_embeds_whole_images(tmp_path, dlib_extractor):
    faces = copy_people(ORL, tmp_path / "faces", ["s1"], max_images=4)
    summary = extract_features(
        faces,
        dlib_extractor,
        tmp_path / "features",
        face_options=FaceOptions(detect=False),
        progress=False,
    )
    # s1/2.pgm has no face dlib's detector finds; as a given crop it is embedded anyway.
    assert summary.embedded == 4 and not summary.skipped


def test_interrupted_extraction_keeps_finished_people_and_resumes(orl_faces, dlib_extractor, tmp_path, monkeypatch):
    features = tmp_path / "features"
    original = type(dlib_extractor).embed
    calls = {"count": 0}

    def crash_on_third_batch(self, chips, **kwargs):
        calls["count"] += 1
        if calls["count"] == 3:
            raise KeyboardInterrupt
        return original(self, chips, **kwargs)

    monkeypatch.setattr(type(dlib_extractor), "embed", crash_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        extract_features(orl_faces, dlib_extractor, features, batch_size=4, workers=0, progress=False)
    monkeypatch.setattr(type(dlib_extractor), "embed", original)
    finished = sorted(path.name for path in (features / "people").iterdir() if not path.name.startswith("."))
    assert finished == ["s3.npz", "s4.npz"]
    summary = extract_features(orl_faces, dlib_extractor, features, progress=False)
    assert summary.reused == 8 and summary.embedded == 4
    assert sorted(FeatureCache.load(features).people) == ["s3", "s4", "s5"]


def test_workers_and_file_order_do_not_change_the_vectors(orl_faces, dlib_extractor, tmp_path):
    extract_features(orl_faces, dlib_extractor, tmp_path / "in_process", workers=0, batch_size=5, progress=False)
    extract_features(orl_faces, dlib_extractor, tmp_path / "two_workers", workers=2, batch_size=3, progress=False)
    # Same images written in the opposite order: the cache follows names, not creation order.
    reordered = tmp_path / "reordered"
    for person in sorted(orl_faces.iterdir()):
        (reordered / person.name).mkdir(parents=True)
        for image in sorted(person.iterdir(), reverse=True):
            shutil.copy2(image, reordered / person.name / image.name)
    extract_features(reordered, dlib_extractor, tmp_path / "reordered_features", workers=2, progress=False)
    reference = FeatureCache.load(tmp_path / "in_process").people
    for other in ("two_workers", "reordered_features"):
        people = FeatureCache.load(tmp_path / other).people
        assert sorted(people) == sorted(reference)
        for name, person in reference.items():
            assert people[name].files == person.files
            np.testing.assert_allclose(people[name].vectors, person.vectors, atol=1e-4)


def test_corrupt_person_file_is_reported_not_read(orl_faces, dlib_extractor, tmp_path):
    features = tmp_path / "features"
    extract_features(orl_faces, dlib_extractor, features, progress=False)
    path = features / "people" / "s4.npz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputError, match="s4.npz.*corrupt"):
        FeatureCache.load(features)


def test_missing_cache_names_the_command_that_builds_it(tmp_path):
    with pytest.raises(InputError, match="extract_features.py"):
        FeatureCache.load(tmp_path / "nothing")
