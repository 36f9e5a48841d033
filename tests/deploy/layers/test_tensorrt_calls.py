"""The TensorRT calls of the layer tools (an IProfiler on the execution context that times each engine layer),
checked against TensorRT 11.4's real Python bindings as tests/runtimes/test_tensorrt_api.py checks the adapter's:
nothing here can run TensorRT."""
from __future__ import annotations

import ast

from tests.runtimes.test_tensorrt_api import ROOT, check, tensorrt_modules, trt_api, trt_stubs  # noqa: F401

MODULE = "deploy.layers.profilers"


def test_layer_tools_use_only_tensorrt_11_api(trt_api):  # noqa: F811 - the imported fixture
    modules = tensorrt_modules(("deploy",))
    assert MODULE in modules, f"{MODULE} no longer imports tensorrt: update this test"
    report = check(trt_api, {name: path.read_text() for name, path in modules.items()}, ROOT)
    assert not report.problems, "\n".join(report.problems)
    assert any("profilers.py" in c and "trt.IProfiler" in c for c in report.checked), report.checked


def test_the_profiler_overrides_report_layer_time_as_tensorrt_calls_it(trt_api):  # noqa: F811
    """The static checker cannot type the adapter's execution context or a subclass's override, so the two
    contracts it leaves are checked here against the dump: ``IExecutionContext.profiler`` is a settable property of
    type IProfiler, and the recorder overrides ``IProfiler.report_layer_time(layer_name, ms)`` with the same
    parameters, calling ``IProfiler.__init__()`` with none (pybind11 trampolines need it)."""
    types = trt_api["types"]
    assert types["IExecutionContext"]["attrs"]["profiler"] == {"kind": "property", "returns": "IProfiler",
                                                              "settable": True}
    real = types["IProfiler"]["attrs"]["report_layer_time"]["sigs"]
    assert [[p[0] for p in s["params"]] for s in real] == [["layer_name", "ms"]]
    assert [s["params"] for s in types["IProfiler"]["init"]] == [[]]
    tree = ast.parse((ROOT / "deploy" / "layers" / "profilers.py").read_text())
    recorder = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Recorder")
    assert [ast.unparse(b) for b in recorder.bases] == ["trt.IProfiler"]
    method = next(n for n in recorder.body if isinstance(n, ast.FunctionDef) and n.name == "report_layer_time")
    assert [a.arg for a in method.args.args] == ["self", "layer_name", "ms"]
    init = next(n for n in recorder.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    assert "trt.IProfiler.__init__(self)" in ast.unparse(init)
    attach = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "attach")
    assert "self._ctx.profiler = profiler" in ast.unparse(attach)
