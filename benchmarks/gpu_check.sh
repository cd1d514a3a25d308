#!/usr/bin/env bash
# The prepared GPU check: one call on a lent H100/H200, under 8 minutes, one Markdown table in
# OUT_DIR/gpu_check.md (plus the raw JSON). Runs without Ray or Optuna (not installable there).
#   on the development machine:  bash benchmarks/gpu_wheels.sh
#   on the GPU machine:          bash benchmarks/gpu_check.sh OUT_DIR
# Each step has its own time limit and writes what it measured, or why it did not.
set -uo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
python -m pip install -q --no-deps .gpu-wheels/*.whl >"$out/install.log" 2>&1
python -m pip install -q --no-deps -e . >>"$out/install.log" 2>&1
export MICRO_AU_RESULTS="$out/results"
md="$out/gpu_check.md"
{
  echo "# GPU check ($(date -u +%F))"
  echo
  echo "| what | figure |"
  echo "|---|---|"
  echo "| device | $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | head -1) |"
  echo "| torch | $(python -c 'import torch; print(torch.__version__)' 2>&1) |"
} >"$md"
# 1. gpu-marked tests: bf16 autocast, memory fraction, token-cache keys, batched engine CUDA vs CPU
timeout 120 python -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider >"$out/pytest_gpu.log" 2>&1
echo "| gpu tests | $(tail -1 "$out/pytest_gpu.log") |" >>"$md"
# 2. one search trial on frozen ViT-B-16 tokens (full synthetic CASME II, 26 folds): sequential vs
#    fold-batched engine vs the peer; full fine-tuning (sequential) against the bf16 FLOP floor
timeout 210 python -m suite.bench --clip ViT-B-16 --image-size 224 --scale full --epochs 2 --no-packing \
  --out "$out/bench.json" >"$out/bench.log" 2>&1
python - "$out/bench.json" >>"$md" 2>>"$out/bench.log" <<'PY' || echo "| suite.bench | failed: see bench.log |" >>"$md"
import json, sys
r = json.load(open(sys.argv[1]))
for name, row in r["rows"].items():
    print(f"| {name} (s) | {row['seconds']:.2f} |")
for name, value in r["ratios"].items():
    print(f"| {name} | {value:.2f}× |")
PY
# 3. fine-tuning throughput: 8 folds' ViT-B-16 models, sequential vs fold-batched, against the bf16 FLOP floor
timeout 120 python benchmarks/fold_throughput.py --clip ViT-B-16 --image-size 224 --scale full --folds 8 --epochs 1 \
  >"$out/fold_throughput.json" 2>"$out/fold_throughput.log"
python - "$out/fold_throughput.json" >>"$md" 2>>"$out/fold_throughput.log" <<'PY' || echo "| fold throughput | failed: see fold_throughput.log |" >>"$md"
import json, sys
r = json.load(open(sys.argv[1]))
for name, e in r["engines"].items():
    print(f"| ViT-B-16 fine-tuning, {r['folds']} folds, {name} | {e['seconds']:.1f} s, {e['images_per_s']:.0f} img/s, {e['times_floor']:.2f}× the bf16 floor ({r['floor_seconds']:.1f} s) |")
PY
cat "$md"
