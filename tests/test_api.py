"""The Python API (faceid.FaceID, faceid.embed) on real faces: the same answers as the scripts."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import KNOWN, LFW, ORL, REPO, VIDEO, copy_people
from PIL import Image

import faceid
from faceid.errors import ImageReadError, InputError, NoFaceError

POWELL = [LFW / "Colin_Powell" / f"Colin_Powell_{index:04d}.jpg" for index in range(1, 6)]
BUSH = [LFW / "George_W_Bush" / f"George_W_Bush_{index:04d}.jpg" for index in range(1, 6)]
BLAIR = LFW / "Tony_Blair" / "Tony_Blair_0001.jpg"  # never enrolled


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory) -> faceid.FaceID:
    fid = faceid.FaceID(features=tmp_path_factory.mktemp("api") / "features")
    assert fid.enrol("Colin_Powell", POWELL[:4]) == 4
    assert fid.enrol("George_W_Bush", BUSH[:4]) == 4
    return fid


def test_import_faceid_loads_nothing_heavy():
    code = ("import sys, faceid; print(sorted(m for m in sys.modules if m.startswith('faceid'))); "
            "print('numpy' in sys.modules); faceid.FaceID; print('faceid.api' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["['faceid']", "False", "True"]


def test_public_names_are_exported_typed_and_documented():
    import inspect

    for name in ("FaceID", "Face", "Verification", "Frame", "embed", "FaceIdError", "InputError", "NoFaceError"):
        value = getattr(faceid, name)
        assert inspect.getdoc(value), name
    for method in ("enrol", "identify", "verify", "forget", "identify_video"):
        function = getattr(faceid.FaceID, method)
        assert "Returns" in inspect.getdoc(function) or "Yields" in inspect.getdoc(function) or method == "forget"
        assert "return" in inspect.get_annotations(function), method
    assert faceid.errors.FaceIdError is faceid.FaceIdError
    with pytest.raises(AttributeError):
        faceid.no_such_name  # noqa: B018


def test_identify_names_the_enrolled_and_leaves_strangers_unknown(enrolled):
    assert enrolled.people == ["Colin_Powell", "George_W_Bush"]
    faces = enrolled.identify(POWELL[4])
    assert len(faces) == 1
    face = faces[0]
    assert face.name == "Colin_Powell" and face.known and face.score >= face.threshold
    assert len(face.box) == 4 and all(isinstance(value, int) for value in face.box) and face.box[2] > 40
    stranger = enrolled.identify(BLAIR)[0]
    assert stranger.name is None and not stranger.known and stranger.score < stranger.threshold
    assert stranger.best_person in enrolled.people


def test_an_image_may_be_a_path_an_rgb_array_or_a_pil_image(enrolled):
    by_path = enrolled.identify(BUSH[4])
    array = np.asarray(Image.open(BUSH[4]).convert("RGB"))
    assert enrolled.identify(array) == by_path
    assert enrolled.identify(Image.open(BUSH[4])) == by_path
    assert by_path[0].name == "George_W_Bush"
    with pytest.raises(InputError, match=r"RGB uint8 of shape \(height, width, 3\)"):
        enrolled.identify(array.astype(np.float32))
    with pytest.raises(InputError, match="not a list"):
        enrolled.identify([1, 2, 3])


def test_verify_compares_the_largest_faces(enrolled):
    same = enrolled.verify(POWELL[0], POWELL[4])
    assert same.same and same.score >= same.threshold
    different = enrolled.verify(POWELL[0], BLAIR)
    assert not different.same and different.score < different.threshold
    assert same.threshold == different.threshold


def test_verify_says_which_image_has_no_face(enrolled, tmp_path):
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    with pytest.raises(NoFaceError, match="`image_b`"):
        enrolled.verify(POWELL[0], blank)


def test_embed_gives_one_128_d_vector_per_face_largest_first(tmp_path):
    vectors = faceid.embed(BLAIR)
    # Tony_Blair_0001 holds two faces: Blair, and a man cut off at the photo's left edge (x < 64)
    # whom BlazeFace finds (HOG did not); Blair's, the larger, comes first (checked on the canvas below).
    assert vectors.shape == (2, 128) and vectors.dtype == np.float32
    # two faces side by side, the second smaller: two rows, the larger face's vector first
    big = np.asarray(Image.open(BLAIR).convert("RGB")).copy()
    big[:, :70] = 0  # the man at the left edge blanked: the canvas holds exactly Blair and Powell
    small = np.asarray(Image.open(POWELL[0]).convert("RGB").resize((160, 160)))
    canvas = np.zeros((250, 420, 3), np.uint8)
    canvas[:, :250], canvas[45:205, 260:] = big, small
    both = faceid.embed(canvas)
    assert both.shape == (2, 128)
    assert np.linalg.norm(both[0] - vectors[0]) < np.linalg.norm(both[1] - vectors[0])
    assert np.linalg.norm(both[0] - vectors[0]) < np.linalg.norm(both[0] - vectors[1])
    assert faceid.embed(np.full((100, 100, 3), 200, np.uint8)).shape == (0, 128)


def test_enrol_adds_to_a_person_and_skips_what_it_has(tmp_path):
    fid = faceid.FaceID(features=tmp_path / "features")
    assert fid.enrol("Colin_Powell", POWELL[:2]) == 2
    assert fid.enrol("Colin_Powell", POWELL[:3]) == 1  # the first two are already there
    assert fid.enrol("George_W_Bush", [np.asarray(Image.open(BUSH[0]).convert("RGB"))]) == 1
    cache = faceid.FaceID(features=tmp_path / "features")._load_cache()
    assert len(cache.people["Colin_Powell"].vectors) == 3 and len(cache.people["George_W_Bush"].vectors) == 1


def test_enrol_without_a_usable_face_enrols_nobody(tmp_path):
    fid = faceid.FaceID(features=tmp_path / "features")
    fid.enrol("Colin_Powell", POWELL[:2])
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo")
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 120, 3), 90, np.uint8)).save(blank)
    with pytest.raises(NoFaceError, match="'ghost' is not enrolled") as error:
        fid.enrol("ghost", [notes, blank])
    assert "notes.jpg" in str(error.value) and "object at 0x" not in str(error.value)
    assert fid.people == ["Colin_Powell"] and fid.not_enrolled == ["ghost"]
    with pytest.raises(ImageReadError, match="missing.jpg: no such file"):
        fid.enrol("Colin_Powell", [tmp_path / "missing.jpg"])
    with pytest.raises(InputError, match="`images` is empty"):
        fid.enrol("Colin_Powell", [])
    with pytest.raises(InputError, match="`name`"):
        fid.enrol("../escape", POWELL[:1])


def test_forget_removes_a_person_and_then_nobody_is_left(tmp_path):
    fid = faceid.FaceID(features=tmp_path / "features")
    fid.enrol("Colin_Powell", POWELL[:2])
    fid.enrol("George_W_Bush", BUSH[:2])
    fid.forget("George_W_Bush")
    assert fid.people == ["Colin_Powell"]
    assert fid.identify(BUSH[4])[0].name is None  # no longer named
    fid.forget("Colin_Powell")
    assert fid.people == []
    with pytest.raises(InputError, match="nobody is enrolled"):
        fid.identify(POWELL[4])
    with pytest.raises(InputError, match="no person 'Colin_Powell'"):
        fid.forget("Colin_Powell")


def test_an_existing_cache_gives_test_py_s_answers(tmp_path):
    """FaceID on network.py + extract_features.py artefacts decides exactly as test.py --images."""
    from faceid.cli import extract_features, identify, network

    faces = copy_people(LFW, tmp_path / "faces", ["Colin_Powell", "George_W_Bush", "Tony_Blair"], max_images=4)
    probes = tmp_path / "probes"
    probes.mkdir()
    for path in (POWELL[4], BUSH[4], LFW / "Vladimir_Putin" / "Vladimir_Putin_0001.jpg"):
        (probes / path.name).write_bytes(path.read_bytes())
    assert network.main(["--output", str(tmp_path / "extractor"), "-q"]) == 0
    assert extract_features.main(["--faces_path", str(faces), "--model_path", str(tmp_path / "extractor"),
                                  "--features", str(tmp_path / "features"), "-q"]) == 0
    assert identify.main(["--features", str(tmp_path / "features"), "--model", str(tmp_path / "extractor"),
                          "--images", str(probes), "--jsonl", str(tmp_path / "faces.jsonl"), "--no_display", "-q"]) == 0
    by_script = [json.loads(line) for line in (tmp_path / "faces.jsonl").read_text().splitlines()]
    fid = faceid.FaceID(model=tmp_path / "extractor", features=tmp_path / "features")
    by_api = []
    for record in by_script:
        matches = [face for face in fid.identify(probes / record["source"]) if list(face.box) == record["box"]]
        assert len(matches) == 1
        by_api.append((matches[0].name or "unknown", round(matches[0].score, 4)))
    assert by_api == [(record["name"], record["score"]) for record in by_script]
    assert ("Colin_Powell", ) == tuple(name for name, _ in by_api if name == "Colin_Powell")
    assert any(name == "unknown" for name, _ in by_api)  # Putin is not enrolled


def test_identify_video_tracks_and_votes_like_test_py(tmp_path):
    from faceid.cli import identify, network

    fid = faceid.FaceID(features=tmp_path / "features")
    for person in ("lin-manuel-miranda", "alex-lacamoire"):
        fid.enrol(person, sorted((KNOWN / person).iterdir()))
    frames = list(fid.identify_video(VIDEO, max_frames=45))
    assert [frame.index for frame in frames] == list(range(45))
    assert frames[30].seconds == pytest.approx(1.0, abs=0.05)
    named = [(frame.index, face.name) for frame in frames for face in frame.faces]
    assert sum(name == "lin-manuel-miranda" for _, name in named) >= 10
    assert all(face.track is not None for frame in frames for face in frame.faces)
    # test.py on the same cache, with an extractor directory of the same (default) model
    assert network.main(["--output", str(tmp_path / "extractor"), "-q"]) == 0
    assert identify.main(["--features", str(tmp_path / "features"), "--model", str(tmp_path / "extractor"),
                          "--video_path", str(VIDEO), "--max_frames", "45", "--no_display",
                          "--jsonl", str(tmp_path / "clip.jsonl"), "-q"]) == 0
    by_script = [json.loads(line) for line in (tmp_path / "clip.jsonl").read_text().splitlines()]
    assert named == [(record["frame"], None if record["name"] in ("unknown", "…") else record["name"])
                     for record in by_script]


def test_identify_video_reports_a_missing_source(enrolled, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        next(enrolled.identify_video(tmp_path / "nothing.mp4"))


def test_a_key_encrypts_the_cache_and_is_needed_to_read_it(tmp_path, monkeypatch):
    from faceid.io.sealed import KeyRequiredError, new_key, write_key_file

    key_file = tmp_path / "faceid.key"
    write_key_file(key_file, new_key())
    fid = faceid.FaceID(features=tmp_path / "features", key=key_file)
    fid.enrol("s1", sorted((ORL / "s1").iterdir())[:3])
    person_file = tmp_path / "features" / "people" / "s1.npz"
    assert person_file.read_bytes().startswith(b"FACEID\x00")  # sealed, not a plain .npz
    monkeypatch.delenv("FACEID_KEY", raising=False)
    with pytest.raises(KeyRequiredError):
        faceid.FaceID(features=tmp_path / "features").people  # noqa: B018
    # the boundary reads $FACEID_KEY when no key is given
    monkeypatch.setenv("FACEID_KEY", key_file.read_text().strip())
    assert faceid.FaceID(features=tmp_path / "features").people == ["s1"]
