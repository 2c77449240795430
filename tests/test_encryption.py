"""Encryption at rest, tamper evidence and erasure, on real LFW faces through the scripts themselves."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from conftest import LFW, copy_people, lfw_people

from faceid.cli import extract_features as extract_script
from faceid.cli import forget as forget_script
from faceid.cli import identify as identify_script
from faceid.cli import keys as keys_script
from faceid.cli import selfies2face as selfies_script
from faceid.features.cache import FeatureCache
from faceid.io import sealed

PEOPLE = lfw_people(min_images=6, count=4)
STRANGERS = lfw_people(min_images=2, count=2, skip=200)


def run_identify(cache: Path, extractor: Path, probes: Path, jsonl: Path, *extra: str) -> int:
    return identify_script.main(["--features", str(cache), "--model", str(extractor), "--images", str(probes),
                                 "--jsonl", str(jsonl), "--no_display", "-q", *extra])


def faces_seen(jsonl: Path) -> list[dict]:
    """What test.py said about each face, without the timings (which differ run to run)."""
    return [{key: value for key, value in json.loads(line).items() if key != "ms"} for line in jsonl.read_text().splitlines()]


def file_digests(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory, dlib_extractor_dir):
    """4 LFW people x 4 photos enrolled, their 5th photos and 2 strangers as probes, two keys, and the
    same cache built plaintext and encrypted."""
    root = tmp_path_factory.mktemp("encryption")
    faces = copy_people(LFW, root / "faces", PEOPLE, max_images=4)
    probes = root / "probes"
    probes.mkdir()
    for person in PEOPLE:
        shutil.copy2(sorted((LFW / person).iterdir())[4], probes)
    for person in STRANGERS:
        shutil.copy2(sorted((LFW / person).iterdir())[0], probes)
    for name in ("k1", "k2"):
        assert keys_script.main(["new", "--output", str(root / name)]) == 0
    base = ["--faces_path", str(faces), "--model_path", str(dlib_extractor_dir), "--workers", "0", "-q"]
    assert extract_script.main([*base, "--features", str(root / "plain")]) == 0
    assert extract_script.main([*base, "--features", str(root / "sealed"), "--key_file", str(root / "k1")]) == 0
    return {"root": root, "faces": faces, "probes": probes, "extractor": dlib_extractor_dir,
            "plain": root / "plain", "sealed": root / "sealed", "k1": root / "k1", "k2": root / "k2"}


def test_a_key_file_is_owner_only_and_never_replaced(world, capsys):
    key_file = world["k1"]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    before = key_file.read_bytes()
    assert keys_script.main(["new", "--output", str(key_file)]) == 1
    assert "never overwritten" in capsys.readouterr().err
    assert key_file.read_bytes() == before
    assert keys_script.main(["id", "--key_file", str(key_file)]) == 0
    key_id = capsys.readouterr().out.strip()
    assert key_id == sealed.read_key_file(key_file).id and len(key_id) == 16
    assert key_id not in before.decode()  # the id names the key without being it


def test_a_malformed_key_is_named(tmp_path, monkeypatch):
    (tmp_path / "short").write_text("c2hvcnQ=\n")
    with pytest.raises(sealed.SealError, match="holds 5 bytes"):
        sealed.read_key_file(tmp_path / "short")
    (tmp_path / "junk").write_text("not base64 at all!\n")
    with pytest.raises(sealed.SealError, match="not a base64 key"):
        sealed.read_key_file(tmp_path / "junk")
    with pytest.raises(sealed.SealError, match="not found"):
        sealed.read_key_file(tmp_path / "missing")
    from faceid.cli import add_verbosity, script_key

    parser = __import__("argparse").ArgumentParser()
    add_verbosity(parser)
    key = sealed.new_key()
    monkeypatch.setenv(sealed.KEY_ENV, key.text())
    assert script_key(parser.parse_args([])).id == key.id  # a script: --key_file, else $FACEID_KEY
    (tmp_path / "k").write_text(sealed.new_key().text())
    assert script_key(parser.parse_args(["--key_file", str(tmp_path / "k")])).id != key.id  # the file wins
    monkeypatch.setenv(sealed.KEY_ENV, "not base64 at all!")
    with pytest.raises(sealed.SealError, match=r"\$FACEID_KEY is not a base64 key"):
        script_key(parser.parse_args([]))


def test_the_package_reads_no_key_from_the_environment_only_the_scripts_do(world, tmp_path, monkeypatch):
    """$FACEID_KEY is read at the boundary (a script), never deep inside: a library call without ``key=``
    writes plaintext and cannot open what the script encrypted with the same environment."""
    from faceid.backbones import load_extractor
    from faceid.features.extract import extract_features

    faces = copy_people(world["faces"], tmp_path / "faces", PEOPLE[:2], max_images=2)
    key = sealed.read_key_file(world["k1"])
    monkeypatch.setenv(sealed.KEY_ENV, key.text())
    extract_features(faces, load_extractor(world["extractor"]), tmp_path / "library", workers=0, progress=False)
    assert extract_script.main(["--faces_path", str(faces), "--model_path", str(world["extractor"]),
                                "--features", str(tmp_path / "script"), "--workers", "0", "-q"]) == 0
    library, script = tmp_path / "library", tmp_path / "script"
    assert json.loads((library / "manifest.json").read_text())["encryption"] is None
    assert json.loads((script / "manifest.json").read_text())["encryption"]["key_id"] == key.id
    for person in PEOPLE[:2]:
        assert not sealed.is_sealed((library / "people" / f"{person}.npz").read_bytes())
        assert sealed.sealed_key_id((script / "people" / f"{person}.npz").read_bytes()) == key.id
    assert sorted(FeatureCache.load(library).people) == sorted(PEOPLE[:2])  # plaintext, no key needed
    with pytest.raises(sealed.KeyRequiredError):
        FeatureCache.load(script)  # the environment's key is not picked up here
    opened = FeatureCache.load(script, key=key)
    for person in PEOPLE[:2]:
        np.testing.assert_array_equal(opened.people[person].vectors, FeatureCache.load(library).people[person].vectors)


def test_no_module_below_the_boundary_reads_a_key_from_the_environment():
    """Only faceid/cli/ and faceid/api.py may look up $FACEID_KEY (the behaviour is checked above)."""
    import re

    import faceid

    package = Path(faceid.__file__).parent
    lookup = re.compile(r"(environ|getenv)\b.*(KEY_ENV|FACEID_KEY)|(KEY_ENV|FACEID_KEY).*\b(environ|getenv)\b")
    found = [f"{path.relative_to(package)}:{number}" for path in sorted(package.rglob("*.py"))
             if path.relative_to(package).parts[0] not in ("cli", "api.py")
             for number, line in enumerate(path.read_text().splitlines(), start=1)
             if lookup.search(line) and not line.lstrip().startswith(("#", '"', "'", "f\"", "``"))]
    assert not found, found


def test_identification_is_identical_with_and_without_encryption(world, tmp_path):
    assert run_identify(world["plain"], world["extractor"], world["probes"], tmp_path / "plain.jsonl") == 0
    assert run_identify(world["sealed"], world["extractor"], world["probes"], tmp_path / "sealed.jsonl",
                        "--key_file", str(world["k1"])) == 0
    plain, encrypted = faces_seen(tmp_path / "plain.jsonl"), faces_seen(tmp_path / "sealed.jsonl")
    assert plain == encrypted
    named = {face["source"].rsplit("_", 1)[0]: face["name"] for face in plain}
    assert all(named[person] == person for person in PEOPLE)  # the check compares real identifications


def test_encrypted_files_hold_none_of_the_vectors_bytes(world):
    cache = FeatureCache.load(world["sealed"], key=sealed.read_key_file(world["k1"]))
    plain_cache = FeatureCache.load(world["plain"])
    for person in PEOPLE:
        on_disk = (world["sealed"] / "people" / f"{person}.npz").read_bytes()
        assert sealed.is_sealed(on_disk)
        vectors = cache.people[person].vectors
        np.testing.assert_array_equal(vectors, plain_cache.people[person].vectors)
        raw = vectors.astype(np.float32).tobytes()
        chunks = {raw[start:start + 8] for start in range(0, len(raw), 4)}
        assert not any(chunk in on_disk for chunk in chunks)
        assert b"vectors" not in on_disk and person.encode() + b".jpg" not in on_disk
        assert raw[:8] in (world["plain"] / "people" / f"{person}.npz").read_bytes()  # the probe can find bytes


def _flip_a_byte(cache: Path, world) -> None:
    path = cache / "people" / f"{PEOPLE[0]}.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(cache: Path, world) -> None:
    path = cache / "people" / f"{PEOPLE[0]}.npz"
    path.write_bytes(path.read_bytes()[:-20])


def _plaintext_among_encrypted(cache: Path, world) -> None:
    shutil.copy2(world["plain"] / "people" / f"{PEOPLE[0]}.npz", cache / "people" / f"{PEOPLE[0]}.npz")


def _swap_two_people(cache: Path, world) -> None:
    first, second = (cache / "people" / f"{person}.npz" for person in PEOPLE[:2])
    data = first.read_bytes()
    first.write_bytes(second.read_bytes())
    second.write_bytes(data)


def _edit_the_manifest(cache: Path, world) -> None:
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["people"][PEOPLE[0]] += 1
    (cache / "manifest.json").write_text(json.dumps(manifest))


def _an_older_copy(cache: Path, world) -> None:
    """A validly sealed file of the same person from another cache made with the same key."""
    other = world["root"] / "other_sealed"
    if not other.exists():
        shutil.copytree(world["faces"], world["root"] / "faces_fewer")
        (world["root"] / "faces_fewer" / PEOPLE[0] / sorted(os.listdir(world["faces"] / PEOPLE[0]))[0]).unlink()
        assert extract_script.main(["--faces_path", str(world["root"] / "faces_fewer"), "--model_path",
                                    str(world["extractor"]), "--workers", "0", "-q", "--features", str(other),
                                    "--key_file", str(world["k1"])]) == 0
    shutil.copy2(other / "people" / f"{PEOPLE[0]}.npz", cache / "people" / f"{PEOPLE[0]}.npz")


@pytest.mark.parametrize(("spoil", "key", "message"), [
    (None, None, "is encrypted (key "),
    (None, "k2", "not with key "),
    (_flip_a_byte, "k1", "fails authentication"),
    (_truncate, "k1", "is truncated"),
    (_plaintext_among_encrypted, "k1", "is not encrypted, but this feature cache is"),
    (_swap_two_people, "k1", "moved or swapped"),
    (_edit_the_manifest, "k1", "manifest.json was changed after it was written"),
    (_an_older_copy, "k1", "does not match the hash in its cache's manifest"),
], ids=["no key", "wrong key", "one flipped byte", "truncated", "plaintext file", "swapped files", "edited manifest",
        "older copy"])
def test_each_way_an_encrypted_cache_is_unusable_has_its_own_error(world, tmp_path, capsys, spoil, key, message):
    cache = tmp_path / "cache"
    shutil.copytree(world["sealed"], cache)
    if spoil is not None:
        spoil(cache, world)
    before = file_digests(cache)
    extra = [] if key is None else ["--key_file", str(world[key])]
    assert run_identify(cache, world["extractor"], world["probes"], tmp_path / "out.jsonl", *extra) == 1
    error = capsys.readouterr().err
    assert message in error and str(cache) in error
    assert not (tmp_path / "out.jsonl").exists() or not faces_seen(tmp_path / "out.jsonl")  # nothing identified
    code = extract_script.main(["--faces_path", str(world["faces"]), "--model_path", str(world["extractor"]),
                                "--features", str(cache), "--workers", "0", "-q", *extra])
    if spoil is _an_older_copy:  # a valid file of the right person: extraction re-checks every image and repairs it
        assert code == 0 and run_identify(cache, world["extractor"], world["probes"], tmp_path / "out.jsonl", *extra) == 0
    else:  # extraction refuses the same way and overwrites nothing
        assert code == 1 and file_digests(cache) == before


def test_a_key_on_a_plaintext_cache_is_refused_until_it_is_converted(world, tmp_path, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(world["plain"], cache)
    before = file_digests(cache)
    base = ["--faces_path", str(world["faces"]), "--model_path", str(world["extractor"]), "--features", str(cache),
            "--workers", "0", "-q", "--key_file", str(world["k1"])]
    assert extract_script.main(base) == 1
    assert "is not encrypted" in capsys.readouterr().err and file_digests(cache) == before
    assert extract_script.main([*base, "--encrypt"]) == 0
    assert all(sealed.is_sealed(path.read_bytes()) for path in (cache / "people").iterdir())


def test_an_interrupted_conversion_resumes_and_ends_fully_encrypted(world, tmp_path, capsys, monkeypatch):
    import faceid.features.cache as cache_module

    cache = tmp_path / "cache"
    shutil.copytree(world["plain"], cache)
    assert cache_module.FeatureCache.load(cache).people  # plaintext, readable without a key
    real_reseal, calls = cache_module.reseal_file, []

    def interrupted_half_way(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_reseal(*args, **kwargs)

    monkeypatch.setattr(cache_module, "reseal_file", interrupted_half_way)
    convert = ["encrypt", "--features", str(cache), "--key_file", str(world["k1"])]
    assert keys_script.main(convert) == 130
    files = sorted((cache / "people").glob("*.npz"))
    assert sum(sealed.is_sealed(path.read_bytes()) for path in files) == 2  # half way: 2 of 4
    capsys.readouterr()
    assert run_identify(cache, world["extractor"], world["probes"], tmp_path / "half.jsonl",
                        "--key_file", str(world["k1"])) == 1
    assert "interrupted half way" in capsys.readouterr().err
    assert keys_script.main(["encrypt", "--features", str(cache), "--key_file", str(world["k2"])]) == 1  # other key
    monkeypatch.setattr(cache_module, "reseal_file", real_reseal)
    assert keys_script.main([*convert, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report[str(cache)] == {"rewritten": 2, "already": 2}
    assert all(sealed.is_sealed(path.read_bytes()) for path in files)
    assert run_identify(cache, world["extractor"], world["probes"], tmp_path / "done.jsonl",
                        "--key_file", str(world["k1"])) == 0
    assert run_identify(world["plain"], world["extractor"], world["probes"], tmp_path / "plain.jsonl") == 0
    assert faces_seen(tmp_path / "done.jsonl") == faces_seen(tmp_path / "plain.jsonl")


def test_rotation_re_encrypts_with_the_new_key_and_decrypt_restores_plaintext(world, tmp_path, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(world["sealed"], cache)
    assert keys_script.main(["rotate", "--features", str(cache), "--key_file", str(world["k1"]),
                             "--new_key_file", str(world["k2"])]) == 0
    new_id = sealed.read_key_file(world["k2"]).id
    assert all(sealed.sealed_key_id(path.read_bytes()) == new_id for path in (cache / "people").iterdir())
    capsys.readouterr()
    assert run_identify(cache, world["extractor"], world["probes"], tmp_path / "old.jsonl",
                        "--key_file", str(world["k1"])) == 1
    assert "not with key" in capsys.readouterr().err
    assert run_identify(cache, world["extractor"], world["probes"], tmp_path / "new.jsonl",
                        "--key_file", str(world["k2"])) == 0
    assert keys_script.main(["decrypt", "--features", str(cache), "--key_file", str(world["k2"])]) == 0
    assert run_identify(cache, world["extractor"], world["probes"], tmp_path / "plain.jsonl") == 0
    assert faces_seen(tmp_path / "new.jsonl") == faces_seen(tmp_path / "plain.jsonl")


def test_crops_are_written_encrypted_and_read_back_by_worker_processes(world, tmp_path, capsys):
    crops = tmp_path / "crops"
    key = ["--key_file", str(world["k1"])]
    assert selfies_script.main(["--face_selfies", str(world["faces"]), "--faces_path", str(crops), "-q", *key]) == 0
    files = sorted(crops.rglob("*.png"))
    # A crop for every photo but Alejandro_Toledo_0003: selfies2face skips a photo with several faces
    # (--multi skip), and the woman at its right edge is a real second face (BlazeFace finds her, HOG did not).
    photos = sorted(path.stem for path in world["faces"].rglob("*.jpg"))
    assert sorted(path.stem for path in files) == [stem for stem in photos if stem != "Alejandro_Toledo_0003"]
    assert all(sealed.is_sealed(path.read_bytes()) for path in files)
    base = ["--faces_path", str(crops), "--model_path", str(world["extractor"]), "--no_detect", "-q"]
    capsys.readouterr()
    assert extract_script.main([*base, "--features", str(tmp_path / "none"), "--workers", "0"]) == 1
    assert "is encrypted (key" in capsys.readouterr().err and not (tmp_path / "none").exists()
    assert extract_script.main([*base, "--features", str(tmp_path / "sealed"), "--workers", "1", *key]) == 0
    # The same crops decrypted by keys.py give the very same vectors.
    assert keys_script.main(["decrypt", "--faces_path", str(crops), *key]) == 0
    assert not any(sealed.is_sealed(path.read_bytes()) for path in files)
    assert extract_script.main([*base, "--features", str(tmp_path / "plain"), "--workers", "0"]) == 0
    encrypted_cache = FeatureCache.load(tmp_path / "sealed", key=sealed.read_key_file(world["k1"]))
    plain_cache = FeatureCache.load(tmp_path / "plain")
    for person in PEOPLE:
        np.testing.assert_array_equal(encrypted_cache.people[person].vectors, plain_cache.people[person].vectors)
        assert encrypted_cache.people[person].hashes == plain_cache.people[person].hashes  # plaintext hashes


def test_nothing_decrypted_reaches_the_disk(world, tmp_path, monkeypatch):
    """Every temporary file of a private write is sealed before it is renamed into place."""
    import faceid.io.store as store

    written: list[tuple[str, bytes]] = []
    real_seal = store._seal

    def spy(temporary: Path) -> None:
        written.append((temporary.name, temporary.read_bytes()[:8]))
        real_seal(temporary)

    monkeypatch.setattr(store, "_seal", spy)
    from faceid.cli import compute_mean

    cache = tmp_path / "cache"
    assert extract_script.main(["--faces_path", str(world["faces"]), "--model_path", str(world["extractor"]),
                                "--features", str(cache), "--workers", "0", "-q", "--key_file", str(world["k1"])]) == 0
    assert compute_mean.main(["--features_path", str(cache), "-q", "--key_file", str(world["k1"])]) == 0
    private = [(name, head) for name, head in written if not name.endswith(".json")]
    assert len(private) == len(PEOPLE) + 1  # the person files and stats.npz
    assert all(head == sealed.MAGIC for _, head in private)


def test_training_chips_are_sealed_and_open_in_memory(world, tmp_path):
    from faceid.detect.faces import FaceCropper, FaceOptions
    from faceid.train.siamese_data import FaceSet, prepare_chips

    paths = sorted(world["faces"].rglob("*.jpg"))[:6]
    faces = FaceSet(paths=paths, labels=np.zeros(len(paths)), names=["x"], layout="folders")
    cropper = FaceCropper(FaceOptions(), 150, 0.25)
    plain = prepare_chips(faces, cropper, tmp_path / "plain", workers=0, progress=False)
    key = sealed.read_key_file(world["k1"])
    encrypted = prepare_chips(faces, cropper, tmp_path / "sealed", workers=0, progress=False, key=key)
    assert sealed.is_sealed((tmp_path / "sealed" / "chips.npy").read_bytes())
    np.testing.assert_array_equal(np.asarray(plain.chips), encrypted.chips)
    # A plaintext chips file is prepared again, encrypted, when a key is in use.
    again = prepare_chips(faces, cropper, tmp_path / "plain", workers=0, progress=False, key=key)
    assert sealed.is_sealed((tmp_path / "plain" / "chips.npy").read_bytes())
    np.testing.assert_array_equal(again.chips, encrypted.chips)


def test_forget_removes_a_person_from_the_cache_the_galleries_the_stats_and_the_folder(world, tmp_path, capsys):
    from faceid.cli import compute_mean
    from faceid.match.gallery import Gallery

    gone, key = PEOPLE[0], ["--key_file", str(world["k1"])]
    features, faces = tmp_path / "features", tmp_path / "faces"
    shutil.copytree(world["sealed"], features)
    shutil.copytree(world["faces"], faces)
    assert compute_mean.main(["--features_path", str(features), "-q", *key]) == 0
    stats_before = (features / "stats.npz").read_bytes()
    # A retrieval gallery cached under the features folder (features/galleries/...): flat photos and folders.
    gallery = tmp_path / "gallery"
    shutil.copytree(world["faces"], gallery)
    flat = sorted((gallery / gone).iterdir())[0]
    shutil.copy2(flat, gallery / f"{gone}.jpg")
    assert extract_script.main(["--faces_path", str(gallery), "--model_path", str(world["extractor"]), "--workers", "0",
                                "--features", str(features / "galleries" / "g"), "-q", *key]) == 0
    from faceid.io.images import list_photos

    flat_cache = features / "galleries" / "flat"
    from faceid.backbones import load_extractor
    from faceid.features.extract import extract_features

    k1 = sealed.read_key_file(world["k1"])
    extract_features(gallery, load_extractor(world["extractor"]), flat_cache, workers=0, progress=False,
                     people_files=list_photos(gallery, "`gallery`"), key=k1)
    capsys.readouterr()

    assert forget_script.main(["--person", gone, "--features", str(features), "--faces_path", str(faces), *key]) == 0
    printed = capsys.readouterr().out
    assert f"people/{gone}.npz: deleted (4 vectors)" in printed and "recomputed" in printed and "flat gallery" in printed
    assert not (faces / gone).exists() and all((faces / person).is_dir() for person in PEOPLE[1:])
    for cache in (features, features / "galleries" / "g", flat_cache):
        opened = FeatureCache.load(cache, key=k1)  # the hash table and the seal were rewritten: it opens
        assert gone not in opened.people and gone not in opened.manifest["people"]
        assert not any(gone in name for name in opened.manifest["files"])
    assert all(not name.startswith(gone) for name in FeatureCache.load(flat_cache, key=k1).people["_flat"].files)
    assert (features / "stats.npz").read_bytes() != stats_before and sealed.is_sealed((features / "stats.npz").read_bytes())
    cache = FeatureCache.load(features, key=k1)
    vectors, labels, names = cache.matrix()
    search = Gallery(shortlist=2, threshold=0.0).fit(vectors, np.array(names)[labels])  # the two-stage search index
    assert gone not in search.classes_
    # test.py, exhaustive and with the shortlist, never names them again, on their own photos either.
    own = tmp_path / "own"
    shutil.copytree(world["faces"] / gone, own)
    shutil.copy2(sorted((LFW / gone).iterdir())[4], own)
    for extra in ([], ["--shortlist", "2"]):
        assert run_identify(features, world["extractor"], own, tmp_path / "after.jsonl", *key, *extra) == 0
        seen = faces_seen(tmp_path / "after.jsonl")
        # A face in each of the 5 photos (test.py --images searches them at BlazeFace's photo score: the
        # turned man at the right edge of Al_Gore_0003 scores under it). None is named the forgotten person.
        assert sorted(face["source"] for face in seen) == sorted(path.name for path in own.iterdir())
        assert not any(gone in (face["name"], face["best_person"]) for face in seen)
    assert forget_script.main(["--person", gone, "--features", str(features), *key]) == 1
    assert "nothing was removed" in capsys.readouterr().err
    assert forget_script.main(["--person", PEOPLE[1], "--features", str(features)]) == 1  # no key: refused
    assert "is encrypted" in capsys.readouterr().err
    assert PEOPLE[1] in FeatureCache.load(features, key=k1).people


def test_capture_writes_encrypted_crops_and_frames_from_the_clip(world, tmp_path):
    import contextlib
    import io

    from conftest import VIDEO

    from faceid.cli import capture

    folder, key = tmp_path / "miranda", ["--key_file", str(world["k1"])]
    for _ in range(2):  # the second run numbers on after the first's encrypted crops, overwriting nothing
        with contextlib.redirect_stdout(io.StringIO()):
            assert capture.main(["--output", str(folder), "--video_path", str(VIDEO), "--auto", "--no_display",
                                 "--every", "5", "--max", "2", "--max_frames", "120", "--save_frames", "-q", *key]) == 0
    crops, frames = sorted(folder.glob("*.png")), sorted((folder / "frames").glob("*.png"))
    assert len(crops) == 4 and len(frames) == 4
    assert all(sealed.is_sealed(path.read_bytes()) for path in crops + frames)
    from faceid.io.images import read_image

    with pytest.raises(sealed.KeyRequiredError):
        read_image(crops[0])  # the script's key stayed with the script: nothing in the process holds one
    assert read_image(crops[0], sealed.read_key_file(world["k1"])).shape[2] == 3


def test_forget_interrupted_before_the_manifest_is_rewritten_finishes_when_run_again(world, tmp_path, monkeypatch,
                                                                                     capsys):
    import faceid.apps.forget as forget_module

    features, key = tmp_path / "features", ["--key_file", str(world["k1"])]
    shutil.copytree(world["sealed"], features)
    real_write, calls = forget_module.write_manifest, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(forget_module, "write_manifest", interrupted)
    assert forget_script.main(["--person", PEOPLE[0], "--features", str(features), *key]) == 130
    assert calls and not (features / "people" / f"{PEOPLE[0]}.npz").exists()
    capsys.readouterr()
    assert run_identify(features, world["extractor"], world["probes"], tmp_path / "out.jsonl", *key) == 1
    assert "in the manifest but missing" in capsys.readouterr().err  # refuses, never names them half-forgotten
    monkeypatch.setattr(forget_module, "write_manifest", real_write)
    assert forget_script.main(["--person", PEOPLE[0], "--features", str(features), *key]) == 0
    assert run_identify(features, world["extractor"], world["probes"], tmp_path / "out.jsonl", *key) == 0
    assert not any(PEOPLE[0] in (face["name"], face["best_person"]) for face in faces_seen(tmp_path / "out.jsonl"))
    assert not list((features / "people").glob(".*"))  # the hidden copy is gone too
