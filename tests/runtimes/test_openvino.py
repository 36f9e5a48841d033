"""OpenVINO adapter on the real library: lifecycle, parity with ONNX Runtime, bf16, and every refusal."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtimes.errors import (InputMismatchError, RuntimeLoadError, RuntimeOptionError, RuntimeStateError,
                             RuntimeUnavailableError)
from runtimes.openvino_runtime import OpenVinoRuntime, shared_core
from runtimes.ort_runtime import OrtRuntime

ov = pytest.importorskip("openvino")
pytestmark = pytest.mark.skipif(not OpenVinoRuntime.is_available()[0], reason=OpenVinoRuntime.is_available()[1])
CPU_BF16 = "BF16" in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
needs_bf16 = pytest.mark.skipif(not CPU_BF16, reason="this CPU has no native bf16 (OpenVINO lacks the BF16 capability)")


def _ort_logits(path, x: np.ndarray) -> np.ndarray:
    with OrtRuntime(path) as rt:
        return rt.infer({"input": x})["logits"]


def test_lifecycle_and_parity_with_onnxruntime(tiny_onnx):
    rt = OpenVinoRuntime(tiny_onnx.path, threads=1)
    assert rt.describe()["precision_hint"] == "default"  # safe before load: options only
    with pytest.raises(RuntimeStateError, match="before load"):
        rt.infer({"input": tiny_onnx.case.sample(2)})
    with rt:
        (spec,) = rt.input_specs()
        assert (spec.name, spec.shape, spec.dtype) == ("input", (None, 3, 16, 16), "float32")
        assert rt.output_names() == ["logits"] and rt.precision == "fp32"
        for batch in (2, 3):
            x = tiny_onnx.case.sample(batch, seed=batch)
            np.testing.assert_allclose(rt.infer({"input": x})["logits"], _ort_logits(tiny_onnx.path, x), atol=1e-5)
        info = rt.describe()
    assert (info["inference_precision"], info["streams"], info["threads"]) == ("f32", 1, 1)  # fp32 stays f32
    assert info["compiled_batches"] == [2, 3] and info["performance_hint"] == "LATENCY"
    rt.close()  # idempotent
    with pytest.raises(RuntimeStateError):
        rt.input_specs()


def test_outputs_are_caller_owned_and_batches_cached(tiny_onnx):
    a, b = tiny_onnx.case.sample(2, seed=1), tiny_onnx.case.sample(2, seed=2)
    with OpenVinoRuntime(tiny_onnx.path) as rt:
        first = rt.infer({"input": a})["logits"]
        kept = first.copy()
        second = rt.infer({"input": b})["logits"]
        for batch in (1, 4, 5, 6, 2):  # more than MAX_COMPILED sizes: the oldest go, the recent stay
            rt.infer({"input": tiny_onnx.case.sample(batch)})
        batches = rt.describe()["compiled_batches"]
    np.testing.assert_array_equal(first, kept)  # not overwritten by the next call
    assert not np.array_equal(first, second) and batches == [4, 5, 6, 2]


def test_batch_sizes_compile_at_load(tiny_onnx):
    with OpenVinoRuntime(tiny_onnx.path, batch_sizes=(4, 1)) as rt:
        assert rt.describe()["compiled_batches"] == [4, 1]
        rt.infer({"input": tiny_onnx.case.sample(4)})
        assert rt.describe()["compiled_batches"] == [1, 4]  # reused, not recompiled (most recent last)


def test_more_batch_sizes_than_are_kept_compile_only_those_kept(tiny_onnx):
    """Compiling all five at load would evict the first ones before a sweep in that order reaches them."""
    with OpenVinoRuntime(tiny_onnx.path, batch_sizes=(1, 2, 3, 4, 5)) as rt:
        assert rt.describe()["compiled_batches"] == [1, 2, 3, 4]


def test_prepared_run_reads_the_staged_input(tiny_onnx):
    x = tiny_onnx.case.sample(2)
    with OpenVinoRuntime(tiny_onnx.path) as rt:
        rt.prepare({"input": x})
        rt.run()
        rt.run()
        out = rt.fetch()["logits"]
    np.testing.assert_allclose(out, _ort_logits(tiny_onnx.path, x), atol=1e-5)


def test_wrong_feed_shape_is_an_input_mismatch(tiny_onnx):
    with OpenVinoRuntime(tiny_onnx.path) as rt, pytest.raises(InputMismatchError, match=r"expected \(N, 3, 16, 16\)"):
        rt.infer({"input": np.zeros((2, 3, 17, 16), np.float32)})


@pytest.mark.parametrize("content", [b"not a model", "truncated"])
def test_unreadable_onnx_is_a_load_error(tmp_path, tiny_onnx, content):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(tiny_onnx.path.read_bytes()[:300] if content == "truncated" else content)
    with pytest.raises(RuntimeLoadError, match=r"openvino cannot read .*bad\.onnx: \S") as e:
        OpenVinoRuntime(bad).load()
    assert "Exception from" not in str(e.value)  # OpenVINO's message, without its source-file preamble


def test_unknown_device_lists_the_available_ones(tiny_onnx):
    with pytest.raises(RuntimeUnavailableError, match=r"device 'NOSUCH' is not available here; available: .*CPU"):
        OpenVinoRuntime(tiny_onnx.path, device="nosuch").load()


@pytest.mark.parametrize("kwargs, match", [({"precision": "fp8"}, "fp32, fp16, int8, bf16"),
                                           ({"precision": "FP32"}, "fp32, fp16, int8, bf16"),
                                           ({"threads": 0}, "threads >= 1")])
def test_bad_options_are_toolkit_errors(tiny_onnx, kwargs, match):
    with pytest.raises(RuntimeOptionError, match=match):
        OpenVinoRuntime(tiny_onnx.path, **kwargs)


def test_precision_other_than_the_files_own_is_refused(tiny_onnx):
    with pytest.raises(RuntimeOptionError, match="holds fp32; expected None .* or bf16"):
        OpenVinoRuntime(tiny_onnx.path, precision="int8").load()


def test_runtimes_closed_out_of_order_leave_signals_working(tiny_onnx):
    """Two open runtimes closed first-opened-first (what bench and pipeline do) and then a Python signal handler: with
    one Core per runtime, OpenVINO left the thread on a freed signal stack and the signal killed the process."""
    script = (
        "import gc, os, signal, sys\n"
        "from runtimes.openvino_runtime import OpenVinoRuntime\n"
        "a, b = OpenVinoRuntime(sys.argv[1], threads=1), OpenVinoRuntime(sys.argv[1], threads=1)\n"
        "a.load(); b.load(); a.close(); gc.collect(); b.close(); del a, b; gc.collect()\n"
        "signal.signal(signal.SIGUSR1, lambda *_: print('handled'))\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script, str(tiny_onnx.path)], cwd=root, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(root)})
    assert (done.returncode, done.stdout.strip()) == (0, "handled"), done.stderr[-2000:]


@pytest.mark.skipif(CPU_BF16, reason="checks the refusal on a CPU without native bf16")
def test_bf16_without_native_bf16_is_unavailable(tiny_onnx):
    assert not OpenVinoRuntime.supports("bf16")[0]
    with pytest.raises(RuntimeUnavailableError, match="no native bf16"):
        OpenVinoRuntime(tiny_onnx.path, precision="bf16").load()


@needs_bf16
def test_bf16_is_really_compiled_as_bf16(tiny_onnx):
    assert OpenVinoRuntime.supports("bf16") == (True, "")
    with OpenVinoRuntime(tiny_onnx.path, precision="bf16") as rt:
        rt.infer({"input": tiny_onnx.case.sample(2)})
        assert rt.precision == "bf16" and rt.describe()["inference_precision"] == "bf16"


@pytest.mark.slow
def test_alexnet_fp32_matches_onnxruntime_and_bf16_stays_close(alexnet_run):
    x = np.random.default_rng(0).standard_normal((4, 3, 227, 227), dtype=np.float32)
    reference = _ort_logits(alexnet_run.onnx_path, x)
    with OpenVinoRuntime(alexnet_run.onnx_path) as rt:
        fp32 = rt.infer({"input": x})["logits"]
        assert rt.precision == "fp32" and rt.describe()["inference_precision"] == "f32"  # from the file's metadata
    scale = np.abs(reference).max()
    assert np.abs(fp32 - reference).max() <= 1e-4 * scale + 1e-5
    if not CPU_BF16:
        pytest.skip("this CPU has no native bf16 (OpenVINO lacks the BF16 capability)")
    with OpenVinoRuntime(alexnet_run.onnx_path, precision="bf16") as rt:
        bf16 = rt.infer({"input": x})["logits"]
        assert rt.describe()["inference_precision"] == "bf16"
    # bf16 keeps 8 mantissa bits (relative step 2^-8 = 0.4 %); errors average out over AlexNet's long dot products.
    assert np.abs(bf16 - fp32).max() <= 0.03 * scale
    cosine = (bf16 * fp32).sum() / np.linalg.norm(bf16) / np.linalg.norm(fp32)
    assert cosine > 0.999 and 0 < np.abs(bf16 - fp32).max()  # close, yet really not f32


@pytest.mark.slow
def test_int8_file_keeps_openvinos_default_for_its_float_layers(exported, tmp_path):
    import onnx

    path = exported("int8", lrn="native").path
    x = np.random.default_rng(1).standard_normal((2, 3, 227, 227), dtype=np.float32)
    with OpenVinoRuntime(path) as rt:
        logits = rt.infer({"input": x})["logits"]
        info = rt.describe()
    default = shared_core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    assert rt.precision == "int8" and (info["precision_hint"], info["inference_precision"]) == ("default", default)
    reference = _ort_logits(path, x)
    cosine = (logits * reference).sum() / np.linalg.norm(logits) / np.linalg.norm(reference)
    assert cosine > 0.99
    proto = onnx.load(str(path))
    del proto.metadata_props[:]  # without the exporter's metadata, the Q/DQ nodes say int8
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with OpenVinoRuntime(tmp_path / "bare.onnx") as rt:
        assert rt.precision == "int8"
    with pytest.raises(RuntimeOptionError, match="holds int8; expected None"):
        OpenVinoRuntime(path, precision="bf16").load()
