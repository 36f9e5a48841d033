#!/usr/bin/env bash
# GPU check for the runtimes: the `gpu`-marked tests, then `bench --runtime all` at batch 1/32/256 for an fp32 and an
# fp16 graph, with logs and JSON/Markdown reports in OUT_DIR and a target summary at the end. Budget: < 8 minutes.
#
#   scripts/gpu_check.sh OUT_DIR [CHECKPOINT]     (CHECKPOINT: a run folder or .safetensors; default: random init)
#
# Runs from this tree with PYTHONPATH (no pip install of the project). Extra packages installed with
# `pip install --target DIR` (onnxruntime-gpu, tensorrt, onnxscript, ...) are picked up from $GPU_CHECK_SITE,
# $HOME/ortgpu and $HOME/tensorrt when those folders exist. PYTHON selects the interpreter (default python3);
# GPU_CHECK_BATCHES (default 1,32,256) and GPU_CHECK_DURATION (seconds per measurement, default 1.5) allow a dry run.
set -euo pipefail

OUT=${1:?usage: scripts/gpu_check.sh OUT_DIR [CHECKPOINT]}
CKPT=${2:-}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
SITE=""
for d in "${GPU_CHECK_SITE:-}" "$HOME/ortgpu" "$HOME/tensorrt"; do
  if [ -n "$d" ] && [ -d "$d" ]; then SITE="$SITE:$d"; fi
done
export PYTHONPATH="$ROOT$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
cd "$ROOT"

START=$(date +%s)
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
log() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*" | tee -a "$SUMMARY"; }
STATUS_TESTS="not run"
declare -A STATUS_BENCH=()

# ---- 1. environment ----
log "output: $OUT; PYTHONPATH=$PYTHONPATH"
{
  nvidia-smi || echo "nvidia-smi failed"
  "$PY" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "onnx", "onnxscript", "onnxruntime", "tensorrt", "pytest", "click", "numpy"):
    try:
        m = importlib.import_module(name)
        print(f"{name} {getattr(m, '__version__', '?')} ({getattr(m, '__file__', '')})")
    except (ImportError, OSError, RuntimeError) as e:  # missing package or libraries
        print(f"{name}: NOT importable: {type(e).__name__}: {e}")
import torch
print("cuda available:", torch.cuda.is_available(), "| torch cuda:", torch.version.cuda,
      "| gpu:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
try:
    import onnxruntime as ort
    print("ort providers:", ort.get_available_providers())
except ImportError:
    pass
from runtimes.registry import available_runtimes
for name, (ok, reason) in available_runtimes().items():
    print(f"runtime {name}: {'available' if ok else 'UNAVAILABLE: ' + reason}")
EOF
} > "$OUT/env.log" 2>&1 || log "environment probe failed (see env.log)"
grep -E "^runtime |cuda available|NOT importable" "$OUT/env.log" | tee -a "$SUMMARY" || true

# ---- 2. checkpoint and fp32/fp16 exports ----
log "exporting fp32 and fp16 graphs"
if ! timeout 240 "$PY" - "$OUT" "$CKPT" > "$OUT/export.log" 2>&1 <<'EOF'
"""Random-init (or given) checkpoint -> model_fp32.onnx and model_fp16.onnx with the project's exporter (its default
LRN formulation, parity-checked on random inputs); a plain dynamo export (fp16 inside, fp32 I/O) if that fails."""
import sys
from pathlib import Path

import onnx
import torch

from export.metadata import OnnxMeta, write_metadata
from trainer.checkpoint import load_checkpoint, model_metadata, save_checkpoint
from trainer.data import IMAGENET_MEAN, IMAGENET_STD
from trainer.errors import ToolkitError
from trainer.fileio import sha256_file
from trainer.model import AlexNet

out, ckpt = Path(sys.argv[1]), sys.argv[2]
if not ckpt:
    torch.manual_seed(0)
    names = [f"class{i}" for i in range(1000)]
    ckpt = save_checkpoint(out / "run", AlexNet(1000).state_dict(),
                           model_metadata(1000, names, IMAGENET_MEAN, IMAGENET_STD, 0.5))
checkpoint = load_checkpoint(ckpt)


class Fp16(torch.nn.Module):
    """fp16 weights and math, fp32 input and output (the trainer's LRN computes in fp32 inside)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner.half()

    def forward(self, x):
        return self.inner(x.half()).float()


def plain_export(precision: str, path: Path) -> None:
    model = checkpoint.build_model().eval()
    net = model if precision == "fp32" else Fp16(model).eval()
    torch.onnx.export(net, (torch.randn(2, 3, 227, 227),), str(path), dynamo=True, external_data=False,
                      input_names=["input"], output_names=["logits"],
                      dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=256)}})
    proto = onnx.load(str(path))
    proto.ir_version = min(proto.ir_version, 10)
    meta = checkpoint.meta
    write_metadata(proto, OnnxMeta(class_names=meta["class_names"], mean=meta["mean"], std=meta["std"],
                                   input_shape=[3, 227, 227], precision=precision,
                                   checkpoint_sha256=sha256_file(checkpoint.path),
                                   checkpoint_path=str(checkpoint.path.resolve()), lrn="trainer-decomposed"))
    onnx.save(proto, str(path))


for precision in ("fp32", "fp16"):
    path, how = out / f"model_{precision}.onnx", "project exporter"
    try:
        from export.exporter import export_onnx
        from export.spec import ExportSpec

        export_onnx(checkpoint.path, path, ExportSpec(precision=precision), parity_images=0)
    except (ImportError, ToolkitError) as e:
        print(f"project exporter unavailable or failed for {precision} ({type(e).__name__}: {e}); plain export")
        how = "plain dynamo export"
        plain_export(precision, path)
    proto = onnx.load(str(path), load_external_data=False)
    print(precision, path, path.stat().st_size // 2**20, "MiB", how, sorted({n.op_type for n in proto.graph.node}))
EOF
then
  log "EXPORT FAILED (see export.log); nothing to bench"
  tail -5 "$OUT/export.log" | tee -a "$SUMMARY"
  exit 1
fi
grep -E "^fp(32|16) " "$OUT/export.log" | tee -a "$SUMMARY"

# ---- 3. the gpu tests (a failure here still lets the bench run) ----
log "pytest -m gpu"
if "$PY" -c "import pytest" 2>/dev/null; then
  if timeout 180 "$PY" -m pytest -m gpu tests/runtimes -q -rs -p no:cacheprovider \
      --continue-on-collection-errors > "$OUT/pytest_gpu.log" 2>&1; then
    STATUS_TESTS="passed"
  else
    STATUS_TESTS="FAILED (exit $?)"
  fi
  tail -3 "$OUT/pytest_gpu.log" | tee -a "$SUMMARY"
else
  STATUS_TESTS="skipped: pytest is not importable"
fi
log "gpu tests: $STATUS_TESTS"

# ---- 4. bench --runtime all for each precision ----
BENCH_ARGS=(--runtime all --batch-sizes "${GPU_CHECK_BATCHES:-1,32,256}" --warmup 0.5s
            --duration "${GPU_CHECK_DURATION:-1.5}" --images 0
            --engine-cache "$OUT/engines")
for precision in fp32 fp16; do
  log "bench $precision"
  set +e
  timeout 180 "$PY" cli.py bench "$OUT/model_$precision.onnx" "${BENCH_ARGS[@]}" \
      --json "$OUT/bench_$precision.json" --markdown "$OUT/bench_$precision.md" > "$OUT/bench_$precision.log" 2>&1
  rc=$?
  set -e
  STATUS_BENCH[$precision]="exit $rc"
  if grep -q "would run on the CPU execution provider" "$OUT/bench_$precision.log" \
      && [ $(( $(date +%s) - START )) -lt 400 ]; then
    log "onnxruntime-cuda refused CPU-placed nodes in strict mode; rerunning it with --allow-cpu-nodes"
    set +e
    timeout 90 "$PY" cli.py bench "$OUT/model_$precision.onnx" "${BENCH_ARGS[@]}" --runtime onnxruntime-cuda \
        --allow-cpu-nodes --json "$OUT/bench_${precision}_ortcuda_cpu_nodes.json" \
        > "$OUT/bench_${precision}_ortcuda_cpu_nodes.log" 2>&1
    STATUS_BENCH[${precision}_ortcuda_cpu_nodes]="exit $?"
    set -e
  fi
  log "bench $precision: ${STATUS_BENCH[$precision]}"
done

# ---- 5. summary against the issue's targets ----
"$PY" - "$OUT" <<'EOF' | tee -a "$SUMMARY"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
reports = {}
for path in sorted(out.glob("bench_*.json")):
    reports[path.stem] = json.loads(path.read_text())
    rep = reports[path.stem]
    print(f"\n== {path.name}: passed={rep['passed']} skipped={list(rep['skipped'])} errors={rep['errors']}")
    for r in rep["results"]:
        lat, dev = r["latency_ms"] or {}, r["device_latency_ms"] or {}
        p = r["parity"] or {}
        worst = max((o["max_abs"] for c in p.get("checks", []) for o in c["outputs"]), default=None)
        print(f"  {r['runtime']:17} {r['precision']} b{r['batch_size']:<4} {r['throughput']:9.1f} img/s  "
              f"p50 {lat.get('p50', 0):8.3f} ms  device p50 {dev.get('p50', float('nan')):8.3f} ms  "
              f"x{r['vs_reference'] or 0:.2f} vs {rep['ratio_baseline']}  parity {'PASS' if p.get('passed') else 'FAIL'}"
              f" (max_abs {worst})")


def row(report, runtime, batch):
    for r in (reports.get(report) or {}).get("results", []):
        if r["runtime"] == runtime and r["batch_size"] == batch:
            return r
    return None


print("\n== targets")
for runtime in ("onnxruntime-cuda", "tensorrt"):
    p = ((reports.get("bench_fp32") or {}).get("parity") or {}).get(runtime)
    if p is None and runtime == "onnxruntime-cuda":
        p = ((reports.get("bench_fp32_ortcuda_cpu_nodes") or {}).get("parity") or {}).get(runtime)
    print(f"  {runtime} fp32 parity with PyTorch-CUDA (TF32 off): "
          f"{'PASS' if p and p['passed'] else 'FAIL' if p else 'NOT MEASURED'}")
trt16, torch32 = row("bench_fp16", "tensorrt", 256), row("bench_fp16", "torch", 256) or row("bench_fp32", "torch", 256)
if trt16 and torch32:
    ratio = trt16["throughput"] / torch32["throughput"]
    print(f"  TensorRT fp16 / PyTorch-CUDA eager fp32 at batch 256: {ratio:.2f}x (target >= 3): "
          f"{'MET' if ratio >= 3 else 'MISSED'}")
else:
    print("  TensorRT fp16 vs PyTorch fp32 at batch 256: NOT MEASURED")
for report in ("bench_fp32", "bench_fp16"):
    r = row(report, "tensorrt", 1)
    if r and r["device_latency_ms"]:
        d = r["device_latency_ms"]["p50"]
        print(f"  TensorRT {report[6:]} batch-1 device p50 {d:.3f} ms (target < 0.3): {'MET' if d < 0.3 else 'MISSED'}")
    else:
        print(f"  TensorRT {report[6:]} batch-1 device latency: NOT MEASURED")
EOF
log "gpu tests: $STATUS_TESTS; bench: $(for k in "${!STATUS_BENCH[@]}"; do printf '%s=%s ' "$k" "${STATUS_BENCH[$k]}"; done)"
log "done in $(( $(date +%s) - START )) s; logs and reports in $OUT"
