"""Running a round's slices as Ray Tune trials, and the other Ray work of a search (final seeds,
baselines) with the trials' resources.

A round is one Tune experiment (``<search>-<dataset>-r<round>``): one trial per slice whose
outputs are not on disk yet, run by the class trainable ``SliceTrainable`` (its run context and
the task plan passed with ``tune.with_parameters``, its resources with ``tune.with_resources``).
Tune's own tables are off (``verbose=0``, and ``RAY_AIR_NEW_OUTPUT=0`` set once where Ray starts,
``run.start_ray``: its header would name its placeholder search algorithm, not Optuna, which
proposes here); a Tune callback prints one line per finished slice instead. The slice outputs on disk,
not Tune's experiment state, say what is done: a resumed round is a new experiment
(``…-r<round>-resume<n>``) over the slices still missing, and each of those continues from its
tasks already done. A slice that still fails after Tune's retries has its tasks recorded as
failed with the reason.
"""
from __future__ import annotations

from pathlib import Path

import ray
from ray import tune

from .driver import StageIncomplete
from .jobs import Job
from .nodes import LostNodes, unreachable
from .options import MAX_FAILURES, SearchOptions
from .slices import read_slice, write_slice
from .studies import Slice
from .trial import RunContext, SliceRun, TaskRunner, trial_resources


JOB_RETRIES = 3  # Ray re-runs a final-seeds or baseline job whose worker or machine died (not one that raised)


class SliceTrainable(tune.Trainable):
    """One Tune trial = one slice of a round (``config``: round and proposal, all the trial table
    shows). ``setup`` makes the actor's ``TaskRunner`` — the dataset resident on its device, the
    fold protocol, features kept across slices — from the run context, and ``reset_config`` keeps
    it when Tune reuses the actor for the next slice of the experiment (``reuse_actors``: the
    context and plan are the experiment's, only the config changes). Each ``step`` runs until the
    next task is done and kept on disk; the last writes the slice and ends the trial. Checkpoints
    are the slice's own partial file (``SliceRun``), so Tune keeps none."""

    def setup(self, config: dict, ctx: RunContext, plan: dict):
        self.plan = plan
        self.runner = TaskRunner(ctx, bool(ray.get_gpu_ids()))
        self.slice: SliceRun | None = None

    def reset_config(self, new_config: dict) -> bool:
        self.slice = None  # the next slice starts at its first step; the runner and its resident data stay
        return True

    def save_checkpoint(self, checkpoint_dir: str) -> dict:
        """Tune asks before it retries or reuses an actor: the slice's state is already on disk
        (its partial file, ``SliceRun``), so the checkpoint only says where it is."""
        return {"partial": str(self.slice.partial) if self.slice else None}

    def load_checkpoint(self, checkpoint: dict) -> None:
        """Nothing to load: ``SliceRun`` reads the slice's partial file when the slice starts."""

    def step(self) -> dict:
        if self.slice is None:  # the first report says where the slice runs (SliceProgress names a lost node's slices)
            r, proposal = self.config["round"], self.config["proposal"]
            self.slice = SliceRun(self.runner, r, proposal, self.plan[proposal], ray.get_runtime_context().get_node_id())
            return {**self.slice.progress(), "node_id": self.slice.node}
        if self.slice.complete or not self.slice.step() or self.slice.complete:
            self.slice.finish(self.trial_id)
            return {**self.slice.progress(), "node_id": self.slice.node, "done": True}
        return {**self.slice.progress(), "node_id": self.slice.node}


class TuneExecutor:
    """Runs slices as Tune trials; ``__call__`` returns every slice's stored outputs."""

    def __init__(self, opts: SearchOptions, results: Path):
        self.opts, self.storage = opts, results / "ray"

    def __call__(self, slices: list[Slice], ctx: RunContext, exp_name: str) -> dict[int, dict]:
        out_dir = Path(ctx.out_dir)
        missing = [s for s in slices if read_slice(out_dir, s.round, s.proposal) is None]
        if missing:
            grid = self._fit(missing, ctx, exp_name)
            errors = {r.config.get("proposal"): str(r.error).strip().splitlines()[-1][:500]
                      for r in grid if r.error is not None and r.config}
            for s in missing:
                if read_slice(out_dir, s.round, s.proposal) is not None:
                    continue
                if s.proposal not in errors:  # Tune returns normally after Ctrl-C: never summarise a partial search
                    done = sum(read_slice(out_dir, x.round, x.proposal) is not None for x in slices)
                    raise StageIncomplete(f"interrupted: {done} of {len(slices)} slices of {exp_name} finished; the state is "
                                          f"saved — rerun the same command to resume", 130)
                failed = [{**t.to_json(), "status": "failed", "reason": f"trial crashed {MAX_FAILURES + 1} times: {errors[s.proposal]}"}
                          for t in s.tasks]
                write_slice(out_dir, s.round, s.proposal, failed, [], {"tune_trial": None})
        return {s.proposal: read_slice(out_dir, s.round, s.proposal) for s in slices}

    def _fit(self, slices: list[Slice], ctx: RunContext, exp_name: str):
        opts = self.opts
        plan = {s.proposal: [t.to_json() for t in s.tasks] for s in slices}
        trainable = tune.with_resources(tune.with_parameters(SliceTrainable, ctx=ctx, plan=plan),
                                        trial_resources(opts.cpus_per_trial, opts.gpus_per_trial, opts.fold_workers))
        name, attempt = exp_name, 0
        while (self.storage / name).exists():
            attempt += 1
            name = f"{exp_name}-resume{attempt}"
        print(f"{name}: {len(slices)} slice(s) of Optuna ({opts.sampler}) proposals as Ray Tune trials, "
              f"{opts.concurrency or 'as many as fit'} at a time{' (resumed)' if attempt else ''}", flush=True)
        tuner = tune.Tuner(
            trainable,
            param_space={"round": slices[0].round, "proposal": tune.grid_search([s.proposal for s in slices])},
            # reused trial actors keep their imports and their TaskRunner (data, engine, features): SliceTrainable.reset_config
            tune_config=tune.TuneConfig(max_concurrent_trials=opts.concurrency, reuse_actors=True),
            run_config=tune.RunConfig(name=name, storage_path=str(self.storage), verbose=0, callbacks=[SliceProgress(name, len(slices))],
                                      failure_config=tune.FailureConfig(max_failures=MAX_FAILURES)),
        )
        return tuner.fit()


class SliceProgress(tune.Callback):
    """One line per finished (or failed) slice of a round: what Tune's tables would say, briefly;
    a lost machine is one line naming it and the slices it held, which Tune retries elsewhere."""

    def __init__(self, name: str, total: int):
        self.name, self.total, self.done = name, total, 0
        self.lost = LostNodes()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        result = trial.last_result or {}
        score = f", mean inner F1 {100 * result['inner_f1_mean']:.1f} %" if result.get("inner_f1_mean") is not None else ""
        print(f"  {self.name}: slice {self.done}/{self.total} done (proposal {trial.config.get('proposal')}{score})", flush=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        """A slice whose trial failed and will be retried: a lost machine is named once with every
        slice it held; any other crash is one line with where its error is."""
        node = (trial.last_result or {}).get("node_id")
        if self.lost.named(node):
            return  # its machine's line named it
        error = _trial_error(trial)
        if node is not None and (self.lost.dead(node) or unreachable(error)):
            self.lost.name(node)
            held = [f"r{t.config['round']}-p{t.config['proposal']}" for t in trials
                    if (t.last_result or {}).get("node_id") == node and t.status != "TERMINATED"]
            print(f"lost node {self.lost.address(node)}: slice(s) {', '.join(held)} of {self.name} are retried on the nodes left "
                  "(their finished tasks are kept)", flush=True)
            return
        print(f"  {self.name}: proposal {trial.config.get('proposal')} crashed; Tune retries it (at most {MAX_FAILURES} times; "
              f"the error: {trial.error_file})", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        print(f"  {self.name}: proposal {trial.config.get('proposal')} failed {MAX_FAILURES + 1} times; its tasks are recorded as "
              f"failed (the error: {trial.error_file})", flush=True)


def _trial_error(trial) -> BaseException | None:
    """The exception a trial failed with, from the pickle Tune keeps beside the driver (None: not
    picklable; its text file stays)."""
    import cloudpickle

    try:
        with open(trial.pickled_error_file, "rb") as f:
            return cloudpickle.load(f)
    except Exception:  # noqa: BLE001  no file, or an error that does not unpickle here
        return None


def _train_remote(job: Job, gpu_fraction: float) -> list[str]:
    """One job inside a Ray task: on a cluster, final seeds and baselines run on the workers with
    the trials' resources, not on the head."""
    import torch

    from ..engine import get_accelerator

    if ray.get_gpu_ids() and gpu_fraction < 1:
        torch.cuda.set_per_process_memory_fraction(gpu_fraction)
    get_accelerator(cpu=not ray.get_gpu_ids())
    return [str(p) for p in job()]


def submit_to_ray(jobs: list[Job], opts: SearchOptions):
    """Start the jobs as parallel Ray tasks; returns a function that waits for them and gives each
    job's record paths, in job order."""
    # a job whose machine is lost is run again elsewhere (its records are written once, at its end, atomically)
    task = ray.remote(num_cpus=opts.cpus_per_trial, num_gpus=opts.gpus_per_trial or 0, max_retries=JOB_RETRIES)(_train_remote)
    futures = [task.remote(job, opts.gpus_per_trial or 0) for job in jobs]
    labels = {f: job.description for f, job in zip(futures, jobs)}

    def wait() -> list[list[Path]]:
        pending, lost = list(futures), LostNodes()
        while pending:  # one line per job as it finishes, one per machine lost meanwhile
            ready, pending = ray.wait(pending, num_returns=1, timeout=5)
            for address in lost.newly_lost().values():
                print(f"lost node {address} while final seeds and baselines ran: Ray retries the jobs it held on the nodes left "
                      f"(still running: {', '.join(labels[f] for f in pending)})", flush=True)
            if ready:
                print(f"  final seeds and baselines: {len(futures) - len(pending)}/{len(futures)} done ({labels[ready[0]]})", flush=True)
        return [[Path(p) for p in paths] for paths in ray.get(futures)]
    return wait
