"""The runtime protocol: load / input_specs / infer / close, with lifecycle and input checks written once."""
from __future__ import annotations

import contextlib
from typing import Any, ClassVar, Mapping

import numpy as np

from core.contract import TensorSpec
from runtimes.errors import InputMismatchError, RuntimeStateError

__all__ = ["Runtime", "TensorSpec"]


class Runtime:
    """Base class of every adapter. Subclasses implement the ``_``-prefixed hooks.

    Lifecycle: the constructor only stores options; ``load()`` does the work (heavy imports, sessions, engines, GPU
    buffers); ``close()`` is idempotent. ``with runtime:`` loads and closes.

    Two ways to run:
      * ``infer(feeds)``: host NumPy in, host NumPy out (caller-owned), returned after the device synchronized.
      * ``prepare(feeds)`` once, then ``run()`` + ``synchronize()`` per timed iteration, then ``fetch()``: what the
        benchmark harness uses, so device runtimes time the device work on device-resident inputs. ``stream`` is the
        CUDA stream the work is enqueued on (None on the CPU), for CUDA events.
    """
    name: ClassVar[str] = ""
    runs_onnx: ClassVar[bool] = True     # False: runs an nn.Module (the torch runtime), not the ONNX file
    preferred_lrn: ClassVar[str] = "conv"  # the LRN form measured fastest on this runtime (core.contract)
    device: str = "cpu"           # "cpu" or "cuda" once known
    precision: str = "fp32"       # what the runtime computes in: fp32, fp16, int8 (the graph's) or bf16

    def __init__(self) -> None:
        self._loaded = False
        self._prepared = False
        self.stream: Any = None   # torch.cuda.Stream for CUDA runtimes

    # ---- availability, construction and lifecycle ----
    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        """``(True, "")`` or ``(False, reason with the fix)``; never raises ImportError."""
        return True, ""

    @classmethod
    def supports(cls, precision: str) -> tuple[bool, str]:
        """Whether this runtime can compute in ``precision``: an exported graph's own precision always, bf16 (an fp32
        graph run in bf16) only where an adapter says so."""
        if precision == "bf16":
            return False, (f"{cls.name} runs the graph in its own precision; bf16 needs a runtime that computes it "
                           "natively (openvino, torch)")
        return True, ""

    @classmethod
    def create(cls, model: Any, options: Any, batch_sizes: tuple[int, ...] = (),
               io: Any = None) -> "Runtime":
        """The adapter for ``model`` with the ``RuntimeOptions`` it uses; ``io`` = the (input, output) TensorSpecs
        of the graph a runtime that does not read the ONNX file stands in for (see runtimes/registry.py)."""
        raise NotImplementedError

    def load(self) -> None:
        if not self._loaded:
            self._load()
            self._loaded = True

    def close(self) -> None:
        if self._loaded:
            self._loaded = self._prepared = False
            self._close()
            self.stream = None

    @property
    def loaded(self) -> bool:
        return self._loaded

    def __enter__(self) -> "Runtime":
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- I/O description ----
    def input_specs(self) -> list[TensorSpec]:
        self._require_loaded("input_specs")
        return self._input_specs()

    def output_names(self) -> list[str]:
        self._require_loaded("output_names")
        return self._output_names()

    def describe(self) -> dict[str, Any]:
        """Options and facts for the report (providers, threads, engine source...). Safe before ``load``."""
        return {"runtime": self.name, "device": self.device, "precision": self.precision}

    # ---- running ----
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on host arrays; returns host arrays after the device finished."""
        self.prepare(feeds)
        self.run()
        self.synchronize()
        return self.fetch()

    def prepare(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Check ``feeds`` and stage them (device runtimes: copy into device buffers, bind outputs)."""
        self._require_loaded("prepare")
        self._prepare(self.check_feeds(feeds))
        self._prepared = True

    def run(self) -> None:
        """One inference on the prepared inputs; device runtimes only enqueue it on ``stream``."""
        if not self._prepared:
            raise RuntimeStateError(f"{self.name}: run() needs prepare(feeds) first")
        self._run()

    def synchronize(self) -> None:
        """Block until the enqueued work is done (no-op on the CPU)."""
        if self.stream is not None:
            self.stream.synchronize()

    def fetch(self) -> dict[str, np.ndarray]:
        """The last run's outputs as caller-owned host arrays."""
        if not self._prepared:
            raise RuntimeStateError(f"{self.name}: fetch() needs prepare(feeds) and run() first")
        return self._fetch()

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Names, then dtypes, then shapes against ``input_specs()``; returns C-contiguous arrays by input name.

        Raises:
            InputMismatchError: what was expected, what was found and the valid options.
        """
        specs = {s.name: s for s in self.input_specs()}
        if not isinstance(feeds, Mapping):
            raise InputMismatchError(f"{self.name}: feeds must be a mapping of input name to numpy array, found "
                                     f"{type(feeds).__name__}; valid inputs: {_names(specs)}")
        unknown, missing = sorted(set(feeds) - set(specs)), sorted(set(specs) - set(feeds))
        if unknown or missing:
            parts = [f"unknown input(s) {', '.join(map(repr, unknown))}"] if unknown else []
            parts += [f"missing input(s) {', '.join(map(repr, missing))}"] if missing else []
            raise InputMismatchError(f"{self.name}: {'; '.join(parts)}; expected exactly: {_names(specs)}")
        for name, spec in specs.items():
            value = feeds[name]
            if not isinstance(value, np.ndarray):
                raise InputMismatchError(f"{self.name}: input {name!r} must be a numpy.ndarray, found "
                                         f"{type(value).__name__}")
            if value.dtype != np.dtype(spec.dtype):
                raise InputMismatchError(f"{self.name}: input {name!r} has dtype {value.dtype}, expected {spec.dtype} "
                                         f"(convert with .astype(np.{spec.dtype}))")
        for name, spec in specs.items():
            shape = tuple(feeds[name].shape)
            if not spec.accepts_shape(shape):
                raise InputMismatchError(f"{self.name}: input {name!r} has shape {shape}, expected "
                                         f"{spec.shape_str()} (N = any batch size >= 1)")
        return {name: np.ascontiguousarray(feeds[name]) for name in specs}

    def _require_loaded(self, what: str) -> None:
        if not self._loaded:
            raise RuntimeStateError(f"{self.name}: {what}() called before load() (or after close()); "
                                    "call load() first or use the runtime as a context manager")

    def _stream_context(self):
        """``torch.cuda.stream(self.stream)`` on CUDA, a no-op on the CPU."""
        if self.stream is None:
            return contextlib.nullcontext()
        import torch
        return torch.cuda.stream(self.stream)

    # ---- hooks ----
    def _load(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _input_specs(self) -> list[TensorSpec]:
        raise NotImplementedError

    def _output_names(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self, feeds: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        raise NotImplementedError

    def _fetch(self) -> dict[str, np.ndarray]:
        raise NotImplementedError


def _names(specs: Mapping[str, TensorSpec]) -> str:
    return ", ".join(f"{n!r} {s.shape_str()} {s.dtype}" for n, s in specs.items())
