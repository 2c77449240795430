"""Enrolment: capture from the clip, crops from selfies, files that never overwrite."""

from __future__ import annotations

import io
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import LFW, ORL, VIDEO
from PIL import Image

from faceid.apps.enrol import CROP_SIZE, FRAMES_DIR, CropOptions, crop_face, find_faces, save_new_image
from faceid.cli import capture, selfies2face
from faceid.detect.faces import align_face, detect_faces, whole_image_face
from faceid.detect.quality import DEFAULT_THRESHOLDS, measure_face, thumbnail, thumbnail_distance, yaw_ratio
from faceid.io.images import read_image
from faceid.io.store import write_new_file

# --------------------------------------------------------------------------------------
# A messy enrolment folder, built from real faces (shared with test_audit.py)
# --------------------------------------------------------------------------------------


def two_faces_side_by_side(larger: Path, smaller: Path) -> Image.Image:
    """Two LFW photos pasted side by side, the second shrunk: two faces, the first the largest."""
    canvas = Image.new("RGB", (420, 250))
    canvas.paste(Image.open(larger).convert("RGB"), (0, 0))
    canvas.paste(Image.open(smaller).convert("RGB").resize((160, 160)), (260, 45))
    return canvas


def add_problem_files(folder: Path) -> dict[str, Path]:
    """Into one person's folder: two faces, a text file named .jpg, a truncated JPEG, no face."""
    files = {
        "two_faces": folder / "two_faces.jpg",
        "text": folder / "notes.jpg",
        "truncated": folder / "cut.jpg",
        "no_face": folder / "background.jpg",
    }
    two_faces_side_by_side(LFW / "Al_Gore" / "Al_Gore_0005.jpg", LFW / "Al_Sharpton" / "Al_Sharpton_0005.jpg").save(
        files["two_faces"], quality=95)
    files["text"].write_text("shopping list: eggs, milk\n")
    whole = (LFW / "Al_Gore" / "Al_Gore_0006.jpg").read_bytes()
    files["truncated"].write_bytes(whole[: len(whole) // 2])
    # The plain background of an LFW photo's top-left corner: a real photo, no face in it.
    Image.open(LFW / "Al_Gore" / "Al_Gore_0007.jpg").crop((0, 0, 70, 70)).resize((140, 140)).save(files["no_face"])
    return files


def save_exif_rotated(source: Path, destination: Path) -> None:
    """Store a photo sideways with EXIF orientation 6, as phones do: only EXIF makes it upright."""
    image = Image.open(source).transpose(Image.Transpose.ROTATE_90)  # what the sensor recorded
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(destination, exif=exif, quality=95)


# --------------------------------------------------------------------------------------
# Quality measures on real faces
# --------------------------------------------------------------------------------------


def clip_frame(index: int) -> np.ndarray:
    from faceid.io.video import VideoSource

    with VideoSource(VIDEO) as source:
        return next(itertools.islice(source, index, None))[2]


def only_face_quality(frame: np.ndarray):
    faces = find_faces(frame)
    assert len(faces) == 1
    return measure_face(faces[0], crop_face(frame, faces[0]))


def test_close_up_of_miranda_passes_every_check():
    assert only_face_quality(clip_frame(170)).problems() == []


def test_out_of_focus_audience_member_is_too_blurry():
    # Frame 225, HOG (which finds one face there: an out-of-focus audience member further back).
    frame = clip_frame(225)
    hog = CropOptions(detector="hog")
    faces = find_faces(frame, hog)
    assert len(faces) == 1
    quality = measure_face(faces[0], crop_face(frame, faces[0], hog))
    assert quality.problems() == ["too blurry"]
    assert quality.sharpness < DEFAULT_THRESHOLDS.min_sharpness / 2


def test_lacamoires_profile_is_turned_away():
    # Frame 30: the profile close-up HOG never finds; BlazeFace does, and its keypoints say how far
    # the head is turned (yaw ~0.7 where the limit is 0.3).
    frame = clip_frame(30)
    profile = find_faces(frame)[0]
    assert profile.box.width >= 100 and profile.keypoints is not None
    assert "turned away" in measure_face(profile, crop_face(frame, profile)).problems()


def test_the_audience_in_front_is_turned_and_mostly_blurry():
    # Frame 225, BlazeFace (the default): the three people in front, all looking to the left, in
    # three-quarter view. The pose check reads BlazeFace's own keypoints (dlib's predictor on their
    # boxes fits a frontal shape) and turns all three away; the two at the sides are out of focus.
    frame = clip_frame(225)
    faces = find_faces(frame)
    assert len(faces) >= 3
    problems = [measure_face(face, crop_face(frame, face)).problems() for face in faces]
    assert all("turned away" in found and "too small" not in found for found in problems)
    assert sum("too blurry" in found for found in problems) >= 2


def test_yaw_is_zero_for_a_frontal_face_and_flips_sign_when_mirrored():
    image = read_image(LFW / "Al_Sharpton" / "Al_Sharpton_0003.jpg")
    mirrored = np.ascontiguousarray(image[:, ::-1])
    yaw, mirrored_yaw = (yaw_ratio(detect_faces(picture)[0].landmarks) for picture in (image, mirrored))
    assert abs(yaw) < 0.15
    assert yaw * mirrored_yaw <= 0 and abs(abs(yaw) - abs(mirrored_yaw)) < 0.05


def test_yaw_ignores_head_tilt_and_grows_with_the_nose_offset():
    # dlib's order: eye on the image's right (outer, inner), eye on the left (outer, inner), nose.
    frontal = np.array([[70, 50], [60, 50], [30, 50], [40, 50], [50, 80]], dtype=np.float32)
    turned = frontal.copy()
    turned[4, 0] += 15  # eye centres are 30 px apart: the nose moves half that towards the right one
    angle = np.deg2rad(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], dtype=np.float32)
    assert yaw_ratio(frontal) == pytest.approx(0.0)
    assert yaw_ratio(frontal @ rotation.T) == pytest.approx(0.0, abs=1e-6)
    assert yaw_ratio(turned) == pytest.approx(0.5)


def test_a_reencoded_copy_is_a_near_duplicate_and_another_photo_is_not():
    def chip_thumbnail(image: np.ndarray) -> np.ndarray:
        return thumbnail(crop_face(image, find_faces(image)[0]))

    original = read_image(LFW / "Al_Gore" / "Al_Gore_0001.jpg")
    buffer = io.BytesIO()
    Image.fromarray(original).resize((150, 150)).save(buffer, "JPEG", quality=40)
    copy = np.asarray(Image.open(buffer).convert("RGB"))
    other_photo = read_image(LFW / "Al_Gore" / "Al_Gore_0003.jpg")
    limit = DEFAULT_THRESHOLDS.near_duplicate
    assert thumbnail_distance(chip_thumbnail(original), chip_thumbnail(copy)) <= limit
    assert thumbnail_distance(chip_thumbnail(original), chip_thumbnail(other_photo)) > limit


def test_saved_crop_embeds_like_the_pipelines_own_chip(dlib_extractor):
    # extract_features.py --no_detect resizes a crop whole; it must see the chip detection would give.
    image = read_image(LFW / "Amelia_Vega" / "Amelia_Vega_0001.jpg")
    face = detect_faces(image)[0]
    saved_crop = crop_face(image, face)
    direct_chip = align_face(image, face, dlib_extractor.chip_size, dlib_extractor.align_padding)
    resized_crop = align_face(saved_crop, whole_image_face(saved_crop), dlib_extractor.chip_size, 0.25)
    vectors = dlib_extractor.embed(np.stack([direct_chip, resized_crop]))
    assert saved_crop.shape == (CROP_SIZE, CROP_SIZE, 3)
    assert np.linalg.norm(vectors[0] - vectors[1]) < 0.06  # same-person photos are ~0.3-0.5 apart


def test_a_large_photo_is_searched_downscaled_and_cropped_like_the_small_one():
    image = read_image(LFW / "Al_Gore" / "Al_Gore_0001.jpg")
    big = np.asarray(Image.fromarray(image).resize((2000, 2000), Image.Resampling.BICUBIC))
    faces = find_faces(big, CropOptions(max_width=500))
    reference = find_faces(image)[0]
    assert len(faces) == 1
    assert abs(faces[0].box.width - 8 * reference.box.width) < 0.15 * 8 * reference.box.width
    distance = thumbnail_distance(thumbnail(crop_face(big, faces[0])), thumbnail(crop_face(image, reference)))
    assert distance < DEFAULT_THRESHOLDS.near_duplicate


# --------------------------------------------------------------------------------------
# Files that never overwrite
# --------------------------------------------------------------------------------------


def test_write_new_file_refuses_an_existing_name_and_leaves_it_intact(tmp_path):
    target = tmp_path / "alice_0001.png"
    target.write_bytes(b"first")
    with pytest.raises(FileExistsError):
        write_new_file(target, b"second")
    assert target.read_bytes() == b"first"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["alice_0001.png"]  # no temporary left behind


def test_save_new_image_continues_after_the_highest_number(tmp_path):
    (tmp_path / "alice_0007.png").write_bytes(b"old")
    (tmp_path / "holiday.jpg").write_bytes(b"old")
    path = save_new_image(tmp_path, "alice", np.zeros((8, 8, 3), np.uint8))
    assert path.name == "alice_0008.png"
    assert (tmp_path / "alice_0007.png").read_bytes() == b"old"


# --------------------------------------------------------------------------------------
# capture.py --auto on the clip, headless
# --------------------------------------------------------------------------------------


def run_capture(folder: Path, *extra: str) -> tuple[int, dict]:
    import contextlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = capture.main(["--output", str(folder), "--video_path", str(VIDEO), "--auto", "--no_display",
                             "--every", "5", "--max", "3", "--max_frames", "150", "--json", "-q", *extra])
    return code, json.loads(out.getvalue())


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    """Two headless --auto runs into one folder; what the folder held after the first."""
    folder = tmp_path_factory.mktemp("faces") / "miranda"
    first_code, first = run_capture(folder)
    after_first = {path.name: path.read_bytes() for path in folder.iterdir()}
    second_code, second = run_capture(folder)
    return {"folder": folder, "codes": (first_code, second_code), "first": first, "second": second,
            "after_first": after_first}


def test_auto_capture_saves_crops_of_exactly_one_face(captured):
    crops = sorted(captured["folder"].glob("*.png"))
    assert captured["codes"] == (0, 0)
    assert len(crops) == 6
    for crop in crops:
        image = read_image(crop)
        assert image.shape == (CROP_SIZE, CROP_SIZE, 3)
        # HOG checks the crop: a chip is filled by its face, which BlazeFace's default "back" model
        # (made for faces smaller in the frame) misses or splits in two; HOG finds it whole, once.
        assert len(detect_faces(image, detector="hog")) == 1


def test_auto_capture_saves_no_near_duplicates(captured):
    thumbnails = [thumbnail(read_image(path)) for path in sorted(captured["folder"].glob("*.png"))]
    distances = [thumbnail_distance(a, b) for a, b in itertools.combinations(thumbnails, 2)]
    assert min(distances) > DEFAULT_THRESHOLDS.near_duplicate


def test_second_capture_run_appends_under_new_names(captured):
    names = sorted(path.name for path in captured["folder"].iterdir())
    assert names == [f"miranda_{number:04d}.png" for number in range(1, 7)]
    assert [Path(path).name for path in captured["second"]["saved"]] == names[3:]
    for name, content in captured["after_first"].items():
        assert (captured["folder"] / name).read_bytes() == content


def test_second_capture_run_skips_faces_already_in_the_folder(captured):
    assert captured["second"]["existing"] == 3
    # The first run's frames come round again and are recognised as already saved.
    assert captured["second"]["rejected"].get("near duplicate", 0) >= 3


def test_save_frames_keeps_the_full_frame_beside_the_crop(tmp_path):
    code, summary = run_capture(tmp_path / "miranda", "--max", "1", "--save_frames")
    assert code == 0 and len(summary["saved"]) == 1
    frame = read_image(tmp_path / "miranda" / FRAMES_DIR / Path(summary["saved"][0]).name)
    assert frame.shape == (360, 640, 3)


def test_capture_without_auto_or_display_says_to_use_auto(tmp_path, capsys):
    code = capture.main(["--output", str(tmp_path / "miranda"), "--video_path", str(VIDEO), "--no_display", "-q"])
    assert code == 1
    assert "--auto" in capsys.readouterr().err
    assert not (tmp_path / "miranda").exists()


def test_capture_reports_a_missing_video(tmp_path, capsys):
    code = capture.main(["--output", str(tmp_path / "x"), "--video_path", str(tmp_path / "none.mp4"), "--auto",
                         "--no_display", "-q"])
    assert code == 1 and "does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# selfies2face.py
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def selfies(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("selfies")
    gore = root / "Al_Gore"
    gore.mkdir()
    for number in (1, 2, 3):
        shutil.copy2(LFW / "Al_Gore" / f"Al_Gore_000{number}.jpg", gore)
    save_exif_rotated(LFW / "Al_Gore" / "Al_Gore_0004.jpg", gore / "phone.jpg")
    add_problem_files(gore)
    (root / "s2").mkdir()
    for number in (1, 2):
        shutil.copy2(ORL / "s2" / f"{number}.pgm", root / "s2")
    return root


def run_selfies(*arguments: str) -> tuple[int, dict]:
    import contextlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = selfies2face.main([*arguments, "--json", "-q"])
    return code, json.loads(out.getvalue()) if code == 0 else {}


@pytest.fixture(scope="module")
def converted(selfies, tmp_path_factory):
    faces = tmp_path_factory.mktemp("out") / "faces"
    code, summary = run_selfies("--face_selfies", str(selfies), "--faces_path", str(faces))
    return {"faces": faces, "code": code, "summary": summary}


def test_selfies_summary_counts_each_outcome_per_person(converted):
    assert converted["code"] == 0
    people = converted["summary"]["people"]
    assert people["Al_Gore"] == {"saved": 4, "already done": 0, "no face": 1, "several faces": 1, "unreadable": 2}
    assert people["s2"]["saved"] == 2
    assert converted["summary"]["files"]["unreadable"] == ["Al_Gore/cut.jpg", "Al_Gore/notes.jpg"]


def test_selfies_become_one_face_crops_in_the_same_layout(converted):
    crops = sorted(path.relative_to(converted["faces"]).as_posix() for path in converted["faces"].rglob("*.png"))
    assert crops == ["Al_Gore/Al_Gore_0001.png", "Al_Gore/Al_Gore_0002.png", "Al_Gore/Al_Gore_0003.png",
                     "Al_Gore/phone.png", "s2/1.png", "s2/2.png"]
    for crop in crops:
        image = read_image(converted["faces"] / crop)
        # HOG checks the crop, as for capture's: "back" finds no face in ORL's chips and a second,
        # false box beside the face in phone.png's.
        assert image.shape == (CROP_SIZE, CROP_SIZE, 3) and len(detect_faces(image, detector="hog")) == 1


def test_selfies_respect_exif_orientation(converted):
    # Stored sideways: without EXIF the detector finds no face and no crop is written.
    crop = read_image(converted["faces"] / "Al_Gore" / "phone.png")
    upright = read_image(LFW / "Al_Gore" / "Al_Gore_0004.jpg")
    reference = crop_face(upright, find_faces(upright)[0])
    assert thumbnail_distance(thumbnail(crop), thumbnail(reference)) < DEFAULT_THRESHOLDS.near_duplicate


def test_selfies_rerun_skips_what_is_done_and_changes_nothing(selfies, converted):
    def state() -> dict:
        return {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in converted["faces"].rglob("*.png")}

    before = state()
    code, summary = run_selfies("--face_selfies", str(selfies), "--faces_path", str(converted["faces"]))
    assert code == 0
    assert summary["totals"]["saved"] == 0 and summary["totals"]["already done"] == 6
    assert state() == before


def test_multi_largest_rerun_saves_only_the_photo_skipped_before(selfies, converted, tmp_path):
    faces = tmp_path / "faces"
    shutil.copytree(converted["faces"], faces)
    code, summary = run_selfies("--face_selfies", str(selfies), "--faces_path", str(faces), "--multi", "largest")
    assert code == 0 and summary["totals"]["saved"] == 1
    crop = read_image(faces / "Al_Gore" / "two_faces.png")
    al_gore = read_image(LFW / "Al_Gore" / "Al_Gore_0005.jpg")
    assert thumbnail_distance(thumbnail(crop), thumbnail(crop_face(al_gore, find_faces(al_gore)[0]))) < 0.05


def test_selfies_accept_the_original_option_spellings():
    args = selfies2face.build_parser().parse_args(["--faces_selfies", "in", "--face_path", "out"])
    assert (str(args.face_selfies), str(args.faces_path)) == ("in", "out")


def test_selfies_missing_input_folder_is_fatal(tmp_path, capsys):
    code = selfies2face.main(["--face_selfies", str(tmp_path / "none"), "--faces_path", str(tmp_path / "out"), "-q"])
    assert code == 1 and "does not exist" in capsys.readouterr().err


def test_selfies_refuse_an_output_folder_inside_the_input(selfies, capsys):
    code = selfies2face.main(["--face_selfies", str(selfies), "--faces_path", str(selfies / "crops"), "-q"])
    assert code == 1 and "inside" in capsys.readouterr().err
    assert not (selfies / "crops").exists()
