"""Every TensorRT call the adapter makes, checked against TensorRT 11.4's real Python API on a machine without it.

NVIDIA's bindings wheel (``tensorrt-cu13-bindings``, ~1.3 MB, module ``tensorrt_bindings``) links libnvinfer.so.11,
libnvonnxparser.so.11 and libnvinfer_plugin.so.11 but imports only nine factory symbols from them. Stubs with those
sonames and symbols, compiled here with ``cc`` and put on the LD_LIBRARY_PATH of a subprocess only, let it import;
every stub aborts, so nothing can pretend to build or run. Run as ``python -m tests.runtimes.test_tensorrt_api OUT``,
this module is that subprocess: it writes the bindings' classes, enum members, methods vs properties, pybind11 overload
signatures and return types as JSON. tests/runtimes/trt_api.py then checks, statically, every module under runtimes/
that imports tensorrt, as it is at test time, against that API.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.runtimes.trt_api import Checker

ROOT = Path(__file__).resolve().parents[2]
# Each stub: soname -> the symbols tensorrt.so imports from it (nm -D --undefined-only; no symbol versions needed).
STUB_LIBS = {
    "libnvinfer.so.11": ("createInferBuilder_INTERNAL", "createInferRefitter_INTERNAL", "createInferRuntime_INTERNAL",
                         "getBuilderPluginRegistry", "getPluginRegistry"),
    "libnvonnxparser.so.11": ("createNvOnnxParser_INTERNAL", "createNvOnnxParserRefitter_INTERNAL",
                              "getNvOnnxParserVersion"),
    "libnvinfer_plugin.so.11": ("initLibNvInferPlugins",),
}
_STUB = 'void *{0}(void) {{ fputs("TensorRT stub: {0} called\\n", stderr); abort(); }}\n'


def _stub_env(stubs: Path) -> dict[str, str]:
    paths = [str(stubs), os.environ.get("LD_LIBRARY_PATH", "")]
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(p for p in paths if p)}


# -- the dumper: runs in the subprocess, never in pytest's process -------------------------------------------------
# JSON: {"version", "types": {key: {"enum", "buffer", "init", "attrs"}}}; key "" is the tensorrt module, the others its
# classes (nested ones as "ILogger.Severity"). "enum": member names or null; "buffer": buffer protocol support; "init":
# the constructor's overloads ([]: no Python constructor). attrs[name]: {"kind": "class" | "value", "type"} or
# {"kind": "property", "returns", "settable"} or {"kind": "method" | "function", "sigs"}; each sig is {"params":
# [[name, kind, has_default], ...], "returns": a class key or the annotation}, kinds O positional-only, P positional or
# keyword, A *args, K keyword-only, W **kwargs, ``self`` dropped; "sigs" null: unknown.
_SIG = re.compile(r"^(?:\d+\. )?(\w*)\((.*)\)(?: -> (.+))?$")
_KINDS = {0: "O", 1: "P", 2: "A", 3: "K", 4: "W"}   # inspect.Parameter kinds: pos-only, pos/kw, *args, kw-only, **kw


def _split(text: str) -> list[str]:
    """Top-level commas only: types and default reprs nest [], (), {} and <...>."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch in "[({<") - (ch in "])}>")
        if ch == "," and depth == 0:
            parts, cur = parts + [cur], ""
        else:
            cur += ch
    return [p.strip() for p in parts + [cur] if p.strip()]


def _params(text: str) -> list[list]:
    """``[name, kind, has_default]`` per parameter; kinds as in ``_KINDS``."""
    out, kind = [], "P"
    for part in _split(text):
        if part == "/":
            out = [[n, "O", d] for n, _, d in out]
        elif part == "*":
            kind = "K"
        elif part.startswith("*"):
            out.append([part.lstrip("*").split(":")[0], "W" if part.startswith("**") else "A", True])
            kind = "K"
        else:
            name, _, rest = part.partition(":")
            out.append([name.split("=")[0].strip(), kind, "=" in rest or "=" in name])
    return out


def _sigs(fn, name: str, method: bool, norm) -> list[dict] | None:
    """Signatures from pybind11's docstring (one per overload), else from inspect; None when unknown."""
    doc = (getattr(fn, "__doc__", None) or "").strip()
    if doc.startswith(f"{name}("):
        lines = doc.splitlines()
        lines = [ln for ln in lines if re.match(rf"\d+\. {name}\(", ln)] if "Overloaded function." in doc else lines[:1]
        sigs = [{"params": _params(m.group(2)), "returns": norm(m.group(3) or "")} for m in map(_SIG.match, lines) if m]
    else:
        import inspect
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return None
        sigs = [{"params": [[p.name, _KINDS[int(p.kind)], p.default is not p.empty] for p in sig.parameters.values()],
                 "returns": ""}]
    for sig in sigs:
        if method and sig["params"][:1] and sig["params"][0][1] in "OP":
            sig["params"] = sig["params"][1:]   # self
    return sigs or None


def _has_buffer(cls) -> bool | None:
    """PyTypeObject.tp_as_buffer->bf_getbuffer (offset 160 on 64-bit CPython 3.8+, validated on builtins)."""
    import ctypes

    def probe(t):
        ptr = ctypes.c_void_p.from_address(id(t) + 160).value
        return bool(ptr and ctypes.c_void_p.from_address(ptr).value)
    if [probe(t) for t in (bytes, bytearray, memoryview, int, str, object)] != [True] * 3 + [False] * 3:
        return None
    return probe(cls)


def _entry(raw, name: str, keys: dict, norm, module: bool) -> dict:
    if isinstance(raw, type):
        return {"kind": "class", "type": keys.get(id(raw))}
    if isinstance(raw, property):
        fget = raw.fget
        doc = (getattr(fget, "__doc__", None) or "").strip().splitlines()
        m = _SIG.match(doc[0]) if doc else None   # "(arg0: ICudaEngine) -> int"; enums: "name(self: object, /) -> str"
        return {"kind": "property", "returns": norm(m.group(3) or "") if m else "", "settable": raw.fset is not None}
    if isinstance(raw, (staticmethod, classmethod)):
        return {"kind": "function", "sigs": _sigs(raw.__func__, name, False, norm)}
    if callable(raw):
        return {"kind": "function" if module else "method", "sigs": _sigs(raw, name, not module, norm)}
    return {"kind": "value", "type": keys.get(id(type(raw)))}


def _dump(out: str) -> None:
    import tensorrt_bindings as trt

    def ours(obj) -> bool:
        return isinstance(obj, type) and obj.__module__.startswith("tensorrt_bindings")
    keys, classes, queue = {}, {}, [(n, getattr(trt, n)) for n in dir(trt) if ours(getattr(trt, n))]
    while queue:   # breadth first: ILogger.Severity is canonical, Logger.Severity an alias of it
        key, cls = queue.pop(0)
        if id(cls) not in keys:
            keys[id(cls)], classes[key] = key, cls
            queue += [(f"{key}.{n}", getattr(cls, n)) for n in dir(cls) if ours(getattr(cls, n, None))]
    by_qual = {f"{c.__module__}.{c.__qualname__}": k for k, c in classes.items()}

    def norm(text: str) -> str:
        """Full class names -> keys; C++ names the binding left unresolved (nvonnxparser::IParserError) -> class."""
        def key(match):
            token = match.group(0)
            if token in by_qual or "::" not in token:
                return by_qual.get(token, token)
            short = token.split("::")[-1]
            return next((k for k in (short, short[1:]) if k in classes), token)
        return re.sub(r"[A-Za-z_][\w.:]*", key, text.strip())

    # ``tensorrt`` (the tensorrt-cu13 package) is ``from tensorrt_bindings import *`` plus ``__version__``.
    public = [n for n in dir(trt) if not n.startswith("_") or n == "__version__"]
    types = {"": {"enum": None, "buffer": None, "init": [],
                  "attrs": {n: _entry(getattr(trt, n), n, keys, norm, True) for n in public}}}
    for key, cls in classes.items():
        raws = {n: next((k.__dict__[n] for k in cls.__mro__ if n in k.__dict__), None) for n in dir(cls)
                if not n.startswith("__")}
        # pybind11 gives classes without py::init a slot-wrapper __init__ that raises "No constructor defined!"
        init = next((k.__dict__["__init__"] for k in cls.__mro__ if ours(k) and "__init__" in k.__dict__), None)
        init = None if type(init) is type(object.__init__) else init
        members = getattr(cls, "__members__", None)
        types[key] = {"enum": list(members) if isinstance(members, dict) else None, "buffer": _has_buffer(cls),
                      "init": _sigs(init, "__init__", True, norm) if init is not None else [],
                      "attrs": {n: _entry(r, n, keys, norm, False) for n, r in raws.items() if r is not None}}
    Path(out).write_text(json.dumps({"version": trt.__version__, "types": types}))


# -- what is checked -----------------------------------------------------------------------------------------------
def tensorrt_modules(folders=("runtimes",)) -> dict[str, Path]:
    """``{module name: path}`` of every module under ``folders`` that imports tensorrt, as it is now."""
    found = {}
    for path in sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py")):
        nodes = ast.walk(ast.parse(path.read_text()))
        if any(isinstance(n, ast.Import) and any(a.name.split(".")[0] == "tensorrt" for a in n.names)
               or isinstance(n, ast.ImportFrom) and n.module == "tensorrt" for n in nodes):
            found[".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")] = path
    return found


def check(api: dict, sources: dict[str, str], root: Path | None = None) -> Checker:
    """Check ``{module name: source}``; project modules they import are looked up under ``root``."""
    checker = Checker(api, root)
    for module, source in sources.items():
        path = root / Path(*module.split(".")).with_suffix(".py") if root else None
        checker.add(module, source, str(path.relative_to(root)) if path and path.is_file() else module)
    return checker.run()


# -- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def trt_stubs(tmp_path_factory) -> Path:
    """The three stub libraries, compiled once per session."""
    if importlib.util.find_spec("tensorrt_bindings") is None:
        pytest.skip("tensorrt_bindings is not installed: pip install -e '.[dev]' brings tensorrt-cu13-bindings")
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build the TensorRT stub libraries")
    folder = tmp_path_factory.mktemp("trt-stubs")
    for soname, symbols in STUB_LIBS.items():
        source = folder / f"{soname}.c"
        source.write_text("#include <stdio.h>\n#include <stdlib.h>\n" + "".join(map(_STUB.format, symbols)))
        proc = subprocess.run([cc, "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(folder / soname),
                               str(source)], capture_output=True, text=True)
        assert proc.returncode == 0, f"cc could not build the {soname} stub:\n{proc.stderr}"
    return folder


@pytest.fixture(scope="session")
def trt_api(trt_stubs) -> dict:
    """TensorRT's API as dumped from the real bindings (once per session)."""
    out = trt_stubs / "tensorrt_api.json"
    proc = subprocess.run([sys.executable, "-m", "tests.runtimes.test_tensorrt_api", str(out)], cwd=ROOT,
                          env=_stub_env(trt_stubs), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"dumping the TensorRT API failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(out.read_text())


# -- tests ---------------------------------------------------------------------------------------------------------
def test_the_dump_is_tensorrt_11_4(trt_api):
    """Facts of TensorRT 11 that a fake or an empty dump would not have."""
    types = trt_api["types"]
    engine, config = types["ICudaEngine"]["attrs"], types["IBuilderConfig"]["attrs"]
    assert trt_api["version"].startswith("11.4."), trt_api["version"]
    assert len(types) > 150 and "TF32" in types["BuilderFlag"]["enum"] and "FP16" not in types["BuilderFlag"]["enum"]
    assert engine["num_io_tensors"] == {"kind": "property", "returns": "int", "settable": False}
    assert "num_bindings" not in engine and "execute_async_v2" not in types["IExecutionContext"]["attrs"]
    assert [s["params"] for s in config["set_timing_cache"]["sigs"]] == \
        [[["cache", "P", False], ["ignore_mismatch", "P", False]]]
    assert config["builder_optimization_level"]["settable"] is True
    assert types["OnnxParser"]["attrs"]["get_error"]["sigs"][0]["returns"] == "ParserError"   # C++ name, resolved
    assert types["Logger"]["attrs"]["WARNING"] == {"kind": "value", "type": "ILogger.Severity"}
    assert types["IHostMemory"]["buffer"] is True and types["ITimingCache"]["buffer"] is False
    assert types["ICudaEngine"]["init"] == [] and len(types["Dims"]["init"]) == 2


def test_stubs_abort_instead_of_running_tensorrt(trt_stubs):
    """Reaching TensorRT's libraries kills the process: no test can pass by pretending to build an engine."""
    if importlib.util.find_spec("tensorrt_libs") is not None:
        pytest.skip("TensorRT's real libraries are installed (tensorrt_libs): the bindings load them, not the stubs")
    code = "import tensorrt_bindings as trt\ntrt.Builder(trt.Logger())"
    proc = subprocess.run([sys.executable, "-c", code], env=_stub_env(trt_stubs), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -signal.SIGABRT, proc.stderr[-2000:]
    assert "TensorRT stub: createInferBuilder_INTERNAL called" in proc.stderr


def test_the_adapter_uses_only_tensorrt_11_api(trt_api):
    """Every TensorRT use under runtimes/ exists in TensorRT 11.4, with the right kind and argument count."""
    modules = tensorrt_modules()
    assert modules, "no module under runtimes/ imports tensorrt"
    report = check(trt_api, {name: path.read_text() for name, path in modules.items()}, ROOT)
    summary = (f"{len(report.checked)} TensorRT attribute uses and {len(report.calls)} argument lists checked in "
               f"{', '.join(modules)} (+ the project functions they pass TensorRT objects to)")
    print(summary, *report.problems, f"unchecked ({len(report.unchecked)}):", *report.unchecked, sep="\n")
    if report.unchecked:   # visible in every run's warning summary: these were not (fully) checked
        warnings.warn(f"TensorRT API check: {len(report.unchecked)} expression(s) left unchecked:\n"
                      + "\n".join(report.unchecked), stacklevel=1)
    assert not report.problems, "\n".join([summary, *report.problems])
    # The inference must keep typing the adapter: a floor, so the test cannot pass by checking nothing.
    assert len(report.checked) >= 30 and len(report.calls) >= 15, summary


TENSORRT_10 = '''
import tensorrt as trt

LOG = trt.Logger(trt.Logger.WARNING)


def build_and_run(bindings, stream):
    builder = trt.Builder(LOG)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.max_workspace_size = 1 << 30
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache)
    engine = trt.Runtime(LOG).deserialize_cuda_engine(builder.build_serialized_network(network, config))
    names = [engine.get_binding_name(i) for i in range(engine.num_bindings)]
    context = engine.create_execution_context()
    context.execute_async_v2(bindings, stream)
    count, name = engine.num_io_tensors(), engine.get_tensor_name
    engine.num_io_tensors = count
    return bytes(config.get_timing_cache()), trt.ICudaEngine(), names, name
'''
# (the reported expression, what the report must say about it): each planted TensorRT 10 (or plainly wrong) use.
PLANTED = [
    ("trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH does not exist"),
    ("trt.BuilderFlag.FP16", "BuilderFlag.FP16 does not exist in TensorRT 11.4"),
    ("config.max_workspace_size", "IBuilderConfig.max_workspace_size does not exist"),
    ("config.set_timing_cache(cache)", "1 positional argument(s) fit no TensorRT 11.4.0.106 signature: "
                                       "set_timing_cache(cache, ignore_mismatch) -> bool"),
    ("engine.get_binding_name", "ICudaEngine.get_binding_name does not exist"),
    ("engine.num_bindings", "ICudaEngine.num_bindings does not exist"),
    ("context.execute_async_v2", "IExecutionContext.execute_async_v2 does not exist"),
    ("engine.num_io_tensors", "ICudaEngine.num_io_tensors is a property (int): read it, do not call it"),
    ("engine.get_tensor_name", "ICudaEngine.get_tensor_name is a method, not a property"),
    ("engine.num_io_tensors", "ICudaEngine.num_io_tensors cannot be assigned"),
    ("bytes(config.get_timing_cache())", "ITimingCache buffer protocol support: False"),
    ("trt.ICudaEngine()", "fit no TensorRT 11.4.0.106 signature: none (no Python constructor)"),
]


def test_planted_tensorrt_10_calls_are_reported(trt_api):
    """The checker is not blind: each planted misuse is reported, and nothing else (no false alarms)."""
    report = check(trt_api, {"trt10": TENSORRT_10})
    for expression, message in PLANTED:
        assert any(f": {expression}: " in p and message in p for p in report.problems), \
            f"{expression}: {message!r} not reported in:\n" + "\n".join(report.problems)
    assert len(report.problems) == len(PLANTED), "\n".join(report.problems)


def test_receivers_it_cannot_type_are_reported_not_guessed(trt_api):
    """Where TensorRT types disagree (Builder or Runtime), the use is listed as unchecked, not guessed or dropped."""
    source = ("import tensorrt as trt\n\n\ndef pick(flag, logger):\n"
              "    thing = trt.Builder(logger) if flag else trt.Runtime(logger)\n    return thing.max_threads\n")
    report = check(trt_api, {"pick": source})
    assert not report.problems and any("thing.max_threads" in u for u in report.unchecked), report.unchecked


if __name__ == "__main__":
    _dump(sys.argv[1])
