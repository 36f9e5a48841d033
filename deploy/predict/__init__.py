"""Classify image files with a checkpoint or an ONNX file on any runtime. Imports deploy/ top-level modules only."""
