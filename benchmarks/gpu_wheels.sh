#!/usr/bin/env bash
# Run on the development machine, in the project's environment (it reaches PyPI): the wheels the
# GPU machines lack, into .gpu-wheels/ (git-ignored; the device tool's carry: [".gpu-wheels"]).
#
# The GPU machines have Python 3.12 with torch, numpy, pandas, pyarrow, scipy, opencv, timm,
# accelerate and pytest, but no open_clip, datasets, optuna, openpyxl or XlsxWriter, and no
# registry. What travels is the whole dependency closure of those five as *this* environment
# resolved and tested it (every package at the version installed here), less the large or
# binary packages the machines already have (GPU_PROVIDED below). Hand-picked lists went wrong:
# huggingface_hub 2 imports httpx2, which no list named, so `import datasets` would have failed
# there. gpu_check.sh imports everything first and stops within seconds if something is missing.
# Optuna comes for the search's rounds without Ray (suite.bench --nested-search).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu-wheels && mkdir .gpu-wheels
python - >.gpu-wheels/requirements.txt <<'PY'
"""Print NAME==VERSION for the installed closure of ROOTS, evaluated for Python 3.12."""
import importlib.metadata as md
import re

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOTS = ["open_clip_torch", "datasets", "optuna", "openpyxl", "xlsxwriter"]
GPU_PROVIDED = re.compile(r"^(torch|torchvision|triton|numpy|pandas|pyarrow|scipy|opencv-python-headless|pillow|timm|"
                          r"safetensors|regex|accelerate|psutil|nvidia-.*|cuda-.*)$")
env = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3", "extra": ""}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


seen, todo = {}, [canonical(r) for r in ROOTS]
while todo:
    name = todo.pop()
    if name in seen or GPU_PROVIDED.match(name):
        continue
    seen[name] = md.version(name)  # not installed here: PackageNotFoundError names it
    for line in md.requires(name) or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            todo.append(canonical(req.name))
for name, version in sorted(seen.items()):
    print(f"{name}=={version}")
PY
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .gpu-wheels -r .gpu-wheels/requirements.txt
echo "$(grep -c . .gpu-wheels/requirements.txt) packages, $(du -sh .gpu-wheels | cut -f1) (.gpu-wheels/requirements.txt lists them)"
