"""Same/different-person image pairs for training and evaluating the similarity head.

A pair is two row indices into a feature matrix plus a label: 1.0 when both rows show the same
person, 0.0 when they do not. :func:`sample_pairs` draws every (or, for people with very many
images, a capped random subset of every) same-person pair as positives, and random
different-person pairs as negatives. :func:`iter_pair_batches` turns a :class:`PairSet` into
``|first - second|`` feature batches on the fly, so training never holds every pair vector in
memory at once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from faceid.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "PairSet",
    "iter_pair_batches",
    "pair_features",
    "sample_pairs",
]


@dataclass(frozen=True)
class PairSet:
    """Pairs of rows of one feature matrix, each labelled same person (1.0) or not (0.0).

    Attributes:
        first: ``(n_pairs,) int64`` row index of the first image of each pair.
        second: ``(n_pairs,) int64`` row index of the second image of each pair.
        label: ``(n_pairs,) float32`` 1.0 when both images show the same person, else 0.0.
    """

    first: np.ndarray
    second: np.ndarray
    label: np.ndarray

    def __post_init__(self) -> None:
        # Normalise dtypes once here so every consumer can rely on them.
        object.__setattr__(self, "first", np.ascontiguousarray(self.first, dtype=np.int64))
        object.__setattr__(self, "second", np.ascontiguousarray(self.second, dtype=np.int64))
        object.__setattr__(self, "label", np.ascontiguousarray(self.label, dtype=np.float32))
        if not (self.first.ndim == self.second.ndim == self.label.ndim == 1):
            raise InputError(
                "PairSet arrays must be one-dimensional; got shapes "
                f"{self.first.shape}, {self.second.shape}, {self.label.shape}"
            )
        if not (len(self.first) == len(self.second) == len(self.label)):
            raise InputError(
                "PairSet arrays must have the same length; got "
                f"{len(self.first)}, {len(self.second)}, {len(self.label)}"
            )

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @property
    def n_positive(self) -> int:
        """Number of same-person pairs."""
        return int(np.count_nonzero(self.label == 1.0))

    @property
    def n_negative(self) -> int:
        """Number of different-person pairs."""
        return int(np.count_nonzero(self.label == 0.0))


def sample_pairs(
    labels: np.ndarray,
    neg_ratio: float = 1.5,
    max_positive_per_person: int | None = 2000,
    rng: np.random.Generator | int = 0,
) -> PairSet:
    """Draw labelled same-person and different-person pairs from per-image person ids.

    Positives: every unordered same-person pair ``(i, j)`` with ``i < j``. When one person has
    more than ``max_positive_per_person`` such pairs, a uniform random subset of exactly that
    many distinct pairs is drawn instead, without enumerating all of them, so one person with
    hundreds of images neither dominates training nor needs O(n_images**2) memory.

    Negatives: exactly ``round(neg_ratio * n_positive)`` pairs ``(anchor, other)`` where
    ``other`` is drawn uniformly from the images of every *other* person (never the anchor's
    own person). The total is shared out over anchor images in proportion to how many positive
    pairs each image takes part in, counting half a pair for each of its two images, with
    largest-remainder rounding so the total is exact. Counting both ends (rather than only the
    ``first`` image) keeps the negatives spread evenly over a person's images; each person's
    share of negatives equals ``neg_ratio`` times its share of positives either way. Negatives
    are drawn with replacement, so with tiny data the same different-person pair can occur twice.

    Args:
        labels: ``(n_images,)`` integer person id of each image (row of the feature matrix).
        neg_ratio: negatives per positive pair, >= 0. Raise it for a head that must reject
            strangers more strongly; 1.0 gives a balanced set.
        max_positive_per_person: cap on positive pairs per person; ``None`` keeps them all.
        rng: a NumPy ``Generator`` (advanced in place) or an integer seed. The same seed gives
            an identical ``PairSet``.

    Returns:
        ``PairSet`` with the positives first (grouped by person, ordered by ``first`` then
        ``second``), then the negatives. Shuffle when batching (``iter_pair_batches`` does).

    Raises:
        InputError: ``labels`` is not a 1-D integer array, fewer than two people are present, no
            person has at least two images, or an argument is out of range.
    """
    person_ids = np.asarray(labels)
    if person_ids.ndim != 1 or not np.issubdtype(person_ids.dtype, np.integer):
        raise InputError(
            "labels must be a 1-D integer array of person ids, one per image; got "
            f"shape {person_ids.shape} dtype {person_ids.dtype} (map names to ints first)"
        )
    if not (np.isfinite(neg_ratio) and neg_ratio >= 0):
        raise InputError(f"neg_ratio must be a finite number >= 0; got {neg_ratio}")
    if max_positive_per_person is not None and max_positive_per_person < 1:
        raise InputError(f"max_positive_per_person must be >= 1 or None; got {max_positive_per_person}")
    generator = np.random.default_rng(rng)

    # Group images by person: order lists image indices person by person (stable, so within
    # a person the indices ascend), and block_start/person_counts locate each person's block.
    person_of_image = np.unique(person_ids, return_inverse=True)[1].astype(np.int64)
    person_counts = np.bincount(person_of_image)
    n_people = len(person_counts)
    if n_people < 2:
        raise InputError(
            f"need images of at least 2 people to make different-person pairs; got {n_people}. "
            "Add more people to the dataset."
        )
    if not np.any(person_counts >= 2):
        raise InputError(
            "no person has 2 or more images, so there are no same-person pairs; add a second image for some people"
        )
    order = np.argsort(person_of_image, kind="stable")
    block_start = np.concatenate(([0], np.cumsum(person_counts)[:-1]))

    positive_first: list[np.ndarray] = []
    positive_second: list[np.ndarray] = []
    n_capped = 0
    for person in np.flatnonzero(person_counts >= 2):
        images = order[block_start[person] : block_start[person] + person_counts[person]]
        local_first, local_second = _person_pairs(len(images), max_positive_per_person, generator)
        n_capped += int(max_positive_per_person is not None and math.comb(len(images), 2) > max_positive_per_person)
        positive_first.append(images[local_first])
        positive_second.append(images[local_second])
    first_positive = np.concatenate(positive_first)
    second_positive = np.concatenate(positive_second)
    n_positive = len(first_positive)

    n_images = len(person_ids)
    n_negative = round(neg_ratio * n_positive)
    # Half a pair to each end: see the docstring for why both ends count.
    anchor_weight = 0.5 * (
        np.bincount(first_positive, minlength=n_images) + np.bincount(second_positive, minlength=n_images)
    )
    negatives_per_anchor = _largest_remainder(anchor_weight * neg_ratio, n_negative, generator)
    anchors = np.repeat(np.arange(n_images, dtype=np.int64), negatives_per_anchor)
    others = _draw_other_person(anchors, person_of_image, order, block_start, person_counts, generator)

    logger.debug(
        "sampled %d positive pairs (%d of %d people capped at %s) and %d negative pairs",
        n_positive,
        n_capped,
        n_people,
        max_positive_per_person,
        n_negative,
    )
    return PairSet(
        first=np.concatenate((first_positive, anchors)),
        second=np.concatenate((second_positive, others)),
        label=np.concatenate(
            (
                np.ones(n_positive, dtype=np.float32),
                np.zeros(n_negative, dtype=np.float32),
            )
        ),
    )


def _person_pairs(
    n_images: int, max_pairs: int | None, generator: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Local indices ``(i, j)``, ``i < j``, of all or a uniform subset of ``max_pairs`` pairs."""
    n_pairs = math.comb(n_images, 2)
    if max_pairs is None or n_pairs <= max_pairs:
        first, second = np.triu_indices(n_images, k=1)
        return first.astype(np.int64), second.astype(np.int64)
    # Draw distinct pair *ranks* and unrank them, so memory is O(max_pairs), not O(n_pairs);
    # Generator.choice without replacement uses a set-based draw when max_pairs << n_pairs.
    ranks = np.sort(generator.choice(n_pairs, size=max_pairs, replace=False)).astype(np.int64)
    # Colexicographic unranking: pair (i, j), i < j, has rank j * (j - 1) / 2 + i.
    second = np.floor((1.0 + np.sqrt(1.0 + 8.0 * ranks)) / 2.0).astype(np.int64)
    # Correct the rare off-by-one of the floating-point square root.
    second -= (second * (second - 1) // 2) > ranks
    second += ((second + 1) * second // 2) <= ranks
    first = ranks - second * (second - 1) // 2
    keep_order = np.lexsort((second, first))
    return first[keep_order], second[keep_order]


def _largest_remainder(quotas: np.ndarray, total: int, generator: np.random.Generator) -> np.ndarray:
    """Round non-negative ``quotas`` to integers that sum to exactly ``total``.

    Each entry gets ``floor(quota)``, and the shortfall goes one each to the largest fractional
    parts; ties between equal fractions are broken at random so no image is favoured by index.
    """
    counts = np.floor(quotas).astype(np.int64)
    shortfall = total - int(counts.sum())
    if shortfall > 0:
        remainders = quotas - counts
        tie_breaker = generator.random(len(quotas))
        ranked = np.lexsort((tie_breaker, -remainders))
        counts[ranked[:shortfall]] += 1
    elif shortfall < 0:
        # Only reachable through floating-point error in sum(quotas); take the excess back
        # from the entries that rounded down the least.
        remainders = quotas - counts
        candidates = np.flatnonzero(counts > 0)
        ranked = candidates[np.argsort(remainders[candidates], kind="stable")]
        counts[ranked[:-shortfall]] -= 1
    return counts


def _draw_other_person(
    anchors: np.ndarray,
    person_of_image: np.ndarray,
    order: np.ndarray,
    block_start: np.ndarray,
    person_counts: np.ndarray,
    generator: np.random.Generator,
) -> np.ndarray:
    """One image index per anchor, uniform over all images of people other than the anchor's."""
    anchor_person = person_of_image[anchors]
    # Draw a position among the n_images - own_count others, then skip over the anchor's own
    # block in the person-sorted order: uniform over other people's images, never the same one.
    n_others = len(person_of_image) - person_counts[anchor_person]
    position = (generator.random(len(anchors)) * n_others).astype(np.int64)
    position = np.minimum(position, n_others - 1)
    own_start = block_start[anchor_person]
    position += np.where(position >= own_start, person_counts[anchor_person], 0)
    return order[position]


def pair_features(features: np.ndarray, pairs: PairSet, index: slice | np.ndarray) -> np.ndarray:
    """Absolute feature differences ``|features[first] - features[second]|`` of some pairs.

    Args:
        features: ``(n_images, n_dims)`` feature matrix the pairs index into.
        pairs: the pairs.
        index: which pairs: a slice or an integer index array into ``pairs``.

    Returns:
        ``(n_selected, n_dims) float32`` absolute differences, in ``index`` order.

    Raises:
        InputError: ``features`` is not a 2-D float array or a pair refers to a row it does
            not have.
    """
    if features.ndim != 2:
        raise InputError(f"features must be (n_images, n_dims); got shape {features.shape}")
    if not np.issubdtype(features.dtype, np.floating):
        # Unsigned integer differences would wrap around instead of going negative.
        raise InputError(f"features must be floating point; got dtype {features.dtype}")
    first = pairs.first[index]
    second = pairs.second[index]
    if len(first) and max(int(first.max()), int(second.max())) >= features.shape[0]:
        raise InputError(
            f"pairs refer to row {max(int(first.max()), int(second.max()))} but features has "
            f"only {features.shape[0]} rows; sample the pairs from the same feature cache"
        )
    return np.abs(features[first] - features[second]).astype(np.float32, copy=False)


def iter_pair_batches(
    features: np.ndarray,
    pairs: PairSet,
    batch_size: int,
    shuffle: bool,
    rng: np.random.Generator | int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(abs_diff, label)`` batches covering every pair exactly once (one epoch).

    Args:
        features: ``(n_images, n_dims)`` feature matrix the pairs index into.
        pairs: the pairs to batch.
        batch_size: pairs per batch (the last batch may be smaller), >= 1.
        shuffle: visit pairs in a random order instead of stored order.
        rng: Generator or seed for the shuffle; ignored when ``shuffle`` is False.

    Yields:
        ``(batch, n_dims) float32`` absolute differences and ``(batch,) float32`` labels.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1; got {batch_size}")
    n_pairs = len(pairs)
    visit_order = np.random.default_rng(rng).permutation(n_pairs) if shuffle else np.arange(n_pairs)
    for start in range(0, n_pairs, batch_size):
        batch = visit_order[start : start + batch_size]
        yield pair_features(features, pairs, batch), pairs.label[batch]
