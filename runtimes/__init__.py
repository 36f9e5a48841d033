"""Runtime adapters, one per runtime (PyTorch, ONNX Runtime CPU/CUDA, OpenVINO, TensorRT), the Runtime protocol they
share, the name → adapter registry and the one output comparison. Adapters only: what uses them is in deploy/."""
