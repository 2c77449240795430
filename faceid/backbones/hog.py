"""Dense HOG descriptors with a learned per-domain projection: the cross-domain (sketch -> photo) extractor.

A sketch and a photo of one person differ in texture and shading, not in where the edges of the
face are: a police artist traces the same eyes, nose, mouth, jaw and hair line. Histograms of
oriented gradients on a dense grid of cells over the aligned face keep exactly that (edge
positions and directions) and discard most of the rest. What still separates the two domains is
mostly a constant offset (sketches have stronger, cleaner lines everywhere), so each domain is
centred on its own mean, learned from the training pairs; an optional PCA, fitted on those
centred descriptors, shortens the vectors. Cosine similarity then compares a sketch with a photo.

This is the family of "dense local descriptors + learned projection" methods (Klare & Jain's LFDA
uses SIFT and LBP on patches); chosen by 5-fold person-disjoint cross-validation on the CUHK
training people against frozen and fine-tuned dlib networks (README: Sketch -> photo retrieval).

Runs in NumPy only (no TensorFlow, no ONNX): a 150-px chip takes about a millisecond.

The extractor directory holds ``manifest.json`` (backbone ``hog``, the grid, the two ``domains``,
query side first, ``domain_color``) and ``projection.npz`` (``means`` per domain, optional PCA
``mean`` and ``components``), whose hash is part of the fingerprint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from faceid.backbones.registry import (
    GREY_WEIGHTS,
    MANIFEST_NAME,
    Backbone,
    BackboneOptions,
    Extractor,
    finish_manifest,
    register_backbone,
)
from faceid.errors import InputError
from faceid.io.store import CORRUPT_FILE_ERRORS, StagedFiles, json_bytes

NAME = "hog"
PROJECTION_FILE = "projection.npz"
# Block normalisation as in Dalal & Triggs: L2, clipped at 0.2, renormalised (L2-Hys).
_CLIP = 0.2
_EPSILON = 1e-6


def hog_descriptors(chips: np.ndarray, cell: int, bins: int) -> np.ndarray:
    """Dense HOG of aligned chips: ``(n, s, s, 3) uint8`` -> ``(n, (c-1)^2 * 4 * bins) float32``, c = s // cell.

    Unsigned gradient orientation in ``bins`` bins (linear vote between the two nearest), summed
    per ``cell`` x ``cell`` cell; every 2 x 2 block of cells normalised L2-Hys; blocks overlap by a cell.
    """
    chips = np.asarray(chips)
    grey = chips[..., :3].astype(np.float32) @ GREY_WEIGHTS
    n, size = grey.shape[0], grey.shape[1]
    cells = size // cell
    if cells < 2:
        raise InputError(f"a {size}-px chip holds fewer than 2 cells of {cell} px: use a smaller cell")
    gx = np.zeros_like(grey)
    gy = np.zeros_like(grey)
    gx[:, :, 1:-1] = grey[:, :, 2:] - grey[:, :, :-2]
    gy[:, 1:-1, :] = grey[:, 2:, :] - grey[:, :-2, :]
    magnitude = np.hypot(gx, gy)
    position = (np.arctan2(gy, gx) % np.pi) * (bins / np.pi)
    low = np.floor(position)
    share_high = position - low
    low = low.astype(np.int64) % bins
    high = (low + 1) % bins
    side = cells * cell
    histogram = np.zeros((n, cells, cells, bins), dtype=np.float32)
    for b in range(bins):
        vote = magnitude * ((1.0 - share_high) * (low == b) + share_high * (high == b))
        histogram[..., b] = vote[:, :side, :side].reshape(n, cells, cell, cells, cell).sum(axis=(2, 4))
    blocks = np.concatenate(
        [histogram[:, :-1, :-1], histogram[:, 1:, :-1], histogram[:, :-1, 1:], histogram[:, 1:, 1:]], axis=-1
    )
    blocks /= np.sqrt(np.square(blocks).sum(-1, keepdims=True) + _EPSILON)
    np.minimum(blocks, _CLIP, out=blocks)
    blocks /= np.sqrt(np.square(blocks).sum(-1, keepdims=True) + _EPSILON)
    return blocks.reshape(n, -1)


def descriptors(chips: np.ndarray, cell: int, bins: int, batch_size: int = 256) -> np.ndarray:
    """:func:`hog_descriptors` of any number of chips, ``batch_size`` at a time (bounds the gradients' memory)."""
    return np.concatenate([hog_descriptors(np.asarray(chips[start:start + batch_size]), cell, bins)
                           for start in range(0, len(chips), batch_size)])


def descriptor_dim(chip_size: int, cell: int, bins: int) -> int:
    cells = chip_size // cell
    return (cells - 1) ** 2 * 4 * bins


def domain_means(descriptors: np.ndarray, domains: np.ndarray) -> np.ndarray:
    """``(2, d)``: the mean descriptor of each domain (0: query side, 1: gallery side)."""
    return np.stack([descriptors[domains == side].mean(axis=0) for side in (0, 1)]).astype(np.float32)


def project(descriptors: np.ndarray, projection: dict[str, np.ndarray], side: int) -> np.ndarray:
    """Descriptors of domain ``side`` as the extractor's vectors (centred, optionally PCA-reduced)."""
    centred = descriptors - projection["means"][side]
    if "components" in projection:
        centred = (centred - projection["mean"]) @ projection["components"].T
    return centred.astype(np.float32, copy=False)


def projection_digest(projection: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in sorted(projection):
        digest.update(key.encode() + np.ascontiguousarray(projection[key]).tobytes())
    return digest.hexdigest()[:32]


def hog_manifest(fields: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a fitted HOG extractor (``fields``: input_size, align_padding, cell, bins, dims,
    output_dim, domains, domain_color, weights_sha256, ...)."""
    manifest = {"backbone": NAME, "pooling": "none", "tta": "none", "precision": "fp32", "alignment": "dlib-5pt",
                **fields}
    manifest.setdefault("domain", manifest["domains"][-1])
    return finish_manifest(
        manifest,
        ("backbone", "input_size", "align_padding", "cell", "bins", "domains", "domain_color", "weights_sha256"),
        "backbones/hog.py",
    )


class HogExtractor(Extractor):
    runtime = "numpy"

    def __init__(self, manifest: dict[str, Any], projection: dict[str, np.ndarray]):
        super().__init__(manifest)
        self.projection = projection

    def _embed(self, chips: np.ndarray, batch_size: int) -> np.ndarray:
        side = self.domains.index(self.domain) if self.domain in self.domains else len(self.domains) - 1
        features = descriptors(chips, int(self.manifest["cell"]), int(self.manifest["bins"]), batch_size)
        return project(features, self.projection, side)

    def save(self, directory: Path, model_name: str, export_onnx: bool = True) -> Path:
        """``projection.npz`` and ``manifest.json``, committed together (the manifest hashes the projection)."""
        with StagedFiles(directory) as staged:
            staged.write_with(PROJECTION_FILE, lambda path: np.savez(path, **self.projection))
            staged.write_bytes(MANIFEST_NAME, json_bytes(self.manifest))
        return directory / MANIFEST_NAME


@register_backbone
class HogBackbone(Backbone):
    name = NAME
    description = "dense HOG + per-domain centring (+ PCA), fitted on sketch-photo pairs by train_siamese.py"

    @classmethod
    def create(cls, options: BackboneOptions) -> Extractor:
        raise InputError("HOG extractors are fitted on pairs: fit one with train_siamese.py on a folder of sketch-photo "
                         "pairs (two domains) and use the extractor directory it writes")

    @classmethod
    def load(cls, directory: Path, manifest: dict[str, Any], runtime: str = "auto") -> Extractor:
        path = directory / PROJECTION_FILE
        try:
            with np.load(path, allow_pickle=False) as data:
                projection = {key: data[key].astype(np.float32) for key in data.files}
        except FileNotFoundError:
            raise InputError(f"{path} is missing: the extractor directory is incomplete; re-run train_siamese.py") from None
        except CORRUPT_FILE_ERRORS as error:
            raise InputError(f"{path} is unreadable or corrupt ({error}): re-run train_siamese.py") from error
        # The projection is the whole model: its digest (in the fingerprint) is checked before any use.
        if projection_digest(projection) != manifest.get("weights_sha256"):
            raise InputError(f"{path} does not match the weights_sha256 of {directory / MANIFEST_NAME}: the file was "
                             "changed after it was saved (edited or half-copied?); re-run train_siamese.py")
        if "means" not in projection or projection["means"].shape[0] != len(manifest.get("domains", ())):
            raise InputError(f"{path} holds no per-domain means for {manifest.get('domains')}: re-run train_siamese.py")
        return HogExtractor(manifest, projection)
