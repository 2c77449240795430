"""What train_siamese.py trains on: the three folder layouts, their chips, the split and the batches.

Layouts (:func:`load_faces`, :func:`load_anchor_layout`, :func:`load_domain_pairs`) all become a
:class:`FaceSet`: image paths with a person id each (and a domain id for cross-domain pairs).
Every image goes once through the pipeline's detection and alignment
(:class:`faceid.detect.faces.FaceCropper`, through :class:`faceid.features.engine.LocalEngine`)
and its chip is kept in a ``uint8`` memory-mapped file (:func:`prepare_chips`), so training reads
batches from disk and memory stays bounded whatever the folder size.

:class:`BatchSampler` is the one sampler of every loss: each batch holds a few people with
several images each (the positives) and images drawn from everyone else (the negatives), so
BCE and contrastive losses score every pair in the batch and triplet mining finds positives and
negatives in it. Batches are drawn from ``(seed, epoch)``: a resumed run sees the same ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceid.detect.faces import FaceCropper
from faceid.errors import InputError
from faceid.features.engine import LocalEngine
from faceid.io.images import list_image_files, list_people, list_photos
from faceid.io.sealed import Key
from faceid.io.store import atomic_path, is_sealed_file, private_bytes, read_json, read_private, write_json
from faceid.train.trainer import split_people

logger = logging.getLogger(__name__)

LAYOUTS = ("faces", "anchor", "pairs")
# The anchor layout's one person (anchor + positive folders).
ANCHOR_PERSON = "anchor"


@dataclass
class FaceSet:
    """Images with a person id each; ``domains`` (0/1 per image) only for cross-domain pairs."""

    paths: list[Path]
    labels: np.ndarray  # (n,) int: index into names
    names: list[str]
    layout: str
    domains: np.ndarray | None = None
    domain_names: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.domains is not None:
            self.domains = np.asarray(self.domains, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, rows: np.ndarray) -> FaceSet:
        rows = np.asarray(rows, dtype=np.int64)
        return FaceSet(
            paths=[self.paths[row] for row in rows], labels=self.labels[rows], names=self.names, layout=self.layout,
            domains=None if self.domains is None else self.domains[rows], domain_names=self.domain_names,
        )

    def describe(self) -> str:
        return f"{len(self)} images of {len(np.unique(self.labels))} people ({self.layout} layout)"


def _from_people(people: dict[str, list[Path]], layout: str) -> FaceSet:
    names = sorted(people)
    paths, labels = [], []
    for label, name in enumerate(names):
        paths.extend(people[name])
        labels.extend([label] * len(people[name]))
    return FaceSet(paths=paths, labels=np.array(labels), names=names, layout=layout)


def load_faces(faces_path: Path) -> FaceSet:
    """``--faces_path DIR``: one sub-folder per person."""
    people = {name: files for name, files in list_people(faces_path).items() if files}
    if not people:
        raise InputError(f"{faces_path} has person folders but no images in them: add photos to {faces_path}/<person>/")
    return _from_people(people, "faces")


def _files(folder: Path, parameter: str) -> list[Path]:
    """The images of one folder of a layout; ``parameter``: how messages name it (in backticks)."""
    if not folder.is_dir():
        raise InputError(f"{parameter} {folder} is not a folder: pass the folder of that layout's images")
    files = list_image_files(folder)
    if not files and not any(child.is_dir() for child in folder.iterdir()):
        raise InputError(f"{parameter} {folder} is empty: put that layout's images in it (capture.py writes a person's)")
    return files


def load_anchor_layout(anchor: Path, positive: Path, negative: Path) -> FaceSet:
    """The webcam apps' ``anchor/positive/negative`` folders.

    Anchor and positive are one person; the negative folder holds everyone else, either as
    person sub-folders (e.g. LFW's) or flat, one unnamed person per image.
    """
    own = _files(anchor, "`anchor`") + _files(positive, "`positive`")
    people: dict[str, list[Path]] = {ANCHOR_PERSON: own}
    flat = _files(negative, "`negative`")
    for path in flat:
        people[f"negative/{path.name}"] = [path]
    for folder in sorted(child for child in negative.iterdir() if child.is_dir() and not child.name.startswith(".")):
        files = list_image_files(folder)
        if files:
            people[f"negative/{folder.name}"] = files
    if len(people) < 2:
        raise InputError(f"`negative` {negative} holds no images: put other people's faces in it (e.g. LFW photos)")
    return _from_people(people, "anchor")


def load_domain_pairs(pairs_path: Path, domains: tuple[str, str]) -> FaceSet:
    """``--pairs_path DIR --domains A B``: ``DIR/A/NN.png`` and ``DIR/B/NN.png`` are one person."""
    if len(domains) != 2 or domains[0] == domains[1]:
        raise InputError(f"`domains` needs two different folder names, got {list(domains)}")
    by_stem: list[dict[str, Path]] = []
    for domain in domains:
        files = _files(pairs_path / domain, f"`pairs_path` {pairs_path}, `domains`: folder")
        by_stem.append({path.stem: path for path in files})
    common = sorted(set(by_stem[0]) & set(by_stem[1]))
    if not common:
        raise InputError(
            f"{pairs_path / domains[0]} and {pairs_path / domains[1]} have no file names in common: files pair by name "
            f"(e.g. {domains[0]}/01.png with {domains[1]}/01.png)"
        )
    for index, domain in enumerate(domains):
        unpaired = sorted(set(by_stem[index]) - set(common))
        if unpaired:
            logger.warning("%d files of %s have no partner in the other domain and are left out (e.g. %s)",
                           len(unpaired), domain, unpaired[0])
    paths, labels, image_domains = [], [], []
    for label, stem in enumerate(common):
        for index in (0, 1):
            paths.append(by_stem[index][stem])
            labels.append(label)
            image_domains.append(index)
    return FaceSet(paths=paths, labels=np.array(labels), names=common, layout="pairs",
                   domains=np.array(image_domains), domain_names=(domains[0], domains[1]))


def split_faceset(faces: FaceSet, val_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_rows, val_rows)``, by person (as train.py splits).

    The anchor layout has one person with positives, so that person's images are split by
    image (the same share) and everyone else by person: validation still scores the anchor
    person against faces never trained on.
    """
    if faces.layout != "anchor":
        return split_people(faces.labels, val_share, seed)
    own = np.flatnonzero(faces.labels == 0)
    others = np.flatnonzero(faces.labels != 0)
    if len(own) < 4:
        raise InputError(f"the anchor and positive folders hold {len(own)} usable faces: capture at least 4 "
                         "(a few hundred is what the webcam apps use)")
    train_others, val_others = split_people(faces.labels[others], val_share, seed)
    shuffled = np.random.default_rng(seed).permutation(own)
    n_val = min(max(2, int(round(val_share * len(own)))), len(own) - 2)
    train = np.sort(np.concatenate([shuffled[n_val:], others[train_others]]))
    val = np.sort(np.concatenate([shuffled[:n_val], others[val_others]]))
    return train, val


def check_shares(val_share: float, test_share: float) -> None:
    """Refuse a validation and test share that leave no people to train on (before any face is found)."""
    if test_share and (not 0.0 < test_share < 1.0 or not 0.0 < val_share < 1.0 or val_share + test_share >= 1.0):
        raise InputError(f"`val_people` {val_share} and `test_people` {test_share} must be shares between 0 and 1 "
                         "that leave people to train on (their sum under 1)")


def split_three(faces: FaceSet, val_share: float, test_share: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train_rows, val_rows, test_rows)``: :func:`split_faceset`, with a third share held out first.

    The test people (``test_share`` of them; in the anchor layout also that share of the anchor
    person's faces) take part in neither training nor the choice of the network: they measure what
    was chosen. ``val_share`` stays a share of all people. ``test_share`` 0: no test rows, and the
    same split as :func:`split_faceset`.
    """
    check_shares(val_share, test_share)
    if test_share == 0:
        train, val = split_faceset(faces, val_share, seed)
        return train, val, np.zeros(0, dtype=np.int64)
    rest, test = split_faceset(faces, test_share, seed + 1)
    train, val = split_faceset(faces.subset(rest), val_share / (1.0 - test_share), seed)
    return rest[train], rest[val], test


def check_for_loss(faces: FaceSet, loss: str, usable: bool) -> None:
    """Refuse data a loss cannot train on, naming what to change.

    Before detection (``usable`` False), a person folder with one image is refused for triplet
    loss (it can never be an anchor with a positive: the layout is wrong for it). After detection
    (``usable`` True), people left with one face by faces not found only serve as negatives.
    """
    counts = np.bincount(faces.labels, minlength=len(faces.names))
    if faces.layout == "faces" and loss == "triplet":
        single = [faces.names[label] for label in np.flatnonzero(counts == 1)]
        if single and not usable:
            raise InputError(
                f"triplet loss needs at least two images per person; {len(single)} have one "
                f"(e.g. {', '.join(single[:3])}): add photos, remove those folders, or use `loss` bce or contrastive"
            )
        if single:
            logger.warning("%d people have one usable face (the others had none found): they serve as negatives only "
                           "(e.g. %s)", len(single), ", ".join(single[:3]))
    if not np.any(counts >= 2):
        raise InputError("no person has two usable faces: same-person pairs are what the network learns from")
    if len(np.unique(faces.labels)) < 2:
        raise InputError("all faces are of one person: different-person pairs need other people (`negative`)")


# ---------------------------------------------------------------- chips


@dataclass(frozen=True)
class ChipSet:
    """The aligned chips of a :class:`FaceSet`'s usable images (``faces`` keeps only those)."""

    chips: np.ndarray  # (n, size, size, 3) uint8, memory-mapped
    faces: FaceSet
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> images


def _chip_key(faces: FaceSet, cropper: FaceCropper) -> str:
    digest = hashlib.sha256()
    options = cropper.options
    digest.update(json.dumps([cropper.chip_size, cropper.padding, options.detect, options.effective_upsample, options.detector,
                              options.max_width]).encode())
    for path in faces.paths:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def prepare_chips(faces: FaceSet, cropper: FaceCropper, folder: Path, workers: int, progress: bool = True, *,
                  key: Key | None = None) -> ChipSet:
    """Detect and align every image once; chips go to ``folder/chips.npy`` (reused while the
    images and detection settings are unchanged, e.g. by ``--resume``).

    Without a key the file is memory-mapped; with ``key`` (:mod:`faceid.io.sealed`) the chips are
    faces, so the file is sealed with it and held decrypted in memory only; encrypted crops among
    the images open with it too.
    """
    from tqdm import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    chip_key = _chip_key(faces, cropper)
    index_path, chips_path = folder / "chips.json", folder / "chips.npy"
    encrypt = key is not None
    if index_path.is_file() and chips_path.is_file():
        index = read_json(index_path, "chip index", "delete the chips folder")
        if index.get("key") == chip_key and (is_sealed_file(chips_path) or not encrypt):  # sealed, no key: KeyRequiredError
            kept = np.asarray(index["kept"], dtype=np.int64)
            logger.info("reusing %d prepared chips from %s", len(kept), chips_path)
            return ChipSet(_read_chips(chips_path, key), faces.subset(kept), dict(index["skipped"]))
        if encrypt and not is_sealed_file(chips_path):
            logger.info("%s is not encrypted: preparing the chips again, encrypted", chips_path)
    size = cropper.chip_size
    kept: list[int] = []
    skipped: dict[str, int] = {}
    shape = (len(faces), size, size, 3)
    with atomic_path(chips_path) as temporary:
        store = np.empty(shape, np.uint8) if encrypt else np.lib.format.open_memmap(
            temporary, mode="w+", dtype=np.uint8, shape=shape)
        prepared = LocalEngine(workers).prepare(faces.paths, cropper, key=key)
        for row, result in enumerate(tqdm(prepared, total=len(faces), desc="faces", unit="img",
                                          disable=None if progress else True)):
            if result.chip is None:
                skipped[result.reason or "?"] = skipped.get(result.reason or "?", 0) + 1
                continue
            store[len(kept)] = result.chip
            kept.append(row)
        if encrypt:
            buffer = io.BytesIO()
            np.save(buffer, store)
            temporary.write_bytes(private_bytes(buffer.getvalue(), CHIPS_CONTEXT, key=key))  # sealed before the write
        else:
            store.flush()
        del store
    write_json(index_path, {"key": chip_key, "kept": kept, "skipped": skipped, "size": size})
    if skipped:
        logger.warning("%d of %d images gave no face and are left out: %s", sum(skipped.values()), len(faces),
                       ", ".join(f"{count} {reason}" for reason, count in skipped.items()))
    if not kept:
        raise InputError(f"none of the {len(faces)} images gave a face: check the folders, or, for face crops, skip "
                         "detection (`detect`)")
    return ChipSet(_read_chips(chips_path, key), faces.subset(np.array(kept)), skipped)


CHIPS_CONTEXT = "chips.npy"


def _read_chips(path: Path, key: Key | None) -> np.ndarray:
    """The chips file: memory-mapped when plain, decrypted with ``key`` into memory when sealed."""
    if not is_sealed_file(path):
        return np.load(path, mmap_mode="r", allow_pickle=False)
    data = read_private(path, "training chips", "delete the chips folder to prepare them again", CHIPS_CONTEXT, True,
                        key=key)
    return np.load(io.BytesIO(data), allow_pickle=False)


def synthetic_pairs(folder: Path, cropper: FaceCropper, chips_dir: Path, limit: int, seed: int, workers: int,
                    progress: bool, *, key: Key | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic sketch-photo pairs from up to ``limit`` photos of ``folder`` (flat or one sub-folder per
    person; a seeded sample): each photo's aligned chip and its rendering by
    :func:`faceid.sketch.synthesis.photo_to_sketch`. Returns ``(sketch_chips, photo_chips)``, row i one pair."""
    from faceid.sketch.synthesis import photo_to_sketch

    paths = [path for files in list_photos(folder, "`synthetic`").values() for path in files]
    if len(paths) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(paths), limit, replace=False))
        paths = [paths[index] for index in keep]
    photos = FaceSet(paths=paths, labels=np.arange(len(paths)), names=[str(path) for path in paths], layout="synthetic")
    photo_chips = np.asarray(prepare_chips(photos, cropper, chips_dir, workers, progress, key=key).chips)
    return np.stack([photo_to_sketch(chip) for chip in photo_chips]), photo_chips


def with_synthetic(chipset: ChipSet, train_rows: np.ndarray, sketches: np.ndarray,
                   photos: np.ndarray) -> tuple[ChipSet, np.ndarray]:
    """``chipset`` with the synthetic pairs appended as extra people (training rows only: validation
    stays on real pairs)."""
    faces, count, pairs = chipset.faces, len(chipset.faces), len(photos)
    if faces.domains is None:
        raise InputError("`synthetic` adds sketch-photo pairs: use it with a folder of pairs in two domains "
                         "(`pairs_path`, `domains`)")
    labels = len(faces.names) + np.arange(pairs)
    extended = FaceSet(
        paths=faces.paths + [Path(f"synthetic/{index}") for index in range(2 * pairs)],
        labels=np.concatenate([faces.labels, labels, labels]), names=faces.names + [f"synthetic/{i}" for i in range(pairs)],
        layout=faces.layout, domains=np.concatenate([faces.domains, np.zeros(pairs), np.ones(pairs)]),
        domain_names=faces.domain_names)
    chips = np.concatenate([np.asarray(chipset.chips), sketches, photos])
    return ChipSet(chips, extended, chipset.skipped), np.concatenate([train_rows, count + np.arange(2 * pairs)])


# ---------------------------------------------------------------- batches


class BatchSampler:
    """Batches of row indices: ``people`` people with up to ``per_person`` images each, the rest
    of the batch drawn from other people's images.

    An epoch has ``ceil(rows / batch_size)`` batches (every image is seen about once) and
    visits the people with two or more images in a fresh order.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, per_person: int, seed: int):
        if batch_size < 4:
            raise InputError(f"`batch_size` {batch_size} is too small: a batch needs positives and negatives (use >= 4)")
        if per_person < 2:
            raise InputError(f"`per_person` {per_person}: a person needs at least 2 images in a batch to give a positive")
        self.labels = np.asarray(labels)
        self.batch_size = batch_size
        self.per_person = per_person
        self.seed = seed
        people, counts = np.unique(self.labels, return_counts=True)
        self.groups = {int(person): np.flatnonzero(self.labels == person) for person in people[counts >= 2]}
        if not self.groups:
            raise InputError("no training person has two usable faces: same-person pairs are what the network learns from")
        self.people_per_batch = max(1, min(len(self.groups), batch_size // (2 * per_person)))

    @property
    def steps(self) -> int:
        return max(1, -(-len(self.labels) // self.batch_size))

    def epoch(self, epoch: int):
        """The batches of one epoch: deterministic in ``(seed, epoch)``."""
        rng = np.random.default_rng([self.seed, epoch])
        order = list(rng.permutation(sorted(self.groups)))
        position = 0
        for _ in range(self.steps):
            rows: list[int] = []
            chosen = []
            for _ in range(self.people_per_batch):
                if position >= len(order):
                    order, position = list(rng.permutation(sorted(self.groups))), 0
                person = order[position]
                position += 1
                group = self.groups[person]
                rows.extend(rng.choice(group, min(self.per_person, len(group)), replace=False).tolist())
                chosen.append(person)
            others = np.flatnonzero(~np.isin(self.labels, chosen))
            fill = self.batch_size - len(rows)
            if fill > 0 and len(others):
                rows.extend(rng.choice(others, min(fill, len(others)), replace=False).tolist())
            yield np.array(rows, dtype=np.int64)


def pair_masks(labels: np.ndarray, domains: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(same, valid)`` ``(n, n) float32`` masks of a batch: same person; a pair the loss counts
    (each unordered pair once, and across the domains when there are domains)."""
    labels = np.asarray(labels)
    same = (labels[:, None] == labels[None, :]).astype(np.float32)
    valid = np.triu(np.ones((len(labels), len(labels)), dtype=bool), k=1)
    if domains is not None:
        valid &= domains[:, None] != domains[None, :]
    return same, valid.astype(np.float32)


# Cross-domain validation scores every impostor pair up to this many.
MAX_CROSS_IMPOSTORS = 20000


def validation_pairs(labels: np.ndarray, domains: np.ndarray | None, neg_ratio: float, seed: int,
                     max_positive_per_person: int | None = 2000):
    """Same- and different-person pairs of the validation images (``PairSet``): train.py's sampler,
    or, across two domains, every genuine pair and every impostor pair (a random
    :data:`MAX_CROSS_IMPOSTORS` of them when there are more). Cross-domain people have one image a
    side, so a few validation people give few genuine pairs; all their impostors keep the measure
    from resting on a handful of different-person pairs."""
    from faceid.train.pairs import PairSet, sample_pairs

    if domains is None:
        return sample_pairs(labels, neg_ratio, max_positive_per_person, seed)
    first_rows = np.flatnonzero(domains == 0)
    second_rows = np.flatnonzero(domains == 1)
    by_label = {int(labels[row]): row for row in second_rows}
    positive = [(row, by_label[int(labels[row])]) for row in first_rows if int(labels[row]) in by_label]
    if not positive:
        raise InputError("the validation people have no image in both domains")
    anchors = np.repeat(first_rows, len(second_rows))
    others = np.tile(second_rows, len(first_rows))
    keep = np.flatnonzero(labels[anchors] != labels[others])
    if len(keep) > MAX_CROSS_IMPOSTORS:
        keep = np.sort(np.random.default_rng(seed).choice(keep, MAX_CROSS_IMPOSTORS, replace=False))
    first = np.concatenate([[a for a, _ in positive], anchors[keep]])
    second = np.concatenate([[b for _, b in positive], others[keep]])
    label = np.concatenate([np.ones(len(positive)), np.zeros(len(keep))])
    return PairSet(first=first.astype(np.int64), second=second.astype(np.int64), label=label.astype(np.float32))
