"""Live identification speed: the original design against ours, per backbone, on one video.

(a) baseline, the original design: dlib HOG on every full frame, the backbone
    called once per face (Keras ``predict`` for ResNet50, dlib's own C++ runtime
    for dlib), and the Keras similarity head called once per enrolled person, with the
    original decision rule (over 85% of a person's vectors scoring above 0.8).
(b) ours: faceid.apps.live.LiveIdentifier with its defaults: detection every few
    frames (downscaled past 640 px wide) with face tracking in between, one
    batched embedding per frame of only the faces due for re-identification
    (ONNX Runtime: ResNet50's export, dlib's network rebuilt as an ONNX graph), the NumPy head over all people at once, and a
    per-track vote.

Both read the same frames and use the same detector, alignment and enrolled
people (the video's ``known/`` folder); nothing is drawn, shown or written in the
timed loop. ResNet50 runs with random weights (``--weights none``): speed does not
depend on weight values, and its head is randomly initialised for the same reason.
With the dlib backbone ours decides as test.py does: the trained model's default scorer
(``--classification``) or the backbone's own calibration, the threshold set for the people
enrolled at ``--target_fpir`` (``--scorer`` picks another scorer); labels are then scored
against the clip's hand-made truth (shots and who is in them).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from faceid.apps.live import FaceResult, LiveIdentifier, LiveOptions
from faceid.backbones import BackboneOptions, create_extractor, load_extractor
from faceid.benchmarks.common import latency_stats, load_truth, print_json_lines, print_table, shared_data
from faceid.detect.faces import DETECTORS, FaceOptions, align_face, detect_faces, live_upsample
from faceid.detect.tracking import PENDING
from faceid.errors import InputError
from faceid.features.cache import FeatureCache
from faceid.features.embedding import FaceEmbedder
from faceid.features.extract import extract_features
from faceid.io.video import VideoSource
from faceid.match.gallery import UNKNOWN, Gallery
from faceid.match.openset import backbone_calibrations, default_scorer
from faceid.match.scoring import SCORERS, Rule
from faceid.settings import DEFAULTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", type=Path, default=shared_data() / "video" / "hamilton_clip.mp4",
                        help="video to identify faces in (640x360 for the stated bars)")
    parser.add_argument("--known", type=Path, default=None,
                        help="enrolment folder (one sub-folder per person); default: known/ beside the video")
    parser.add_argument("--backbones", default="resnet50,dlib", help="comma-separated backbones to measure")
    parser.add_argument("--classification", type=Path, default=None,
                        help="trained similarity model for the dlib backbone (label accuracy); default: Euclidean")
    parser.add_argument("--max_frames", type=int, default=0, help="frames to time (0 = the whole video)")
    parser.add_argument("--scorer", choices=SCORERS,
                        help="dlib backbone: how ours compares faces (default: the model's, else the backbone calibration's)")
    parser.add_argument("--target_fpir", type=float, default=DEFAULTS.target_fpir,
                        help="dlib backbone: share of strangers ours may name (threshold set for the people enrolled)")
    parser.add_argument("--detector", default=DEFAULTS.live_detector,
                        help=f"comma-separated detectors for our pipeline, each measured against the same baseline "
                             f"(hog, cnn, cnn-dlib, blazeface; default {DEFAULTS.live_detector}); the baseline is always HOG")
    parser.add_argument("--truth", type=Path, default=None,
                        help="JSON of shots and who is in them, to score labels (built in for the Hamilton clip)")


def run(args: argparse.Namespace) -> int:
    if not args.video.is_file():
        raise InputError(f"video {args.video} not found: pass --video FILE")
    known = args.known or args.video.parent / "known"
    truth = load_truth(args.video, args.truth)
    max_frames = args.max_frames or None
    one_face = None
    detectors = [name.strip() for name in args.detector.split(",") if name.strip()]
    for detector in detectors:
        if detector not in DETECTORS:
            raise InputError(f"unknown detector {detector!r}: choose from {', '.join(DETECTORS)}")
    records = []
    for backbone in [name.strip() for name in args.backbones.split(",") if name.strip()]:
        with tempfile.TemporaryDirectory(prefix="faceid-bench-") as workdir:
            extractor, baseline_embed, baseline_enrolled, gallery, keras_head = _setup(
                backbone, known, Path(workdir), args.classification, args.scorer, args.target_fpir
            )
            baseline_ms, baseline_results, face_counts = _time_baseline(
                args.video, max_frames, extractor, baseline_embed, baseline_enrolled, keras_head
            )
            if one_face is None:
                # "One face in view": frames where the baseline's full detection finds exactly one face.
                one_face = np.asarray(face_counts) == 1
            for detector in detectors:
                ours_ms, ours_results, identifier = _time_ours(args.video, max_frames, extractor, gallery, detector)
                record = _record(backbone, extractor, baseline_ms, ours_ms, one_face, identifier)
                record["detector"] = detector
                record["upsample"] = live_upsample(detector)
                # Random ResNet50 weights make names meaningless: labels are scored for real weights only.
                if truth is not None and not str(extractor.manifest["weights"]).startswith("none"):
                    record["labels"] = {"baseline": score_labels(baseline_results, truth),
                                        "ours": score_labels(ours_results, truth)}
                records.append(record)
    _print_report(records, args.video)
    print_json_lines(records)
    return 0


def _timed_frames(video: Path, max_frames: int | None):
    """Yield ``(frame, started)``: ``started`` is taken before decoding, so latency includes it."""
    with VideoSource(video) as source:
        frames = iter(itertools.islice(source, max_frames))
        while True:
            started = time.perf_counter()
            try:
                _, _, frame = next(frames)
            except StopIteration:
                return
            yield frame, started


def _setup(backbone: str, known: Path, workdir: Path, classification: Path | None, scorer: str | None = None,
           target_fpir: float = DEFAULTS.target_fpir):
    """Our extractor (ONNX Runtime, default options), the baseline's per-face embedding and enrolled
    vectors (the original design: no test-time augmentation, Keras or dlib's own runtime), our
    gallery, the Keras head."""
    from faceid.match.head import HeadArchitecture, SimilarityHead
    from faceid.match.model import SimilarityModel
    from faceid.train.head import build_keras_head

    options = BackboneOptions(weights="none") if backbone == "resnet50" else BackboneOptions()
    create_extractor(backbone, options).save(workdir / "extractor", "extractor")
    extractor = load_extractor(workdir / "extractor")  # ONNX Runtime (ResNet50's export, dlib's rebuilt graph)
    # The original design: no test-time augmentation, one backbone call per face.
    baseline_options = BackboneOptions(weights=options.weights, tta="none")
    create_extractor(backbone, baseline_options).save(workdir / "baseline", "extractor")
    reference = load_extractor(workdir / "baseline", runtime="dlib" if backbone == "dlib" else "keras")
    if backbone == "dlib":
        baseline_embed = lambda chip: reference.embed(chip[None])[0]
    else:
        from faceid.backbones.resnet50 import preprocess_resnet50

        keras_model = reference.model
        # The original: Keras predict() on each face, one at a time.
        baseline_embed = lambda chip: np.asarray(keras_model.predict(preprocess_resnet50(chip[None]), verbose=0))[0]
    extract_features(known, reference, workdir / "baseline_features", progress=False)
    baseline_vectors, baseline_labels, baseline_names = FeatureCache.load(workdir / "baseline_features").matrix()
    baseline_enrolled = [(str(name), baseline_vectors[baseline_labels == index]) for index, name in enumerate(baseline_names)]
    extract_features(known, extractor, workdir / "features", progress=False)
    vectors, labels, names = FeatureCache.load(workdir / "features").matrix()
    people = np.array(names)[labels]
    backbone_calibration = backbone_calibrations(extractor.manifest)
    if backbone == "dlib" and classification is not None:
        model = SimilarityModel.load(classification)
        model.check_extractor(extractor.manifest, f"the {backbone} extractor")
        gallery = model.gallery(scorer=scorer, target_fpir=target_fpir, fallback=backbone_calibration)
        return extractor, baseline_embed, baseline_enrolled, gallery.fit(vectors, people), _keras_of(model.head)
    keras_head = build_keras_head(extractor.output_dim, HeadArchitecture(), seed=0)
    if backbone == "dlib":
        scorer = scorer or default_scorer(backbone_calibration)
        if scorer not in backbone_calibration:
            raise InputError(f"--scorer {scorer} needs --classification (no backbone calibration for it)")
        gallery = Gallery(calibration=backbone_calibration[scorer], target_fpir=target_fpir)
        return extractor, baseline_embed, baseline_enrolled, gallery.fit(vectors, people), None
    head = SimilarityHead.from_keras(keras_head)
    return extractor, baseline_embed, baseline_enrolled, Gallery(head=head, threshold=0.5).fit(vectors, people), keras_head


def _keras_of(head):
    from faceid.train.head import build_keras_head

    model = build_keras_head(head.input_dim, head.architecture, seed=0)
    model.set_weights([array for pair in zip(head.kernels, head.biases) for array in pair])
    return model


def _time_baseline(video, max_frames, extractor, embed, enrolled, keras_head):
    """The original design, frame by frame. Returns per-frame ms, results and face counts."""
    rule = Rule("vote", vote_score=DEFAULTS.vote_score, vote_share=DEFAULTS.vote_share)
    latencies, results, counts = [], [], []
    for frame, started in _timed_frames(video, max_frames):
        # The original design: dlib's HOG at upsample 1, whatever our defaults are.
        faces = detect_faces(frame, upsample=1, detector="hog")
        frame_results = []
        for face in faces:
            vector = embed(align_face(frame, face, extractor.chip_size, extractor.align_padding))
            best_name, best_share = UNKNOWN, -1.0
            for name, person_vectors in enrolled:  # the head once per enrolled person
                if keras_head is not None:
                    scores = keras_head.predict(np.abs(person_vectors - vector), verbose=0)[:, 0]
                else:
                    # Head-free: a vote is a distance under dlib's 0.6.
                    scores = np.where(np.linalg.norm(person_vectors - vector, axis=1) < 0.6, 1.0, 0.0)
                share = float(np.mean(scores > rule.vote_score))
                if share > best_share:
                    best_name, best_share = name, share
            accepted = best_share > rule.vote_share
            frame_results.append(FaceResult(face.box, best_name if accepted else UNKNOWN, best_share, best_name))
        latencies.append((time.perf_counter() - started) * 1000.0)
        results.append(frame_results)
        counts.append(len(faces))
    return latencies, results, counts


def _time_ours(video, max_frames, extractor, gallery: Gallery, detector: str):
    face_options = FaceOptions.live(detector)
    identifier = LiveIdentifier(FaceEmbedder(extractor, face_options), gallery, LiveOptions())
    latencies, results = [], []
    stage_totals: dict[str, float] = {}
    for frame, started in _timed_frames(video, max_frames):
        results.append(identifier.process(frame))
        latencies.append((time.perf_counter() - started) * 1000.0)
        for stage, milliseconds in identifier.timings.items():
            stage_totals[stage] = stage_totals.get(stage, 0.0) + milliseconds
    identifier.stage_mean_ms = {stage: round(total / max(len(latencies), 1), 2) for stage, total in stage_totals.items()}
    return latencies, results, identifier


def _record(backbone, extractor, baseline_ms, ours_ms, one_face, identifier) -> dict[str, Any]:
    baseline, ours = latency_stats(baseline_ms), latency_stats(ours_ms)
    baseline_one = latency_stats(np.asarray(baseline_ms)[one_face])
    ours_one = latency_stats(np.asarray(ours_ms)[one_face])
    return {
        "bench": "live",
        "backbone": backbone,
        "runtime": extractor.runtime,
        "frames": len(ours_ms),
        "baseline_fps": baseline["per_s"],
        "fps": ours["per_s"],
        "ratio": round(ours["per_s"] / baseline["per_s"], 2),
        "baseline_p50_ms": baseline["p50_ms"],
        "baseline_p95_ms": baseline["p95_ms"],
        "p50_ms": ours["p50_ms"],
        "p95_ms": ours["p95_ms"],
        "median_fps": ours["median_per_s"],
        "one_face": {
            "frames": int(one_face.sum()),
            "baseline_fps": baseline_one["per_s"],
            "fps": ours_one["per_s"],
            "median_fps": ours_one["median_per_s"],
            "p50_ms": ours_one["p50_ms"],
            "p95_ms": ours_one["p95_ms"],
            "ratio": round(ours_one["per_s"] / baseline_one["per_s"], 2) if baseline_one["n"] else None,
        },
        "stage_mean_ms": identifier.stage_mean_ms,  # decode is the rest of p50/mean
        "tracks": len(identifier.switches),
        "name_switches": sum(identifier.switches.values()),
    }


def score_labels(results_by_frame: list[list[FaceResult]], truth: dict[str, Any]) -> dict[str, Any]:
    """How often each shot's person is named, and how many faces got a wrong name.

    ``named``: frames of a person's shots where a face carries their name, over
    the frames of those shots. ``wrong_names``: faces named as an enrolled person
    who is not the one in the shot (in a stranger shot, any name at all).
    """
    named = frames_with_person = wrong = pending = 0
    for shot in truth["shots"]:
        for index in range(shot["first"], min(shot["last"] + 1, len(results_by_frame))):
            faces = results_by_frame[index]
            person = shot["person"]
            if person is not None:
                frames_with_person += 1
                named += any(face.name == person for face in faces)
            for face in faces:
                pending += face.name == PENDING
                if face.name not in (UNKNOWN, PENDING) and face.name != person:
                    # A person's shot may show others too; only enrolled names count as wrong.
                    wrong += 1
    return {
        "person_frames": frames_with_person,
        "named_correctly": named,
        "named_share": round(named / frames_with_person, 4) if frames_with_person else None,
        "wrong_names": wrong,
        "pending_faces": pending,
    }


def _print_report(records: list[dict[str, Any]], video: Path) -> None:
    print(f"bench live: {video.name}, {records[0]['frames'] if records else 0} frames, decode included")
    rows = []
    for record in records:
        for pipeline, fps, p50, p95 in (
            ("baseline", record["baseline_fps"], record["baseline_p50_ms"], record["baseline_p95_ms"]),
            ("ours", record["fps"], record["p50_ms"], record["p95_ms"]),
        ):
            one = record["one_face"]
            row = {"backbone": record["backbone"], "pipeline": pipeline if pipeline == "baseline" else f"ours ({record['detector']})", "fps": fps, "p50_ms": p50, "p95_ms": p95,
                   "one-face fps": one["baseline_fps"] if pipeline == "baseline" else one["fps"]}
            if "labels" in record:
                labels = record["labels"][pipeline]
                row["named"] = f"{labels['named_correctly']}/{labels['person_frames']}"
                row["wrong"] = labels["wrong_names"]
            rows.append(row)
    print_table(rows, ["backbone", "pipeline", "fps", "p50_ms", "p95_ms", "one-face fps", "named", "wrong"])
    for record in records:
        print(f"{record['backbone']}, {record['detector']}: ours/baseline = {record['ratio']}x overall, "
              f"{record['one_face']['ratio']}x with one face in view; "
              f"{record['tracks']} tracks, {record['name_switches']} name switches; mean ms per frame: "
              + ", ".join(f"{stage} {value}" for stage, value in record["stage_mean_ms"].items()))
