"""MediaPipe's BlazeFace models on our own ONNX graph equal TensorFlow Lite's interpreter.

Each ``.tflite`` file is read by :func:`faceid.nets.tflite_format.read_tflite` (no TensorFlow),
built by :func:`faceid.nets.tflite_onnx.tflite_onnx_bytes` and run by ONNX Runtime; on real frames
of the clip and an LFW photo, letterboxed to the model's input as the detector feeds it, both raw
outputs (box regressors and scores) must match ``tf.lite.Interpreter``'s within 1e-4, or within
1e-5 of the output's largest magnitude where that is above 10: the raw outputs reach 10^2 (short- and
full-range) to 10^4 (the back model's logits on a letterbox's padding), where one float32 step is
already 1e-5 to 1e-3, and TFLite's own two CPU kernel sets (XNNPACK and the built-in ones) differ
from each other by as much as the ONNX graph differs from either (up to 2.7e-4 on the short-range
model, 5.9e-3 on the back model, on these images).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import LFW, REPO, VIDEO

from faceid.detect import blazeface
from faceid.errors import InputError
from faceid.nets.onnx_session import OnnxModel
from faceid.nets.tflite_format import read_tflite
from faceid.nets.tflite_onnx import tflite_onnx_bytes

MODELS = REPO / "faceid" / "detect" / "models"
MODEL_FILES = ["face_detection_short_range.tflite", "face_detection_full_range.tflite", "face_detection_back.tflite"]
FRAMES = (0, 30, 240)  # Miranda's far shot, Lacamoire's profile, the audience
ABSOLUTE_TOLERANCE = 1e-4
RELATIVE_TOLERANCE = 1e-5  # of the output's largest magnitude: float32 rounding of sums that large


@lru_cache(maxsize=1)
def real_images() -> tuple[np.ndarray, ...]:
    """Three clip frames and one LFW photo, RGB uint8."""
    capture = cv2.VideoCapture(str(VIDEO))
    frames = []
    try:
        for index in FRAMES:
            capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, frame = capture.read()
            assert ok, f"cannot read frame {index} of {VIDEO}"
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    photo = cv2.imread(str(sorted((LFW / "Aaron_Sorkin").iterdir())[0]))
    return (*frames, cv2.cvtColor(photo, cv2.COLOR_BGR2RGB))


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """The network's input as the detector makes it (:func:`faceid.detect.blazeface.letterbox`)."""
    return blazeface.letterbox(image, size)[0]


@pytest.fixture(scope="module")
def tensorflow():
    return pytest.importorskip("tensorflow")


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
@pytest.mark.parametrize("file_name", MODEL_FILES)
def test_onnx_graph_equals_tflite_interpreter_on_real_frames(file_name, tensorflow):
    path = MODELS / file_name
    model = read_tflite(path)
    session = OnnxModel(tflite_onnx_bytes(model), threads=1, name=file_name)
    interpreter = tensorflow.lite.Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    input_details = interpreter.get_input_details()[0]
    output_details = interpreter.get_output_details()
    size = int(input_details["shape"][1])
    assert session.input_name == input_details["name"] == model.tensors[model.inputs[0]].name
    differences = np.zeros(len(output_details))
    magnitudes = np.zeros(len(output_details))
    relevant, relevant_anchors, relevant_magnitude = [0.0] * len(output_details), 0, 0.0
    for image in real_images():
        batch = letterbox(image, size)
        interpreter.set_tensor(input_details["index"], batch)
        interpreter.invoke()
        expected = [interpreter.get_tensor(detail["index"]) for detail in output_details]
        actual = session.run_all(batch)
        assert [output.shape for output in actual] == [output.shape for output in expected]
        differences = np.maximum(differences, [np.abs(a - e).max() for a, e in zip(actual, expected)])
        scoring = (expected[1].reshape(-1) >= np.log(0.01 / 0.99))  # sigmoid(logit) >= 0.01
        relevant_anchors += int(scoring.sum())
        relevant_magnitude = max(relevant_magnitude, float(np.abs(expected[0].reshape(scoring.size, -1)[scoring]).max(initial=0)))
        relevant = [max(old, float(np.abs(a.reshape(scoring.size, -1)[scoring] - e.reshape(scoring.size, -1)[scoring]).max(initial=0)))
                    for old, a, e in zip(relevant, actual, expected)]
        magnitudes = np.maximum(magnitudes, [np.abs(e).max() for e in expected])
    # Same outputs in the same order, and the scores vary over the image (a broken graph's would not).
    assert [output.name for output in session.session.get_outputs()] == [detail["name"] for detail in output_details]
    assert np.ptp(expected[1]) > 1.0
    tolerances = np.maximum(ABSOLUTE_TOLERANCE, RELATIVE_TOLERANCE * magnitudes)
    assert np.all(differences <= tolerances), (
        f"{file_name}: max |ONNX - TFLite| per output {differences}, allowed {tolerances} (largest |TFLite| {magnitudes})"
    )
    # Where a detection can come from (score >= 0.01, whatever the threshold): scores within 1e-4
    # absolute; box regressions (input pixels, up to ~10^2) within 1e-4 or 2e-6 of their largest value
    # (~16 float32 steps: 3e-4 of a pixel at 150 px).
    assert relevant_anchors > 0
    assert relevant[1] <= ABSOLUTE_TOLERANCE, f"{file_name}: |ONNX - TFLite| of scoring anchors' logits: {relevant[1]}"
    assert relevant[0] <= max(ABSOLUTE_TOLERANCE, 2e-6 * relevant_magnitude), (
        f"{file_name}: |ONNX - TFLite| of scoring anchors' regressions: {relevant[0]} (largest {relevant_magnitude})")


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
@pytest.mark.parametrize("model_name", ["short", "full", "back"])
def test_decoded_boxes_equal_those_decoded_from_tflite_within_a_pixel(model_name, tensorflow):
    """The whole detector (letterbox, ONNX graph, anchors, decoding, weighted NMS, mapping back) against
    the same NumPy decoding of TFLite's outputs: same faces, corners and keypoints within a pixel."""
    model = blazeface.MODELS[model_name]
    ours = blazeface.BlazeFace(model_name, threads=1)
    interpreter = tensorflow.lite.Interpreter(model_path=str(blazeface.model_path(model)), num_threads=1)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_indices = [detail["index"] for detail in interpreter.get_output_details()]
    found = 0
    for image in real_images():
        batch, fitted = blazeface.letterbox(image, model.input_size)
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        points, scores = blazeface.decode(*[interpreter.get_tensor(index) for index in output_indices], model,
                                          blazeface.anchors(model), ours.min_score)
        reference = [(fitted.to_frame(merged), score) for merged, score in blazeface.weighted_nms(points, scores)]
        detections = ours.detect(image)
        assert len(detections) == len(reference)
        for detection, (expected, score) in zip(detections, reference):
            assert np.abs(np.array(detection.box).reshape(2, 2) - expected[:2]).max() < 1.0
            assert np.abs(detection.keypoints - expected[2:]).max() < 1.0
            assert detection.score == pytest.approx(score, abs=1e-4)
        found += len(detections)
    assert found >= 3  # faces were found to compare: Miranda, Lacamoire's profile or the audience, Sorkin


def test_reader_folds_float16_weights_and_reads_options():
    model = read_tflite(MODELS / "face_detection_full_range.tflite")
    ops = model.ops_used()
    assert "DEQUANTIZE" not in ops and ops["CONV_2D"] == 49 and ops["RESIZE_BILINEAR"] == 3
    first = model.operators[0]
    assert first.op == "CONV_2D" and first.options["padding"] == "SAME" and first.options["stride_h"] == 2
    weights = model.tensors[first.inputs[1]]
    assert weights.dtype == "float32" and weights.data.dtype == np.float32 and weights.data.shape == weights.shape
    resize = next(operator for operator in model.operators if operator.op == "RESIZE_BILINEAR")
    assert resize.options == {"align_corners": False, "half_pixel_centers": True}
    assert [model.tensors[index].shape for index in model.outputs] == [(1, 2304, 16), (1, 2304, 1)]


def _tflite_with_one_operator(builtin_code: int) -> bytes:
    """A minimal valid ``.tflite`` FlatBuffer: ``input (1, 4) -> op -> output (1, 4)``."""
    import flatbuffers
    from tflite.Buffer import BufferEnd, BufferStart
    from tflite.Model import (
        ModelAddBuffers, ModelAddOperatorCodes, ModelAddSubgraphs, ModelAddVersion, ModelEnd, ModelStart,
        ModelStartBuffersVector, ModelStartOperatorCodesVector, ModelStartSubgraphsVector,
    )
    from tflite.Operator import OperatorAddInputs, OperatorAddOpcodeIndex, OperatorAddOutputs, OperatorEnd, OperatorStart
    from tflite.OperatorCode import OperatorCodeAddBuiltinCode, OperatorCodeAddDeprecatedBuiltinCode, OperatorCodeAddVersion
    from tflite.OperatorCode import OperatorCodeEnd, OperatorCodeStart
    from tflite.SubGraph import SubGraphAddInputs, SubGraphAddOperators, SubGraphAddOutputs, SubGraphAddTensors
    from tflite.SubGraph import SubGraphEnd, SubGraphStart
    from tflite.Tensor import TensorAddBuffer, TensorAddName, TensorAddShape, TensorAddType, TensorEnd, TensorStart

    builder = flatbuffers.Builder(1024)

    def int_vector(values):
        builder.StartVector(4, len(values), 4)
        for value in reversed(values):
            builder.PrependInt32(value)
        return builder.EndVector()

    def offset_vector(start, offsets):
        start(builder, len(offsets))
        for offset in reversed(offsets):
            builder.PrependUOffsetTRelative(offset)
        return builder.EndVector()

    BufferStart(builder)
    buffer = BufferEnd(builder)
    tensors = []
    for name in ("input", "output"):
        name_offset, shape = builder.CreateString(name), int_vector([1, 4])
        TensorStart(builder)
        TensorAddShape(builder, shape)
        TensorAddType(builder, 0)
        TensorAddBuffer(builder, 0)
        TensorAddName(builder, name_offset)
        tensors.append(TensorEnd(builder))
    inputs, outputs = int_vector([0]), int_vector([1])
    OperatorStart(builder)
    OperatorAddOpcodeIndex(builder, 0)
    OperatorAddInputs(builder, inputs)
    OperatorAddOutputs(builder, outputs)
    operator = OperatorEnd(builder)
    tensor_vector = offset_vector(lambda b, n: b.StartVector(4, n, 4), tensors)
    operator_vector = offset_vector(lambda b, n: b.StartVector(4, n, 4), [operator])
    graph_inputs, graph_outputs = int_vector([0]), int_vector([1])
    SubGraphStart(builder)
    SubGraphAddTensors(builder, tensor_vector)
    SubGraphAddOperators(builder, operator_vector)
    SubGraphAddInputs(builder, graph_inputs)
    SubGraphAddOutputs(builder, graph_outputs)
    graph = SubGraphEnd(builder)
    OperatorCodeStart(builder)
    OperatorCodeAddDeprecatedBuiltinCode(builder, min(builtin_code, 127))
    OperatorCodeAddBuiltinCode(builder, builtin_code)
    OperatorCodeAddVersion(builder, 1)
    code = OperatorCodeEnd(builder)
    codes = offset_vector(ModelStartOperatorCodesVector, [code])
    graphs = offset_vector(ModelStartSubgraphsVector, [graph])
    buffers = offset_vector(ModelStartBuffersVector, [buffer])
    ModelStart(builder)
    ModelAddVersion(builder, 3)
    ModelAddOperatorCodes(builder, codes)
    ModelAddSubgraphs(builder, graphs)
    ModelAddBuffers(builder, buffers)
    builder.Finish(ModelEnd(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_unsupported_operator_is_named_with_the_file(tmp_path):
    from tflite.BuiltinOperator import BuiltinOperator

    supported = tmp_path / "relu.tflite"
    supported.write_bytes(_tflite_with_one_operator(BuiltinOperator.RELU))
    assert [operator.op for operator in read_tflite(supported).operators] == ["RELU"]  # the fixture itself is valid
    unsupported = tmp_path / "sine.tflite"
    unsupported.write_bytes(_tflite_with_one_operator(BuiltinOperator.SIN))
    with pytest.raises(InputError, match=r"sine\.tflite uses TensorFlow Lite operator\(s\) SIN that this reader does not support"):
        read_tflite(unsupported)


def test_a_file_that_is_not_tflite_is_an_input_error(tmp_path):
    photo = sorted((LFW / "Aaron_Sorkin").iterdir())[0]
    with pytest.raises(InputError, match=r"Aaron_Sorkin_0001\.jpg is not a TensorFlow Lite model"):
        read_tflite(photo)
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes((MODELS / MODEL_FILES[0]).read_bytes()[:4096])
    with pytest.raises(InputError, match=r"truncated\.tflite"):
        read_tflite(truncated)
    with pytest.raises(InputError, match=r"cannot read TensorFlow Lite model .*missing\.tflite"):
        read_tflite(Path(tmp_path / "missing.tflite"))
