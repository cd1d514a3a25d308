"""Launcher for ``ray submit cluster.yaml scripts/ray_search.py -- <suite.search args>``.

``ray submit`` copies this one file to the head node's home and runs ``python ~/ray_search.py
ARGS`` there. It runs ``python -m suite.search --address auto ARGS`` from the synced project
(``~/micro-au-suite``) with results on the cluster's shared storage."""
import os
import sys
from pathlib import Path

project = Path(os.environ.get("MICRO_AU_PROJECT", Path.home() / "micro-au-suite"))
results = os.environ.get("MICRO_AU_RESULTS", "/mnt/shared/results")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
args = sys.argv[1:]
if "--address" not in args:
    args = ["--address", "auto", *args]
if "--results" not in args:
    args = ["--results", results, *args]
os.chdir(project)
os.execv(sys.executable, [sys.executable, "-m", "suite.search", *args])
