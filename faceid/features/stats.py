"""Normalisation statistics of a feature cache (compute_mean.py).

Saved beside the cache as ``stats.npz`` (per-dimension mean and std) and
``stats.json`` (global mean and std, counts, and the digest of the cache they
were computed from), so ``train.py --normalize 1`` never uses statistics of a
cache that has changed since.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceid.errors import InputError, ManifestMismatchError
from faceid.features.cache import MANIFEST_NAME, STATS_FILE, FeatureCache, check_encryption, check_key_matches
from faceid.io.sealed import Key
from faceid.io.store import load_npz, read_json, save_npz, write_json

STATS_MANIFEST = "stats.json"
# Dimensions that never vary (ReLU outputs that are always 0) would divide by
# zero; below this std a dimension is left unscaled.
MIN_STD = 1e-6


@dataclass(frozen=True)
class Normalizer:
    """Per-dimension z-score: ``(vectors - mean) / std``."""

    mean: np.ndarray  # (dim,) float32
    std: np.ndarray  # (dim,) float32, already floored at MIN_STD

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        """``(n, dim)`` -> ``(n, dim) float32`` normalised."""
        if vectors.shape[-1] != len(self.mean):
            raise InputError(
                f"normalisation statistics are {len(self.mean)}-d but the vectors are {vectors.shape[-1]}-d: "
                "re-run compute_mean.py on the cache you use"
            )
        return ((vectors - self.mean) / self.std).astype(np.float32)

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean.astype(np.float32), "std": self.std.astype(np.float32)}

    @classmethod
    def from_arrays(cls, mean: np.ndarray, std: np.ndarray) -> "Normalizer":
        return cls(np.asarray(mean, np.float32), np.maximum(np.asarray(std, np.float32), MIN_STD))

    def write(self, path: Path) -> None:
        """Write ``mean``/``std`` as ``.npz`` to ``path`` — a temporary path of :mod:`faceid.io.store`
        (``atomic_path`` or ``StagedFiles.write_with``): the one way a normaliser is saved."""
        np.savez(path, **self.as_arrays())

    @classmethod
    def read(cls, path: Path, fix: str, context: str | None = None, encrypted: bool | None = None, *,
             key: Key | None = None) -> "Normalizer":
        """Read what :meth:`write` (or :func:`save_stats`, ``context``: a private file, opened with ``key``)
        wrote; missing or corrupt: an error naming ``fix``."""
        arrays = load_npz(path, "normalisation statistics", fix, context, encrypted, key=key)
        try:
            return cls.from_arrays(arrays["mean"], arrays["std"])
        except KeyError as error:
            raise InputError(f"normalisation statistics {path} lack {error}: {fix}") from error


@dataclass(frozen=True)
class FeatureStats:
    normalizer: Normalizer
    global_mean: float
    global_std: float
    n_vectors: int
    cache_digest: str
    extractor_fingerprint: str


def compute_stats(cache: FeatureCache) -> FeatureStats:
    """Mean and std per dimension over every cached vector (float64 accumulation)."""
    vectors, _, _ = cache.matrix(min_images=1)
    vectors64 = vectors.astype(np.float64)
    return FeatureStats(
        normalizer=Normalizer.from_arrays(vectors64.mean(axis=0), vectors64.std(axis=0)),
        global_mean=float(vectors64.mean()),
        global_std=float(vectors64.std()),
        n_vectors=len(vectors),
        cache_digest=cache.content_digest(),
        extractor_fingerprint=cache.fingerprint,
    )


def save_stats(stats: FeatureStats, features_dir: str | Path, *, key: Key | None = None) -> Path:
    """Write ``stats.npz`` (sealed with ``key`` in an encrypted cache, which must be its key: with a
    handful of people enrolled, the mean is close to one person's vector) and ``stats.json`` (two
    numbers, counts, digests: plain)."""
    features_dir = Path(features_dir)
    check_key_matches(features_dir, read_json(features_dir / MANIFEST_NAME, "feature cache manifest",
                                              "run extract_features.py first"), key=key)
    save_npz(features_dir / STATS_FILE, STATS_FILE, key=key, **stats.normalizer.as_arrays())
    write_json(
        features_dir / STATS_MANIFEST,
        {
            "global_mean": stats.global_mean,
            "global_std": stats.global_std,
            "n_vectors": stats.n_vectors,
            "dim": len(stats.normalizer.mean),
            "cache_digest": stats.cache_digest,
            "extractor_fingerprint": stats.extractor_fingerprint,
        },
    )
    return features_dir / STATS_FILE


def load_stats(features_dir: str | Path, cache: FeatureCache | None = None, *, key: Key | None = None) -> FeatureStats:
    """Read saved statistics; with ``cache``, insist they were computed from it as it is now.
    ``key``: the key of an encrypted cache."""
    features_dir = Path(features_dir)
    fix = f"run compute_mean.py on {features_dir}"
    manifest: dict[str, Any] = read_json(features_dir / STATS_MANIFEST, "normalisation statistics", fix)
    encrypted = check_encryption(features_dir, read_json(features_dir / MANIFEST_NAME, "feature cache manifest", fix),
                                 key=key)
    normalizer = Normalizer.read(features_dir / STATS_FILE, fix, STATS_FILE, encrypted, key=key)
    stats = FeatureStats(
        normalizer=normalizer,
        global_mean=float(manifest["global_mean"]),
        global_std=float(manifest["global_std"]),
        n_vectors=int(manifest["n_vectors"]),
        cache_digest=str(manifest["cache_digest"]),
        extractor_fingerprint=str(manifest["extractor_fingerprint"]),
    )
    if cache is not None and stats.cache_digest != cache.content_digest():
        raise ManifestMismatchError(
            f"the statistics in {features_dir} were computed from an earlier state of the cache "
            f"(digest {stats.cache_digest[:12]}, cache now {cache.content_digest()[:12]}): {fix}"
        )
    return stats
