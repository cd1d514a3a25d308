#!/usr/bin/env bash
# The prepared GPU check: one call on a lent H100/H200, under 8 minutes, one Markdown table in
# OUT_DIR/gpu_check.md (plus the raw logs and JSON). Runs without Ray (not installable there).
#   on the development machine:  bash benchmarks/gpu_wheels.sh
#   on the GPU machine:          bash benchmarks/gpu_check.sh OUT_DIR
# An import check, then five steps; every step gets at most its own limit and never more than what is left of 450 s, so the whole
# check ends within 8 minutes; a step that fails or runs out of time says so in the table.
# CHECK_CLIP / CHECK_IMAGE_SIZE / CHECK_SCALE / CHECK_CONFIGS / CHECK_PACKING_TRIALS / CHECK_FT_FOLDS
# (default ViT-B-16, 224, full, 64, 8, 8) shrink it to rehearse the whole script on a CPU (CHECK_CLIP=tiny ...).
set -uo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
deadline=$((SECONDS + 450))
clip=${CHECK_CLIP:-ViT-B-16} size=${CHECK_IMAGE_SIZE:-224} scale=${CHECK_SCALE:-full} configs=${CHECK_CONFIGS:-64}
packing_trials=${CHECK_PACKING_TRIALS:-8} ft_folds=${CHECK_FT_FOLDS:-8}
limit() { local left=$((deadline - SECONDS)); echo $(( left < $1 ? (left > 0 ? left : 1) : $1 )); }
# the carried wheels into a folder of their own, ahead of the machine's packages on the path (as
# the device tool's notes advise: the machine's environment stays as it is); the project from here
python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu-wheels/*.whl \
  >"$out/install.log" 2>&1
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MICRO_AU_RESULTS="$out/results"
md="$out/gpu_check.md"
{
  echo "# GPU check ($(date -u +%F))"
  echo
  echo "| what | figure |"
  echo "|---|---|"
  echo "| device | $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | head -1) |"
} >"$md"
# 0. import what every step needs and list the versions found: a missing or mismatched package
#    stops the check here, within seconds, not after minutes of failed steps
if ! python - >>"$md" 2>"$out/imports.log" <<'PY'
import importlib
import importlib.metadata as md

for module in ("torch", "datasets", "open_clip", "optuna", "openpyxl", "xlsxwriter", "cv2", "suite.data", "suite.bench.measure",
               "suite.search.studies"):
    importlib.import_module(module)
packages = ("torch", "numpy", "pandas", "pyarrow", "datasets", "huggingface_hub", "fsspec", "open_clip_torch", "optuna", "timm", "accelerate")
print("| packages | " + ", ".join(f"{p} {md.version(p)}" for p in packages) + " |")
PY
then
  echo "| imports | failed: $(tail -1 "$out/imports.log") |" >>"$md"
  cat "$md" "$out/imports.log"
  exit 1
fi
# 1. gpu-marked tests: bf16 autocast, memory fraction, token-cache keys, batched heads on CUDA
#    against CPU, a fine-tuned tower on the sequential engine
timeout "$(limit 60)" python -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider >"$out/pytest_gpu.log" 2>&1
echo "| gpu tests | $(tail -1 "$out/pytest_gpu.log") |" >>"$md"
# 2. the strictly nested gsd search's rounds on frozen ViT-B-16 tokens of full CASME II: 64
#    configurations per fold study, fold-batched, Optuna's share apart; 1 configuration sequential
#    (each slice's time is printed to nested_search.log as it finishes, so a run cut short still tells)
timeout "$(limit 150)" python -m suite.bench --clip "$clip" --image-size "$size" --scale "$scale" --epochs 40 \
  --nested-search "$configs" --round-size 16 --sequential-configs 1 --out "$out/nested_search.json" >"$out/nested_search.log" 2>&1
python - "$out/nested_search.json" >>"$md" 2>>"$out/nested_search.log" <<'PY' || echo "| nested search | failed or out of time: see nested_search.log |" >>"$md"
import json, sys
r = json.load(open(sys.argv[1]))
b, s = r["nested_search"]["batched"], r["nested_search"]["sequential"]
print(f"| strictly nested search, {b['configurations']} configurations × {b['folds']} folds, {b['epochs']} epochs, {b['engine']} | "
      f"{b['seconds']:.1f} s ({b['outside_slices_seconds']:.1f} s outside the slices: Optuna, journal, bookkeeping) |")
for name, value in r["ratios"].items():
    print(f"| {name} | {value:.1f}× |")
PY
# 3. fine-tuning throughput: CHECK_FT_FOLDS (default 8) folds' ViT-B-16 models on the sequential engine, against the bf16 FLOP floor
timeout "$(limit 80)" python benchmarks/fold_throughput.py --clip "$clip" --image-size "$size" --scale "$scale" --folds "$ft_folds" --epochs 1 \
  >"$out/fold_throughput.json" 2>"$out/fold_throughput.log"
python - "$out/fold_throughput.json" >>"$md" 2>>"$out/fold_throughput.log" <<'PY' || echo "| fold throughput | failed or out of time: see fold_throughput.log |" >>"$md"
import json, sys
r = json.load(open(sys.argv[1]))
for name, e in r["engines"].items():
    floor = "fp32" if r["device"].startswith("cpu") else "bf16"
    print(f"| {r['clip']} fine-tuning, {r['folds']} folds, {name} | {e['seconds']:.1f} s, {e['images_per_s']:.0f} img/s, {e['times_floor']:.2f}× the {floor} floor ({r['floor_seconds']:.1f} s) |")
PY
# 4. frozen-token trials/hour with 1 and 4 trial processes sharing the GPU, each started as Ray
#    starts a packed trial (memory fraction 1/4), the search's first round of 8 configurations
timeout "$(limit 90)" python -m suite.bench --clip "$clip" --image-size "$size" --scale "$scale" --epochs 40 \
  --trial-packing 4 --packing-trials "$packing_trials" --out "$out/trial_packing.json" >"$out/trial_packing.log" 2>&1
python - "$out/trial_packing.json" >>"$md" 2>>"$out/trial_packing.log" <<'PY' || echo "| trial packing | failed or out of time: see trial_packing.log |" >>"$md"
import json, sys
r = json.load(open(sys.argv[1]))
for run in r["trial_packing"]:
    print(f"| frozen-token trials, {run['per_device']} process(es) on the device ({run['engine']} engine, {r['epochs']} epochs) | "
          f"{run['trials']} trials in {run['seconds']:.1f} s = {run['trials_per_hour']:.0f} trials/hour |")
for name, value in r["ratios"].items():
    print(f"| {name} | {value:.2f}× |")
PY
# 5. one search trial on frozen ViT-B-16 tokens: sequential vs fold-batched engine vs the peer;
#    full fine-tuning (sequential) against the bf16 FLOP floor — with what time is left
timeout "$(limit 200)" python -m suite.bench --clip "$clip" --image-size "$size" --scale "$scale" --epochs 2 --no-packing \
  --out "$out/bench.json" >"$out/bench.log" 2>&1
python - "$out/bench.json" >>"$md" 2>>"$out/bench.log" <<'PY' || echo "| suite.bench | failed or out of time: see bench.log |" >>"$md"
import json, sys
r = json.load(open(sys.argv[1]))
for name, row in r["rows"].items():
    print(f"| {name} (s) | {row['seconds']:.2f} |")
for name, value in r["ratios"].items():
    print(f"| {name} | {value:.2f}× |")
PY
echo "| check's own time | $SECONDS s |" >>"$md"
cat "$md"
