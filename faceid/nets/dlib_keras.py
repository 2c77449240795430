"""dlib's face ResNet as a Keras 3 model: the same steps as the ONNX graph, trainable end to end.

Built by :func:`faceid.nets.dlib_graph.walk` from the parsed layers, channels last (the
input is :func:`faceid.nets.dlib_graph.preprocess_face_resnet`'s output). Convolutions pad
explicitly (dlib's ``k // 2`` at stride 1, none at stride 2); ``affine`` is its own trainable
layer (:class:`Affine`); shortcuts of another shape are zero-padded by :class:`PadAdd`. Both
layers are registered Keras serialisables, so a fine-tuned model saves and reloads with
``safe_mode`` on (no Lambda, no pickle).
"""

from __future__ import annotations

import keras
import numpy as np

from faceid.nets.dlib_graph import FaceResNet, Step, walk


@keras.saving.register_keras_serializable(package="faceid")
class Affine(keras.layers.Layer):
    """``gamma * x + beta`` per channel (dlib's ``affine`` layer in CONV mode)."""

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, inputs):
        return inputs * self.gamma + self.beta


@keras.saving.register_keras_serializable(package="faceid")
class PadAdd(keras.layers.Layer):
    """dlib's ``add_prev``: both inputs zero-padded at the end of each axis to the larger, then added."""

    def compute_output_shape(self, input_shapes):
        first, second = input_shapes
        return (first[0],) + tuple(max(a, b) for a, b in zip(first[1:], second[1:]))

    def call(self, inputs):
        first, second = inputs
        target = [max(int(a), int(b)) for a, b in zip(first.shape[1:], second.shape[1:])]

        def pad(tensor):
            missing = [want - int(have) for have, want in zip(tensor.shape[1:], target)]
            if not any(missing):
                return tensor
            return keras.ops.pad(tensor, [[0, 0]] + [[0, amount] for amount in missing])

        return pad(first) + pad(second)


class _KerasBuilder:
    def __init__(self, network: FaceResNet):
        self.network = network
        self.inputs = None
        self.assignments: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []

    def _layer(self, layer: keras.layers.Layer, x, weights: list[np.ndarray] | None = None):
        output = layer(x)
        if weights is not None:
            self.assignments.append((layer, weights))
        return output

    def input(self, step: Step, mean_rgb):
        size = self.network.input_size
        self.inputs = keras.Input(shape=(size, size, 3), name="chips")
        return self.inputs

    def con(self, step: Step, x):
        attributes = step.layer.attributes
        if attributes["padding_y"] or attributes["padding_x"]:
            x = keras.layers.ZeroPadding2D((attributes["padding_y"], attributes["padding_x"]), name=f"pad_{step.index}")(x)
        filters = step.layer.arrays["filters"]  # (out, in, rows, columns) -> Keras (rows, columns, in, out)
        layer = keras.layers.Conv2D(
            attributes["filters"], (attributes["rows"], attributes["columns"]),
            strides=(attributes["stride_y"], attributes["stride_x"]), padding="valid", name=f"con_{step.index}",
        )
        return self._layer(layer, x, [filters.transpose(2, 3, 1, 0), step.layer.arrays["biases"]])

    def affine(self, step: Step, x):
        return self._layer(Affine(name=f"affine_{step.index}"), x, [step.layer.arrays["gamma"], step.layer.arrays["beta"]])

    def relu(self, step: Step, x):
        return keras.layers.ReLU(name=f"relu_{step.index}")(x)

    def pool(self, step: Step, x, kind: str):
        attributes = step.layer.attributes
        if attributes["padding_y"] or attributes["padding_x"]:
            raise NotImplementedError("padded pools do not occur in the face network")
        layer_type = keras.layers.MaxPooling2D if kind == "max_pool" else keras.layers.AveragePooling2D
        return layer_type(
            (attributes["rows"], attributes["columns"]), strides=(attributes["stride_y"], attributes["stride_x"]),
            padding="valid", name=f"{kind}_{step.index}",
        )(x)

    def global_avg_pool(self, step: Step, x):
        return keras.layers.GlobalAveragePooling2D(name=f"avg_pool_everything_{step.index}")(x)

    def fc(self, step: Step, x):
        layer = keras.layers.Dense(step.layer.attributes["outputs"], use_bias=False, name=f"fc_{step.index}")
        return self._layer(layer, x, [step.layer.arrays["weights"]])

    def add(self, step: Step, x, x_shape, shortcut, shortcut_shape, out_shape):
        return PadAdd(name=f"add_prev_{step.index}")([x, shortcut])


def face_resnet_keras(network: FaceResNet, name: str = "dlib_face_resnet") -> keras.Model:
    """A Keras model with dlib's weights: ``(n, size, size, 3)`` preprocessed -> ``(n, 128)``."""
    builder = _KerasBuilder(network)
    outputs = walk(network, builder)
    model = keras.Model(builder.inputs, outputs, name=name)
    for layer, weights in builder.assignments:
        layer.set_weights([np.asarray(weight, dtype=np.float32) for weight in weights])
    return model
