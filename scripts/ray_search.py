"""Launcher for ``ray submit <config> scripts/ray_search.py -- <suite.search args>``.

``ray submit`` copies this one file to the head node's home and runs ``python ~/ray_search.py
ARGS`` in a login shell, with whatever ``python`` that shell finds first (pyenv, conda, the
system's). This file needs only the standard library; it hands over to the project's own
interpreter (``~/venv/bin/python``, or ``$MICRO_AU_PYTHON``), never to the one that started it,
and runs ``python -m suite.search --address auto --results /mnt/shared/results ARGS`` from the
synced project (``~/micro-au-suite``). Ray token authentication is required
(``RAY_AUTH_MODE=token``, the token the launcher put in ``~/.ray/auth_token``)."""
import os
import sys
from pathlib import Path

home = Path.home()
project = Path(os.environ.get("MICRO_AU_PROJECT", home / "micro-au-suite"))
python = Path(os.environ.get("MICRO_AU_PYTHON", home / "venv" / "bin" / "python"))
results = os.environ.get("MICRO_AU_RESULTS", "/mnt/shared/results")
if not python.exists():
    sys.exit(f"error: the project's interpreter {python} does not exist; run `ray up` (its setup commands create it) "
             "or set MICRO_AU_PYTHON")
if not (home / ".ray" / "auth_token").exists():
    sys.exit("error: no Ray token at ~/.ray/auth_token on the head; run `ray get-auth-token --generate` on your machine "
             "before `ray up` (the cluster config copies it to every node)")
os.environ["RAY_AUTH_MODE"] = "token"  # fail closed: never join a cluster without token authentication
os.environ["MICRO_AU_RESULTS"] = results
args = sys.argv[1:]
if "--address" not in args:
    args = ["--address", "auto", *args]
if "--results" not in args:
    args = ["--results", results, *args]
os.chdir(project)
os.execv(str(python), [str(python), "-m", "suite.search", *args])
