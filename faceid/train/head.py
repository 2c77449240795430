"""Training the similarity head with Keras (imported lazily): the one definition of the network.

:func:`build_keras_head` builds :class:`~faceid.match.head.HeadArchitecture` as a Keras model;
:func:`train_head` trains it on ``|f1 - f2|`` batches built on the fly and returns the NumPy
:class:`~faceid.match.head.SimilarityHead` that inference uses.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np

from faceid.errors import InputError
from faceid.extras import require_all
from faceid.match.head import HeadArchitecture, SimilarityHead
from faceid.settings import DEFAULTS
from faceid.train.pairs import PairSet, pair_features

if TYPE_CHECKING:  # only for annotations; keras is imported lazily where it is used
    import keras

logger = logging.getLogger(__name__)


def build_keras_head(input_dim: int, architecture: HeadArchitecture, seed: int) -> keras.Model:
    """Uncompiled Keras model of ``architecture`` for ``(batch, input_dim)`` inputs.

    Every initializer and dropout layer gets its own seed derived from ``seed``, so two builds
    with the same seed start from identical weights.
    """
    import keras

    if input_dim < 1:
        raise InputError(f"input_dim must be >= 1; got {input_dim}")
    inputs = keras.Input(shape=(input_dim,), name="abs_diff")
    activations = inputs
    for layer, (units, rate) in enumerate(zip(architecture.hidden_units, architecture.dropout, strict=True)):
        activations = keras.layers.Dense(
            units,
            activation="relu",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 2 * layer),
            name=f"hidden{layer}",
        )(activations)
        if rate > 0:
            activations = keras.layers.Dropout(rate, seed=seed + 2 * layer + 1, name=f"dropout{layer}")(activations)
    outputs = keras.layers.Dense(
        1,
        activation="sigmoid",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 2 * len(architecture.hidden_units)),
        name="same_person",
    )(activations)
    return keras.Model(inputs, outputs, name="similarity_head")


def _pair_dataset(
    features: np.ndarray, pairs: PairSet, batch_size: int, shuffle: bool, seed: int
) -> keras.utils.PyDataset:
    """Keras ``PyDataset`` that builds ``|f1 - f2|`` batches on demand, reshuffled each epoch."""
    import keras

    class PairDataset(keras.utils.PyDataset):
        def __init__(self) -> None:
            # One worker, no multiprocessing: batch order and contents stay reproducible.
            super().__init__(workers=1, use_multiprocessing=False)
            self._generator = np.random.default_rng(seed)
            self._visit_order = self._new_order()

        def _new_order(self) -> np.ndarray:
            if shuffle:
                return self._generator.permutation(len(pairs))
            return np.arange(len(pairs))

        def __len__(self) -> int:
            return math.ceil(len(pairs) / batch_size)

        def __getitem__(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
            # Pure function of (epoch order, batch) so Keras may fetch batches in any order.
            chosen = self._visit_order[batch * batch_size : (batch + 1) * batch_size]
            return pair_features(features, pairs, chosen), pairs.label[chosen]

        def on_epoch_end(self) -> None:
            self._visit_order = self._new_order()

    return PairDataset()


def train_head(
    features: np.ndarray,
    train_pairs: PairSet,
    val_pairs: PairSet | None = None,
    *,
    architecture: HeadArchitecture | None = None,
    epochs: int = DEFAULTS.epochs,
    batch_size: int = DEFAULTS.train_batch_size,
    learning_rate: float = DEFAULTS.learning_rate,
    seed: int = DEFAULTS.seed,
    progress: bool = True,
    deterministic: bool = True,
) -> tuple[SimilarityHead, dict[str, list[float]]]:
    """Train a similarity head on pair differences of already-normalised features.

    Pair vectors ``|f1 - f2|`` are built batch by batch (the pairs are reshuffled every epoch),
    so memory stays at one feature matrix plus one batch. Adam on binary cross-entropy.

    Args:
        features: ``(n_images, n_dims) float32`` features, already normalised exactly as they
            will be at inference (the head does not normalise).
        train_pairs: pairs of rows of ``features`` to train on; needs both labels.
        val_pairs: optional pairs of rows of ``features`` to report validation metrics on.
        architecture: network shape; ``HeadArchitecture()`` when None.
        epochs: passes over ``train_pairs``; more helps until ``val_loss`` stops falling.
        batch_size: pairs per gradient step.
        learning_rate: Adam step size; lower it if the loss oscillates.
        seed: seeds weights, dropout and batch order; the same seed and inputs give the same
            head.
        progress: a tqdm bar over epochs on stderr with the latest losses (stdout stays
            for results); False is silent. Each epoch is also logged at INFO level either way.
        deterministic: with the TensorFlow backend, call
            ``tf.config.experimental.enable_op_determinism()`` for bit-reproducible training.
            This is process-wide and cannot be undone through TensorFlow's public API; some
            GPU ops become slower or unavailable.

    Returns:
        ``(head, history)``: the trained head (with its Keras model attached, so ``save`` also
        writes ``head.keras``) and per-epoch lists of ``loss``, ``accuracy``, ``auc`` and, with
        ``val_pairs``, ``val_loss``, ``val_accuracy``, ``val_auc``. The ``auc`` values are
        Keras's binned approximation; use ``faceid.match.metrics.roc_auc`` for exact numbers.

    Raises:
        InputError: mis-shaped features, empty pairs, or training pairs of one class only.
    """
    require_all(("tensorflow", "keras"), "training a similarity head")
    import keras

    architecture = architecture or HeadArchitecture()
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise InputError(f"features must be a non-empty (n_images, n_dims) array; got shape {features.shape}")
    if not np.issubdtype(features.dtype, np.floating):
        raise InputError(f"features must be floating point; got dtype {features.dtype}")
    features = np.ascontiguousarray(features, dtype=np.float32)
    if train_pairs.n_positive == 0 or train_pairs.n_negative == 0:
        raise InputError(
            f"training pairs need both classes; got {train_pairs.n_positive} same-person and "
            f"{train_pairs.n_negative} different-person pairs (check neg_ratio and the labels)"
        )
    if val_pairs is not None and len(val_pairs) == 0:
        raise InputError("val_pairs is empty; pass None to train without validation")
    if epochs < 1 or batch_size < 1:
        raise InputError(f"epochs and batch_size must be >= 1; got {epochs} and {batch_size}")

    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

    model = build_keras_head(features.shape[1], architecture, seed)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc"),
        ],
    )
    train_data = _pair_dataset(features, train_pairs, batch_size, shuffle=True, seed=seed)
    val_data = None if val_pairs is None else _pair_dataset(features, val_pairs, batch_size, shuffle=False, seed=seed)

    from tqdm import tqdm

    bar = tqdm(total=epochs, desc="train", unit="epoch", disable=None if progress else True)

    def log_epoch(epoch: int, logs: dict[str, float] | None) -> None:
        summary = ", ".join(f"{name}={value:.4f}" for name, value in sorted((logs or {}).items()))
        logger.info("head epoch %d/%d: %s", epoch + 1, epochs, summary)
        bar.set_postfix({name: f"{value:.3f}" for name, value in (logs or {}).items() if "loss" in name})
        bar.update(1)

    logger.info(
        "training similarity head %s on %d pairs (%d same, %d different), %d-d features",
        list(architecture.hidden_units),
        len(train_pairs),
        train_pairs.n_positive,
        train_pairs.n_negative,
        features.shape[1],
    )
    with bar:
        fit_history = model.fit(
            train_data,
            validation_data=val_data,
            epochs=epochs,
            # The dataset reshuffles pairs itself from `seed`; Keras's own batch shuffling would
            # draw from Python's global random state instead.
            shuffle=False,
            verbose=0,
            callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=log_epoch)],
        )
    history = {name: [float(value) for value in values] for name, values in fit_history.history.items()}
    return SimilarityHead.from_keras(model), history
