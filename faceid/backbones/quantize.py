"""int8 for ONNX extractors: static quantisation with ONNX Runtime, calibrated on real face chips.

Weights are quantised per output channel to int8, activations to uint8 with ranges measured
(min/max) on the calibration chips — the U8S8 form ONNX Runtime runs with VNNI instructions on
CPUs that have them (AVX-512 VNNI, AVX-VNNI), and with plain AVX2 integer arithmetic elsewhere.
The chips come from real face photos through the same detection and alignment as extraction
(:class:`faceid.detect.faces.FaceCropper`); calibrate on faces like the ones the extractor
will see, and not on the faces an accuracy figure is then measured on.

The quantised graph cannot be rebuilt, so it is saved as ``<name>.int8.onnx`` with its SHA-256 in the
manifest (``onnx_sha256``, :meth:`OnnxExtractor.save`), checked before ONNX Runtime reads it.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from faceid.backbones.runtime import OnnxExtractor
from faceid.detect.faces import FaceCropper, FaceOptions
from faceid.errors import InputError
from faceid.io.images import list_image_files
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

CALIBRATION_BATCH = 8


def _image_files(folder: Path) -> list[Path]:
    """Images in ``folder`` or in its person sub-folders, sorted."""
    files = list_image_files(folder)
    for sub in sorted(path for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")):
        files += list_image_files(sub)
    return files


def calibration_chips(folder: str | Path, chip_size: int, align_padding: float, limit: int) -> np.ndarray:
    """Aligned chips of the largest face in up to ``limit`` photos under ``folder``.

    Photos are taken evenly across the folder (not just its first people). Unreadable
    files and photos without a face are skipped.

    Raises:
        InputError: the folder is missing, or fewer than 8 faces were found in it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"calibration folder {folder} does not exist: pass `calibration_faces`, a folder of face photos")
    files = _image_files(folder)
    if len(files) > limit:
        files = [files[int(index)] for index in np.linspace(0, len(files) - 1, limit)]
    cropper = FaceCropper(FaceOptions(), chip_size, align_padding)
    chips = [chip for chip in map(cropper.largest_chip, files) if chip is not None]
    if len(chips) < CALIBRATION_BATCH:
        raise InputError(
            f"{folder} gave {len(chips)} face chips to calibrate int8 on ({len(files)} files read): "
            f"pass `calibration_faces`, a folder with at least {CALIBRATION_BATCH} photos of faces"
        )
    logger.info("int8 calibration: %d face chips from %s", len(chips), folder)
    return np.stack(chips)


class _ChipReader:
    """ONNX Runtime's calibration data reader over preprocessed chips."""

    def __init__(self, input_name: str, batches: list[np.ndarray]):
        self.input_name = input_name
        self.batches = iter(batches)

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self):  # pragma: no cover - called by some onnxruntime versions only
        pass


def quantize_int8(
    fp32_model: bytes, chips: np.ndarray, preprocess: Callable[[np.ndarray], np.ndarray]
) -> bytes:
    """The int8 form of an fp32 ONNX model, calibrated on ``chips`` (``uint8`` RGB).

    Returns:
        the quantised model, serialised.

    Raises:
        InputError: onnxruntime's quantisation tools are missing or fail.
    """
    try:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as error:
        raise InputError("int8 needs onnx and onnxruntime (pip install onnx onnxruntime)") from error
    input_name = onnx.load_from_string(fp32_model).graph.input[0].name
    batches = [
        np.ascontiguousarray(preprocess(chips[start : start + CALIBRATION_BATCH]), dtype=np.float32)
        for start in range(0, len(chips), CALIBRATION_BATCH)
    ]
    with tempfile.TemporaryDirectory(prefix="faceid-int8-") as scratch:
        source, prepared, target = (Path(scratch) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(fp32_model)
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared), str(target), _ChipReader(input_name, batches),
                quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, per_channel=True, calibrate_method=CalibrationMethod.MinMax,
            )
        except Exception as error:  # the quantiser raises anything from ValueError to protobuf errors
            raise InputError(f"int8 quantisation failed ({type(error).__name__}: {error}); use `precision` fp32") from error
        return target.read_bytes()


def quantized_extractor(
    manifest: dict[str, Any],
    calibration_faces: str | None,
    preprocess: Callable[[np.ndarray], np.ndarray],
    fp32_model: Callable[[np.ndarray], bytes],
) -> OnnxExtractor:
    """An int8 extractor: chips from ``calibration_faces``, the fp32 graph ``fp32_model(chips)``
    quantised on them; :meth:`OnnxExtractor.save` writes the result (it cannot be rebuilt)."""
    if not calibration_faces:
        raise InputError("`precision` int8 needs `calibration_faces`: a folder of photos of faces to measure activation "
                         "ranges on")
    chips = calibration_chips(calibration_faces, int(manifest["input_size"]), float(manifest["align_padding"]),
                              DEFAULTS.calibration_images)
    model = quantize_int8(fp32_model(chips), chips, preprocess)
    manifest["calibration"] = {"faces": len(chips), "source": Path(calibration_faces).name}
    return OnnxExtractor(manifest, model, preprocess, save_model=True)
