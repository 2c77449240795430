"""Face detection on the clip: per-frame time and faces found per shot, for each detector.

Every detector searches the same frames (at most ``--detect_width`` wide, as live identification
does) with the upsampling given for it, landmarks included; the reference ``cnn-dlib`` is timed
on every ``--reference_step``-th frame only (it takes seconds a frame). Shots come from the clip's
hand-made truth, so "faces found" can be read against who is on screen.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from faceid.benchmarks.common import load_truth, print_json_lines, print_table, shared_data
from faceid.detect.blazeface import parse_models
from faceid.detect.faces import DETECTORS, detect_faces
from faceid.errors import InputError
from faceid.io.video import VideoSource
from faceid.settings import DEFAULTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", type=Path, default=shared_data() / "video" / "hamilton_clip.mp4")
    parser.add_argument("--configs", default="hog:1,hog:0,cnn:0,cnn:1,cnn-dlib:0,blazeface:0,blazeface/short:0,"
                                              "blazeface/full:0,blazeface/back+full:0,blazeface:1",
                        help="comma-separated detector:upsample pairs to measure; blazeface/MODELS picks MediaPipe's "
                             "networks (short, full, back, joined by +; default "
                             f"{DEFAULTS.blazeface_model}), at live video's score {DEFAULTS.live_blazeface_min_score}")
    parser.add_argument("--step", type=int, default=1, help="search every N-th frame")
    parser.add_argument("--reference_step", type=int, default=10, help="search every N-th frame with cnn-dlib")
    parser.add_argument("--detect_width", type=int, default=DEFAULTS.detect_width)


def run(args: argparse.Namespace) -> int:
    if not args.video.is_file():
        raise InputError(f"video {args.video} not found: pass --video FILE")
    truth = load_truth(args.video)
    configs = []
    for item in args.configs.split(","):
        detector, _, upsample = item.strip().partition(":")
        detector, _, models = detector.partition("/")
        if detector not in DETECTORS:
            raise InputError(f"unknown detector {detector!r}: choose from {', '.join(DETECTORS)}")
        if models:
            parse_models(models)  # an unknown network stops here, before any frame is read
        configs.append((detector, int(upsample or 0), models or DEFAULTS.blazeface_model))
    with VideoSource(args.video) as source:
        frames = [frame for _, _, frame in source]
    records = []
    for detector, upsample, models in configs:
        options = {"upsample": upsample, "detector": detector, "blazeface_models": models,
                   "min_score": DEFAULTS.live_blazeface_min_score}
        step = max(args.step, args.reference_step) if detector == "cnn-dlib" else args.step
        indices = list(range(0, len(frames), step))
        detect_faces(frames[0], **options)  # load the model untimed
        milliseconds, counts = [], {}
        for index in indices:
            started = time.perf_counter()
            counts[index] = len(detect_faces(frames[index], max_width=args.detect_width, **options))
            milliseconds.append((time.perf_counter() - started) * 1000.0)
        record = {"bench": "detect", "detector": detector, "upsample": upsample, "frames": len(indices),
                  **({"models": models, "min_score": DEFAULTS.live_blazeface_min_score} if detector == "blazeface" else {}),
                  "mean_ms": round(float(np.mean(milliseconds)), 1), "p50_ms": round(float(np.median(milliseconds)), 1)}
        if truth is not None:
            record["shots"] = [
                {"shot": f"{shot['first']}-{shot['last']}", "person": shot["person"] or "audience",
                 "frames": sum(shot["first"] <= index <= shot["last"] for index in indices),
                 "frames_with_face": sum(counts[index] > 0 for index in indices if shot["first"] <= index <= shot["last"]),
                 "faces": sum(counts[index] for index in indices if shot["first"] <= index <= shot["last"])}
                for shot in truth["shots"]
            ]
        records.append(record)
    baseline = records[0]["mean_ms"] if records else 1.0
    rows = [{"detector": f"{r['detector']}{'/' + r['models'] if 'models' in r else ''} (upsample {r['upsample']})", "frames": r["frames"], "mean_ms": r["mean_ms"],
             "vs first": round(baseline / r["mean_ms"], 2),
             **{s["shot"]: f"{s['frames_with_face']}/{s['frames']} ({s['faces']})" for s in r.get("shots", [])}}
            for r in records]
    print(f"bench detect: {args.video.name}; per shot: frames with a face / frames searched (faces found)")
    print_table(rows, list(rows[0]) if rows else [])
    print_json_lines(records)
    return 0
