"""Serving: export a trained checkpoint (TorchScript or ONNX) and load it with input checks.

`dfei.serving.loader` needs only numpy and torch or onnxruntime; `dfei.serving.export` builds
the artifact from a checkpoint.
"""
