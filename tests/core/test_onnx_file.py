"""core/onnx_file.py: the hash an engine cache and Triton key a model by covers its external weights."""
from __future__ import annotations

import onnx

from core.fileio import sha256_file
from core.onnx_file import model_sha256, read_onnx_info
from tests.helpers import make_pooling_classifier


def test_the_model_hash_covers_external_weights(tmp_path):
    path = make_pooling_classifier(tmp_path / "m.onnx", ["a", "b"])
    assert model_sha256(path) == sha256_file(path)  # self-contained: the file's own sha256
    model = onnx.load(str(path))
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="m.weights",
              size_threshold=0)
    info = read_onnx_info(path)
    assert info.external_data == ("m.weights",)
    before = model_sha256(path)
    assert model_sha256(path, info.external_data) == before  # what read_onnx_info found, without a second parse
    weights = tmp_path / "m.weights"
    weights.write_bytes(bytes(b ^ 1 for b in weights.read_bytes()))  # new weights, same graph file
    assert model_sha256(path) != before
