"""The enrolment audit on a folder of real LFW/ORL faces with every kind of problem planted."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import LFW, ORL, copy_people
from PIL import Image
from test_enrol import add_problem_files

from faceid.apps.audit import audit_faces
from faceid.cli import check_faces
from faceid.detect.faces import NO_FACE
from faceid.errors import InputError
from faceid.features.extract import extract_features
from faceid.io.images import read_image

PEOPLE = ["Al_Gore", "Al_Sharpton", "Alejandro_Toledo", "Amelia_Vega"]


@pytest.fixture(scope="module")
def faces_root(tmp_path_factory) -> Path:
    """Four LFW people (4 photos each) and two ORL people, with problems planted."""
    root = copy_people(LFW, tmp_path_factory.mktemp("faces"), PEOPLE, max_images=4)
    add_problem_files(root / "Al_Gore")
    shutil.copy2(root / "Al_Gore" / "Al_Gore_0001.jpg", root / "Al_Gore" / "Al_Gore_0001_copy.jpg")
    # Another photo of Alejandro Toledo, filed under Al Sharpton.
    shutil.copy2(LFW / "Alejandro_Toledo" / "Alejandro_Toledo_0007.jpg", root / "Al_Sharpton" / "planted.jpg")
    # The same picture, smaller and re-compressed: a near duplicate, not an exact one.
    Image.open(LFW / "Alejandro_Toledo" / "Alejandro_Toledo_0001.jpg").resize((200, 200)).save(
        root / "Alejandro_Toledo" / "resaved.jpg", quality=60)
    vega = read_image(LFW / "Amelia_Vega" / "Amelia_Vega_0005.jpg")
    Image.fromarray(cv2.GaussianBlur(vega, (0, 0), 2.5)).save(root / "Amelia_Vega" / "blurry.jpg", quality=95)
    Image.open(LFW / "Amelia_Vega" / "Amelia_Vega_0006.jpg").resize((120, 120)).save(root / "Amelia_Vega" / "small.jpg")
    copy_people(ORL, root, ["s2"], max_images=4)
    copy_people(ORL, root, ["s3"], max_images=1)
    return root


@pytest.fixture(scope="module")
def report(faces_root, dlib_extractor):
    return audit_faces(faces_root, extractor=dlib_extractor, progress=False)


def flagged(report, kind: str) -> set[str]:
    return {finding.where for finding in report.findings if finding.kind == kind}


def test_audit_flags_unreadable_files(report):
    assert flagged(report, "unreadable") == {"Al_Gore/notes.jpg", "Al_Gore/cut.jpg"}


def test_audit_flags_an_image_without_a_face(report):
    assert flagged(report, "no_face") == {"Al_Gore/background.jpg"}


def test_audit_flags_the_photo_with_two_faces(report):
    # The planted pair, and Alejandro_Toledo_0003: a woman's face cut off at its right edge beside
    # Toledo's, a real second face that BlazeFace finds (HOG did not).
    assert flagged(report, "several_faces") == {"Al_Gore/two_faces.jpg", "Alejandro_Toledo/Alejandro_Toledo_0003.jpg"}


def test_audit_flags_small_and_blurry_faces(report):
    assert flagged(report, "too_small") == {"Amelia_Vega/small.jpg"}
    assert flagged(report, "too_blurry") == {"Amelia_Vega/blurry.jpg"}


def test_audit_flags_the_second_copy_of_an_exact_duplicate(report):
    assert flagged(report, "exact_duplicate") == {"Al_Gore/Al_Gore_0001_copy.jpg"}
    finding = next(finding for finding in report.findings if finding.kind == "exact_duplicate")
    assert finding.related == "Al_Gore/Al_Gore_0001.jpg"


def test_audit_flags_a_resized_recompressed_copy_as_near_duplicate(report):
    assert flagged(report, "near_duplicate") == {"Alejandro_Toledo/resaved.jpg"}


def test_audit_flags_the_planted_image_as_mislabelled_and_names_the_real_person(report):
    assert flagged(report, "mislabelled") == {"Al_Sharpton/planted.jpg"}
    finding = next(finding for finding in report.findings if finding.kind == "mislabelled")
    assert finding.related == "Alejandro_Toledo"


def test_audit_flags_people_with_too_few_usable_images(report):
    assert flagged(report, "too_few_images") == {"s3"}


def test_audit_without_extractor_does_not_guess_labels(faces_root):
    report = audit_faces(faces_root, progress=False, ignore=("too_few_images",))
    assert flagged(report, "mislabelled") == set()
    assert flagged(report, "near_duplicate") == {"Alejandro_Toledo/resaved.jpg"}
    assert report.extractor is None and "too_few_images" not in report.counts()


def test_audit_reuses_a_feature_cache_without_changing_it(faces_root, dlib_extractor, tmp_path):
    from faceid.features.extract import extract_features

    cache = tmp_path / "features"
    extract_features(faces_root, dlib_extractor, cache, progress=False)
    def digests() -> dict:
        return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in cache.rglob("*") if path.is_file()}

    before = digests()
    report = audit_faces(faces_root, extractor=dlib_extractor, features_dir=cache, progress=False)
    assert report.embedded == 0 and report.reused > 20
    assert flagged(report, "mislabelled") == {"Al_Sharpton/planted.jpg"}
    assert digests() == before


def test_audit_of_a_missing_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        audit_faces(tmp_path / "none", progress=False)


# --------------------------------------------------------------------------------------
# check_faces.py
# --------------------------------------------------------------------------------------


def run_check(*arguments: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = check_faces.main([*arguments, "-q"])
    return code, out.getvalue()


def test_script_prints_a_table_and_exits_0_despite_findings(faces_root, dlib_extractor_dir):
    code, text = run_check("--faces_path", str(faces_root), "--model_path", str(dlib_extractor_dir))
    assert code == 0
    assert any(line.split()[:2] == ["mislabelled", "Al_Sharpton/planted.jpg"] for line in text.splitlines())
    assert any(line.split()[:2] == ["1", "mislabelled:"] for line in text.splitlines())


def test_script_json_counts_every_kind_and_strict_exits_3(faces_root):
    code, text = run_check("--faces_path", str(faces_root), "--json", "--strict")
    payload = json.loads(text)
    assert code == 3
    assert payload["counts"]["unreadable"] == 2 and payload["counts"]["mislabelled"] == 0
    assert payload["mislabel_check"] is None
    assert {finding["kind"] for finding in payload["findings"]} >= {"no_face", "several_faces", "exact_duplicate"}


def test_script_missing_folder_exits_1_with_an_error(tmp_path, capsys):
    code, _ = run_check("--faces_path", str(tmp_path / "none"))
    assert code == 1 and capsys.readouterr().err.startswith("error:")


def test_quarantine_moves_flagged_files_and_never_overwrites(faces_root, tmp_path):
    faces = tmp_path / "faces"
    shutil.copytree(faces_root, faces)
    quarantine = tmp_path / "flagged"
    (quarantine / "Al_Gore").mkdir(parents=True)
    (quarantine / "Al_Gore" / "notes.jpg").write_text("moved by an earlier audit")
    def contents(root: Path) -> dict[str, bytes]:
        return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}

    files_before = contents(faces)

    code, text = run_check("--faces_path", str(faces), "--quarantine", str(quarantine), "--ignore", "too_few_images")

    assert code == 0
    moved, kept = contents(quarantine), contents(faces)
    assert (quarantine / "Al_Gore" / "notes.jpg").read_text() == "moved by an earlier audit"
    assert moved["Al_Gore/notes.1.jpg"] == files_before["Al_Gore/notes.jpg"]
    assert "Al_Gore/two_faces.jpg" in moved and "Al_Gore/Al_Gore_0001.jpg" in kept
    # Nothing lost: every original file is either still there or in quarantine with the same bytes.
    by_content = defaultdict(int)
    for content in [*kept.values(), *moved.values()]:
        by_content[content] += 1
    assert all(by_content[content] >= 1 for content in files_before.values())
    assert len(kept) + len(moved) == len(files_before) + 1
    assert text.count("moved ") == len(files_before) - len(kept)


def test_quarantine_inside_the_faces_folder_is_refused(faces_root, tmp_path, capsys):
    faces = tmp_path / "faces"
    shutil.copytree(faces_root, faces)
    code, _ = run_check("--faces_path", str(faces), "--quarantine", str(faces / "flagged"))
    assert code == 1 and "inside" in capsys.readouterr().err
    assert (faces / "Al_Gore" / "notes.jpg").exists()


def test_audit_and_extraction_agree_about_no_face_in_a_large_photo(tmp_path, dlib_extractor):
    """A 3400 px photo with a small face: found at full size, not when searched at 1600 px.

    The audit (like enrolment) searches large photos downscaled; extraction must search them the
    same way, or check_faces.py and the cache disagree about which photos have a face.
    """
    face = cv2.resize(read_image(LFW / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"), (125, 125),
                      interpolation=cv2.INTER_AREA)
    canvas = np.full((2000, 3400, 3), 128, np.uint8)
    canvas[900:1025, 1600:1725] = face
    person = tmp_path / "faces" / "Aaron_Peirsol"
    person.mkdir(parents=True)
    Image.fromarray(canvas).save(person / "wide.png")
    shutil.copy2(LFW / "Aaron_Peirsol" / "Aaron_Peirsol_0002.jpg", person)
    summary = extract_features(tmp_path / "faces", dlib_extractor, tmp_path / "features", workers=0, progress=False)
    report = audit_faces(tmp_path / "faces", progress=False)
    extraction_no_face = set(summary.skipped.get(NO_FACE, []))
    audit_no_face = {finding.where for finding in report.findings if finding.kind == "no_face"}
    assert extraction_no_face == audit_no_face == {"Aaron_Peirsol/wide.png"}
