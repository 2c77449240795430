"""LFW pair lists: ``pairs.txt`` (10 person-disjoint folds) or a single list cut into folds."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceid.errors import InputError

logger = logging.getLogger(__name__)

ImageKey = tuple[str, str]  # (person folder, file name)


def lfw_file_name(person: str, index: int) -> str:
    """LFW's file name for image ``index`` (1-based) of ``person``: ``name_0001.jpg``."""
    return f"{person}_{index:04d}.jpg"


@dataclass(frozen=True)
class PairList:
    """An LFW pair list.

    Attributes:
        first, second: ``(person, file name)`` of each pair's two images.
        is_same: ``(n_pairs,) bool``; True for a same-person line.
        fold: ``(n_pairs,) int`` fold of each pair, in ``[0, n_folds)``.
        n_folds: number of folds.
        folds_from_file: True when the file defines the folds (``pairs.txt``), False when
            a single list was cut into folds here.
    """

    first: tuple[ImageKey, ...]
    second: tuple[ImageKey, ...]
    is_same: np.ndarray
    fold: np.ndarray
    n_folds: int
    folds_from_file: bool

    def __len__(self) -> int:
        return len(self.first)

    def person_disjoint(self) -> bool:
        """Whether no person appears in two folds (true for LFW's own ``pairs.txt`` folds)."""
        seen: dict[str, int] = {}
        for (person_a, _), (person_b, _), fold in zip(self.first, self.second, self.fold):
            for person in (person_a, person_b):
                if seen.setdefault(person, int(fold)) != int(fold):
                    return False
        return True

    def images(self) -> list[ImageKey]:
        """Every image the list names, once, in order of first appearance."""
        return list(dict.fromkeys([*self.first, *self.second]))


def read_pair_list(path: str | Path, folds: int = 10) -> PairList:
    """Parse an LFW pair list.

    Format: a header ``N`` (one list: ``N`` same-person lines, then ``N`` different-person
    lines) or ``F N`` (``F`` folds, each ``N`` same then ``N`` different lines); then
    ``name<TAB>i<TAB>j`` for a same pair and ``name1<TAB>i<TAB>name2<TAB>j`` for a different
    pair, image ``i`` of ``name`` being ``name/name_%04d.jpg``.

    Args:
        path: the pair list.
        folds: how many folds to cut a single list into (ignored when the file has folds).
            Same pairs and different pairs are each cut into contiguous chunks, so a fold
            keeps the file's order (alphabetical in LFW: a person's same pairs mostly stay
            in one fold), and every fold gets the same mix of the two kinds.

    Raises:
        InputError: the file is missing or does not follow the format (the message names
            the line).
    """
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the pair list {path} ({error}): pass `pairs_file`, an LFW pairs file") from error
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line]
    if not numbered:
        raise InputError(f"pair list {path} is empty: expected a header line like '1100' or '10 300'")
    header_number, header = numbered[0]
    try:
        counts = [int(field_) for field_ in header.split()]
    except ValueError:
        counts = []
    if len(counts) not in (1, 2) or min(counts) < 1:
        raise InputError(
            f"{path}:{header_number}: header {header!r} is not an LFW pair-list header: "
            "expected 'N' (N same then N different pairs) or 'FOLDS N' (as in pairs.txt)"
        )
    file_folds, per_kind = (1, counts[0]) if len(counts) == 1 else counts
    body = numbered[1:]
    if len(body) != file_folds * 2 * per_kind:
        raise InputError(
            f"{path}: header {header!r} announces {file_folds * 2 * per_kind} pairs but the file has {len(body)} "
            "pair lines: the file is truncated or not an LFW pair list"
        )
    first: list[ImageKey] = []
    second: list[ImageKey] = []
    is_same = np.zeros(len(body), dtype=bool)
    for position, (number, line) in enumerate(body):
        fields_ = line.split()
        expect_same = position % (2 * per_kind) < per_kind
        try:
            if len(fields_) == 3:
                person_a = person_b = fields_[0]
                index_a, index_b = int(fields_[1]), int(fields_[2])
            elif len(fields_) == 4:
                person_a, person_b = fields_[0], fields_[2]
                index_a, index_b = int(fields_[1]), int(fields_[3])
            else:
                raise ValueError(f"{len(fields_)} fields")
        except ValueError as error:
            raise InputError(f"{path}:{number}: {line!r} is not 'name i j' or 'name1 i name2 j' ({error})") from None
        if (len(fields_) == 3) != expect_same:
            kind = "same-person ('name i j')" if expect_same else "different-person ('name1 i name2 j')"
            raise InputError(
                f"{path}:{number}: expected a {kind} line here: each block holds {per_kind} same then "
                f"{per_kind} different pairs, as the header {header!r} says"
            )
        first.append((person_a, lfw_file_name(person_a, index_a)))
        second.append((person_b, lfw_file_name(person_b, index_b)))
        is_same[position] = expect_same

    if file_folds > 1:
        fold = np.arange(len(body)) // (2 * per_kind)
        if folds != file_folds:
            logger.info("%s defines %d folds: using them (`folds` applies to single lists only)", path, file_folds)
        return PairList(tuple(first), tuple(second), is_same, fold, file_folds, True)
    if per_kind < 2:
        raise InputError(f"{path} lists {per_kind} pair of each kind: at least 2 are needed to cut it into folds")
    if not 2 <= folds <= per_kind:
        raise InputError(f"`folds` must be between 2 and {per_kind} (the pairs of each kind); got {folds}")
    fold = np.empty(len(body), dtype=np.int64)
    for rows in (np.flatnonzero(is_same), np.flatnonzero(~is_same)):
        for index, chunk in enumerate(np.array_split(rows, folds)):
            fold[chunk] = index
    return PairList(tuple(first), tuple(second), is_same, fold, folds, False)


def read_people(path: str | Path) -> list[str]:
    """People named in a file: a JSON list, train_siamese.py's ``training/split.json`` (its
    validation people, never trained on), or plain text with one name per line."""
    import json

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise InputError(f"cannot read the people file {path} ({error})") from error
    try:
        payload = json.loads(text)
    except ValueError:
        payload = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(payload, dict):
        payload = payload.get("val")
    if not isinstance(payload, list) or not payload or not all(isinstance(name, str) for name in payload):
        raise InputError(f"{path} names no people: give a JSON list, a split.json with \"val\", or one name per line")
    return payload


def sample_pair_list(images_root: str | Path, people: list[str], per_kind: int, seed: int) -> str:
    """An LFW-format pair list (``per_kind`` same- and different-person pairs, distinct) drawn from
    ``people``'s LFW-named folders (``name/name_0001.jpg``, ...) under ``images_root``."""
    images_root = Path(images_root)
    counts = {}
    for person in sorted(set(people)):
        folder = images_root / person
        if not folder.is_dir():
            raise InputError(f"{folder} is missing: `people` names someone `images_root` does not hold")
        count = 0
        while (folder / lfw_file_name(person, count + 1)).is_file():
            count += 1
        counts[person] = count
    multi = [person for person, count in counts.items() if count >= 2]
    if len(counts) < 2 or not multi:
        raise InputError("sampling pairs needs two people and someone with two LFW-named images (name_0001.jpg, ...)")
    same_possible = sum(count * (count - 1) // 2 for count in counts.values())
    if per_kind > same_possible:
        raise InputError(f"`per_kind` {per_kind}: these people have only {same_possible} same-person pairs")
    rng = np.random.default_rng(seed)
    names = sorted(counts)
    same: set[str] = set()
    while len(same) < per_kind:
        person = multi[rng.integers(len(multi))]
        first, second = sorted(rng.choice(counts[person], 2, replace=False) + 1)
        same.add(f"{person}\t{first}\t{second}")
    different: set[str] = set()
    with_images = [name for name in names if counts[name] >= 1]
    while len(different) < per_kind:
        first, second = rng.choice(len(with_images), 2, replace=False)
        a, b = with_images[first], with_images[second]
        different.add(f"{a}\t{rng.integers(counts[a]) + 1}\t{b}\t{rng.integers(counts[b]) + 1}")
    return "\n".join([str(per_kind), *sorted(same), *sorted(different)]) + "\n"
