"""Two-stage gallery search: shortlist people cheaply, then run the similarity head on them only.

The similarity head scores ``|q - g|`` through an MLP, which no index can search: the
exhaustive path (:func:`faceid.match.scoring.pairwise_scores` over every cached vector) costs one
head evaluation per cached vector per face, ~2.4 MFLOP each for a 2048-d head, so ~0.24 TFLOP
(seconds) per face at 100k vectors. :class:`faceid.match.gallery.Gallery` with ``shortlist=M`` splits
the work in two:

1. **Shortlist** (this module). :class:`ShortlistIndex` works in a cheap copy of the gallery:
   the vectors normalised as the head sees them, centred and PCA-reduced to ``search_dims``
   dimensions, compared by squared Euclidean distance. It finds the ``4 M`` people with the
   nearest vectors to the face (below ``faiss_min_vectors`` vectors by one exact
   matrix-vector product in NumPy; above it with a FAISS inverted-file index,
   ``IndexIVFFlat``, that scans only the ``faiss_nprobe`` nearest of ~sqrt(n) clusters), then
   re-ranks those by the mean closeness of each one's ``top_k`` nearest vectors (the same
   aggregation as the identification rule) and keeps the best ``M``.
2. **Head.** The exhaustive scorer (``pairwise_scores`` + ``person_scores``) runs on the
   shortlisted people's vectors only, so each of them gets exactly the score the exhaustive
   path gives; everyone else gets ``-inf``.

FAISS is optional: it is imported only when a gallery is large enough to use it, and when
``faiss-cpu`` is missing the shortlist falls back to NumPy (exact, slower) with a warning.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from faceid.errors import InputError, NotFittedError
from faceid.extras import install_hint
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "numpy", "faiss")
# Rows the PCA is estimated from: the top components of 2048-d face features are stable
# long before 20k samples, and the covariance of a sample costs 20k x dim^2 FLOPs, not n x dim^2.
_PCA_SAMPLE_ROWS = 20_000
# Training points per FAISS cluster: FAISS warns below 39 and gains nothing above ~256.
_FAISS_POINTS_PER_CLUSTER = 64
# Queries per NumPy block: bounds the (queries x vectors) score matrix to ~100 MB at 400k vectors.
_QUERY_BLOCK = 64
# People found by nearest vector per shortlist place, before re-ranking by the top-k mean:
# a person's top-k mean is at most their nearest vector's closeness, so the true top-M by
# top-k mean are, in practice, among the nearest 4M.
_CANDIDATES_PER_PLACE = 4


def faiss_module():
    """The ``faiss`` module, or ``None`` when faiss-cpu is not installed (imported lazily)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


class ShortlistIndex:
    """Ranks people by their nearest vector to a face, in a PCA-reduced copy of the gallery.

    Args:
        dims: PCA dimensions kept (0, or at least the input dimension: no reduction, only
            centring). Fewer dimensions scan faster; too few lose the identity and the
            shortlist misses the person the head would pick.
        backend: ``numpy`` (exact matrix-vector product), ``faiss`` (inverted-file index,
            approximate) or ``auto`` (FAISS from ``faiss_min_vectors`` vectors on).
        faiss_min_vectors: gallery size from which ``auto`` uses FAISS.
        faiss_nprobe: clusters FAISS scans per face (of ~sqrt(n)); more is slower and closer
            to exact. At least the number of clusters makes FAISS exact.
        top_k: people are ranked by the mean closeness of their ``top_k`` nearest vectors
            (capped at their number of vectors); pass the identification rule's ``top_k``.
        seed: seeds the PCA sample and the FAISS clustering.
    """

    def __init__(
        self,
        *,
        dims: int = DEFAULTS.search_dims,
        backend: str = "auto",
        faiss_min_vectors: int = DEFAULTS.faiss_min_vectors,
        faiss_nprobe: int = DEFAULTS.faiss_nprobe,
        top_k: int = 1,
        seed: int = DEFAULTS.seed,
    ):
        self.dims = dims
        self.backend = backend
        self.faiss_min_vectors = faiss_min_vectors
        self.faiss_nprobe = faiss_nprobe
        self.top_k = top_k
        self.seed = seed

    def fit(self, X: np.ndarray, labels: np.ndarray) -> ShortlistIndex:
        """Index vectors ``X (n, dim)`` (normalised as the head sees them) of people ``labels (n,)``.

        ``labels`` are person indices in ``[0, n_people)``; every person needs a vector.
        """
        if self.backend not in BACKENDS:
            raise InputError(f"unknown search backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.dims < 0 or self.faiss_nprobe < 1 or self.top_k < 1:
            raise InputError(
                f"search dims must be >= 0, nprobe and top_k >= 1; got {self.dims}, {self.faiss_nprobe}, {self.top_k}"
            )
        X = np.asarray(X, dtype=np.float32)
        labels = np.asarray(labels)
        if X.ndim != 2 or len(X) == 0 or len(labels) != len(X):
            raise InputError(f"cannot index vectors of shape {X.shape} with {len(labels)} labels")
        counts = np.bincount(labels)
        if (counts == 0).any():
            raise InputError(f"person indices must run from 0 without gaps; person {np.flatnonzero(counts == 0)[0]} has no vector")
        self.n_people_ = len(counts)
        self.counts_ = counts
        # Rows sorted by person, so a person's vectors are one contiguous run.
        self.order_ = np.argsort(labels, kind="stable")
        self.sorted_labels_ = labels[self.order_]
        self.starts_ = np.concatenate([[0], np.cumsum(counts)[:-1]])

        self.mean_ = X.mean(axis=0, dtype=np.float64).astype(np.float32)
        self.components_ = self._principal_axes(X) if 0 < self.dims < X.shape[1] else None
        reduced = self.transform(X)[self.order_]

        backend = self.backend
        if backend == "auto":
            backend = "faiss" if len(X) >= self.faiss_min_vectors else "numpy"
        if backend == "faiss" and faiss_module() is None:
            logger.warning(
                "faiss-cpu is not installed: the shortlist of this %d-vector gallery scans every vector "
                f"with NumPy instead (exact, slower); {install_hint('search')}",
                len(X),
            )
            backend = "numpy"
        self.backend_ = backend
        # Kept by both backends: the re-ranking reads the candidates' vectors from it.
        self.reduced_ = reduced
        self.squared_norms_ = np.einsum("ij,ij->i", reduced, reduced)
        self.index_ = self._faiss_index(reduced) if backend == "faiss" else None
        return self

    def _principal_axes(self, X: np.ndarray) -> np.ndarray:
        """``(dim, dims)`` top principal axes of a sample of ``X``, largest variance first."""
        rng = np.random.default_rng(self.seed)
        sample = X if len(X) <= _PCA_SAMPLE_ROWS else X[np.sort(rng.choice(len(X), _PCA_SAMPLE_ROWS, replace=False))]
        centred = sample - self.mean_
        covariance = (centred.T @ centred).astype(np.float64) / max(1, len(sample) - 1)
        _, eigenvectors = np.linalg.eigh(covariance)  # ascending eigenvalues
        return np.ascontiguousarray(eigenvectors[:, ::-1][:, : self.dims], dtype=np.float32)

    def _faiss_index(self, reduced: np.ndarray):
        faiss = faiss_module()
        n, dims = reduced.shape
        n_lists = max(1, min(round(math.sqrt(n)), n // _FAISS_POINTS_PER_CLUSTER))
        quantizer = faiss.IndexFlatL2(dims)
        index = faiss.IndexIVFFlat(quantizer, dims, n_lists, faiss.METRIC_L2)
        index.cp.seed = self.seed
        rng = np.random.default_rng(self.seed)
        n_train = min(n, n_lists * _FAISS_POINTS_PER_CLUSTER)
        training = reduced if n_train == n else reduced[np.sort(rng.choice(n, n_train, replace=False))]
        index.train(np.ascontiguousarray(training))
        index.add(np.ascontiguousarray(reduced))
        index.nprobe = min(self.faiss_nprobe, n_lists)
        # The IVF index points at the quantizer without owning it: keep it alive as long.
        self.quantizer_ = quantizer
        return index

    def _check_fitted(self) -> None:
        if not hasattr(self, "backend_"):
            raise NotFittedError("this ShortlistIndex is not fitted yet: call fit(vectors, labels) first")

    def transform(self, X: np.ndarray) -> np.ndarray:
        """The search copy of normalised vectors ``X (m, dim)``: ``(m, dims) float32``."""
        centred = np.asarray(X, dtype=np.float32) - self.mean_
        reduced = centred if self.components_ is None else centred @ self.components_
        return np.ascontiguousarray(reduced, dtype=np.float32)

    def shortlist(self, X: np.ndarray, n_people: int) -> np.ndarray:
        """The ``n_people`` people closest to each face of ``X (m, dim)`` (normalised).

        Returns:
            ``(m, min(n_people, n_people_)) int64`` person indices, closest first; ``-1`` pads a
            row when an approximate FAISS search found fewer people.
        """
        self._check_fitted()
        if n_people < 1:
            raise InputError(f"the shortlist needs at least one person, got {n_people}")
        n_people = min(n_people, self.n_people_)
        queries = self.transform(np.asarray(X, dtype=np.float32).reshape(-1, len(self.mean_)))
        n_candidates = min(self.n_people_, _CANDIDATES_PER_PLACE * n_people if self.top_k > 1 else n_people)
        if self.backend_ == "faiss":
            candidates = self._faiss_nearest_people(queries, n_candidates)
        else:
            candidates = self._numpy_nearest_people(queries, n_candidates)
        if self.top_k == 1:
            return candidates
        result = np.full((len(queries), n_people), -1, dtype=np.int64)
        for row, (query, people) in enumerate(zip(queries, candidates)):
            ranked = self._rerank(query, people[people >= 0])[:n_people]
            result[row, : len(ranked)] = ranked
        return result

    def _closeness(self, queries: np.ndarray, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Minus squared distance, up to each query's own norm: ``2 q.g - |g|^2``, ``(m, n_rows)``."""
        return 2.0 * (queries @ self.reduced_[rows].T) - self.squared_norms_[rows]

    def _numpy_nearest_people(self, queries: np.ndarray, n_people: int) -> np.ndarray:
        result = np.empty((len(queries), n_people), dtype=np.int64)
        for start in range(0, len(queries), _QUERY_BLOCK):
            block = queries[start : start + _QUERY_BLOCK]
            best_per_person = np.maximum.reduceat(self._closeness(block), self.starts_, axis=1)
            result[start : start + len(block)] = _top_columns(best_per_person, n_people)
        return result

    def _rerank(self, query: np.ndarray, people: np.ndarray) -> np.ndarray:
        """``people`` sorted by the mean closeness of their ``top_k`` nearest vectors, best first."""
        counts = self.counts_[people]
        person_of_row = np.repeat(np.arange(len(people)), counts)
        first_row = np.cumsum(counts) - counts
        rank_in_person = np.arange(counts.sum()) - np.repeat(first_row, counts)
        rows = np.repeat(self.starts_[people], counts) + rank_in_person
        closeness = self._closeness(query[None], rows)[0]
        # Rows grouped by person (as they are), best first within each person.
        order = np.lexsort((-closeness, person_of_row))
        taken = rank_in_person < self.top_k
        sums = np.bincount(person_of_row[taken], weights=closeness[order][taken], minlength=len(people))
        means = sums / np.minimum(counts, self.top_k)
        return people[np.argsort(-means, kind="stable")]

    def _faiss_nearest_people(self, queries: np.ndarray, n_people: int) -> np.ndarray:
        result = np.full((len(queries), n_people), -1, dtype=np.int64)
        n_vectors = len(self.sorted_labels_)
        # Enough nearest vectors to hold n_people people when each has the typical count;
        # faces whose nearest vectors crowd into fewer people are searched again, wider.
        wanted = min(n_vectors, 2 * n_people * math.ceil(np.median(self.counts_)))
        pending = np.arange(len(queries))
        while len(pending):
            _, found = self.index_.search(queries[pending], wanted)
            short = []
            for row, ids in zip(pending, found):
                valid = ids[ids >= 0]
                people = self.sorted_labels_[valid]
                _, first = np.unique(people, return_index=True)
                ranked = people[np.sort(first)][:n_people]
                result[row, : len(ranked)] = ranked
                # Fewer ids than asked for means the probed clusters are exhausted: widening won't help.
                if len(ranked) < n_people and len(valid) == wanted and wanted < n_vectors:
                    short.append(row)
            pending = np.array(short, dtype=np.int64)
            wanted = min(n_vectors, 2 * wanted)
        return result


def _top_columns(scores: np.ndarray, count: int) -> np.ndarray:
    """Column indices of the ``count`` largest entries of each row, largest first."""
    if count < scores.shape[1]:
        candidates = np.argpartition(-scores, count - 1, axis=1)[:, :count]
    else:
        candidates = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    ranked = np.argsort(-np.take_along_axis(scores, candidates, axis=1), axis=1, kind="stable")
    return np.take_along_axis(candidates, ranked, axis=1)
