"""Inside the model: per-layer parity against PyTorch and per-layer time from each runtime's own profiler, named by
AlexNet's layers."""
