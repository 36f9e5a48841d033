"""The environment fingerprint stored with every bench report: CPU, GPU, driver, CUDA, library versions, threads."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from typing import Any

from core.host import cpu_features, usable_cores


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(*names: str) -> str | None:
    """The installed version of the first distribution found, without importing it (tensorrt is heavy)."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def gpu_info() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"available": False, "torch_cuda_build": torch.version.cuda}
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {"available": True, "name": props.name, "compute_capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1), "count": torch.cuda.device_count(),
            "driver": _nvidia_smi("driver_version"), "cuda_runtime": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}}


def _nvidia_smi(field: str) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0] if out else None


def collect_environment(allocator_tuned: bool | None = None, ort_threads: int | None = None) -> dict[str, Any]:
    """A JSON-ready description of this machine and process."""
    import torch

    try:
        import onnxruntime as ort
        ort_version, providers = ort.__version__, ort.get_available_providers()
    except ImportError:
        ort_version, providers = None, []
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": {"model": cpu_model(), "features": list(cpu_features()), "logical_cores": os.cpu_count(),
                "usable_cores": usable_cores(),
                # Other work on the machine while it was measured: a regression gate cannot see a steadily busier
                # machine in the coefficient of variation, but it can in this.
                "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "gpu": gpu_info(),
        "libraries": {"torch": torch.__version__, "onnxruntime": ort_version,
                      "onnxruntime_package": package_version("onnxruntime-gpu", "onnxruntime"),
                      "onnx": package_version("onnx"), "numpy": package_version("numpy"),
                      "tensorrt": package_version("tensorrt", "tensorrt-cu13", "tensorrt_cu13"),
                      "openvino": package_version("openvino")},
        "onnxruntime_providers": providers,
        "threads": {"torch_intra_op": torch.get_num_threads(), "torch_inter_op": torch.get_num_interop_threads(),
                    "onnxruntime_intra_op": ort_threads,
                    **{k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}},
        "allocator": {"tuned": allocator_tuned, "LD_PRELOAD": os.environ.get("LD_PRELOAD"),
                      "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES")},
    }


def describe_environment(env: dict[str, Any]) -> str:
    """One line for the terminal."""
    cpu, gpu, libs = env["cpu"], env["gpu"], env["libraries"]
    gpu_text = (f"{gpu['name']} (sm {gpu['compute_capability']}, driver {gpu.get('driver')}, CUDA "
                f"{gpu.get('cuda_runtime')})" if gpu.get("available") else "no GPU")
    extra = "".join(f", {name} {libs[name]}" for name in ("openvino", "tensorrt") if libs.get(name))
    isa = "".join(f", {name.upper().replace('_', '-')}" for name in cpu.get("features", ()) if name.startswith("amx"))
    return (f"{cpu['model']} ({cpu['usable_cores']} cores{isa}), {gpu_text}; torch {libs['torch']} "
            f"({env['threads']['torch_intra_op']} threads), onnxruntime {libs['onnxruntime']}{extra}")
