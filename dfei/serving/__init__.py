"""Serving: export a trained checkpoint (ONNX or TorchScript), load it with input checks, score it online.

`dfei.serving.export` builds the artifact from a checkpoint; `dfei.serving.loader` (numpy and
torch or onnxruntime only) loads and checks it; `dfei.serving.protocol` and
`dfei.serving.endpoint` are the HTTP API without a server (no Ray); `dfei.serving.app` is the Ray
Serve application over them and `dfei.serving.launch` starts, updates and stops it (the only
modules here that import Ray).
"""
