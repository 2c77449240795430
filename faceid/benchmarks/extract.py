"""Feature extraction throughput: the original design against ours, per backbone.

(a) baseline, the original design: one person at a time, each image decoded,
    detected and aligned in this process, then the backbone called once on the
    person's stack of chips (Keras ``predict`` for ResNet50, dlib's own C++ runtime
    for dlib).
(b) ours: ``faceid.features.extract.extract_features`` with its defaults: decoding,
    detection and alignment in worker processes while the backbone (ONNX Runtime:
    ResNet50's export, dlib's network rebuilt as an ONNX graph) embeds batches of
    32 chips across people; ``--precision int8`` quantises ours (calibrated on
    ``--calibration_faces``, by default CUHK photos: other people than LFW's).

Per-face embedding time (backbone only, aligned chips in memory) is measured at
batch 1 (live identification) and batch 32 (extraction) for both runtimes.

Both use the same detector, alignment and images (the first people of the folder
until ``--images`` is reached), into a fresh cache, so every image is embedded.
ResNet50 runs with random weights: speed does not depend on weight values. The
floor is the backbone's FLOPs per image over this machine's measured
matrix-multiply rate: what a perfect runtime on these cores could reach.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from faceid.backbones import PRECISIONS, TTA_MODES, BackboneOptions, create_extractor, load_extractor
from faceid.backbones.dlib_resnet import face_resnet
from faceid.backbones.resnet50 import preprocess_resnet50
from faceid.benchmarks.common import matmul_gflops, print_json_lines, print_table, shared_data
from faceid.errors import InputError
from faceid.features.embedding import FaceEmbedder
from faceid.features.extract import extract_features
from faceid.io.images import list_people
from faceid.nets.dlib_graph import face_resnet_flops
from faceid.settings import DEFAULTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--faces_path", type=Path, default=shared_data() / "lfw_devtrain",
                        help="folder of person folders to embed")
    parser.add_argument("--images", type=int, default=300, help="images to embed (whole people, in name order)")
    parser.add_argument("--backbones", default="resnet50,dlib", help="comma-separated backbones to measure")
    parser.add_argument("--workers", type=int, default=DEFAULTS.workers, help="worker processes for ours")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="ours in fp32 or int8")
    parser.add_argument("--tta", choices=TTA_MODES, default=DEFAULTS.tta, help="ours with test-time augmentation")
    parser.add_argument("--calibration_faces", type=Path, default=shared_data() / "cuhk_train" / "photos",
                        help="face photos to calibrate int8 on")


def run(args: argparse.Namespace) -> int:
    records = []
    gflops = matmul_gflops()
    with tempfile.TemporaryDirectory(prefix="faceid-bench-") as workdir:
        subset = _subset(args.faces_path, args.images, Path(workdir) / "faces")
        n_images = sum(len(files) for files in list_people(subset).values())
        for backbone in [name.strip() for name in args.backbones.split(",") if name.strip()]:
            directory = Path(workdir) / backbone
            weights = "none" if backbone == "resnet50" else DEFAULTS.weights
            # The original design had no test-time augmentation.
            create_extractor(backbone, BackboneOptions(weights=weights, tta="none")).save(directory / "baseline", "extractor")
            create_extractor(backbone, BackboneOptions(
                weights=weights, precision=args.precision, tta=args.tta, calibration_faces=str(args.calibration_faces),
            )).save(directory / "extractor", "extractor")
            # The original design's runtime: Keras for ResNet50, dlib's own code for dlib.
            baseline_extractor = load_extractor(directory / "baseline", runtime="keras" if backbone == "resnet50" else "dlib")
            ours_extractor = load_extractor(directory / "extractor")
            # Warm both runtimes up (graph compilation, thread pools) outside the timed runs.
            warm = np.zeros((2, ours_extractor.chip_size, ours_extractor.chip_size, 3), np.uint8)
            baseline_extractor.embed(warm)
            ours_extractor.embed(warm)
            chips = _sample_chips(subset, ours_extractor, 32)

            started = time.perf_counter()
            baseline_vectors = _baseline(subset, baseline_extractor)
            baseline_seconds = time.perf_counter() - started
            started = time.perf_counter()
            summary = extract_features(subset, ours_extractor, directory / "features", workers=args.workers, progress=False)
            ours_seconds = time.perf_counter() - started
            record = {
                "bench": "extract",
                "backbone": backbone,
                "runtime": ours_extractor.runtime,
                "baseline_runtime": baseline_extractor.runtime,
                "precision": ours_extractor.precision,
                "tta": ours_extractor.tta,
                "images": n_images,
                "embedded": summary.embedded,
                "baseline_embedded": baseline_vectors,
                "workers": args.workers,
                "baseline_img_per_s": round(n_images / baseline_seconds, 2),
                "img_per_s": round(n_images / ours_seconds, 2),
                "ratio": round(baseline_seconds / ours_seconds, 2),
            }
            for name, extractor in (("baseline_", baseline_extractor), ("", ours_extractor)):
                record[f"{name}embed_ms_b1"] = round(embed_ms(extractor, chips[:1], repeats=10), 2)
                record[f"{name}embed_ms_b32"] = round(embed_ms(extractor, chips, repeats=2), 2)
            record["embed_ratio_b1"] = round(record["baseline_embed_ms_b1"] / record["embed_ms_b1"], 2)
            record["embed_ratio_b32"] = round(record["baseline_embed_ms_b32"] / record["embed_ms_b32"], 2)
            flops = face_resnet_flops(face_resnet()) if backbone == "dlib" else backbone_flops(baseline_extractor)
            if flops:
                record["gflop_per_img"] = round(flops / 1e9, 2)
                record["matmul_gflops"] = round(gflops, 1)
                record["floor_img_per_s"] = round(gflops * 1e9 / flops, 2)
                record["floor_precision"] = "fp32"  # the float32 multiply rate; int8 is not bound by it
            records.append(record)
    print(f"bench extract: {n_images} images of {args.faces_path}; float32 matrix multiply here "
          f"(ONNX Runtime, all cores): {gflops:.1f} GFLOP/s")
    print_table(records, ["backbone", "runtime", "precision", "images", "baseline_img_per_s", "img_per_s", "ratio",
                          "gflop_per_img", "floor_img_per_s"])
    print("per-face embedding, ms (backbone only):")
    print_table(records, ["backbone", "baseline_runtime", "baseline_embed_ms_b1", "baseline_embed_ms_b32", "runtime",
                          "embed_ms_b1", "embed_ms_b32", "embed_ratio_b1", "embed_ratio_b32"])
    print_json_lines(records)
    return 0


def _subset(faces_path: Path, images: int, destination: Path) -> Path:
    """The first people of ``faces_path`` (by name) holding ``images`` images, as symlinks."""
    destination.mkdir(parents=True)
    total = 0
    for name, files in list_people(faces_path).items():
        if total >= images:
            break
        (destination / name).symlink_to(faces_path.resolve() / name, target_is_directory=True)
        total += len(files)
    if total == 0:
        raise InputError(f"no images under {faces_path}")
    return destination


def _baseline(faces_root: Path, extractor) -> int:
    """The original design; returns how many images it embedded."""
    cropper = FaceEmbedder(extractor).cropper
    embedded = 0
    for files in list_people(faces_root).values():
        chips = [chip for chip in map(cropper.largest_chip, files) if chip is not None]
        if not chips:
            continue
        stack = np.stack(chips)
        if extractor.runtime == "keras":
            extractor.model.predict(preprocess_resnet50(stack), verbose=0)  # one predict per person
        else:
            extractor.embed(stack)
        embedded += len(chips)
    return embedded


def _sample_chips(faces_root: Path, extractor, count: int) -> np.ndarray:
    """``count`` aligned chips of real faces from the subset (repeated if it has fewer)."""
    cropper = FaceEmbedder(extractor).cropper
    chips = []
    for files in list_people(faces_root).values():
        for path in files:
            chip = cropper.largest_chip(path)
            if chip is not None:
                chips.append(chip)
            if len(chips) == count:
                return np.stack(chips)
    if not chips:
        raise InputError(f"no face found under {faces_root}")
    return np.stack([chips[index % len(chips)] for index in range(count)])


def embed_ms(extractor, chips: np.ndarray, repeats: int) -> float:
    """Mean milliseconds per face of ``extractor.embed`` on ``chips`` in one batch (after one warm-up)."""
    extractor.embed(chips, batch_size=len(chips))
    started = time.perf_counter()
    for _ in range(repeats):
        extractor.embed(chips, batch_size=len(chips))
    return (time.perf_counter() - started) * 1000.0 / repeats / len(chips)


def backbone_flops(extractor) -> float | None:
    """Multiply-adds x 2 of the Keras model's convolutions and dense layers for one image."""
    model = getattr(extractor, "model", None)
    if model is None or not hasattr(model, "layers"):
        return None
    total = 0.0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            height, width, channels_out = layer.output.shape[1:]
            kernel_h, kernel_w = layer.kernel_size
            channels_in = layer.input.shape[-1]
            total += 2.0 * height * width * kernel_h * kernel_w * channels_in * channels_out
        elif kind == "Dense":
            total += 2.0 * layer.input.shape[-1] * layer.units
    return total

