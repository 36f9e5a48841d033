"""TensorRT's pure-Python parts (profiles, engine-cache manifest, parser errors) and its unavailability message."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest


from core.errors import UnavailableError
from runtimes.errors import RuntimeLoadError, RuntimeUnavailableError
from runtimes.trt_engine import (BatchProfile, batch_profiles, cache_paths, engine_manifest, format_parser_errors,
                                 lookup_engine, manifest_key, manifest_mismatches, profile_for, store_engine,
                                 timing_cache_path)
from runtimes.trt_runtime import TensorRTRuntime


def manifest(**changes):
    base = dict(onnx_sha256="ab" * 32, tensorrt_version="11.4.0.106", gpu_name="NVIDIA H100 80GB HBM3",
                compute_capability="9.0", profiles=(BatchProfile(1, 32, 256),),
                flags={"tf32": False, "workspace_bytes": 1 << 30, "optimization_level": None})
    base.update(changes)
    return engine_manifest(**base)


G = BatchProfile  # the general profile covers every size; then one exact profile per requested size


@pytest.mark.parametrize("shape, sizes, expected", [
    ((None, 3, 227, 227), (1, 32, 256), (G(1, 256, 256), G(1, 1, 1), G(32, 32, 32), G(256, 256, 256))),
    ((-1, 3, 227, 227), (8, 1), (G(1, 8, 256), G(1, 1, 1), G(8, 8, 8))),
    ((None, 3, 227, 227), (), (G(1, 32, 256),)),
    ((None, 3, 227, 227), (1, 512), (G(1, 512, 512), G(1, 1, 1), G(512, 512, 512))),  # max grows to fit
    ((4, 3, 227, 227), (4,), (G(4, 4, 4),)),          # static batch
    ((4, 3, 227, 227), (), (G(4, 4, 4),)),
])
def test_batch_profiles(shape, sizes, expected):
    assert batch_profiles(shape, sizes) == expected


@pytest.mark.parametrize("shape, sizes, match", [
    ((4, 3, 227, 227), (1, 4), r"static batch of 4; cannot run batch size\(s\) \[1\]"),
    ((None, 3, None, 227), (1,), r"dimension\(s\) \[2\] .* are dynamic"),
    ((None, 3, 227, 227), (0,), "batch sizes must be >= 1"),
])
def test_batch_profile_errors(shape, sizes, match):
    with pytest.raises(RuntimeLoadError, match=match):
        batch_profiles(shape, sizes)


def test_each_batch_size_runs_on_its_own_profile():
    profiles = batch_profiles((None, 3, 227, 227), (1, 32))
    assert profile_for(profiles, 1) == 1 and profile_for(profiles, 32) == 2  # the exact ones, not the general one
    assert profile_for(profiles, 7) == 0 and profile_for(profiles, 300) is None


def test_timing_cache_is_per_gpu_model_not_per_compute_capability(tmp_path):
    h100 = timing_cache_path(tmp_path, "11.4.0.106", "NVIDIA H100 80GB HBM3")
    h200 = timing_cache_path(tmp_path, "11.4.0.106", "NVIDIA H200")  # both compute capability 9.0
    assert h100 != h200 and h100.parent == tmp_path and " " not in h100.name
    assert timing_cache_path(tmp_path, "11.5.0", "NVIDIA H200") != h200


def test_profile_shapes():
    assert BatchProfile(1, 8, 16).shapes((3, 227, 227)) == ((1, 3, 227, 227), (8, 3, 227, 227), (16, 3, 227, 227))


def test_manifest_key_is_stable_and_covers_every_field():
    assert manifest_key(manifest()) == manifest_key(manifest())
    variants = [manifest(onnx_sha256="cd" * 32), manifest(tensorrt_version="11.5.0"),
                manifest(gpu_name="NVIDIA A100"), manifest(compute_capability="8.0"),
                manifest(profiles=(BatchProfile(1, 1, 256),)), manifest(flags={"tf32": True})]
    keys = {manifest_key(m) for m in variants}
    assert len(keys) == len(variants) and manifest_key(manifest()) not in keys


def test_mismatches_name_the_fields():
    problems = manifest_mismatches(manifest(), manifest(gpu_name="NVIDIA A100", compute_capability="8.0"))
    assert len(problems) == 2 and problems[0] == "gpu_name: cached 'NVIDIA A100', need 'NVIDIA H100 80GB HBM3'"


def test_cache_roundtrip_and_rebuild_on_mismatch(tmp_path):
    m = manifest()
    assert lookup_engine(tmp_path, m) is None  # empty cache
    path = store_engine(tmp_path, m, b"plan-bytes")
    assert path == cache_paths(tmp_path, m)[0] and lookup_engine(tmp_path, m) == path
    record = json.loads(cache_paths(tmp_path, m)[1].read_text())
    assert record["engine_bytes"] == 10 and record["tensorrt_version"] == "11.4.0.106"
    path.write_bytes(b"plan-bytez")  # same size, other content: never run it
    assert lookup_engine(tmp_path, m) is None
    store_engine(tmp_path, m, b"plan-bytes")
    manifest_path = cache_paths(tmp_path, m)[1]
    manifest_path.write_text(json.dumps({**record, "gpu_name": "NVIDIA A100"}))  # e.g. copied from another machine
    assert lookup_engine(tmp_path, m) is None
    manifest_path.write_text("{not json")
    assert lookup_engine(tmp_path, m) is None


def test_parser_errors_are_listed_by_node():
    def err(node, name, op, code, desc):
        return SimpleNamespace(node=lambda: node, node_name=lambda: name, node_operator=lambda: op,
                               code=lambda: code, desc=lambda: desc)
    old_style = SimpleNamespace(node=lambda: 7, code=lambda: "INVALID_NODE", desc=lambda: "bad attribute")
    text = format_parser_errors([err(3, "/features/lrn1/LRN", "LRN", "UNSUPPORTED_NODE", "no importer"), old_style])
    assert "2 error(s)" in text
    assert "node 3 '/features/lrn1/LRN' [LRN]: UNSUPPORTED_NODE: no importer" in text
    assert "node 7: INVALID_NODE: bad attribute" in text


def test_unavailable_tensorrt_says_how_to_install(tiny_onnx):
    pytest.importorskip("torch")
    ok, reason = TensorRTRuntime.is_available()
    if ok:
        pytest.skip("TensorRT is available here")
    assert "pip install --extra-index-url https://pypi.nvidia.com 'alexnet-deploy[tensorrt]'" in reason or \
        "no CUDA GPU" in reason
    with pytest.raises(RuntimeUnavailableError, match="tensorrt: ") as e:
        TensorRTRuntime(tiny_onnx.path).load()
    assert isinstance(e.value, UnavailableError)  # exit 3, "not available here", not a failure
