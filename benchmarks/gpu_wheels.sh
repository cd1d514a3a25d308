#!/usr/bin/env bash
# Run on the development machine (it reaches PyPI): the wheels the GPU machines lack, into
# .gpu-wheels/ (git-ignored; carry it to the GPU machine with the working tree).
# The GPU machines have Python 3.12, torch, accelerate, timm, pandas, pyarrow, opencv, scipy and
# pytest, but no open_clip, datasets, optuna, openpyxl/XlsxWriter (the synthetic releases' sheets),
# scikit-learn (and their small dependencies) — and no registry. Carry .gpu-wheels with the tree
# (the device tool's carry: [".gpu-wheels"]).
# Optuna comes for the search's rounds without Ray (suite.bench --nested-search).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu-wheels && mkdir .gpu-wheels
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .gpu-wheels \
  open_clip_torch ftfy wcwidth datasets dill xxhash multiprocess fsspec huggingface_hub hf-xet filelock pyyaml jinja2 tqdm \
  optuna alembic mako markupsafe sqlalchemy greenlet colorlog \
  openpyxl et_xmlfile xlsxwriter scikit-learn joblib threadpoolctl
du -sh .gpu-wheels
