"""Creating ONNX Runtime CUDA sessions that cannot silently fall back to the CPU, and the availability probe."""
from __future__ import annotations

import contextlib
import functools
import io
from collections import Counter
from typing import Any, Callable

from runtimes.errors import RuntimeLoadError, RuntimeUnavailableError
from runtimes.ort_runtime import INSTALL_HINT, ort_errors

CUDA_HINT = ("onnxruntime-gpu 1.31 needs an NVIDIA GPU with an R580+ driver, CUDA 13 and cuDNN 9 (torch 2.14 cu130 "
             "ships them; or pip install 'onnxruntime-gpu[cuda,cudnn]==1.31.*')")
STRICT_MESSAGE = "fallback to CPU EP has been explicitly disabled"


def create_cuda_session(ort, model: str | bytes, make_options: Callable[[], Any], cuda_options: dict[str, str], *,
                        strict: bool = True) -> tuple[Any, list[str]]:
    """A CUDA-EP session and the nodes it placed on the CPU (always empty when strict).

    Raises:
        RuntimeUnavailableError: the CUDA EP could not be created (the session would have run on the CPU).
        RuntimeLoadError: strict mode, and some nodes would run on the CPU (listed); or any other load failure.
    """
    so = make_options()
    if strict:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        providers: list = [("CUDAExecutionProvider", cuda_options)]  # adding the CPU EP here is rejected by ORT
    else:
        so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        providers = [("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(model, so, providers=providers)
    except ort_errors(ort) as e:
        if strict and STRICT_MESSAGE in str(e):
            _explain_strict_failure(ort, model, make_options, cuda_options)
        raise RuntimeLoadError(f"onnxruntime-cuda: cannot create a session: {e}") from None
    active = session.get_providers()
    if not active or active[0] != "CUDAExecutionProvider":
        raise RuntimeUnavailableError(f"onnxruntime-cuda: the session would run on {active}, not "
                                      f"CUDAExecutionProvider: the CUDA EP failed to load; {CUDA_HINT}")
    return session, ([] if strict else cpu_assigned_nodes(session))


def cpu_assigned_nodes(session) -> list[str]:
    """``"OpType name"`` of every node the session placed on the CPU EP."""
    return [f"{n.op_type} {n.name}" for sg in session.get_provider_graph_assignment_info()
            if sg.ep_name == "CPUExecutionProvider" for n in sg.get_nodes()]


def _explain_strict_failure(ort, model, make_options, cuda_options) -> None:
    """Strict creation failed: tell "the CUDA EP is missing" (unavailable) from "some nodes are CPU-only"."""
    _, cpu_nodes = create_cuda_session(ort, model, make_options, cuda_options, strict=False)  # may raise unavailable
    ops = Counter(n.split(" ", 1)[0] for n in cpu_nodes)
    listed = ", ".join(f"{op}×{k}" for op, k in ops.most_common())
    raise RuntimeLoadError(
        f"onnxruntime-cuda (strict): {len(cpu_nodes)} node(s) would run on the CPU execution provider ({listed}; "
        f"first: {', '.join(cpu_nodes[:5])}) and CPU fallback is disabled. ONNX Runtime keeps shape computations "
        "on the CPU; export a graph without them (a static reshape, no Shape/Gather/Range subgraphs) or accept "
        "them with --allow-cpu-nodes (strict=False), which lists them in the report")


@functools.cache
def cuda_prerequisites() -> tuple[bool, str]:
    """Cheap checks first: torch sees a GPU and the CUDA EP is in this onnxruntime build.

    torch is imported first on purpose: its cu13 wheels carry the cuBLAS/cuDNN libraries that ORT's CUDA EP needs, and
    ``onnxruntime.preload_dlls()`` (documented for exactly this) loads them before the EP library is, whichever
    package was imported first in this process.
    """
    import torch

    try:
        import onnxruntime as ort
    except ImportError as e:
        return False, f"onnxruntime is not installed ({e}); {INSTALL_HINT}"
    if not torch.cuda.is_available():
        return False, f"no CUDA GPU here (torch.cuda.is_available() is False); {CUDA_HINT}"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, (f"this onnxruntime build has no CUDA execution provider (providers: "
                       f"{', '.join(ort.get_available_providers())}); {INSTALL_HINT}")
    if hasattr(ort, "preload_dlls"):
        with contextlib.redirect_stdout(io.StringIO()):  # it prints (not logs) when a library is missing
            ort.preload_dlls()
    return True, ""


@functools.cache
def probe_cuda() -> tuple[bool, str]:
    """Decide by creating a strict CUDA session on a one-node model, never by ``get_available_providers()``."""
    ok, reason = cuda_prerequisites()
    if not ok:
        return ok, reason
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    onnx.checker.check_model(model)
    try:
        create_cuda_session(ort, model.SerializeToString(), ort.SessionOptions, {"device_id": "0"})
    except (RuntimeUnavailableError, RuntimeLoadError) as e:
        return False, str(e)
    return True, ""
