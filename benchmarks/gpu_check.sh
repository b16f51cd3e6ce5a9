#!/usr/bin/env bash
# One GPU check for lape-hub, under 8 minutes on one H100, nothing installed:
#   counting 3 languages of Gemma-3-270M in bfloat16 on CUDA vs the catalog's CPU counts
#   (Jaccard of the LAPE sets), counting tokens/s and MFU (bf16 dense peak stated),
#   and the fine-tuning step benchmark on CUDA (sparse vs clone-and-write vs LoRA).
# Usage: benchmarks/gpu_check.sh [OUT.json] [extra options of benchmarks/gpu_check.py]
# Without CUDA it says so and exits 0. PYTHON picks the interpreter (default: .venv, python3).
set -u
cd "$(dirname "$0")/.." || exit 2
OUT="${1:-gpu_check.json}"
[ $# -gt 0 ] && shift
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import torch, transformers, lape_hub" 2>/dev/null; then
  echo "gpu_check: $PY lacks torch/transformers/lape_hub (this script installs nothing); set PYTHON" >&2
  exit 2
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  "$PY" benchmarks/gpu_check.py --out "$OUT" "$@"   # prints that CUDA is absent, writes the JSON, exits 0
  exit $?
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
exec timeout 470 "$PY" benchmarks/gpu_check.py --out "$OUT" "$@"
