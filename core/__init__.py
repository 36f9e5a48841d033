"""What every package shares and that imports no other project package: errors, files, paths, the model contract,
ONNX metadata and host facts."""
