"""TensorRT engine bookkeeping that needs no TensorRT: batch profiles, the engine-cache manifest, parser error text."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from core.contract import MAX_BATCH
from runtimes.errors import RuntimeLoadError
from core.fileio import sha256_file, write_bytes_atomic

log = logging.getLogger(__name__)

MANIFEST_FORMAT = 2       # 2: one profile per batch size ("profiles"); format-1 entries are rebuilt
# Fields that identify an engine: a cached plan whose manifest differs in any of them is rebuilt, never run.
KEY_FIELDS = ("format", "onnx_sha256", "tensorrt_version", "gpu_name", "compute_capability", "profiles", "flags")


@dataclass(frozen=True)
class BatchProfile:
    """One optimisation profile over the batch dimension (the other dimensions are fixed)."""
    min: int
    opt: int
    max: int

    def shapes(self, sample_shape: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        rest = tuple(sample_shape)
        return (self.min, *rest), (self.opt, *rest), (self.max, *rest)

    def contains(self, batch: int) -> bool:
        return self.min <= batch <= self.max

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def batch_profiles(input_shape: Sequence[int | None], batch_sizes: Iterable[int] = (),
                   max_batch: int = MAX_BATCH) -> tuple[BatchProfile, ...]:
    """The optimisation profiles for an input of shape ``(batch, *rest)``; ``None`` or negative = dynamic.

    TensorRT tunes each profile's kernels for its ``opt`` batch, so a dynamic batch gets one general profile first
    (1..max(max_batch, requested sizes), ``opt`` = the largest requested size; it runs any other batch size) and then
    one exact profile per requested size (``min = opt = max``), which the runtime selects when it runs that size: batch
    1 latency is then measured on kernels chosen for batch 1, not for the largest batch. A static batch gives one
    profile of that size.

    Raises:
        RuntimeLoadError: a dynamic non-batch dimension, or a static batch that the requested sizes do not match.
    """
    dims = [None if d is None or d < 0 else int(d) for d in input_shape]
    if not dims:
        raise RuntimeLoadError("TensorRT profile: the input is a scalar; expected (batch, ...)")
    dynamic_rest = [i for i, d in enumerate(dims[1:], start=1) if d is None]
    if dynamic_rest:
        raise RuntimeLoadError(f"TensorRT profile: input dimension(s) {dynamic_rest} of {_fmt(dims)} are dynamic; "
                               "only the batch (dimension 0) may be")
    requested = sorted(set(int(b) for b in batch_sizes))
    if dims[0] is not None:
        wrong = [b for b in requested if b != dims[0]]
        if wrong:
            raise RuntimeLoadError(f"TensorRT profile: the graph has a static batch of {dims[0]}; cannot run batch "
                                   f"size(s) {wrong}")
        return (BatchProfile(dims[0], dims[0], dims[0]),)
    if requested and requested[0] < 1:
        raise RuntimeLoadError(f"TensorRT profile: batch sizes must be >= 1, got {requested}")
    top = max([max_batch, *requested])
    general = BatchProfile(1, requested[-1] if requested else min(32, top), top)
    return (general, *(BatchProfile(b, b, b) for b in requested))


def profile_for(profiles: Sequence[BatchProfile], batch: int) -> int | None:
    """The index of the profile tuned exactly for ``batch``, else of the first that covers it, else None."""
    exact = [i for i, p in enumerate(profiles) if p.min == p.max == batch]
    covering = [i for i, p in enumerate(profiles) if p.contains(batch)]
    return (exact or covering or [None])[0]


def engine_manifest(onnx_sha256: str, tensorrt_version: str, gpu_name: str, compute_capability: str,
                    profiles: Sequence[BatchProfile], flags: dict[str, Any]) -> dict[str, Any]:
    """Everything an engine depends on; its hash names the cache entry. ``profile`` is profile 0, the one that
    covers every batch size (what Triton's TensorRT backend uses by default)."""
    return {"format": MANIFEST_FORMAT, "onnx_sha256": onnx_sha256, "tensorrt_version": tensorrt_version,
            "gpu_name": gpu_name, "compute_capability": compute_capability, "profile": profiles[0].to_dict(),
            "profiles": [p.to_dict() for p in profiles], "flags": dict(sorted(flags.items()))}


def manifest_key(manifest: dict[str, Any]) -> str:
    identity = {k: manifest[k] for k in KEY_FIELDS}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def manifest_mismatches(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """Human-readable differences in the identifying fields (empty when the engine may be used)."""
    return [f"{k}: cached {found.get(k)!r}, need {expected[k]!r}" for k in KEY_FIELDS if found.get(k) != expected[k]]


def cache_paths(cache_dir: str | os.PathLike, manifest: dict[str, Any]) -> tuple[Path, Path]:
    stem = f"{manifest['onnx_sha256'][:12]}-{manifest_key(manifest)}"
    return Path(cache_dir) / f"{stem}.engine", Path(cache_dir) / f"{stem}.json"


def lookup_engine(cache_dir: str | os.PathLike, expected: dict[str, Any]) -> Path | None:
    """The cached plan for ``expected``, or None (with the reason logged) when it is absent or does not match."""
    engine, manifest_path = cache_paths(cache_dir, expected)
    if not engine.is_file() or not manifest_path.is_file():
        return None
    try:
        found = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        log.warning("engine cache: unreadable manifest %s (%s); rebuilding", manifest_path, e)
        return None
    problems = manifest_mismatches(expected, found)
    if not problems and found.get("engine_sha256") != sha256_file(engine):
        problems = ["the engine file's sha256 differs from the manifest (truncated or replaced)"]
    if problems:
        log.warning("engine cache: %s does not match (%s); rebuilding", engine, "; ".join(problems))
        return None
    return engine


def find_engines(cache_dir: str | os.PathLike, onnx_sha256: str) -> list[tuple[Path, dict[str, Any]]]:
    """Every intact cached plan built from the ONNX file with ``onnx_sha256`` (any GPU, TensorRT, profile or flags),
    with its manifest, newest first. Used to place an existing engine in a Triton repository without TensorRT."""
    found = []
    for manifest_path in Path(cache_dir).glob(f"{onnx_sha256[:12]}-*.json"):
        engine = manifest_path.with_suffix(".engine")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if manifest.get("onnx_sha256") != onnx_sha256 or not engine.is_file():
            continue
        if manifest.get("engine_sha256") != sha256_file(engine):
            log.warning("engine cache: %s differs from its manifest (truncated or replaced); ignored", engine)
            continue
        found.append((engine, manifest))
    return sorted(found, key=lambda item: item[0].stat().st_mtime, reverse=True)


def timing_cache_path(cache_dir: str | os.PathLike, tensorrt_version: str, gpu_name: str) -> Path:
    """The timing cache for one TensorRT version on one GPU model: H100 and H200 share a compute capability but
    not their tactics' timings."""
    gpu = "".join(c if c.isalnum() else "-" for c in gpu_name).strip("-").lower()
    return Path(cache_dir) / f"timing-{tensorrt_version}-{gpu}.cache"


def store_engine(cache_dir: str | os.PathLike, manifest: dict[str, Any], plan: bytes) -> Path:
    """Write the plan and its manifest (the manifest last, each atomically) and return the plan's path."""
    engine, manifest_path = cache_paths(cache_dir, manifest)
    engine.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(engine, plan)
    record = {**manifest, "engine_sha256": hashlib.sha256(plan).hexdigest(), "engine_bytes": len(plan)}
    write_bytes_atomic(manifest_path, json.dumps(record, indent=2, sort_keys=True).encode())
    return engine


def format_parser_errors(errors: Sequence[Any]) -> str:
    """One line per ONNX parser error: node index, name and operator (TensorRT 10+), code and description."""
    lines = []
    for e in errors:
        node = f"node {e.node()}" if hasattr(e, "node") else "node ?"
        name = e.node_name() if hasattr(e, "node_name") else ""
        op = e.node_operator() if hasattr(e, "node_operator") else ""
        where = " ".join(p for p in (node, repr(name) if name else "", f"[{op}]" if op else "") if p)
        lines.append(f"  {where}: {e.code()}: {e.desc()}")
    return f"TensorRT could not parse the ONNX file ({len(errors)} error(s)):\n" + "\n".join(lines)


def _fmt(dims: Sequence[int | None]) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in dims) + ")"
