"""Turn a training checkpoint into a validated, parity-checked ONNX model (fp32, fp16, int8)."""
