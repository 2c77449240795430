"""Frozen backbones behind one registry: ``create_extractor`` (network.py) and ``load_extractor``.

Importing the package registers every backbone; none loads a model until asked.
"""

from faceid.backbones import dlib_resnet, hog, resnet50, siamese  # noqa: F401  (registers the backbones)
from faceid.backbones.registry import (
    BACKBONES,
    MANIFEST_NAME,
    PRECISIONS,
    RUNTIMES,
    TTA_MODES,
    Backbone,
    BackboneOptions,
    Extractor,
    create_extractor,
    load_extractor,
    register_backbone,
)

__all__ = [
    "BACKBONES", "MANIFEST_NAME", "PRECISIONS", "RUNTIMES", "TTA_MODES", "Backbone", "BackboneOptions", "Extractor",
    "create_extractor", "load_extractor", "register_backbone",
]
