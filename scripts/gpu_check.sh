#!/usr/bin/env bash
# The one entry point of the GPU check (scripts/gpu_check.py does the work): the gpu-marked tests and a bench of
# torch, onnxruntime-cuda and TensorRT at batch 1/32/256, with a summary in OUT. Exit 3 on a machine without a GPU.
#
#   scripts/gpu_check.sh OUT [--checkpoint RUN]
#
# Runs from this tree (PYTHONPATH), without installing the project. Packages installed with `pip install --target DIR`
# (onnxruntime-gpu, tensorrt, onnxscript...) are found in $GPU_CHECK_SITE, $HOME/ortgpu and $HOME/tensorrt.
# PYTHON picks the interpreter (default: the project's .venv if there is one, else python3).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SITE=""
for d in "${GPU_CHECK_SITE:-}" "$HOME/ortgpu" "$HOME/tensorrt"; do
  if [ -n "$d" ] && [ -d "$d" ]; then SITE="$SITE:$d"; fi
done
export PYTHONPATH="$ROOT$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
DEFAULT_PYTHON=python3
if [ -x "$ROOT/.venv/bin/python" ]; then DEFAULT_PYTHON="$ROOT/.venv/bin/python"; fi
exec "${PYTHON:-$DEFAULT_PYTHON}" "$ROOT/scripts/gpu_check.py" "$@"
