"""What a search knows about its Ray cluster's machines: that every node reaches the shared folder
before any work is scheduled there (``check_shared_folders``), and which node was lost when work
fails (``LostNodes``: one line naming the machine and the slices or jobs Ray retries elsewhere,
instead of Ray's traceback wall). The fault model is in docs/architecture.md ("Clusters: which
machine writes which file, which failures are survived")."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .options import SearchError

PROBE_TIMEOUT_S = 120
PROBES = ".node-probes"  # under the results folder: one file per search start, removed once every node has read it


def alive_nodes() -> dict[str, str]:
    """The cluster's live nodes: node id → address."""
    return {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}


def _probe(token_file: str, token: str, folders: list[str]) -> dict:
    """On one node: whether the results folder is the one the driver wrote ``token_file`` in
    (shared, not a local folder at the same path), writable there, and every data folder exists."""
    problems = []
    path = Path(token_file)
    try:
        if path.read_text() != token:
            problems.append(f"{path.parent.parent} holds another probe than the one the driver wrote there (another folder is mounted)")
    except OSError as e:
        problems.append(f"{path.parent.parent}: the probe the driver wrote there is not visible ({e.strerror or e}) — the shared "
                        "folder is not mounted at that path, or is another folder")
    else:
        try:
            mine = path.with_name(f"{path.name}.{os.getpid()}")
            mine.write_text(token)
            mine.unlink()
        except OSError as e:
            problems.append(f"{path.parent.parent}: not writable ({e.strerror or e})")
    for folder in folders:
        if not Path(folder).is_dir():
            problems.append(f"{folder}: no such folder")
    return {"ip": ray.util.get_node_ip_address(), "problems": problems}


def check_shared_folders(results: Path, data_folders: list[Path]) -> None:
    """Before any work: on every live node other than the driver's, the results folder must be the
    driver's (a probe file written here is read there) and writable, and every data folder must
    exist. A node that fails is named with the path and what to do — nothing has been scheduled."""
    here = ray.get_runtime_context().get_node_id()
    others = {nid: ip for nid, ip in alive_nodes().items() if nid != here}
    if not others:
        return
    token = secrets.token_hex(16)
    probes = Path(results) / PROBES
    probes.mkdir(parents=True, exist_ok=True)
    token_file = probes / token
    token_file.write_text(token)
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
    try:
        futures = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(nid, soft=False)).remote(
            str(token_file), token, [str(f) for f in data_folders]): (nid, ip) for nid, ip in others.items()}
        ready, late = ray.wait(list(futures), num_returns=len(futures), timeout=PROBE_TIMEOUT_S)
        failed = [f"node {futures[f][1]} did not answer a probe within {PROBE_TIMEOUT_S} s" for f in late]
        for f in ready:
            try:
                answer = ray.get(f)
            except ray.exceptions.RayError as e:
                failed.append(f"node {futures[f][1]} could not run a probe: {str(e).strip().splitlines()[-1]}")
                continue
            failed += [f"node {answer['ip']} cannot reach the shared folder {p}" for p in answer["problems"]]
    finally:
        token_file.unlink(missing_ok=True)
    if failed:
        raise SearchError("; ".join(failed) + ". Every node reads the data and writes its results there: mount the shared export "
                          "at the same path on that node (or take the node out of the cluster), then run the same command again; "
                          "nothing was scheduled")


_NAMED: set[str] = set()  # node ids already named in this process (a search's driver): each machine is named once


class LostNodes:
    """Machines lost while a stage runs, each named once per search process: a node already dead
    when the stage starts, or named by an earlier stage (its death may reach the cluster's node
    table only later: the health checks take up to about a minute), is not news."""

    def __init__(self):
        _NAMED.update(n["NodeID"] for n in ray.nodes() if not n["Alive"])

    @staticmethod
    def named(node_id: str | None) -> bool:
        return node_id in _NAMED

    @staticmethod
    def name(node_id: str) -> None:
        _NAMED.add(node_id)

    def newly_lost(self) -> dict[str, str]:
        """Node id → address of nodes the cluster counts dead that were not named yet (now named)."""
        new = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if not n["Alive"] and n["NodeID"] not in _NAMED}
        _NAMED.update(new)
        return new

    @staticmethod
    def address(node_id: str | None) -> str | None:
        return next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id), None)

    @staticmethod
    def dead(node_id: str | None) -> bool:
        return any(n["NodeID"] == node_id and not n["Alive"] for n in ray.nodes())


def unreachable(error: BaseException | None) -> bool:
    """Whether a trial's error says its process could not be reached (its machine or network gone),
    not that it failed: Ray's actor-unavailable and node-died errors."""
    kinds = tuple(getattr(ray.exceptions, k) for k in ("ActorUnavailableError", "NodeDiedError") if hasattr(ray.exceptions, k))
    return isinstance(error, kinds) or "node" in str(error).lower() and "died" in str(error).lower()
