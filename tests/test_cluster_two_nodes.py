"""A two-machine Ray cluster on this one machine that loses a machine mid-search, and two machines
writing one Optuna journal on the shared folder.

"Machines" of namespaces (``tests/machines.py``): the user's machine (10.231.0.10, the network's
switch), the head (10.231.0.1) and one worker (10.231.0.2), each with its own PID and mount
namespace and ``/tmp/ray``, the head and the worker with their own sshd, joined by veth pairs
whose addresses exist only inside them; one folder bind-mounted at ``/mnt/shared`` (the NFS
export). The shipped on-prem config, edited only where a user must (addresses, worker counts, SSH
user and key); ``ray up`` from the user's machine brings both up with token authentication and
``ray status`` counts 2 nodes.

1. The worker's ``/mnt/shared`` is another folder: ``ray submit`` stops before any work, naming
   the node and the path. Mounted, the search runs its slices on both machines (each slice records
   its node); once each has finished a slice, every process of the worker is killed at once (its
   PID namespace), as a power loss would. The search finishes on the head: one line naming the lost
   node and its slices, no traceback, the asked configurations in every fold study once each, final
   seeds and baselines complete, and a summary identical figure for figure to the same command run
   undisturbed on the cluster that is left (the head alone).
2. The worker comes back (``ray up`` again), a second search uses both machines, and the head is
   killed; after ``ray up`` the same ``ray submit`` resumes from the shared folder to the same figures.
"""
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from machines import BIN, SKIP_REASON, Machine, bridge, join, keys, namespaces

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not namespaces(), reason=SKIP_REASON)]
HEAD, WORKER, LAPTOP = "10.231.0.1", "10.231.0.2", "10.231.0.10"
TINY = "method: micro_au_clip\nparams:\n  lambda_gd: {float: [0.01, 1.0], log: true}\n  lr: {float: [0.0005, 0.01], log: true}\n" \
       "fixed: {epochs: 40, batch_size: 8}\n"
# rounds of 4 slices, each trial taking a whole machine (2 CPUs), each slice long enough (40 epochs)
# that Tune starts a trial process on the second machine before the first has finished its slices
# (it reuses a free trial process for the next slice of a round): both machines work in every round
TRIALS = 8
SEARCH = ["--space", "/mnt/shared/tiny.yaml", "--datasets", "casme2", "--data-root", "/mnt/shared/data/CASME2", "--trials", str(TRIALS),
          "--round-size", "4", "--startup-trials", "4", "--cpus-per-trial", "2", "--final-seeds", "1", "--baselines", "constant"]
# what differs between two runs of the same search besides its figures
NOT_FIGURES = {"name", "wall_s", "tune_s", "studies", "command", "started", "finished", "results", "tune_trial", "node_id", "node_ip", "pid",
               "path", "paths"}


def _figures(doc):
    """A summary without what names or times the run."""
    if isinstance(doc, dict):
        return {k: _figures(v) for k, v in doc.items() if k not in NOT_FIGURES}
    if isinstance(doc, list):
        return [_figures(v) for v in doc]
    if isinstance(doc, str):
        return re.sub(r"searches/[^/]+/", "searches/NAME/", doc)
    return doc


def _nodes(t: Path, env: dict, cfg: Path, laptop: Machine) -> int:
    """How many nodes ``ray status`` (on the head, through ``ray exec`` from the user's machine) counts as live (active or idle)."""
    proc = laptop.run(["ray", "exec", str(cfg), "RAY_AUTH_MODE=token ~/venv/bin/ray status"], env=env, capture_output=True, text=True,
                      timeout=300)
    (t / "status.log").write_text(proc.stdout + proc.stderr)
    # the live nodes: "Active:" (running work) and "Idle:" blocks, before "Pending:"
    live = proc.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in proc.stdout else ""
    return sum(int(m) for m in re.findall(r"^\s*(\d+)\s+\S", live, re.M))


def _slices(search: Path) -> list[dict]:
    out = []
    for p in sorted((search / "casme2" / "rounds").glob("r*-p*.json")):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):  # written atomically: never half a file, but a rename may race the glob
            pass
    return out


JOURNAL_WRITER = """
import sys
from pathlib import Path
from suite.search.studies import journal_storage
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
writer, n = sys.argv[1], int(sys.argv[2])
study = optuna.create_study(study_name="shared", storage=journal_storage(Path("/mnt/shared/two-writers.journal")),
                            direction="maximize", load_if_exists=True)
Path(f"/mnt/shared/{writer}.ready").touch()
while not all(Path(f"/mnt/shared/{w}.ready").exists() for w in ("head", "worker")):
    pass
for i in range(n):
    trial = study.ask()
    trial.set_user_attr("writer", writer)
    trial.set_user_attr("i", i)
    study.tell(trial, float(i) + (0.5 if writer == "worker" else 0.0))
print("WROTE", writer, n)
"""


def test_two_machines_append_to_one_journal_on_the_shared_folder(tmp_path):
    """The search's Optuna journal opened as the suite opens it (``studies.journal_storage``: its
    file lock on the shared folder), appended to by one process on each of two machines at once:
    every trial of both is in the study once, complete, with the value its writer told."""
    import optuna

    from suite.search.studies import journal_storage

    machines = [Machine(tmp_path, name, f"10.231.1.{i + 1}", home=tmp_path / name) for i, name in enumerate(("head", "worker"))]
    for m in machines:
        m.home.mkdir(exist_ok=True)
    n = 60
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs = [m.popen([str(BIN / "python"), "-c", JOURNAL_WRITER, m.name, str(n)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True) for m in machines]
        outs = [p.communicate(timeout=600) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
    finally:
        for m in machines:
            m.kill()
    study = optuna.load_study(study_name="shared", storage=journal_storage(tmp_path / "shared" / "two-writers.journal"))
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(2 * n))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    told = sorted((t.user_attrs["writer"], t.user_attrs["i"], t.value) for t in trials)
    assert told == sorted([("head", i, float(i)) for i in range(n)] + [("worker", i, i + 0.5) for i in range(n)])


def test_two_machine_cluster_loses_a_machine_mid_search(tmp_path, synthetic):
    t = tmp_path
    keys(t)
    for d in ("laptop", "shared/data"):
        (t / d).mkdir(parents=True)
    shutil.copytree(synthetic / "CASME2", t / "shared" / "data" / "CASME2")
    (t / "shared" / "tiny.yaml").write_text(TINY)
    cfg = yaml.safe_load((ROOT / "docs" / "cluster" / "cluster-onprem.yaml").read_text())
    cfg["provider"].update(head_ip=HEAD, worker_ips=[WORKER])
    cfg.update(min_workers=1, max_workers=1, auth={"ssh_user": "root", "ssh_private_key": str(t / "key")})
    (t / "cluster.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"HOME": str(t / "laptop"), "PATH": f"{BIN}:{os.environ['PATH']}"}
    laptop = Machine(t, "laptop", LAPTOP, home=t / "laptop")  # the user's machine: the network's switch, outside the cluster
    bridge(laptop)
    # the worker's /mnt/shared is a mount, but not of the export: `ray up`'s mountpoint check passes, the search's must not
    head, worker = Machine(t, "head", HEAD), Machine(t, "worker", WORKER, shared=False)
    timings = {}

    def step(name: str, argv: list[str], timeout: float = 900, ok: bool = True):
        proc = laptop.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        (t / f"{name}.log").write_text(proc.stdout + proc.stderr)
        if ok:
            assert proc.returncode == 0, (name, (proc.stdout + proc.stderr)[-4000:])
        return proc

    def boot(machine: Machine) -> None:
        join(laptop, machine)
        machine.start_sshd()

    def cluster_up(nodes: int) -> float:
        start = time.monotonic()
        step("up", ["ray", "up", "-y", str(t / "cluster.yaml")])
        deadline = time.monotonic() + 600  # the head's autoscaler sets the worker up over SSH
        while (n := _nodes(t, env, t / "cluster.yaml", laptop)) < nodes:
            assert time.monotonic() < deadline, ((t / "status.log").read_text()[-3000:], _tail(t / "raytmp.head"))
            time.sleep(5)
        assert n == nodes
        return time.monotonic() - start

    def submit(name: str):
        log = open(t / f"submit-{name}.log", "w")
        return laptop.popen(["ray", "submit", str(t / "cluster.yaml"), "scripts/ray_search.py", "--", *SEARCH, "--name", name],
                            env=env, cwd=ROOT, stdout=log, stderr=log)

    def until_both_nodes_finished_a_slice(proc, search: Path) -> list[dict]:
        """The finished slices once each machine has finished one and the worker is running another."""
        deadline = time.monotonic() + 900
        while {s.get("node_ip") for s in _slices(search)} < {HEAD, WORKER} or not _training(worker):
            assert proc.poll() is None and time.monotonic() < deadline, (t / f"submit-{search.name}.log").read_text()[-4000:]
            time.sleep(0.5)
        return _slices(search)

    searches = t / "shared" / "results" / "searches"
    try:
        boot(head)
        boot(worker)
        step("token", ["ray", "get-auth-token", "--generate"])
        timings["ray up, two machines"] = cluster_up(2)

        # a node that cannot reach the shared folder: refused before any work, naming the node and the path
        refused = step("refused", ["ray", "submit", str(t / "cluster.yaml"), "scripts/ray_search.py", "--", *SEARCH, "--name", "refused"],
                       ok=False)
        said = refused.stdout + refused.stderr
        assert refused.returncode != 0 and f"node {WORKER} cannot reach the shared folder /mnt/shared/results" in said, said[-3000:]
        assert not (searches / "refused" / "casme2" / "rounds").exists() and "Traceback" not in said
        worker.mount_shared()

        # losing the worker mid-search: the search goes on with the head alone
        start = time.monotonic()
        proc = submit("lostworker")
        try:
            before = until_both_nodes_finished_a_slice(proc, searches / "lostworker")
            worker.kill()
            killed, seen = time.monotonic(), None
            while proc.poll() is None:  # the search goes on; when does it say so
                if seen is None and "lost node" in (t / "submit-lostworker.log").read_text():
                    seen = time.monotonic() - killed
                assert time.monotonic() - killed < 1500
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                proc.kill()
        out = (t / "submit-lostworker.log").read_text()
        assert proc.returncode == 0, out[-6000:]
        timings["search, the worker lost"] = time.monotonic() - start
        share = {ip: sum(s.get("node_ip") == ip for s in before) for ip in (HEAD, WORKER)}
        assert share[HEAD] > 0 and share[WORKER] > 0, share
        lost = [line for line in out.splitlines() if line.startswith("lost node")]
        assert len(lost) == 1 and WORKER in lost[0], out[-6000:]  # one line naming the node and its slices, no traceback wall
        assert "Traceback" not in out, out[-6000:]
        assert seen is not None, out[-6000:]  # the line came while the search went on
        timings["kill → the lost-node line"] = seen
        after = _slices(searches / "lostworker")
        assert len(after) == TRIALS and {s["node_ip"] for s in after if s not in before} == {HEAD}
        timings["slices re-run on the head"] = len([s for s in after if (s["round"], s["proposal"]) in _proposals(lost[0])])
        _check_journal(searches / "lostworker")
        summary = json.loads((searches / "lostworker" / "summary.json").read_text())
        assert summary["datasets"][0]["final_seeds"] == [1] and len(summary["datasets"][0]["final_seeds_f1"]) == 1
        assert summary["datasets"][0]["records"]["baselines"]["constant"]

        # the same command undisturbed on the cluster that is left (the head alone): the same figures
        assert _nodes(t, env, t / "cluster.yaml", laptop) == 1
        start = time.monotonic()
        step("reference", ["ray", "submit", str(t / "cluster.yaml"), "scripts/ray_search.py", "--", *SEARCH, "--name", "onenode"],
             timeout=1500)
        timings["search, one node"] = time.monotonic() - start
        reference = json.loads((searches / "onenode" / "summary.json").read_text())
        assert _figures(summary) == _figures(reference)

        # the worker comes back (`ray up` again); a second search uses both nodes; then the head is lost
        worker = Machine(t, "worker", WORKER, home=worker.home)
        boot(worker)
        timings["ray up again, worker back"] = cluster_up(2)
        proc = submit("losthead")
        try:
            until_both_nodes_finished_a_slice(proc, searches / "losthead")
            assert not (searches / "losthead" / "summary.json").exists()  # killed mid-search
            head.kill()
            proc.wait(timeout=300)  # the user's `ray submit` ends with its SSH session
        finally:
            if proc.poll() is None:
                proc.kill()
        head = Machine(t, "head", HEAD, home=head.home)
        boot(head)
        timings["ray up after the head's loss"] = cluster_up(2)
        step("resumed", ["ray", "submit", str(t / "cluster.yaml"), "scripts/ray_search.py", "--", *SEARCH, "--name", "losthead"],
             timeout=1500)
        _check_journal(searches / "losthead")
        assert _figures(json.loads((searches / "losthead" / "summary.json").read_text())) == _figures(reference)
        step("down", ["ray", "down", "-y", str(t / "cluster.yaml")])
        print("\n" + "; ".join(f"{k}: {v:.0f}" + (" s" if isinstance(v, float) else "") for k, v in timings.items()))
    finally:
        for m in (worker, head, laptop):
            m.kill()


def _training(machine: Machine) -> bool:
    """Whether a Tune trial on ``machine`` is running a slice (Ray titles the process by the method it runs)."""
    ps = machine.run(["ps", "-eo", "args"], capture_output=True, text=True, timeout=30).stdout
    return any(re.match(r"ray::\w+\.train\b", line) for line in ps.splitlines())


def _proposals(line: str) -> set[tuple[int, int]]:
    """The (round, proposal) of the slices a lost-node line names (``r0-p1, r1-p4``)."""
    return {(int(r), int(p)) for r, p in re.findall(r"r(\d+)-p(\d+)", line)}


def _check_journal(search: Path) -> None:
    """Every fold study: exactly the asked configurations, each proposal once, all told."""
    import optuna

    from suite.search.studies import journal_storage

    storage = journal_storage(search / "optuna.journal")
    studies = optuna.get_all_study_names(storage)
    assert len(studies) == 4  # one per LOSO fold of 4 subjects
    for name in studies:
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        assert [tr.number for tr in trials] == list(range(TRIALS)), name
        assert all(tr.state == optuna.trial.TrialState.COMPLETE for tr in trials), name
        assert len({json.dumps(tr.params, sort_keys=True) for tr in trials}) == TRIALS, name


def _tail(raytmp: Path) -> str:
    logs = sorted(raytmp.glob("session_latest/logs/monitor*"))
    return "\n".join(p.read_text()[-2000:] for p in logs)
