"""The similarity head: a small MLP on ``|f1 - f2|`` that predicts "same person?".

Training uses Keras (imported lazily inside the functions that need it); inference does not:
:class:`SimilarityHead` holds the Dense weights as NumPy arrays and runs the forward pass itself,
so loading and scoring a trained head needs neither Keras nor TensorFlow.

On disk a head is a directory holding

* ``head.npz``: arrays ``layer0_kernel``, ``layer0_bias``, ``layer1_kernel``, ... (no pickle);
* ``head.json``: the manifest (architecture, input_dim, n_layers, the SHA-256 of ``head.npz``,
  plus whatever the caller adds, e.g. the backbone and normalisation the features came from);
* ``head.keras``: the trained Keras model, when one is available, for users who want Keras.
  Inference never reads it.

Features are used exactly as given: normalise them (e.g. z-score with the training statistics)
*before* calling :func:`train_head`, :meth:`SimilarityHead.predict` or :func:`score_pairs`, and
record the normalisation in ``extra_manifest`` so consumers apply the same one.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceid.errors import InputError
from faceid.pairs import PairSet, pair_features

if TYPE_CHECKING:  # only for annotations; keras is imported lazily where it is used
    import keras

logger = logging.getLogger(__name__)

__all__ = [
    "HEAD_KERAS_FILE",
    "HEAD_MANIFEST_FILE",
    "HEAD_WEIGHTS_FILE",
    "HeadArchitecture",
    "SimilarityHead",
    "build_keras_head",
    "score_pairs",
    "train_head",
]

HEAD_WEIGHTS_FILE = "head.npz"
HEAD_MANIFEST_FILE = "head.json"
HEAD_KERAS_FILE = "head.keras"
_FORMAT_NAME = "faceid-similarity-head"
_FORMAT_VERSION = 1
# Rows per forward-pass chunk in predict: bounds the hidden activations to
# chunk * widest layer floats (16384 * 512 * 4 B = 32 MiB by default).
_PREDICT_CHUNK_ROWS = 16384
_RETRAIN_HINT = "run train.py to train and save the similarity head again"


@dataclass(frozen=True)
class HeadArchitecture:
    """Shape of the similarity head, the single place it is defined.

    The network is ``input -> [Dense(units, relu) -> Dropout(rate)] * n_hidden ->
    Dense(1, sigmoid)``, trained with binary cross-entropy.
    """

    # Width of each hidden ReLU layer. Wider first layers suit 2048-d ResNet50 features;
    # the 128-d dlib embedding is already discriminative and needs far less.
    hidden_units: tuple[int, ...] = (512, 256, 32)
    # Dropout rate after each hidden layer (0 = none); one entry per hidden layer.
    dropout: tuple[float, ...] = field(default=(0.5, 0.3, 0.0))

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_units", tuple(int(u) for u in self.hidden_units))
        object.__setattr__(self, "dropout", tuple(float(r) for r in self.dropout))
        if len(self.hidden_units) != len(self.dropout):
            raise InputError(
                f"HeadArchitecture needs one dropout rate per hidden layer; got "
                f"{len(self.hidden_units)} hidden_units and {len(self.dropout)} dropout rates"
            )
        if any(units < 1 for units in self.hidden_units):
            raise InputError(f"hidden_units must all be >= 1; got {self.hidden_units}")
        if any(not 0.0 <= rate < 1.0 for rate in self.dropout):
            raise InputError(f"dropout rates must be in [0, 1); got {self.dropout}")

    @property
    def n_layers(self) -> int:
        """Number of Dense layers, the sigmoid output layer included."""
        return len(self.hidden_units) + 1

    def to_dict(self) -> dict[str, list[int] | list[float]]:
        """JSON-ready form, the inverse of :meth:`from_dict`."""
        return {"hidden_units": list(self.hidden_units), "dropout": list(self.dropout)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HeadArchitecture:
        """Rebuild from :meth:`to_dict` output; raises ``InputError`` when malformed."""
        try:
            return cls(
                hidden_units=tuple(values["hidden_units"]),
                dropout=tuple(values["dropout"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"malformed head architecture {values!r}: {error}") from error


class SimilarityHead:
    """Trained similarity head with a pure-NumPy forward pass.

    Args:
        kernels: one ``(fan_in, units) float32`` matrix per Dense layer, input layer first;
            the last has 1 unit.
        biases: one ``(units,) float32`` vector per Dense layer.
        architecture: the architecture the weights belong to (dropout rates are kept for the
            record; dropout is inactive at inference).
        keras_model: the Keras model the weights came from, if any; only used by :meth:`save`
            to write ``head.keras``.

    Raises:
        InputError: the weight shapes do not chain or do not match ``architecture``.
    """

    def __init__(
        self,
        kernels: Sequence[np.ndarray],
        biases: Sequence[np.ndarray],
        architecture: HeadArchitecture,
        keras_model: keras.Model | None = None,
    ) -> None:
        self.kernels = [np.ascontiguousarray(k, dtype=np.float32) for k in kernels]
        self.biases = [np.ascontiguousarray(b, dtype=np.float32) for b in biases]
        self.architecture = architecture
        self.keras_model = keras_model
        self._check_shapes()

    def _check_shapes(self) -> None:
        expected_units = (*self.architecture.hidden_units, 1)
        if not (len(self.kernels) == len(self.biases) == len(expected_units)):
            raise InputError(
                f"head weights have {len(self.kernels)} kernels and {len(self.biases)} biases "
                f"but the architecture has {len(expected_units)} Dense layers"
            )
        if self.kernels[0].ndim != 2 or self.kernels[0].shape[0] < 1:
            raise InputError(f"layer 0 kernel has bad shape {self.kernels[0].shape}")
        fan_in = self.kernels[0].shape[0]
        for layer, (kernel, bias, units) in enumerate(zip(self.kernels, self.biases, expected_units, strict=True)):
            if kernel.shape != (fan_in, units) or bias.shape != (units,):
                raise InputError(
                    f"layer {layer} has kernel {kernel.shape} and bias {bias.shape}; expected "
                    f"({fan_in}, {units}) and ({units},)"
                )
            fan_in = units

    @property
    def input_dim(self) -> int:
        """Feature dimension the head expects (128 for dlib, 2048 for ResNet50)."""
        return int(self.kernels[0].shape[0])

    def predict(self, abs_diff: np.ndarray) -> np.ndarray:
        """Probability that each pair shows the same person.

        Args:
            abs_diff: ``(n_pairs, input_dim)`` absolute feature differences ``|f1 - f2|``,
                normalised the same way as during training.

        Returns:
            ``(n_pairs,) float32`` probabilities in ``[0, 1]``.

        Raises:
            InputError: ``abs_diff`` is not ``(n, input_dim)``.
        """
        abs_diff = np.asarray(abs_diff)
        if abs_diff.ndim != 2 or abs_diff.shape[1] != self.input_dim:
            raise InputError(
                f"the head expects (n_pairs, {self.input_dim}) feature differences; got shape "
                f"{abs_diff.shape}. Use features from the backbone the head was trained on, "
                f"or {_RETRAIN_HINT} for this backbone"
            )
        probabilities = np.empty(abs_diff.shape[0], dtype=np.float32)
        for start in range(0, abs_diff.shape[0], _PREDICT_CHUNK_ROWS):
            activations = abs_diff[start : start + _PREDICT_CHUNK_ROWS].astype(np.float32, copy=False)
            for kernel, bias in zip(self.kernels[:-1], self.biases[:-1], strict=True):
                activations = np.maximum(activations @ kernel + bias, 0.0)
            logits = (activations @ self.kernels[-1] + self.biases[-1])[:, 0]
            probabilities[start : start + len(logits)] = _sigmoid(logits)
        return probabilities

    @classmethod
    def from_keras(cls, model: keras.Model) -> SimilarityHead:
        """Copy the weights of a model built by :func:`build_keras_head` (or shaped like one).

        Raises:
            InputError: the model has layers other than Dense/Dropout, hidden layers that are
                not ReLU, or an output that is not one sigmoid unit.
        """
        import keras

        kernels: list[np.ndarray] = []
        biases: list[np.ndarray] = []
        hidden_units: list[int] = []
        dropout: list[float] = []
        dense_layers = [lay for lay in model.layers if isinstance(lay, keras.layers.Dense)]
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if isinstance(layer, keras.layers.Dropout):
                if not kernels or len(dropout) == len(kernels):
                    raise InputError(
                        f"layer {layer.name}: a head may only have one Dropout after each hidden Dense layer"
                    )
                dropout.append(float(layer.rate))
                continue
            if not isinstance(layer, keras.layers.Dense):
                raise InputError(
                    f"layer {layer.name} ({type(layer).__name__}) is not supported by the "
                    "NumPy head; build the model with build_keras_head"
                )
            is_output = layer is dense_layers[-1]
            wanted = keras.activations.sigmoid if is_output else keras.activations.relu
            if layer.activation is not wanted or not layer.use_bias:
                raise InputError(
                    f"layer {layer.name} must be a Dense layer with bias and "
                    f"{wanted.__name__} activation; build the model with build_keras_head"
                )
            if len(dropout) < len(kernels):
                dropout.append(0.0)
            kernel, bias = layer.get_weights()
            kernels.append(kernel)
            biases.append(bias)
            if not is_output:
                hidden_units.append(int(kernel.shape[1]))
        if not kernels or kernels[-1].shape[1] != 1:
            raise InputError("the model's last Dense layer must have exactly 1 unit")
        if len(dropout) == len(kernels):
            raise InputError("a head may not have Dropout after its output layer")
        architecture = HeadArchitecture(hidden_units=tuple(hidden_units), dropout=tuple(dropout))
        return cls(kernels, biases, architecture, keras_model=model)

    def save(self, directory: Path, extra_manifest: dict[str, Any] | None = None) -> Path:
        """Write ``head.npz``, ``head.json`` (and ``head.keras`` if a Keras model is attached).

        Every file is first written in full under a temporary name in ``directory``, then all are
        renamed into place, ``head.json`` last; an interrupted save therefore leaves the previous
        head untouched and never a half-written file. ``head.json`` holds the SHA-256 of
        ``head.npz``, so :meth:`load` also refuses a weights file from a different save.

        Args:
            directory: where to write; created if missing.
            extra_manifest: JSON-serialisable provenance to store alongside (backbone, feature
                normalisation, training settings, ...). Its keys may not shadow the head's own.

        Returns:
            The path of ``head.json``.

        Raises:
            InputError: ``extra_manifest`` is not JSON-serialisable or reuses a reserved key.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        arrays: dict[str, np.ndarray] = {}
        for layer, (kernel, bias) in enumerate(zip(self.kernels, self.biases, strict=True)):
            arrays[f"layer{layer}_kernel"] = kernel
            arrays[f"layer{layer}_bias"] = bias
        np.savez(buffer, **arrays)
        weights_bytes = buffer.getvalue()

        manifest: dict[str, Any] = {
            # "head_"-prefixed so callers keep plain "format" etc. for their own artefact.
            "head_format": _FORMAT_NAME,
            "head_format_version": _FORMAT_VERSION,
            "architecture": self.architecture.to_dict(),
            "input_dim": self.input_dim,
            "n_layers": len(self.kernels),
            "weights_file": HEAD_WEIGHTS_FILE,
            "weights_sha256": hashlib.sha256(weights_bytes).hexdigest(),
            "keras_file": None,
        }
        keras_path = directory / HEAD_KERAS_FILE
        manifest_path = directory / HEAD_MANIFEST_FILE
        # A head without its Keras model (e.g. loaded, then saved again with a new threshold)
        # keeps an existing head.keras only if that file was saved with these very weights.
        keep_old_keras = (
            self.keras_model is None
            and keras_path.exists()
            and _saved_weights_digest(manifest_path) == manifest["weights_sha256"]
        )
        if self.keras_model is not None or keep_old_keras:
            manifest["keras_file"] = HEAD_KERAS_FILE
        extra_manifest = dict(extra_manifest or {})
        reserved = sorted(set(extra_manifest) & set(manifest))
        if reserved:
            raise InputError(f"extra_manifest may not set the head's own keys {reserved}")
        manifest.update(extra_manifest)
        try:
            manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        except (TypeError, ValueError) as error:
            raise InputError(
                f"extra_manifest must be JSON-serialisable (str, numbers, lists, dicts): {error}"
            ) from error

        # Stage every file under a temporary name first, so the slow Keras save cannot be
        # interrupted half-way through replacing the old head; the renames come last, the
        # manifest (which names the weights' digest) after the files it describes.
        staged: list[tuple[Path, Path]] = []
        try:
            staged.append(
                (
                    _stage(directory, lambda path: path.write_bytes(weights_bytes)),
                    directory / HEAD_WEIGHTS_FILE,
                )
            )
            if self.keras_model is not None:
                # Keras insists on the .keras suffix, so the temporary name keeps it.
                staged.append((_stage(directory, self.keras_model.save, ".keras"), keras_path))
            staged.append((_stage(directory, lambda path: path.write_bytes(manifest_bytes)), manifest_path))
            if self.keras_model is None and keras_path.exists() and not keep_old_keras:
                # A head.keras from an earlier training would disagree with these weights.
                keras_path.unlink()
                logger.info("removed stale %s (no Keras model attached to this head)", keras_path)
            for temporary_path, final_path in staged:
                os.replace(temporary_path, final_path)
        finally:
            for temporary_path, _ in staged:
                temporary_path.unlink(missing_ok=True)
        logger.info(
            "saved similarity head (%d -> %s) to %s",
            self.input_dim,
            list(self.architecture.hidden_units),
            directory,
        )
        return manifest_path

    @classmethod
    def load(cls, directory: Path) -> tuple[SimilarityHead, dict[str, Any]]:
        """Load a head saved by :meth:`save`, without Keras.

        Returns:
            ``(head, manifest)``, the manifest including any ``extra_manifest`` keys.

        Raises:
            InputError: a file is missing, corrupt, from a different save, or its shapes do not
                match the manifest; the message names the path and the fix.
        """
        directory = Path(directory)
        manifest_path = directory / HEAD_MANIFEST_FILE
        weights_path = directory / HEAD_WEIGHTS_FILE
        for required in (manifest_path, weights_path):
            if not required.is_file():
                raise InputError(f"no similarity head at {directory}: {required} is missing; {_RETRAIN_HINT}")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(f"{manifest_path} is unreadable or corrupt ({error}); {_RETRAIN_HINT}") from error
        if not isinstance(manifest, dict) or manifest.get("head_format") != _FORMAT_NAME:
            raise InputError(f"{manifest_path} is not a similarity-head manifest; {_RETRAIN_HINT}")
        if manifest.get("head_format_version") != _FORMAT_VERSION:
            raise InputError(
                f"{manifest_path} has head format version {manifest.get('head_format_version')}; this "
                f"code reads version {_FORMAT_VERSION}; {_RETRAIN_HINT}"
            )

        weights_bytes = weights_path.read_bytes()
        if hashlib.sha256(weights_bytes).hexdigest() != manifest.get("weights_sha256"):
            raise InputError(
                f"{weights_path} does not match {manifest_path} (corrupt, or left by an "
                f"interrupted or different save); {_RETRAIN_HINT}"
            )
        try:
            architecture = HeadArchitecture.from_dict(manifest["architecture"])
            n_layers = int(manifest["n_layers"])
            input_dim = int(manifest["input_dim"])
            with np.load(io.BytesIO(weights_bytes), allow_pickle=False) as archive:
                kernels = [archive[f"layer{layer}_kernel"] for layer in range(n_layers)]
                biases = [archive[f"layer{layer}_bias"] for layer in range(n_layers)]
            head = cls(kernels, biases, architecture)
        except (
            InputError,
            KeyError,
            TypeError,
            ValueError,
            OSError,
            EOFError,
        ) as error:
            raise InputError(
                f"similarity head at {directory} is corrupt or inconsistent ({error}); {_RETRAIN_HINT}"
            ) from error
        if head.input_dim != input_dim or n_layers != architecture.n_layers:
            raise InputError(
                f"{weights_path} holds a {head.input_dim}-d head with {len(head.kernels)} "
                f"layers but {manifest_path} says {input_dim}-d with {n_layers}; {_RETRAIN_HINT}"
            )
        return head, manifest


def _saved_weights_digest(manifest_path: Path) -> str | None:
    """The ``weights_sha256`` recorded in an existing manifest, or None if there is none."""
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return manifest.get("weights_sha256") if isinstance(manifest, dict) else None


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logistic function that neither overflows nor loses precision for large |logits|."""
    positive = logits >= 0
    exp_negative_abs = np.exp(-np.abs(logits))
    return np.where(
        positive,
        1.0 / (1.0 + exp_negative_abs),
        exp_negative_abs / (1.0 + exp_negative_abs),
    ).astype(np.float32)


def _stage(directory: Path, write: Callable[[Path], object], suffix: str = ".tmp") -> Path:
    """Call ``write(temporary_path)`` for a new hidden file in ``directory``, flushed to disk.

    Renaming the result over the final name (same directory, hence same filesystem) is atomic,
    so readers see the old file or the new one, never a partial one. If ``write`` fails the
    temporary file is removed.
    """
    handle, temporary_name = tempfile.mkstemp(dir=directory, prefix=".head-", suffix=suffix)
    os.close(handle)
    temporary_path = Path(temporary_name)
    try:
        write(temporary_path)
        with open(temporary_path, "rb") as written:
            os.fsync(written.fileno())
        # mkstemp creates 0600; artefacts are meant to be shared like any other output.
        os.chmod(temporary_path, 0o644)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise
    return temporary_path


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
    epochs: int = 15,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    seed: int = 0,
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
        Keras's binned approximation; use ``faceid.metrics.roc_auc`` for exact numbers.

    Raises:
        InputError: mis-shaped features, empty pairs, or training pairs of one class only.
    """
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


def score_pairs(head: SimilarityHead, features_a: np.ndarray, features_b: np.ndarray) -> np.ndarray:
    """Same-person probability of each row pair ``(features_a[k], features_b[k])``.

    Args:
        head: a trained head.
        features_a: ``(n_pairs, input_dim)`` normalised features of the first images.
        features_b: ``(n_pairs, input_dim)`` normalised features of the second images.

    Returns:
        ``(n_pairs,) float32`` probabilities.

    Raises:
        InputError: the two arrays differ in shape or do not match the head's input_dim.
    """
    features_a = np.asarray(features_a)
    features_b = np.asarray(features_b)
    if features_a.shape != features_b.shape:
        raise InputError(
            f"features_a {features_a.shape} and features_b {features_b.shape} must have the "
            "same shape: one row per pair"
        )
    return head.predict(np.abs(features_a - features_b))
