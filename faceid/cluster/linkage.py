"""The default clustering: average linkage over a k-nearest-neighbour graph, stricter for larger clusters.

Faces are unit vectors compared by cosine similarity. Every face starts as its own cluster; the two
clusters with the highest *average* similarity between their faces are joined, again and again, while
that average reaches the threshold for their sizes. The average similarity of clusters ``A`` and ``B``
is exact and cheap: ``(ΣA · ΣB) / (|A| |B|)`` from each cluster's vector sum, so no n² matrix is held.

Two things make it scale and make it better than a single global threshold (docs/clustering.md):

- **Candidates from a k-nearest-neighbour graph.** Two clusters are compared only when a face of one is
  among the ``neighbours`` nearest faces of a face of the other (exact NumPy products in blocks, or a FAISS
  HNSW index from ``faiss_min_vectors`` faces), so 100,000 faces cost a graph and ~n heap steps.
- **A threshold that depends on the sizes joined.** Two single faces need ``pair``; two large clusters
  need ``group``, higher: ``group + (pair - group) / sqrt(m)``, ``m`` the smaller cluster's size. An
  average over many faces of one person stays high whatever the pose, while two look-alike people's
  averages settle a little lower than their closest pair: measured on LFW, joining large clusters more
  strictly and single faces more loosely beats any one threshold.

Clusters given as ``frozen`` (the clusters of an earlier run) never join one another: new faces join
them or form new clusters, so the clusters new faces do not touch keep their ids.
"""

from __future__ import annotations

import heapq
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from faceid.errors import InputError
from faceid.match.scoring import unit_vectors
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

# Query rows per block of the exact graph: bounds the (rows x faces) similarity block to ~400 MB at 100k faces.
_BLOCK = 1024
# FAISS HNSW: links per face, and the candidate lists while building and searching (more: closer to exact, slower).
_HNSW_LINKS = 32
_HNSW_BUILD = 40
_HNSW_SEARCH = 64
# Edges whose first margins are computed at once: bounds two (edges x dim) float64 blocks to ~200 MB.
_EDGE_BLOCK = 100_000


@dataclass(frozen=True)
class MergeThresholds:
    """The cosine similarity two clusters' average must reach to be joined.

    Attributes:
        pair: what two single faces need.
        group: what two large clusters need (the limit as the smaller one grows).
        baselines: the one similarity each single-threshold baseline method uses
            (``chinese-whispers``, ``dbscan``, ``agglomerative``; faceid/cluster/methods.py).
    """

    pair: float
    group: float
    baselines: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("pair", "group"):
            value = getattr(self, name)
            if not -1.0 <= value <= 1.0 or math.isnan(value):
                raise InputError(f"the merge threshold `{name}` is a cosine similarity in [-1, 1], got {value}")

    def at(self, smaller: np.ndarray | float) -> np.ndarray | float:
        """The threshold for joining clusters whose smaller one has ``smaller`` faces."""
        return self.group + (self.pair - self.group) / np.sqrt(smaller)

    def as_dict(self) -> dict[str, Any]:
        """Every threshold, for JSON (``clusters.json``, evaluate.py cluster)."""
        return {"pair": float(self.pair), "group": float(self.group),
                "baselines": {method: float(value) for method, value in self.baselines.items()}}


def neighbour_graph(
    vectors: np.ndarray,
    neighbours: int = DEFAULTS.cluster_neighbours,
    queries: np.ndarray | None = None,
    *,
    faiss_min_vectors: int = DEFAULTS.cluster_faiss_min_vectors,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query face's ``neighbours`` most similar faces (itself excluded).

    Args:
        vectors: ``(n, dim)`` unit vectors.
        neighbours: how many neighbours per face (capped at ``n - 1``).
        queries: row numbers of the faces to find neighbours for; ``None``: every face.
        faiss_min_vectors: from this many faces on, an approximate FAISS HNSW index instead of exact
            NumPy products; NumPy when FAISS is missing.

    Returns:
        ``(rows, neighbours)`` each ``(m, k)``: neighbour row numbers and their cosine similarities.
    """
    n = len(vectors)
    rows = np.arange(n) if queries is None else np.asarray(queries, dtype=np.int64)
    k = min(int(neighbours), n - 1)
    if k < 1 or len(rows) == 0:
        return np.zeros((len(rows), 0), np.int64), np.zeros((len(rows), 0), np.float32)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if n >= faiss_min_vectors:
        from faceid.match.search import faiss_module

        faiss = faiss_module()
        if faiss is not None:
            return _faiss_graph(faiss, vectors, rows, k)
        logger.warning("faiss-cpu is not installed: the neighbour graph of %d faces is computed exactly (slower); "
                       "pip install \"faceid[search]\"", n)
    found = np.empty((len(rows), k), np.int64)
    similarity = np.empty((len(rows), k), np.float32)
    for start in range(0, len(rows), _BLOCK):
        block = rows[start:start + _BLOCK]
        scores = vectors[block] @ vectors.T
        scores[np.arange(len(block)), block] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        found[start:start + len(block)] = part
        similarity[start:start + len(block)] = np.take_along_axis(scores, part, axis=1)
    return found, similarity


def _faiss_graph(faiss, vectors: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The graph from a FAISS HNSW index (inner product): ~96 % of the exact 16 neighbours at 100k faces, in
    ~12 s on 2 cores where exact products take ~30 s (an inverted-file index found 66 % at the same time)."""
    index = faiss.IndexHNSWFlat(vectors.shape[1], _HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = _HNSW_BUILD
    index.add(vectors)
    index.hnsw.efSearch = max(_HNSW_SEARCH, 2 * k)
    similarity, found = index.search(vectors[rows], k + 1)
    # Drop each face itself (normally the first hit) and keep k others; -1 marks a missing hit.
    found[found == rows[:, None]] = -1
    order = np.argsort(found < 0, axis=1, kind="stable")[:, :k]  # real hits first, in FAISS's order
    found = np.take_along_axis(found, order, axis=1)
    similarity = np.take_along_axis(similarity, order, axis=1)
    similarity[found < 0] = -np.inf
    return found.astype(np.int64), similarity.astype(np.float32)


def average_linkage(
    vectors: np.ndarray,
    thresholds: MergeThresholds,
    *,
    neighbours: int = DEFAULTS.cluster_neighbours,
    groups: np.ndarray | None = None,
    frozen: int = 0,
    faiss_min_vectors: int = DEFAULTS.cluster_faiss_min_vectors,
) -> np.ndarray:
    """Cluster faces by size-aware average linkage on their nearest-neighbour graph.

    Args:
        vectors: ``(n, dim)`` face vectors (any length: compared by cosine similarity).
        thresholds: what a join needs (`MergeThresholds`).
        neighbours: faces per face in the candidate graph.
        groups: ``(n,)`` a starting cluster per face (``0 .. g-1``), ``-1`` for a face on its own;
            ``None``: every face on its own.
        frozen: groups ``0 .. frozen-1`` never join one another (an earlier run's clusters); faces
            join them, and so may new clusters.

    Returns:
        ``(n,) int64`` labels: the smallest row of each final cluster (for frozen groups: their first face).
    """
    vectors = unit_vectors(vectors).astype(np.float64)
    n = len(vectors)
    if n == 0:
        return np.zeros(0, np.int64)
    groups = np.full(n, -1, np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    if groups.shape != (n,):
        raise InputError(f"`groups` needs one entry per face ({n}), got shape {groups.shape}")
    # Nodes: the starting groups, then one per face on its own.
    singles = np.flatnonzero(groups < 0)
    group_count = int(groups.max()) + 1 if (groups >= 0).any() else 0
    node_of = groups.copy()
    node_of[singles] = group_count + np.arange(len(singles))
    nodes = group_count + len(singles)
    sums = np.zeros((nodes, vectors.shape[1]))
    np.add.at(sums, node_of, vectors)
    sizes = np.bincount(node_of, minlength=nodes).astype(np.float64)
    if (sizes == 0).any():
        raise InputError("`groups` must number its groups 0 .. g-1 without gaps")
    is_frozen = np.arange(nodes) < frozen

    # Candidate edges between nodes: from the faces that may still move (every face when nothing is
    # frozen; otherwise only faces outside frozen groups — frozen pairs never join).
    movable = np.flatnonzero(~is_frozen[node_of])
    found, _ = neighbour_graph(vectors.astype(np.float32), neighbours, movable, faiss_min_vectors=faiss_min_vectors)
    sources = np.repeat(node_of[movable], found.shape[1])
    targets = found.ravel()
    valid = targets >= 0
    sources, targets = sources[valid], node_of[targets[valid]]
    keep = (sources != targets) & ~(is_frozen[sources] & is_frozen[targets])
    edges = np.unique(np.sort(np.stack([sources[keep], targets[keep]], axis=1), axis=1), axis=0)

    adjacency: list[set[int]] = [set() for _ in range(nodes)]
    for a, b in edges.tolist():
        adjacency[a].add(b)
        adjacency[b].add(a)
    version = np.zeros(nodes, np.int64)
    alive = np.ones(nodes, bool)
    parent = np.arange(nodes)

    def margin(a: np.ndarray | int, b: np.ndarray, dots: np.ndarray) -> np.ndarray:
        """How far the average similarity of nodes ``a`` and ``b`` (``dots``: their sums' products) passes
        the threshold for their sizes; a join needs >= 0."""
        return dots / (sizes[a] * sizes[b]) - thresholds.at(np.minimum(sizes[a], sizes[b]))

    heap: list[tuple[float, int, int, int, int]] = []
    if len(edges):
        a, b = edges[:, 0], edges[:, 1]
        dots = np.concatenate([np.einsum("ij,ij->i", sums[a[start:start + _EDGE_BLOCK]], sums[b[start:start + _EDGE_BLOCK]])
                               for start in range(0, len(edges), _EDGE_BLOCK)])
        margins = margin(a, b, dots)
        good = margins >= 0
        heap = [(-m, x, y, 0, 0) for m, x, y in zip(margins[good].tolist(), a[good].tolist(), b[good].tolist())]
        heapq.heapify(heap)
    while heap:
        _, a, b, version_a, version_b = heapq.heappop(heap)
        if not (alive[a] and alive[b]) or version[a] != version_a or version[b] != version_b:
            continue  # a stale entry: one side changed since it was pushed
        if is_frozen[b] or (not is_frozen[a] and len(adjacency[a]) < len(adjacency[b])):
            a, b = b, a  # keep the frozen node (its id), else the one with more neighbours (cheaper union)
        sums[a] += sums[b]
        sizes[a] += sizes[b]
        is_frozen[a] = is_frozen[a] or is_frozen[b]
        alive[b] = False
        parent[b] = a
        for c in adjacency[b]:
            if c != a:
                adjacency[c].discard(b)
                adjacency[c].add(a)
                adjacency[a].add(c)
        adjacency[a].discard(b)
        adjacency[b] = set()
        version[a] += 1
        others = np.fromiter((c for c in adjacency[a] if not (is_frozen[a] and is_frozen[c])), np.int64)
        if len(others):
            margins = margin(a, others, sums[others] @ sums[a])
            for c, value in zip(others[margins >= 0].tolist(), margins[margins >= 0].tolist()):
                x, y = (a, c) if a < c else (c, a)
                heapq.heappush(heap, (-value, x, y, int(version[x]), int(version[y])))

    root = np.arange(nodes)
    for node in range(nodes):  # parents always point to nodes merged later, so one pass with compression
        path = []
        r = node
        while parent[r] != r:
            path.append(r)
            r = parent[r]
        root[path] = r
        root[node] = r
    final = root[node_of]
    # Label each cluster by its smallest row, so labels do not depend on the merge order.
    first = np.full(nodes, n, np.int64)
    np.minimum.at(first, final, np.arange(n))
    return first[final]
