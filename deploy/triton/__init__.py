"""Triton Inference Server model repositories: config.pbtxt for the ONNX Runtime, OpenVINO and TensorRT backends.
Imports deploy/ top-level modules only."""
