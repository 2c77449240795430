"""The similarity head: a small MLP on ``|f1 - f2|`` that predicts "same person?".

Training uses Keras (:mod:`faceid.train.head`); inference does not:
:class:`SimilarityHead` holds the Dense weights as NumPy arrays and runs the forward pass itself,
so loading and scoring a trained head needs neither Keras nor TensorFlow.

On disk a head is a directory holding

* ``head.npz``: arrays ``layer0_kernel``, ``layer0_bias``, ``layer1_kernel``, ... (no pickle);
* ``head.json``: the manifest (architecture, input_dim, n_layers, the SHA-256 of ``head.npz``,
  plus whatever the caller adds, e.g. the backbone and normalisation the features came from);
* ``head.keras``: the trained Keras model, when one is available, for users who want Keras.
  Inference never reads it.

Features are used exactly as given: normalise them (e.g. z-score with the training statistics)
*before* calling :func:`faceid.train.head.train_head`, :meth:`SimilarityHead.predict` or :func:`score_pairs`, and
record the normalisation in ``extra_manifest`` so consumers apply the same one.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceid.errors import InputError
from faceid.io.store import StagedFiles, json_bytes

if TYPE_CHECKING:  # only for annotations; keras is imported lazily where it is used
    import keras

logger = logging.getLogger(__name__)

__all__ = [
    "HEAD_KERAS_FILE",
    "HEAD_MANIFEST_FILE",
    "HEAD_WEIGHTS_FILE",
    "HeadArchitecture",
    "SimilarityHead",
    "score_pairs",
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
        renamed into place, ``head.json`` last (:class:`faceid.io.store.StagedFiles`); an
        interrupted save therefore leaves the previous head untouched and never a half-written
        file. ``head.json`` holds the SHA-256 of ``head.npz``, so :meth:`load` also refuses a
        weights file from a different save.

        Args:
            directory: where to write; created if missing.
            extra_manifest: JSON-serialisable provenance to store alongside (backbone, feature
                normalisation, training settings, ...). Its keys may not shadow the head's own.

        Returns:
            The path of ``head.json``.

        Raises:
            InputError: ``extra_manifest`` is not JSON-serialisable or reuses a reserved key.
        """
        with StagedFiles(directory) as staged:
            self.stage(staged, extra_manifest)
        logger.info(
            "saved similarity head (%d -> %s) to %s", self.input_dim, list(self.architecture.hidden_units), directory
        )
        return Path(directory) / HEAD_MANIFEST_FILE

    def stage(self, staged: StagedFiles, extra_manifest: dict[str, Any] | None = None) -> None:
        """Stage this head's files into ``staged`` (committed with whatever else it holds), manifest last."""
        directory = staged.directory
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
            manifest_bytes = json_bytes(manifest)
        except (TypeError, ValueError) as error:
            raise InputError(
                f"extra_manifest must be JSON-serialisable (str, numbers, lists, dicts): {error}"
            ) from error

        staged.write_bytes(HEAD_WEIGHTS_FILE, weights_bytes)
        if self.keras_model is not None:
            staged.write_with(HEAD_KERAS_FILE, self.keras_model.save)
        elif not keep_old_keras:
            # A head.keras from an earlier training would disagree with these weights.
            staged.remove(HEAD_KERAS_FILE)
        staged.write_bytes(HEAD_MANIFEST_FILE, manifest_bytes)

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
