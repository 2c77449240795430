"""Network files and their graphs, below both ``detect`` and ``backbones``.

dlib's model-file reader (:mod:`~faceid.nets.dlib_format`), its graph description and checks
(:mod:`~faceid.nets.dlib_graph`), the ONNX and Keras builders (:mod:`~faceid.nets.dlib_onnx`,
:mod:`~faceid.nets.dlib_keras`), and the ONNX Runtime session helper they share
(:mod:`~faceid.nets.onnx_session`). The CNN face detector (``detect/mmod.py``) and the dlib
backbone (``backbones/dlib_resnet.py``) both build on them, so neither imports the other's room.
Importing the package imports none of them.
"""
