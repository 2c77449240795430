"""cluster.py on real faces: photos and a video into cluster folders, incremental runs, naming, merge, split, keys."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import LFW, VIDEO, lfw_people

from faceid.cli import cluster
from faceid.cluster.clusters import Clustering
from faceid.io.images import read_image
from faceid.io.store import is_sealed_file

PEOPLE = lfw_people(min_images=8, count=6)  # Al_Gore ... Anna_Kournikova: 8 to 39 photos each
FIRST = 6  # photos per person in the first run; the 7th comes later, the 8th is never clustered


def link_photos(folder: Path, people: list[str], numbers: range) -> Path:
    """Person folders of symlinks to LFW photos ``numbers`` (1-based, in file-name order)."""
    for person in people:
        (folder / person).mkdir(parents=True, exist_ok=True)
        photos = sorted((LFW / person).iterdir())
        for number in numbers:
            (folder / person / photos[number - 1].name).symlink_to(photos[number - 1])
    return folder


def run_cluster(capsys, argv: list[str]) -> tuple[int, dict | None, str]:
    """cluster.py in-process: exit code, the JSON summary on stdout's last line (with --json), stderr."""
    code = cluster.main(argv)
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    payload = json.loads(lines[-1]) if "--json" in argv and code == 0 else None
    return code, payload, captured.err


def person_of_cluster(clustering: Clustering) -> dict[str, str]:
    """Each cluster's majority label."""
    result = {}
    for cluster in clustering.clusters.values():
        labels = [clustering.faces[face].label for face in cluster.faces]
        result[cluster.id] = max(set(labels), key=labels.count)
    return result


def crops_where_they_belong(output: Path, clustering: Clustering) -> None:
    """Every face's crop is in its cluster's folder, and every cluster folder holds only its own faces."""
    cluster_of = clustering.cluster_of()
    folders = sorted(path.name for path in output.iterdir() if path.is_dir())
    assert folders == sorted(clustering.clusters)
    for face_id, record in clustering.faces.items():
        assert record.crop == f"{face_id}.png"
        assert (output / cluster_of[face_id] / record.crop).is_file(), face_id
    for folder in folders:
        for path in (output / folder).iterdir():
            assert cluster_of[path.name.split(".")[0].split("-")[0]] == folder, path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return link_photos(tmp_path_factory.mktemp("photos"), PEOPLE, range(1, FIRST + 1))


@pytest.fixture(scope="module")
def clustered(tmp_path_factory, photos, dlib_extractor_dir) -> tuple[Path, dict]:
    """The interface the checks use: cluster.py --faces_path --model_path --output --json (and --html)."""
    output = tmp_path_factory.mktemp("clusters") / "out"
    code = cluster.main(["--faces_path", str(photos), "--model_path", str(dlib_extractor_dir), "--output", str(output),
                         "--json", "--html"])
    assert code == 0
    return output, json.loads((output / "clusters.json").read_text())


def copy_of(clustered, tmp_path) -> Path:
    output = tmp_path / "out"
    shutil.copytree(clustered[0], output)
    return output


def test_photos_become_one_folder_per_person_with_readable_crops(clustered, photos, dlib_extractor_dir, capsys,
                                                                 tmp_path):
    output, saved = clustered
    code, summary, _ = run_cluster(capsys, ["--faces_path", str(photos), "--model_path", str(dlib_extractor_dir),
                                            "--output", str(tmp_path / "again"), "--json"])
    assert code == 0 and summary["faces"] == len(PEOPLE) * FIRST and summary["output"] == str(tmp_path / "again")
    assert summary["clusters"] == len(saved["clusters"]) and "singletons" in summary
    clustering = Clustering.load(output)
    assert len(PEOPLE) <= len(clustering.clusters) <= len(PEOPLE) + 3
    crops_where_they_belong(output, clustering)
    for record in clustering.faces.values():
        crop = read_image(output / clustering.cluster_of()[record.id] / record.crop)
        assert crop.shape == (224, 224, 3) and record.box is not None
        assert Path(record.source).parent.name == record.label
    # Most faces of each person share one cluster, and no cluster mixes people.
    for person in PEOPLE:
        clusters = [clustering.cluster_of()[face.id] for face in clustering.faces.values() if face.label == person]
        assert max(clusters.count(cluster_id) for cluster_id in clusters) >= FIRST // 2, person
    for cluster_id, cluster_ in clustering.clusters.items():
        assert len({clustering.faces[face].label for face in cluster_.faces}) == 1, cluster_id


def test_the_contact_sheet_has_a_row_per_cluster_representative_first(clustered):
    output, saved = clustered
    page = (output / "index.html").read_text()
    assert page.count("<section>") == len(saved["clusters"])
    for cluster_ in saved["clusters"]:
        row = page[page.index(f"<h2>{cluster_['id']}"):]
        row = row[:row.index("</section>")]
        assert row.index(f'alt="{cluster_["representative"]}"') == row.index('alt="')
        assert row.count("data:image/jpeg;base64,") == min(len(cluster_["faces"]), 12)


def test_new_photos_join_their_clusters_and_untouched_ids_stay(clustered, photos, dlib_extractor_dir, capsys, tmp_path):
    output = copy_of(clustered, tmp_path)
    before = Clustering.load(output)
    grown = tmp_path / "photos"
    shutil.copytree(photos, grown, symlinks=True)
    link_photos(grown, PEOPLE[:2], range(FIRST + 1, FIRST + 2))
    code, summary, _ = run_cluster(capsys, ["--faces_path", str(grown), "--model_path", str(dlib_extractor_dir),
                                            "--output", str(output), "--json"])
    assert code == 0
    assert summary["added"] == 2 and summary["already_clustered"] == len(PEOPLE) * FIRST
    assert summary["faces"] == len(PEOPLE) * FIRST + 2
    changes = summary["changes"]
    after = Clustering.load(output)
    touched = set(changes["changed"]) | set(changes["created"])
    assert changes["unchanged"] == len(before.clusters) - len(set(changes["changed"])) >= len(before.clusters) - 2
    for cluster_id, old in before.clusters.items():
        if cluster_id not in touched:
            assert after.clusters[cluster_id].faces == old.faces
    # Each new photo joined the cluster of its person.
    names = person_of_cluster(after)
    for face in after.faces.values():
        if face.id not in before.faces:
            assert names[after.cluster_of()[face.id]] == face.label
    crops_where_they_belong(output, after)
    assert "index.html" in {path.name for path in output.iterdir()}  # the sheet follows the clustering
    assert after.faces[max(after.faces)].id in (output / "index.html").read_text()

    code, summary, _ = run_cluster(capsys, ["--faces_path", str(grown), "--model_path", str(dlib_extractor_dir),
                                            "--output", str(output), "--json", "--recluster"])
    assert code == 0 and summary["reclustered"] and summary["added"] == 0
    assert set(summary["changes"]) >= {"created", "changed", "removed", "unchanged"}
    crops_where_they_belong(output, Clustering.load(output))


def test_naming_a_cluster_enrols_it_and_identification_names_the_person(clustered, dlib_extractor_dir, capsys,
                                                                          tmp_path):
    import faceid
    from faceid.features.cache import FeatureCache
    from faceid.io.store import read_json

    output = copy_of(clustered, tmp_path)
    features = tmp_path / "features"
    clustering = Clustering.load(output)
    names = person_of_cluster(clustering)
    largest = {}  # person -> their largest cluster
    for cluster_ in clustering.ordered():
        largest.setdefault(names[cluster_.id], cluster_.id)
    for person in PEOPLE[:3]:
        code, summary, _ = run_cluster(capsys, ["name", "--clusters", str(output), "--id", largest[person], "--person",
                                                person, "--features", str(features), "--model_path",
                                                str(dlib_extractor_dir), "--json"])
        assert code == 0, person
        enrolled = summary["enrolled"]
        assert enrolled["person"] == person and enrolled["embedded"] == len(clustering.clusters[largest[person]].faces)
    cache = FeatureCache.load(features, read_json(dlib_extractor_dir / "manifest.json", "extractor", "fix"))
    assert sorted(cache.people) == sorted(PEOPLE[:3])
    assert Clustering.load(output).clusters[largest[PEOPLE[0]]].name == PEOPLE[0]
    fid = faceid.FaceID(model=dlib_extractor_dir, features=features)
    for person in PEOPLE[:3]:
        held_out = sorted((LFW / person).iterdir())[FIRST + 1]  # the 8th photo: never clustered
        assert fid.identify(held_out)[0].name == person
    # Naming it again adds nothing twice (crops are recorded by content).
    code, summary, _ = run_cluster(capsys, ["name", "--clusters", str(output), "--id", largest[PEOPLE[0]], "--person",
                                            PEOPLE[0], "--features", str(features), "--model_path",
                                            str(dlib_extractor_dir), "--json"])
    assert code == 0 and summary["enrolled"]["embedded"] == 0
    code, _, err = run_cluster(capsys, ["name", "--clusters", str(output), "--id", largest[PEOPLE[0]], "--person",
                                        PEOPLE[1], "--features", str(features), "--model_path",
                                        str(dlib_extractor_dir)])
    assert code == 1 and "already named" in err
    again = FeatureCache.load(features, read_json(dlib_extractor_dir / "manifest.json", "extractor", "fix"))
    assert len(again.people[PEOPLE[0]].files) == len(cache.people[PEOPLE[0]].files)


def test_merge_and_split_move_the_crops_with_the_faces(clustered, capsys, tmp_path):
    output = copy_of(clustered, tmp_path)
    before = Clustering.load(output)
    first, second = [cluster_.id for cluster_ in before.ordered()[:2]]
    moved = list(before.clusters[second].faces)
    code, summary, _ = run_cluster(capsys, ["merge", "--clusters", str(output), "--id", second, "--into", first,
                                            "--json"])
    assert code == 0 and summary["changes"]["merged"] == {first: [second]}
    assert summary["clusters"] == len(before.clusters) - 1 and not (output / second).exists()
    merged = Clustering.load(output)
    assert sorted(merged.clusters[first].faces) == sorted(before.clusters[first].faces + moved)
    crops_where_they_belong(output, merged)

    code, summary, _ = run_cluster(capsys, ["split", "--clusters", str(output), "--id", first, "--faces",
                                            ",".join(moved), "--json"])
    assert code == 0
    (created,) = summary["changes"]["created"]
    split = Clustering.load(output)
    assert sorted(split.clusters[created].faces) == sorted(moved)
    assert sorted(path.stem for path in (output / created).iterdir()) == sorted(moved)
    crops_where_they_belong(output, split)

    code, summary, _ = run_cluster(capsys, ["split", "--clusters", str(output), "--id", first, "--json"])
    assert code == 0 and summary["clusters"] == len(split.clusters) + 1
    crops_where_they_belong(output, Clustering.load(output))


def test_an_interrupted_run_loses_no_crop_and_leaves_none_behind(clustered, photos, dlib_extractor_dir, capsys,
                                                                 tmp_path):
    output = copy_of(clustered, tmp_path)
    clustering = Clustering.load(output)
    first, second = [cluster_.id for cluster_ in clustering.ordered()[:2]]
    # Killed after saving, before the crops were moved: one in the wrong folder, one still incoming;
    # and a crop of a face whose clustering was never saved.
    stray = output / first / clustering.clusters[first].faces[0]
    os.replace(stray.with_suffix(".png"), output / second / f"{stray.name}.png")
    waiting = clustering.clusters[second].faces[-1]
    (output / ".incoming").mkdir()
    os.replace(output / second / f"{waiting}.png", output / ".incoming" / f"{waiting}.png")
    (output / ".incoming" / "f999999.png").write_bytes((output / second / f"{stray.name}.png").read_bytes())
    code, summary, _ = run_cluster(capsys, ["--faces_path", str(photos), "--model_path", str(dlib_extractor_dir),
                                            "--output", str(output), "--json"])
    assert code == 0 and summary["added"] == 0
    crops_where_they_belong(output, Clustering.load(output))
    assert not (output / ".incoming").exists() and not list(output.glob("*/f999999.png"))


def test_bad_ids_and_folders_are_refused_and_nothing_changes(clustered, photos, dlib_extractor_dir, capsys, tmp_path):
    output = copy_of(clustered, tmp_path)
    saved = (output / "clusters.json").read_bytes()
    code, _, err = run_cluster(capsys, ["merge", "--clusters", str(output), "--id", "c9999", "--into", "c0001"])
    assert code == 1 and "c9999" in err and "--id" in err
    code, _, err = run_cluster(capsys, ["split", "--clusters", str(output), "--id", "c0001", "--faces", "f999999"])
    assert code == 1 and "f999999" in err and "--faces" in err
    code, _, err = run_cluster(capsys, ["merge", "--clusters", str(tmp_path / "nothing"), "--id", "c0001", "--into",
                                        "c0002"])
    assert code == 1 and "--clusters" in err
    assert (output / "clusters.json").read_bytes() == saved
    model = ["--model_path", str(dlib_extractor_dir)]
    code, _, err = run_cluster(capsys, ["--faces_path", str(tmp_path / "missing"), *model, "--output",
                                        str(tmp_path / "o1")])
    assert code == 1 and "--faces_path" in err and not (tmp_path / "o1").exists()
    (tmp_path / "empty").mkdir()
    code, _, err = run_cluster(capsys, ["--faces_path", str(tmp_path / "empty"), *model, "--output",
                                        str(tmp_path / "o2")])
    assert code == 1 and "no photos" in err
    blank = tmp_path / "blank"
    blank.mkdir()
    from PIL import Image

    Image.new("RGB", (200, 200), (128, 128, 128)).save(blank / "wall.png")
    code, _, err = run_cluster(capsys, ["--faces_path", str(blank), *model, "--output", str(tmp_path / "o3")])
    assert code == 1 and "no face found" in err and not (tmp_path / "o3" / "clusters.json").exists()
    code, _, err = run_cluster(capsys, ["--faces_path", str(photos), *model, "--output", str(photos / "out")])
    assert code == 1 and "--output" in err and "--faces_path" in err
    code, _, err = run_cluster(capsys, [*model, "--output", str(tmp_path / "o4")])
    assert code == 1 and "--faces_path" in err and "--video_path" in err
    # A clustering made by another extractor is refused, not mixed.
    from faceid.backbones.registry import BackboneOptions, create_extractor

    other = tmp_path / "other_extractor"
    tta = "none" if json.loads((dlib_extractor_dir / "manifest.json").read_text()).get("tta") == "flip" else "flip"
    create_extractor("dlib", BackboneOptions(tta=tta)).save(other, "extractor")
    code, _, err = run_cluster(capsys, ["--faces_path", str(photos), "--model_path", str(other), "--output",
                                        str(output)])
    assert code == 1 and "extractor" in err and (output / "clusters.json").read_bytes() == saved


def test_with_a_key_crops_and_clusters_are_sealed_and_need_it(dlib_extractor_dir, capsys, tmp_path, monkeypatch):
    from faceid.io import sealed

    key_file = tmp_path / "key"
    sealed.write_key_file(key_file, sealed.new_key())
    photos = link_photos(tmp_path / "photos", PEOPLE[:2], range(1, 4))
    output = tmp_path / "out"
    base = ["--faces_path", str(photos), "--model_path", str(dlib_extractor_dir), "--output", str(output)]
    code, _, err = run_cluster(capsys, [*base, "--key_file", str(key_file), "--html"])
    assert code == 1 and "--html" in err and not output.exists()  # refused before anything is written
    code, summary, _ = run_cluster(capsys, [*base, "--key_file", str(key_file), "--json"])
    assert code == 0 and summary["faces"] == 6
    crops = sorted(output.glob("c*/*.png"))
    assert len(crops) == 6 and all(is_sealed_file(path) for path in crops)
    assert is_sealed_file(output / "clusters.json") and is_sealed_file(output / "vectors.npz")
    clustering = Clustering.load(output, key=sealed.read_key_file(key_file))
    assert read_image(crops[0], sealed.read_key_file(key_file)).shape == (224, 224, 3)
    ids = sorted(clustering.clusters)
    code, _, err = run_cluster(capsys, ["split", "--clusters", str(output), "--id", ids[0]])  # no key
    assert code == 1 and "key" in err
    monkeypatch.setenv(sealed.KEY_ENV, sealed.read_key_file(key_file).text())
    code, summary, _ = run_cluster(capsys, ["name", "--clusters", str(output), "--id", ids[0], "--person", "someone",
                                            "--features", str(tmp_path / "features"), "--model_path",
                                            str(dlib_extractor_dir), "--json"])
    assert code == 0 and summary["enrolled"]["embedded"] == len(clustering.clusters[ids[0]].faces)
    assert all(is_sealed_file(path) for path in (tmp_path / "features" / "people").iterdir())
    # A plaintext clustering can be named into that encrypted cache; it stays plaintext.
    plain = tmp_path / "plain"
    monkeypatch.delenv(sealed.KEY_ENV)
    code, _, _ = run_cluster(capsys, ["--faces_path", str(photos), "--model_path", str(dlib_extractor_dir),
                                      "--output", str(plain)])
    assert code == 0 and not is_sealed_file(plain / "clusters.json")
    first = sorted(Clustering.load(plain).clusters)[0]
    code, summary, _ = run_cluster(capsys, ["name", "--clusters", str(plain), "--id", first, "--person", "other",
                                            "--features", str(tmp_path / "features"), "--model_path",
                                            str(dlib_extractor_dir), "--key_file", str(key_file), "--json"])
    assert code == 0 and summary["enrolled"]["embedded"] >= 1 and not is_sealed_file(plain / "clusters.json")
    assert is_sealed_file(tmp_path / "features" / "people" / "other.npz")


def test_a_video_is_clustered_by_track(dlib_extractor_dir, capsys, tmp_path):
    output = tmp_path / "video"
    code, summary, _ = run_cluster(capsys, ["--video_path", str(VIDEO), "--model_path", str(dlib_extractor_dir),
                                            "--output", str(output), "--json", "--max_frames", "120"])
    assert code == 0 and summary["faces"] >= 2
    clustering = Clustering.load(output)
    tracks = [record.track for record in clustering.faces.values()]
    assert len(set(tracks)) == len(tracks) and None not in tracks  # one record per track
    for record in clustering.faces.values():
        assert record.source == str(VIDEO) and 0 <= record.frame < 120 and record.seconds == pytest.approx(
            record.frame / 29.97, abs=0.01)
        files = list((output / clustering.cluster_of()[record.id]).glob(f"{record.id}*.png"))
        assert 1 <= len(files) <= 8 and record.crop in {path.name for path in files}
    # The same video again adds nothing.
    code, summary, _ = run_cluster(capsys, ["--video_path", str(VIDEO), "--model_path", str(dlib_extractor_dir),
                                            "--output", str(output), "--json", "--max_frames", "120"])
    assert code == 0 and summary["added"] == 0 and summary["already_clustered"] == 1


def test_a_feature_cache_alone_is_clustered_without_crops(lfw_cache_dir, dlib_extractor_dir, capsys, tmp_path):
    output = tmp_path / "cache_clusters"
    code, summary, _ = run_cluster(capsys, ["--features", str(lfw_cache_dir), "--model_path", str(dlib_extractor_dir),
                                            "--output", str(output), "--json"])
    assert code == 0
    clustering = Clustering.load(output)
    vectors = np.load(output / "vectors.npz")["vectors"]
    assert summary["faces"] == len(clustering.faces) == len(vectors) > 100
    assert all(record.crop is None and record.source.startswith(f"{record.label}/")
               for record in clustering.faces.values())
    assert not list(output.glob("c*/*"))
    code, _, err = run_cluster(capsys, ["name", "--clusters", str(output), "--id", "c0001", "--person", "x",
                                        "--features", str(tmp_path / "f"), "--model_path", str(dlib_extractor_dir)])
    assert code == 1 and "no face crops" in err


def test_all_faces_clusters_every_face_of_a_photo(clustered, photos, dlib_extractor_dir, capsys, tmp_path):
    output = tmp_path / "all"
    code, summary, _ = run_cluster(capsys, ["--faces_path", str(photos), "--model_path", str(dlib_extractor_dir),
                                            "--output", str(output), "--all_faces", "--json"])
    assert code == 0
    several = summary["several_faces"]
    assert several >= 1 and summary["faces"] >= len(PEOPLE) * FIRST + several
    clustering = Clustering.load(output)
    by_source: dict[str, list] = {}
    for record in clustering.faces.values():
        by_source.setdefault(record.source, []).append(record.box)
    crowded = [boxes for boxes in by_source.values() if len(boxes) > 1]
    assert len(crowded) == several and all(len(set(boxes)) == len(boxes) for boxes in crowded)
    crops_where_they_belong(output, clustering)


def test_photos_through_a_feature_cache_get_crops_and_another_cache_is_refused(photos, dlib_extractor_dir,
                                                                               lfw_cache_dir, capsys, tmp_path):
    output, features = tmp_path / "out", tmp_path / "features"
    base = ["--faces_path", str(photos), "--model_path", str(dlib_extractor_dir), "--json"]
    code, summary, _ = run_cluster(capsys, [*base, "--output", str(output), "--features", str(features)])
    assert code == 0 and summary["faces"] == len(PEOPLE) * FIRST
    assert sorted(path.stem for path in (features / "people").iterdir()) == sorted(PEOPLE)
    crops_where_they_belong(output, Clustering.load(output))
    people_files = sorted(path.name for path in (lfw_cache_dir / "people").iterdir())
    code, _, err = run_cluster(capsys, [*base, "--output", str(tmp_path / "o2"), "--features", str(lfw_cache_dir)])
    assert code == 1 and "--features" in err and "would remove them" in err
    assert sorted(path.name for path in (lfw_cache_dir / "people").iterdir()) == people_files


def test_faceid_cluster_runs_the_same_script(capsys, monkeypatch):
    import sys

    from faceid.cli.main import main

    monkeypatch.setattr(sys, "argv", ["faceid"])  # the command rewrites argv[0]; restored after

    with pytest.raises(SystemExit) as exit_info:
        main(["cluster", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: faceid cluster") and "--faces_path" in out and "name --clusters" in out


def test_enrolled_people_are_left_out_of_the_video_clusters(dlib_extractor_dir, capsys, tmp_path):
    from conftest import KNOWN

    from faceid.backbones import load_extractor
    from faceid.features.extract import extract_features

    features = tmp_path / "known"
    extract_features(KNOWN, load_extractor(dlib_extractor_dir), features, progress=False, workers=0)
    common = ["--video_path", str(VIDEO), "--model_path", str(dlib_extractor_dir), "--json", "-q"]
    code, everyone, _ = run_cluster(capsys, [*common, "--output", str(tmp_path / "all")])
    assert code == 0
    code, strangers, _ = run_cluster(capsys, [*common, "--output", str(tmp_path / "strangers"), "--enrolled",
                                              str(features)])
    assert code == 0
    # Miranda's frontal tracks are named by his one enrolment photo and left out; the rest are clustered.
    assert strangers["left_out_known"].get("lin-manuel-miranda", 0) >= 1
    assert strangers["faces"] == everyone["faces"] - sum(strangers["left_out_known"].values())
    code, _, error = run_cluster(capsys, [*common, "--output", str(tmp_path / "x"), "--enrolled", str(tmp_path / "none")])
    assert code != 0 and "none" in error
