"""Reading images, detecting and aligning faces on real photos."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import LFW, ORL
from PIL import Image

from faceid.detect.faces import align_face, detect_faces, whole_image_face
from faceid.errors import ImageReadError, InputError
from faceid.io.images import list_people, read_image


def test_read_image_gives_rgb_for_greyscale_pgm():
    image = read_image(ORL / "s1" / "1.pgm")
    assert image.shape == (112, 92, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], image[..., 1])


def test_read_image_rejects_text_file_named_jpg(tmp_path):
    fake = tmp_path / "photo.jpg"
    fake.write_text("not an image")
    with pytest.raises(ImageReadError, match="not a readable image"):
        read_image(fake)


def test_read_image_rejects_truncated_jpeg(tmp_path):
    source = next((LFW / "Aaron_Peirsol").iterdir()).read_bytes()
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(source[: len(source) // 2])
    with pytest.raises(ImageReadError):
        read_image(truncated)


def test_read_image_applies_exif_orientation(tmp_path):
    image = Image.open(next((LFW / "Aaron_Peirsol").iterdir()))
    wide = image.crop((0, 0, 250, 120))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    wide.save(path, exif=exif)
    assert read_image(path).shape[:2] == (250, 120)


def test_detect_faces_finds_one_face_with_landmarks_in_lfw_photo():
    faces = detect_faces(read_image(LFW / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"), upsample=1)
    assert len(faces) >= 1
    box = faces[0].box
    # LFW deep-funneled images are centred on the labelled face.
    assert abs((box.left + box.right) / 2 - 125) < 30 and abs((box.top + box.bottom) / 2 - 125) < 40
    assert faces[0].landmarks.shape == (5, 2)


def test_detect_faces_orders_two_faces_largest_first():
    small = read_image(LFW / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg")
    large = read_image(LFW / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg")
    small = np.asarray(Image.fromarray(small).resize((160, 160)))
    canvas = np.zeros((250, 420, 3), dtype=np.uint8)
    canvas[:250, :250] = large
    canvas[45:205, 260:420] = small
    faces = detect_faces(canvas, upsample=1)
    assert len(faces) == 2
    assert faces[0].box.area > faces[1].box.area
    assert faces[0].box.left < 250 <= faces[1].box.left


def test_detect_faces_finds_nothing_in_a_blank_image():
    assert detect_faces(np.full((200, 200, 3), 127, dtype=np.uint8)) == []


def test_detect_faces_rejects_unknown_detector():
    with pytest.raises(InputError, match="hog, cnn"):
        detect_faces(np.zeros((50, 50, 3), np.uint8), detector="fast")


def test_align_face_returns_chip_of_requested_size():
    image = read_image(LFW / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg")
    face = detect_faces(image)[0]
    chip = align_face(image, face, size=150, padding=0.25)
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
    # The aligned chip is a face, not a blank: it has texture.
    assert chip.std() > 20


def test_whole_image_face_is_resized_without_detection():
    image = read_image(ORL / "s2" / "1.pgm")
    chip = align_face(image, whole_image_face(image), size=64, padding=0.25)
    assert chip.shape == (64, 64, 3)


def test_list_people_rejects_missing_and_empty_folders(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list_people(tmp_path / "nope")
    with pytest.raises(InputError, match="no person folders"):
        list_people(tmp_path)


def test_list_people_ignores_hidden_entries(tmp_path):
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / ".DS_Store").write_text("x")
    (tmp_path / "alice" / "1.jpg").write_text("x")
    (tmp_path / ".cache").mkdir()
    people = list_people(tmp_path)
    assert list(people) == ["alice"] and [path.name for path in people["alice"]] == ["1.jpg"]
