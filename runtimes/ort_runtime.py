"""ONNX Runtime on the CPU execution provider: explicit threads, selectable graph optimisation level."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from core.contract import TensorSpec
from core.host import usable_cores
from runtimes.base import Runtime
from runtimes.errors import InferenceError, RuntimeLoadError, RuntimeOptionError

GRAPH_OPTIMIZATION_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                             "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
INSTALL_HINT = ("pip install 'onnxruntime-gpu==1.31.*' (Linux x86_64; it also runs on the CPU) or "
                "'onnxruntime==1.31.*' elsewhere — never both")
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
               "tensor(bool)": "bool"}


def ort_errors(ort) -> tuple[type[BaseException], ...]:
    """ONNX Runtime's exception classes (they derive from Exception directly, so name them)."""
    c = ort.capi.onnxruntime_pybind11_state
    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException", "InvalidProtobuf",
             "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail", "NotFound")
    return tuple(getattr(c, n) for n in names if hasattr(c, n))


class OrtRuntime(Runtime):
    """ONNX Runtime, CPU execution provider.

    Args:
        path: The ONNX file.
        threads: Intra-op threads (default: the cores this process may use). Always set explicitly.
        inter_op_threads: Inter-op threads (sequential execution uses 1).
        graph_optimization: ``disable``, ``basic``, ``extended`` or ``all``.
        precision: The graph's precision for reports (default: the file's alexnet_deploy metadata, else what the
            graph holds).
    """
    name = "onnxruntime"
    provider = "CPUExecutionProvider"

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, inter_op_threads: int = 1,
                 graph_optimization: str = "all", precision: str | None = None) -> None:
        super().__init__()
        if graph_optimization not in GRAPH_OPTIMIZATION_LEVELS:
            raise RuntimeOptionError(f"graph optimization level {graph_optimization!r}; expected one of "
                                     f"{', '.join(GRAPH_OPTIMIZATION_LEVELS)}")
        self.path = Path(path)
        self._threads, self._inter_op_threads = threads or usable_cores(), inter_op_threads
        self._graph_optimization = graph_optimization
        self._precision = precision
        self._session: Any = None

    @classmethod
    def create(cls, model: str | os.PathLike, options: Any, batch_sizes: tuple[int, ...] = (),
               io: Any = None) -> "OrtRuntime":
        return cls(model, threads=options.threads, graph_optimization=options.graph_optimization)

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError as e:
            return False, f"onnxruntime is not installed ({e}); {INSTALL_HINT}"
        if "CPUExecutionProvider" not in ort.get_available_providers():
            return False, f"this onnxruntime build has no CPUExecutionProvider; {INSTALL_HINT}"
        return True, ""

    def session_options(self, ort):
        so = ort.SessionOptions()
        so.intra_op_num_threads = self._threads
        so.inter_op_num_threads = self._inter_op_threads
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                              GRAPH_OPTIMIZATION_LEVELS[self._graph_optimization])
        so.log_severity_level = 3  # errors only: onnxruntime-gpu's notes about absent GPU providers are noise here
        return so

    def _load(self) -> None:
        import onnxruntime as ort

        try:
            self._session = ort.InferenceSession(str(self.path), self.session_options(ort),
                                                 providers=[self.provider])
        except ort_errors(ort) as e:
            raise RuntimeLoadError(f"{self.name}: cannot create a session for {self.path}: {e}") from None
        self._read_io()

    def _read_io(self) -> None:
        """I/O specs, precision and ORT's exception types from the created session."""
        import onnxruntime as ort

        self._errors = ort_errors(ort)
        s = self._session
        if self._precision is None:  # the exporter's metadata says, else the graph's ops and weights
            raw = s.get_modelmeta().custom_metadata_map.get("alexnet_deploy.precision")
            self._precision = raw.strip('"') if raw else _graph_precision(self.path)
        self.precision = self._precision
        self._inputs = [TensorSpec(i.name, tuple(d if isinstance(d, int) and d > 0 else None for d in i.shape),
                                   _ORT_DTYPES.get(i.type, i.type)) for i in s.get_inputs()]
        self._input_dim_names = [tuple(d if isinstance(d, str) else None for d in i.shape) for i in s.get_inputs()]
        self._outputs = [o.name for o in s.get_outputs()]
        self._output_dims = [tuple(o.shape) for o in s.get_outputs()]
        self._output_types = [_ORT_DTYPES.get(o.type, o.type) for o in s.get_outputs()]

    def _close(self) -> None:
        self._session = None
        self._feeds = self._results = None

    def _input_specs(self) -> list[TensorSpec]:
        return list(self._inputs)

    def _output_names(self) -> list[str]:
        return list(self._outputs)

    def _prepare(self, feeds: dict[str, np.ndarray]) -> None:
        self._feeds = feeds

    def _run(self) -> None:
        try:
            self._results = self._session.run(self._outputs, self._feeds)
        except self._errors as e:
            raise InferenceError(f"{self.name}: inference failed: {e}") from None

    def _fetch(self) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self._results))

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(model=str(self.path), intra_op_threads=self._threads, inter_op_threads=self._inter_op_threads,
                    graph_optimization=self._graph_optimization)
        if self._session is not None:
            info["providers"] = self._session.get_providers()
        return info


def _graph_precision(path: Path) -> str:
    from core.onnx_file import read_onnx_info

    return read_onnx_info(path).precision
