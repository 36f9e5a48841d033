"""Inside the model: per-layer parity against PyTorch and per-layer time from each runtime's own profiler, named by
AlexNet's layers (the node → layer map is export/layers.py; the entry points are inspect.inspect_layers,
inspect.layer_table and parity.first_divergence)."""
