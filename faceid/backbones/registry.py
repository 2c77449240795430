"""The backbone registry: every frozen network that turns aligned face chips into vectors.

A backbone is registered under a name (``resnet50``, ``dlib``) with two
constructors: :meth:`Backbone.create` (network.py builds one from options) and
:meth:`Backbone.load` (every other script reopens what network.py saved). Both give an
:class:`Extractor`, whose :meth:`Extractor.embed` takes aligned RGB chips; each
backbone module owns its preprocessing (one function per backbone).

An extractor is saved as a directory: ``manifest.json`` (how it was made) and,
for Keras backbones, the model file named in the manifest. The manifest's
``fingerprint`` hashes everything that changes the vectors (backbone, layer,
input size, pooling, alignment, preprocessing, weights); feature caches and
similarity heads record it and refuse to mix with another.

A directory may come from someone else, so every file in it that changes the vectors is
checked against the SHA-256 its manifest recorded when it was saved (``model_sha256``,
``onnx_sha256``; ``calibration_sha256`` for ``calibration.npz``, checked by
:func:`faceid.match.openset.backbone_calibrations`) before it is read: :func:`check_file_sha256`.
These hashes are not part of the fingerprint (caches stay valid when a file is re-saved).
"""

from __future__ import annotations

import copy
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from faceid.errors import InputError
from faceid.io.manifest import check_file_sha256 as check_manifest_sha256
from faceid.io.manifest import sha256_json, source_hashes
from faceid.io.store import read_json, write_json
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "faceid-extractor/1"
RUNTIMES = ("auto", "onnx", "keras", "dlib")
TTA_MODES = ("none", "flip")
PRECISIONS = ("fp32", "int8")
# Luminance of RGB (ITU-R 601): how a colour chip becomes a greyscale one.
GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class BackboneOptions:
    """What network.py's options say about the backbone (ignored where they do not apply)."""

    layer: str = DEFAULTS.resnet_layer
    input_size: int = DEFAULTS.input_size
    pooling: str = DEFAULTS.pooling
    weights: str = DEFAULTS.weights  # "imagenet", "none", or a path to a .h5/.weights.h5 file
    seed: int = DEFAULTS.seed  # initialises random weights reproducibly (weights="none")
    tta: str = DEFAULTS.tta  # "none", or "flip": the chip and its mirror image, embeddings averaged
    precision: str = DEFAULTS.precision  # "fp32", or "int8": the ONNX graph statically quantised
    calibration_faces: str | None = None  # int8: a folder of face photos to calibrate on


class Extractor(ABC):
    """A loaded backbone: aligned chips in, feature vectors out."""

    runtime: ClassVar[str]  # what runs the network: "keras", "onnx" or "dlib"

    def __init__(self, manifest: dict[str, Any]):
        self.manifest = manifest

    @property
    def name(self) -> str:
        return self.manifest["backbone"]

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def chip_size(self) -> int:
        """Side in pixels of the aligned chip :meth:`embed` expects."""
        return int(self.manifest["input_size"])

    @property
    def align_padding(self) -> float:
        return float(self.manifest["align_padding"])

    @property
    def output_dim(self) -> int:
        return int(self.manifest["output_dim"])

    @property
    def tta(self) -> str:
        return str(self.manifest.get("tta", "none"))

    @property
    def precision(self) -> str:
        return str(self.manifest.get("precision", "fp32"))

    @property
    def domains(self) -> tuple[str, ...]:
        """A cross-domain extractor's two image domains, query side first (e.g. sketches, photos); else ``()``."""
        return tuple(self.manifest.get("domains", ()))

    @property
    def domain(self) -> str | None:
        """The domain :meth:`embed` treats its chips as (the gallery side by default)."""
        return self.manifest.get("domain")

    def for_domain(self, name: str | None) -> Extractor:
        """This extractor embedding images of domain ``name`` (its preprocessing, its projection).

        ``None``, or an extractor with one domain, returns it unchanged. The gallery side keeps the
        extractor's fingerprint (feature caches of gallery photos are ordinary caches); the query
        side gets its own, so its vectors never pass for gallery vectors.
        """
        if name is None or not self.domains:
            return self
        if name not in self.domains:
            raise InputError(f"this extractor was trained on domains {', '.join(self.domains)}, not {name!r}")
        if name == self.domain:
            return self
        view = copy.copy(self)
        view.manifest = {**self.manifest, "domain": name}
        if name != self.domains[-1]:
            view.manifest["fingerprint"] = sha256_json([self.manifest["fingerprint"], name])[:32]
        return view

    def _domain_chips(self, chips: np.ndarray) -> np.ndarray:
        """Chips as this domain's preprocessing takes them: greyscale (three equal channels) where
        the manifest's ``domain_color`` says ``grey`` (sketches, and photos matched to sketches)."""
        color = self.manifest.get("domain_color", {}).get(self.domain or "", "rgb")
        if color != "grey":
            return chips
        grey = np.rint(chips.astype(np.float32) @ GREY_WEIGHTS).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)

    def check_chips(self, chips: np.ndarray) -> np.ndarray:
        """``chips`` as an array, or an error naming the shape this backbone takes."""
        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[1:] != (self.chip_size, self.chip_size, 3):
            raise InputError(
                f"{self.name} extractor expects chips of shape (n, {self.chip_size}, {self.chip_size}, 3), got {chips.shape}"
            )
        return chips

    def embed(self, chips: np.ndarray, batch_size: int = DEFAULTS.batch_size) -> np.ndarray:
        """Feature vectors of aligned chips (with the extractor's test-time augmentation).

        Args:
            chips: ``(n, chip_size, chip_size, 3) uint8`` RGB, from :func:`faceid.detect.faces.align_face`.

        Returns:
            ``(n, output_dim) float32``.
        """
        chips = self.check_chips(chips)
        if len(chips) == 0:
            return np.zeros((0, self.output_dim), dtype=np.float32)
        return with_tta(lambda batch: self._embed(batch, batch_size), self._domain_chips(chips), self.tta)

    @abstractmethod
    def _embed(self, chips: np.ndarray, batch_size: int) -> np.ndarray:
        """The network on checked, non-empty chips: ``(n, output_dim) float32``."""

    def save(self, directory: Path, model_name: str, export_onnx: bool = True) -> Path:
        """Write the extractor directory; returns the manifest path."""
        directory.mkdir(parents=True, exist_ok=True)
        manifest_path = directory / MANIFEST_NAME
        write_json(manifest_path, self.manifest)
        return manifest_path

    def describe(self) -> str:
        """A human-readable summary (network.py --print_model 1)."""
        return "\n".join(f"{key}: {value}" for key, value in sorted(self.manifest.items()) if key != "sources")


def with_tta(embed: Callable[[np.ndarray], np.ndarray], chips: np.ndarray, tta: str) -> np.ndarray:
    """``embed(chips)`` with test-time augmentation ``tta`` (:data:`TTA_MODES`).

    ``flip``: the chips and their mirror images in one call (batches stay full), then the mean of
    each chip's two vectors. The one implementation: extractors and train_siamese.py's validation.
    """
    if tta == "none":
        return embed(chips)
    if tta != "flip":
        raise InputError(f"unknown `tta` {tta!r}: choose one of {', '.join(TTA_MODES)}")
    count = len(chips)
    both = embed(np.concatenate([chips, chips[:, :, ::-1]]))
    return ((both[:count] + both[count:]) * np.float32(0.5)).astype(np.float32, copy=False)


def check_file_sha256(path: Path, manifest: dict[str, Any], key: str, fix: str) -> None:
    """:func:`faceid.io.manifest.check_file_sha256` for a file of an extractor directory."""
    check_manifest_sha256(path, manifest, key, path.parent / MANIFEST_NAME, fix)


def check_variant(options: BackboneOptions) -> None:
    """Refuse an unknown ``tta`` or ``precision`` before anything is built."""
    if options.tta not in TTA_MODES:
        raise InputError(f"unknown `tta` {options.tta!r}: choose one of {', '.join(TTA_MODES)}")
    if options.precision not in PRECISIONS:
        raise InputError(f"unknown `precision` {options.precision!r}: choose one of {', '.join(PRECISIONS)}")


def finish_manifest(fields: dict[str, Any], identity_keys: tuple[str, ...], module_file: str) -> dict[str, Any]:
    """Add the format, the fingerprint (a hash of ``identity_keys``) and the source hashes.

    ``tta`` and ``precision`` change the vectors, so they enter the fingerprint; at their plain
    values (``none``, ``fp32``) they are left out of it, so extractors (and their caches) made
    before these options existed keep their fingerprint.
    """
    fields.setdefault("tta", "none")
    fields.setdefault("precision", "fp32")
    identity = {key: fields[key] for key in identity_keys}
    for key, plain in (("tta", "none"), ("precision", "fp32")):
        if fields[key] != plain:
            identity[key] = fields[key]
    fields["format"] = MANIFEST_FORMAT
    fields["fingerprint"] = sha256_json(identity)[:32]
    fields["sources"] = source_hashes(["detect/faces.py", "backbones/registry.py", module_file])
    return fields


class Backbone(ABC):
    """One kind of backbone in the registry."""

    name: ClassVar[str]
    description: ClassVar[str]

    @classmethod
    @abstractmethod
    def create(cls, options: BackboneOptions) -> Extractor:
        """Build a new extractor from network.py's options."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, manifest: dict[str, Any], runtime: str = "auto") -> Extractor:
        """Reopen an extractor saved by :meth:`Extractor.save` (``runtime``: see :func:`load_extractor`)."""


BACKBONES: dict[str, type[Backbone]] = {}


def register_backbone(backbone: type[Backbone]) -> type[Backbone]:
    BACKBONES[backbone.name] = backbone
    return backbone


def _backbone(name: str) -> type[Backbone]:
    try:
        return BACKBONES[name]
    except KeyError:
        raise InputError(f"unknown backbone {name!r}: choose one of {', '.join(sorted(BACKBONES))}") from None


def create_extractor(backbone: str, options: BackboneOptions = BackboneOptions()) -> Extractor:
    """Build a fresh extractor (what network.py does)."""
    check_variant(options)
    return _backbone(backbone).create(options)


def load_extractor(path: str | Path, runtime: str = "auto") -> Extractor:
    """Open an extractor directory written by network.py (or its manifest.json).

    Args:
        runtime: ``"onnx"`` runs the network with ONNX Runtime, ``"keras"`` as a Keras model,
            ``"dlib"`` (dlib backbone only) in dlib's own C++ code; ``"auto"`` picks ONNX
            when it can. The runtimes of one backbone give the same vectors (within 1e-4
            for ResNet50, 1e-5 for dlib), so a cache made with one is valid for the others.
    """
    if runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    path = Path(path)
    directory = path.parent if path.name == MANIFEST_NAME else path
    manifest = read_json(
        directory / MANIFEST_NAME,
        "extractor manifest",
        "pass an extractor directory written by network.py",
    )
    if manifest.get("format") != MANIFEST_FORMAT:
        raise InputError(
            f"{directory / MANIFEST_NAME} is not a faceid extractor manifest "
            f"(format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}): re-create it with network.py"
        )
    if manifest.get("precision", "fp32") == "int8" and runtime in ("keras", "dlib"):
        raise InputError(f"{directory} is an int8 extractor: it runs on ONNX Runtime only (`runtime` onnx or auto)")
    return _backbone(manifest.get("backbone", "?")).load(directory, manifest, runtime)
