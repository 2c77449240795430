"""Alignment on BlazeFace's boxes: which landmarks make the chips that identify best, on LFW pairs.

Every image of the pair list is searched once with BlazeFace (our ONNX graph, DEFAULTS.blazeface_model)
and once with dlib's HOG detector; the face at the image centre (LFW's labelled face) is cut three ways
by the same get_face_chip alignment and embedded by the dlib backbone:

- ``hog``: the reference, detect_faces(detector="hog") then dlib's 5-point predictor on its box;
- ``dlib5``: dlib's 5-point predictor on the BlazeFace box (what detect_faces(detector="blazeface") does);
- ``keypoints``: the 5 dlib landmarks predicted from BlazeFace's own keypoints (eyes, nose tip, mouth)
  through a similarity transform onto a template, fitted on LFW images outside the pair list.

An image without a centred face is embedded from the centre crop (evaluate.py's default), so every
variant scores the same pairs; the table counts those images. Accuracy is LFW's 10-fold protocol.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceid.backbones import BackboneOptions, create_extractor
from faceid.benchmarks.common import print_json_lines, print_table, shared_data
from faceid.detect.faces import DetectedFace, align_face, detect_faces
from faceid.errors import InputError
from faceid.evaluate.folds import fold_accuracy
from faceid.evaluate.images import centre_face, centred_face
from faceid.evaluate.pairlist import ImageKey, PairList, read_pair_list
from faceid.evaluate.pairs import MISSING_POLICIES, _replace_missing
from faceid.features.embedding import ChipBatcher
from faceid.io.images import read_image
from faceid.match.metrics import roc_auc
from faceid.settings import DEFAULTS

VARIANTS = ("hog", "dlib5", "keypoints")
# BlazeFace's right eye, left eye, nose tip and mouth: the ear tragions are left out, they are
# guesses on frontal faces and hidden on turned ones.
KEYPOINT_ROWS = (0, 1, 2, 3)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs_file", type=Path, default=shared_data() / "lfw_pairsDevTrain.txt",
                        help="LFW pair list (cut into 10 folds when it is a single list)")
    parser.add_argument("--images_root", type=Path, default=shared_data() / "lfw_devtrain",
                        help="folder of LFW person folders the pair list names")
    parser.add_argument("--missing", choices=MISSING_POLICIES, default="replace",
                        help="listed image not on disk (lfw_devtrain lacks everyone with one photo): drop its pair, "
                             "or (different pairs) use another person's image, as evaluate.py --missing replace; "
                             "drop leaves 100 of 1,100 different pairs")
    parser.add_argument("--limit", type=int, default=None,
                        help="evaluate only N pairs, half same, half different, spread over the list "
                             "(a quick run; at least 20 keeps every fold populated); default all")
    parser.add_argument("--template_images", type=int, default=300,
                        help="LFW images outside the pair list the keypoint template is fitted on; "
                             "more gives a steadier template, each costs one HOG and one BlazeFace search")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed,
                        help="fixes the replacement images (as evaluate.py's --seed) and the template's images")


# --- the keypoint template -------------------------------------------------------------------


def similarity_transform(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rotation, uniform scale and shift that best maps ``source`` onto ``target`` (least
    squares, Umeyama 1991): ``(matrix (2, 2), offset (2,))`` with ``target ~ source @ matrix.T + offset``.

    Args:
        source, target: ``(n_points, 2)`` corresponding points, ``n_points >= 2``.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    source_mean, target_mean = source.mean(0), target.mean(0)
    centred_source, centred_target = source - source_mean, target - target_mean
    u, singular, vt = np.linalg.svd(centred_target.T @ centred_source)
    reflection = np.eye(2)
    if np.linalg.det(u @ vt) < 0:  # a mirror image is no similarity: flip the weakest axis back
        reflection[1, 1] = -1.0
    rotation = u @ reflection @ vt
    scale = float(np.sum(singular * np.diag(reflection)) / max(np.sum(centred_source**2), 1e-12))
    matrix = scale * rotation
    return matrix, target_mean - matrix @ source_mean


def _apply(transform: tuple[np.ndarray, np.ndarray], points: np.ndarray) -> np.ndarray:
    matrix, offset = transform
    return np.asarray(points, dtype=np.float64) @ matrix.T + offset


def fit_keypoint_template(keypoints: Sequence[np.ndarray], landmarks: Sequence[np.ndarray],
                          iterations: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The canonical frame of BlazeFace's keypoints and dlib's 5 landmarks in it.

    The frame is the keypoints' Procrustes mean (each face's keypoints mapped onto the mean by a
    similarity, the mean recomputed); the template is the mean of the dlib landmarks carried into
    that frame by the same transforms.

    Args:
        keypoints: per face ``(len(KEYPOINT_ROWS), 2)`` BlazeFace keypoints.
        landmarks: per face ``(5, 2)`` dlib landmarks of the same face.

    Returns:
        ``(canonical (n_keypoints, 2), template (5, 2))`` float64.
    """
    if len(keypoints) < 2 or len(keypoints) != len(landmarks):
        raise InputError("the keypoint template needs two or more faces with both kinds of points; "
                         f"got {len(keypoints)} and {len(landmarks)}")

    def normalised(points: np.ndarray) -> np.ndarray:
        centred = points - points.mean(0)
        return centred / np.linalg.norm(centred)

    canonical = normalised(np.mean([normalised(np.asarray(points, np.float64)) for points in keypoints], axis=0))
    for _ in range(iterations):
        aligned = [_apply(similarity_transform(points, canonical), points) for points in keypoints]
        canonical = normalised(np.mean(aligned, axis=0))
    template = np.mean([_apply(similarity_transform(points, canonical), face_landmarks)
                        for points, face_landmarks in zip(keypoints, landmarks)], axis=0)
    return canonical, template


def landmarks_from_keypoints(keypoints: np.ndarray, canonical: np.ndarray, template: np.ndarray) -> np.ndarray:
    """dlib's 5 landmarks ``(5, 2) float32`` predicted from one face's BlazeFace keypoints
    ``(len(KEYPOINT_ROWS), 2)``: the template carried from the canonical frame onto the face."""
    return _apply(similarity_transform(canonical, keypoints), template).astype(np.float32)


# --- faces of one image ----------------------------------------------------------------------


def _centred(faces: list[DetectedFace], shape: tuple[int, ...]) -> DetectedFace | None:
    index = centred_face(faces, shape)
    return None if index is None else faces[index]


def _landmark_distance(face: DetectedFace, reference: DetectedFace) -> float:
    """Mean distance of the 5 landmarks to the reference's, as a share of the reference box width."""
    return float(np.linalg.norm(face.landmarks - reference.landmarks, axis=1).mean() / reference.box.width)


def _fit_template(images_root: Path, excluded: set[ImageKey], count: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The keypoint template from ``count`` LFW images outside the pair list where HOG and BlazeFace
    both find the centred face; also how many images were searched for them."""
    candidates = sorted((path.parent.name, path.name) for path in images_root.glob("*/*.jpg"))
    candidates = [key for key in candidates if key not in excluded]
    random.Random(seed).shuffle(candidates)
    keypoints, landmarks, searched = [], [], 0
    for person, file_name in candidates:
        if len(keypoints) >= count:
            break
        searched += 1
        image = read_image(images_root / person / file_name)
        hog = _centred(detect_faces(image, detector="hog"), image.shape)
        blaze = _centred(detect_faces(image, detector="blazeface"), image.shape)
        if hog is None or blaze is None:
            continue
        keypoints.append(blaze.keypoints[list(KEYPOINT_ROWS)])
        landmarks.append(hog.landmarks)
    if len(keypoints) < count:
        raise InputError(f"only {len(keypoints)} images outside the pair list have a face both detectors find: "
                         f"lower `template_images` (asked {count})")
    canonical, template = fit_keypoint_template(keypoints, landmarks)
    return canonical, template, searched


# --- the benchmark ---------------------------------------------------------------------------


def _limited(pairs: PairList, present: np.ndarray, limit: int | None) -> np.ndarray:
    """Rows of the pairs to evaluate among those whose images are ``present`` (``(n_pairs,) bool``):
    all, or ``limit`` spread evenly over each kind (so every fold keeps some)."""
    if limit is None or limit >= int(present.sum()):
        return np.flatnonzero(present)
    if limit < 2:
        raise InputError(f"`limit` must be at least 2 (one pair of each kind); got {limit}")
    rows = []
    for kind, share in ((True, limit // 2), (False, limit - limit // 2)):
        of_kind = np.flatnonzero(present & (pairs.is_same == kind))
        rows.append(of_kind[np.linspace(0, len(of_kind) - 1, share).round().astype(int)])
    return np.unique(np.concatenate(rows))


def _score(vectors: dict[ImageKey, np.ndarray], first: list[ImageKey], second: list[ImageKey]) -> dict[str, np.ndarray]:
    a = np.stack([vectors[key] for key in first]).astype(np.float64)
    b = np.stack([vectors[key] for key in second]).astype(np.float64)
    return {
        "euclidean": -np.linalg.norm(a - b, axis=1),  # higher = more alike, as fold_accuracy expects
        "cosine": np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)),
    }


@dataclass
class _Embedded:
    """Per variant: each image's vector, how many images had no centred face, landmark distances to HOG's."""

    vectors: dict[str, dict[ImageKey, np.ndarray]]
    no_face: dict[str, int]
    distances: dict[str, list[float]]


def _pairs_to_score(args: argparse.Namespace, pairs: PairList) -> tuple[list[ImageKey], list[ImageKey], np.ndarray,
                                                                       dict[str, int]]:
    """The pairs' first and second images and rows in ``pairs``, after missing images were dealt
    with (``args.missing``) and ``args.limit`` applied; and what happened to the list."""
    available = {key: (args.images_root / key[0] / key[1]).is_file() for key in pairs.images()}
    first, second, replaced = list(pairs.first), list(pairs.second), 0
    if args.missing == "replace":  # as evaluate.py --missing replace, with the same seed: the same pairs
        first, second, replaced = _replace_missing(
            pairs, available, {key for key, there in available.items() if there}, np.random.default_rng(args.seed))
    present = np.array([available.get(a, False) and available.get(b, False) for a, b in zip(first, second)])
    rows = _limited(pairs, present, args.limit)
    counts = {"missing_images": sum(not there for there in available.values()), "pairs_repaired": replaced,
              "pairs_left_out": int(len(pairs) - present.sum())}
    return [first[row] for row in rows], [second[row] for row in rows], rows, counts


def _embed_variants(images: list[ImageKey], images_root: Path, canonical: np.ndarray, template: np.ndarray,
                    progress: bool) -> _Embedded:
    """Each image's centred face cut the three ways (:data:`VARIANTS`) and embedded by the dlib backbone;
    an image where a variant finds no centred face is embedded from the centre crop."""
    from tqdm import tqdm

    extractor = create_extractor("dlib", BackboneOptions())
    result = _Embedded({variant: {} for variant in VARIANTS}, dict.fromkeys(VARIANTS, 0),
                       {variant: [] for variant in VARIANTS})

    def deliverer(variant: str):
        return lambda keys, vectors: result.vectors[variant].update(zip(keys, vectors))

    batchers = {variant: ChipBatcher(extractor.embed, deliverer(variant), DEFAULTS.batch_size) for variant in VARIANTS}
    for key in tqdm(images, desc="align", unit="img", disable=None if progress else True):
        image = read_image(images_root / key[0] / key[1])
        hog = _centred(detect_faces(image, detector="hog"), image.shape)
        # BlazeFace's face as detect_faces gives it: dlib's 5 landmarks on its box (dlib5), and its keypoints.
        blaze = _centred(detect_faces(image, detector="blazeface"), image.shape)
        faces: dict[str, DetectedFace | None] = {"hog": hog, "dlib5": blaze, "keypoints": None}
        if blaze is not None:
            predicted = landmarks_from_keypoints(blaze.keypoints[list(KEYPOINT_ROWS)], canonical, template)
            faces["keypoints"] = DetectedFace(blaze.box, predicted, blaze.detector_score)
        for variant, face in faces.items():
            if face is None:
                result.no_face[variant] += 1
                face = centre_face(image)
                if face is None:
                    raise InputError(f"{images_root / key[0] / key[1]} is too small to hold a face")
            elif hog is not None:
                result.distances[variant].append(_landmark_distance(face, hog))
            batchers[variant].add(key, align_face(image, face, extractor.chip_size, extractor.align_padding))
    for batcher in batchers.values():
        batcher.flush()
    return result


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if not args.images_root.is_dir():
        raise InputError(f"images folder {args.images_root} not found: pass `images_root`, LFW's person folders")
    pairs = read_pair_list(args.pairs_file)
    first, second, rows, counts = _pairs_to_score(args, pairs)
    is_same, fold = pairs.is_same[rows], pairs.fold[rows]
    images = list(dict.fromkeys([*first, *second]))
    canonical, template, searched = _fit_template(args.images_root, set(pairs.images()), args.template_images,
                                                  args.seed)
    embedded = _embed_variants(images, args.images_root, canonical, template, progress=not args.quiet)

    records: list[dict[str, Any]] = []
    for variant in VARIANTS:
        distances = embedded.distances[variant]
        record: dict[str, Any] = {
            "bench": "align", "variant": variant, "pairs": len(rows), "images": len(images),
            "no_face": embedded.no_face[variant],
            "landmark_dist_to_hog_pct": round(100.0 * float(np.mean(distances)), 2) if distances else None,
            "landmark_dist_images": len(distances),
        }
        for metric, scores in _score(embedded.vectors[variant], first, second).items():
            accuracy = fold_accuracy(scores, is_same, fold)
            record[f"{metric}_acc"] = round(accuracy.mean, 4)
            record[f"{metric}_sd"] = round(accuracy.std, 4)
            # per fold, so two variants can be compared fold by fold (they score the same pairs)
            record[f"{metric}_folds"] = [round(float(value), 4) for value in accuracy.accuracies]
            record[f"{metric}_auc"] = round(roc_auc(scores, is_same), 4)
        records.append(record)
    # The fitted frame and template (what a library using the keypoints would carry).
    records[VARIANTS.index("keypoints")].update({"canonical_keypoints": np.round(canonical, 5).tolist(),
                                                 "template_landmarks": np.round(template, 5).tolist()})
    for record in records:
        record.update({**counts, "template_images": args.template_images, "template_searched": searched,
                       "blazeface_model": DEFAULTS.blazeface_model, "seconds": round(time.perf_counter() - started, 1)})

    print(f"bench align: {args.pairs_file.name}, {len(rows)} pairs ({int(is_same.sum())} same; "
          f"{counts['missing_images']} images missing: {counts['pairs_repaired']} pairs repaired, "
          f"{counts['pairs_left_out']} left out), {len(images)} images; keypoint template fitted on "
          f"{args.template_images} images outside the list; no face: the centre crop is embedded")
    columns = ["variant", "no face", "landmark dist to hog", "euclidean acc", "cosine acc", "euclidean auc",
               "cosine auc"]
    print_table([{"variant": r["variant"], "no face": r["no_face"],
                  "landmark dist to hog": "-" if r["variant"] == "hog" else f"{r['landmark_dist_to_hog_pct']} %",
                  "euclidean acc": f"{r['euclidean_acc']:.4f} ± {r['euclidean_sd']:.4f}",
                  "cosine acc": f"{r['cosine_acc']:.4f} ± {r['cosine_sd']:.4f}",
                  "euclidean auc": r["euclidean_auc"], "cosine auc": r["cosine_auc"]} for r in records], columns)
    print_json_lines(records)
    return 0
