"""Runtime adapters (PyTorch, ONNX Runtime CPU/CUDA, TensorRT), one benchmark harness and the bench orchestrator."""
