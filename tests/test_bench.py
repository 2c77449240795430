"""bench.py sub-commands run end to end on real data and print their JSON lines (no timing asserts)."""

from __future__ import annotations

import json

import pytest
from conftest import LFW, VIDEO
from service_support import require_binary

from faceid.apps.live import FaceResult
from faceid.benchmarks.live import score_labels
from faceid.cli import bench
from faceid.detect.faces import FaceBox


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_bench_live_prints_one_json_line_per_backbone(capsys):
    assert bench.main(["live", "--video", str(VIDEO), "--backbones", "dlib", "--max_frames", "12", "-q"]) == 0
    out = capsys.readouterr().out
    (record,) = json_lines(out)
    assert {"bench", "backbone", "baseline_fps", "fps", "p95_ms", "ratio", "one_face", "labels"} <= set(record)
    assert record["bench"] == "live" and record["backbone"] == "dlib" and record["frames"] == 12
    assert record["fps"] > 0 and record["baseline_fps"] > 0
    assert record["ratio"] == round(record["fps"] / record["baseline_fps"], 2)
    # The first 12 frames show Miranda, far away: both pipelines are scored against the clip's truth.
    assert record["labels"]["ours"]["person_frames"] == 12
    assert out.strip().splitlines()[-1].startswith("{")


def test_bench_extract_prints_rates_and_ratio(tmp_path, capsys):
    assert bench.main(["extract", "--faces_path", str(LFW), "--images", "8", "--backbones", "dlib",
                       "--workers", "1", "-q"]) == 0
    (record,) = json_lines(capsys.readouterr().out)
    assert record["bench"] == "extract" and record["backbone"] == "dlib"
    assert record["images"] >= 8 and record["embedded"] == record["baseline_embedded"]
    assert record["ratio"] > 0 and record["img_per_s"] > 0


def test_label_scoring_counts_named_frames_and_wrong_names():
    truth = {"shots": [{"first": 0, "last": 1, "person": "ann"}, {"first": 2, "last": 2, "person": None}]}
    box = FaceBox(0, 0, 10, 10)
    frames = [
        [FaceResult(box, "ann", 0.9, "ann")],
        [FaceResult(box, "unknown", 0.1, "ann")],
        [FaceResult(box, "ann", 0.9, "ann")],  # a stranger named ann
    ]
    scores = score_labels(frames, truth)
    assert scores["named_correctly"] == 1 and scores["person_frames"] == 2 and scores["wrong_names"] == 1


def test_benchmarks_find_the_data_where_faceid_data_points(monkeypatch, tmp_path):
    monkeypatch.setenv("FACEID_DATA", str(tmp_path))
    parser = bench.build_parser()
    assert parser.parse_args(["live"]).video == tmp_path / "video" / "hamilton_clip.mp4"
    assert parser.parse_args(["extract"]).faces_path == tmp_path / "lfw_devtrain"


def test_bench_match_asks_for_a_feature_cache_instead_of_assuming_the_demo_ran(capsys):
    with pytest.raises(SystemExit) as stopped:
        bench.build_parser().parse_args(["match"])
    assert stopped.value.code == 2 and "--features" in capsys.readouterr().err


def test_bench_startup_times_each_case_against_a_bare_interpreter(capsys):
    assert bench.main(["startup", "--repeats", "1", "-q"]) == 0
    records = json_lines(capsys.readouterr().out)
    cases = {record["case"]: record for record in records if "case" in record}
    assert {"python -c pass (baseline)", "import faceid", "python test.py --help", "faceid --help"} <= set(cases)
    assert cases["python -c pass (baseline)"]["ratio"] == 1.0
    assert all(record["median_ms"] > 0 and record["runs"] == 1 for record in cases.values())
    assert records[-1] == {"bench": "startup", "identify_imports": []}


def test_bench_serve_times_identify_over_http_against_in_process_and_counts_streams(capsys):
    require_binary("ffmpeg")  # it makes the 10 fps camera stream
    assert bench.main(["serve", "--requests", "10", "--clients", "1,2", "--warmup", "2", "--max_streams", "1",
                       "--stream_seconds", "5", "-q"]) == 0
    out = capsys.readouterr().out
    (record,) = json_lines(out)
    assert record["bench"] == "serve" and record["cores"] >= 1 and record["version"]
    identify = record["identify"]
    assert identify["enrolled"] == ["alex-lacamoire", "lin-manuel-miranda"]
    # The service names the same people as FaceID.identify in this process, on the same photo.
    assert identify["service_names"] == identify["baseline"]["names"]
    assert "lin-manuel-miranda" in identify["service_names"]
    baseline = identify["baseline"]["per_s"]
    assert [level["clients"] for level in identify["levels"]] == [1, 2]
    for level in identify["levels"]:
        assert level["requests"] == 10 and level["errors"] == 0 and level["p99_ms"] >= level["p50_ms"] > 0
        assert level["ratio"] == round(level["per_s"] / baseline, 2)
    (streams,) = record["streams"]["levels"]
    (camera,) = streams["cameras"]
    assert streams["streams"] == 1 and camera["state"] == "running" and camera["frames_processed"] > 0
    assert streams["sustained"] == (camera["fps"] >= record["streams"]["criterion_fps"] == 9.5)
    assert "every camera identifies >= 9.5 frames/s" in out and out.strip().splitlines()[-1].startswith("{")
