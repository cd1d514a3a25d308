"""Does a task's number depend on its slice? Fold 1 with ``token_layer`` −3 in a slice whose first
task (fold 0) has −1, against the same task alone on the fold-batched and on the sequential engine
(the task-independence issue's experiment; docs/benchmarks.md). Runs the revision on ``sys.path``:

    PYTHONPATH=/path/to/checkout python benchmarks/slice_company.py /tmp/results-dir
"""
import json, sys
from pathlib import Path
import suite
from suite.data import prepare
results = Path(sys.argv[1])
cache = prepare("casme2", None, results)
base = dict(method="micro_au_clip", fixed={"epochs": 10, "metric": "binary"}, dataset="casme2", cache=str(cache.path),
            fingerprint=cache.fingerprint, out_dir=str(results / "x"), seed=0, token_cache=None, cpus_per_trial=1,
            gpus_per_trial=0, fold_workers=1, compile=None, engine="auto")
tasks = [{"fold": 0, "number": 0, "params": {"token_layer": -1}, "role": "search"},
         {"fold": 1, "number": 0, "params": {"token_layer": -3}, "role": "search"}]
from suite.search import trial
if "caches" in getattr(trial.RunContext, "__dataclass_fields__", {}):  # since cross-dataset evaluations: each release's cache
    base = {k: v for k, v in base.items() if k not in ("cache", "fingerprint")} | {"caches": (("casme2", str(cache.path), cache.fingerprint),)}
if hasattr(trial, "SEARCH_PROTOCOL"):  # since protocol settings left the hyper-parameters: the metric is the protocol's
    base = {**base, "fixed": {"epochs": 10}, "protocol": trial.SEARCH_PROTOCOL.with_(metric="binary")}
out = {"suite": str(Path(suite.__file__).parent)}
if hasattr(trial, "RunContext"):  # since the task-independence change; before it, a dict and run_batched
    R = trial.TaskRunner
    mixed = R(trial.RunContext(**base)).run(tasks)[1]
    alone = R(trial.RunContext(**base)).run(tasks[1:])[0]
    seq = R(trial.RunContext(**{**base, "engine": "sequential"})).run(tasks[1:])[0]
else:
    R = trial.TaskRunner
    mixed = R(base).run_batched(tasks)[1]
    alone = R(base).run_batched(tasks[1:])[0]
    seq = R({**base, "engine": "sequential"}).run(tasks[1])
for name, t in (("mixed slice, batched", mixed), ("alone, batched", alone), ("alone, sequential", seq)):
    out[name] = {"inner_f1": t["inner_f1"], "epochs": t["epochs"], "engine": t["engine"], "test_prob_0": t["test_prob"][0][:3]}
print(json.dumps(out, indent=1))
