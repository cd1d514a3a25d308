"""One search on one dataset, from rounds of proposals to records (selection graph:
``suite.selection``).

    rounds: Studies.plan_round → executor runs the slices → Studies.tell_round   (× ceil(trials / round size))
    [--fidelity] confirm: per fold its top --confirm-top (own study) at the higher fidelity,
                 the deployment configuration on every fold
    records: the per-fold choice (strict_nested / shared_nested), selected_on_test_folds and the
             deployment configuration over the common candidates, selected_per_test_fold over every
             candidate of every fold; final seeds of the per-fold
             choice and of the deployment configuration; baselines with the same seeds

``execute(slices, ctx, name) → {proposal: slice outputs}`` is the Tune executor in the CLI; tests
may run slices in-process. Nothing here depends on the order slices finish in. The final seeds and
baselines are typed jobs (``suite.search.jobs``) that ``submit(jobs)`` starts.

A search's protocol (``search_protocol``: selection inside every task on inner validation, the
search's ``--metric``, the space's inner-validation share) is one ``Protocol`` object: the folds
here, in every trial and in the final seeds are built from it; a task's hyper-parameters are
resolved in one function, ``trial.task_hparams``.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine import DatasetTensors
from ..evaluation import Evaluation, load_tensors
from ..folds import engine_label
from ..metrics import confusion_counts, f1_per_au
from ..paths import (confirm_dir, final_stem, rounds_dir, run_stem, runs_dir, search_dataset_dir, search_journal, search_record_stem,
                     token_cache_dir)
from ..protocol import Protocol
from ..registry import get_method, resolve_hparams
from ..results import config_id, load_record, predictions_frame, write_run
from ..selection import (Candidate, chosen_on_test_folds, chosen_per_test_fold, common_candidates, deployment_choice, per_fold_choice,
                         top_per_fold)
from .jobs import BaselineJob, FinalSeedsJob, Job
from .options import SearchOptions
from .studies import Slice, Studies, Task
from .trial import SEARCH_PROTOCOL, RunContext, fold_from_json, task_hparams


class StageIncomplete(Exception):
    """A stage (Tune's, or the driver's checks) that did not finish: interrupted (exit 130, resumable) or with no task done."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.message, self.exit_code = message, exit_code


def search_protocol(space, opts: SearchOptions) -> Protocol:
    """The protocol of every task of a search: epochs and thresholds chosen on inner validation,
    the metric of ``--metric``, the inner-validation share the space fixes (or the default)."""
    return SEARCH_PROTOCOL.with_(**space.protocol, metric=opts.metric)


def fixed_values(space, opts: SearchOptions, backbone: str | None = None) -> dict:
    """The model's values every task of a stage shares: the preset's, the space's fixed values,
    and a fidelity stage's backbone mode."""
    return {**opts.preset_overrides(space.method), **space.fixed, **({"backbone_mode": backbone} if backbone else {})}


@dataclass
class Selection:
    """What ``DatasetSearch.run`` selected and started, for ``DatasetSearch.summary`` once the
    jobs (final seeds, baselines) are done."""

    label: str  # the per-fold choice's regime label
    records: dict  # regime label → record path of the search seed
    choice: dict  # fold → its chosen Candidate
    chosen: dict  # the choices as the summary shows them
    common: dict  # the common candidates (params key → per-fold candidates)
    deploy_key: str | None
    docs: list  # the slice documents selection read
    fold_cands: list
    failed: list
    screening: dict | None
    jobs: list  # the jobs started (Job), in submission order
    final_done: list  # final-seed records already stored
    deploy_done: list
    base_done: dict  # baseline → records already stored


def round_sizes(trials: int, round_size: int) -> list[int]:
    """Proposals per fold study in each round: fixed by --trials and --round-size only."""
    full, rest = divmod(trials, round_size)
    return [round_size] * full + ([rest] if rest else [])


def candidates_of(docs: list[dict], index_of: dict[str, int], roles=("search", "confirm", "deployment")) -> list[Candidate]:
    out = []
    for doc in docs:
        for t in doc["tasks"]:
            if t["status"] == "ok" and t["role"] in roles:
                out.append(Candidate(t["fold"], t["number"], json.dumps(t["params"], sort_keys=True), t["inner_f1"],
                                     {"output": fold_from_json(t, index_of), "task": t}))
    return out


def test_counts(cand: Candidate, data: DatasetTensors) -> np.ndarray:
    """Confusion counts [K, 4] of a candidate's predictions on its fold's test clips."""
    o = cand.payload["output"]
    return confusion_counts(data.labels[o.test], o.prob >= o.threshold, data.known[o.test])


def pooled_f1(cands: list[Candidate], data: DatasetTensors, metric: str) -> float:
    outs = [c.payload["output"] for c in cands]
    idx = np.concatenate([o.test for o in outs])
    pred = np.concatenate([o.prob >= o.threshold for o in outs])
    return float(f1_per_au(data.labels[idx], pred, metric, data.known[idx]).mean())


class DatasetSearch:
    """The search of one evaluation (``suite.evaluation``: a release under LOSO, a transfer, a
    composite): its folds, studies, run context and outputs folder. ``roots``/``caches``: each of
    its releases' folder (None: synthetic) and Arrow cache."""

    def __init__(self, space, evaluation: Evaluation, roots: dict, caches: dict, fidelity, opts: SearchOptions, results: Path,
                 search_dir: Path, execute):
        import torch

        self.space, self.evaluation, self.dataset, self.fidelity = space, evaluation, evaluation.key, fidelity
        self.roots = {r: roots[r] for r in evaluation.releases}
        self.caches = {r: caches[r] for r in evaluation.releases}
        self.opts, self.results, self.search_dir, self.execute = opts, results, search_dir, execute
        self.aus = evaluation.aus
        self.data = load_tensors(evaluation, {r: (c.path, c.fingerprint) for r, c in self.caches.items()}, torch.device("cpu"))
        self.index_of = {str(s): i for i, s in enumerate(self.data.sample_id)}
        self.spec = get_method(space.method)
        self.protocol = search_protocol(space, opts)
        self.folds = [f.index for f in evaluation.folds(self.data.subject, self.protocol, opts.seed)]
        self.out = search_dataset_dir(search_dir, self.dataset)
        self.prefix = f"{opts.name}-{self.dataset}"
        self.engine = opts.engine_asked  # what every stage of this search asks for
        # baselines: sequential when the search is, else auto (a baseline without a batched form is not refused)
        self.baseline_engine = "sequential" if self.engine == "sequential" else "auto"

    def hparams(self, params: dict, backbone: str | None = None) -> dict:
        """A task's resolved hyper-parameters, as every trial resolves them (``task_hparams``)."""
        return task_hparams(self.spec, fixed_values(self.space, self.opts, backbone), params, self.protocol)

    def context(self, out_dir: Path, backbone: str | None) -> RunContext:
        o = self.opts
        return RunContext(method=self.space.method, fixed=fixed_values(self.space, o, backbone), protocol=self.protocol,
                          dataset=self.dataset, caches=tuple((r, str(c.path), c.fingerprint) for r, c in self.caches.items()),
                          out_dir=str(out_dir),
                          seed=o.seed, token_cache=str(token_cache_dir(self.results)), cpus_per_trial=o.cpus_per_trial,
                          gpus_per_trial=o.gpus_per_trial or 0, fold_workers=o.fold_workers, compile=o.compile, engine=o.engine)

    # --- stages -------------------------------------------------------------------------
    def search_rounds(self) -> list[dict]:
        studies = Studies(search_journal(self.search_dir), self.prefix, self.dataset, self.folds, self.space, self.opts)
        ctx = self.context(rounds_dir(self.out), self.fidelity[0] if self.fidelity else None)
        docs = []
        for r, size in enumerate(round_sizes(self.opts.trials, self.opts.round_size)):
            slices = studies.plan_round(r, size)
            done = self.execute(slices, ctx, f"{self.prefix}-r{r}")
            outcomes = {(t["fold"], t["number"]): (t["inner_f1"] if t["status"] == "ok" else None)
                        for d in done.values() for t in d["tasks"]}
            studies.tell_round(r, outcomes, {p: d.get("tune_trial") for p, d in done.items()})
            docs.extend(done[s.proposal] for s in slices)
            engines = sorted({t.get("engine", "?") for d in done.values() for t in d["tasks"]})
            print(f"{self.dataset}: round {r + 1}/{len(round_sizes(self.opts.trials, self.opts.round_size))} done "
                  f"({sum(t['status'] == 'ok' for d in docs for t in d['tasks'])} tasks; --engine {self.opts.engine} → "
                  f"{', '.join(engines)})", flush=True)
        self.study_names = list(studies.names.values())
        return docs

    def confirm(self, search_docs: list[dict]) -> tuple[list[dict], dict]:
        """--fidelity: per fold its own top --confirm-top by its own inner F1 (under either
        --selection: ranking a shared search's candidates by their mean over all folds would let
        subject k, an inner-validation subject of other folds, choose fold k's set), and the
        deployment configuration on every fold, re-run at the higher fidelity (not told to Optuna)."""
        cands = candidates_of(search_docs, self.index_of)
        tops = top_per_fold(cands, self.opts.confirm_top)
        deployment = deployment_choice(common_candidates(cands, self.folds))
        slices = [Slice(0, i, tuple(Task(f, tops[f][i].number, json.loads(tops[f][i].params_key), "confirm")
                                    for f in self.folds if len(tops.get(f, [])) > i))
                  for i in range(self.opts.confirm_top)]
        slices = [s for s in slices if s.tasks]
        if deployment is not None and len(self.folds) > 1:  # with one outer fold (a transfer) its choice is the deployed model
            number = min(c.number for c in cands if c.params_key == deployment)
            slices.append(Slice(0, len(slices), tuple(Task(f, number, json.loads(deployment), "deployment") for f in self.folds)))
        done = self.execute(slices, self.context(confirm_dir(self.out), self.fidelity[1]), f"{self.prefix}-confirm")
        docs = [done[s.proposal] for s in slices]
        low = {(c.fold, c.params_key): c.inner_f1 for c in cands}
        screening = {"fidelity": {"search": self.fidelity[0], "confirm": self.fidelity[1]},
                     "confirmed": [{"fold": t["fold"], "number": t["number"], "role": t["role"], "params": t["params"],
                                    "search_inner_f1": low.get((t["fold"], json.dumps(t["params"], sort_keys=True))),
                                    "confirm_inner_f1": t.get("inner_f1")} for d in docs for t in d["tasks"]]}
        return docs, screening

    # --- records ------------------------------------------------------------------------
    def record(self, stem: Path, cands: list[Candidate], selection: str, extra: dict) -> Path:
        hp = {c.fold: c.payload["task"]["hparams"] for c in cands}
        distinct = {json.dumps(h, sort_keys=True) for h in hp.values()}
        return write_run(stem, predictions_frame(self.data, [c.payload["output"] for c in cands], self.aus), method=self.space.method,
                         dataset=self.dataset, aus=self.aus,
                         hparams=next(iter(hp.values())) if len(distinct) == 1 else {"per_fold": {str(k): v for k, v in hp.items()}},
                         seed=self.opts.seed, selection=selection, cache_path=[c.path for c in self.caches.values()],
                         device=", ".join(sorted({c.payload["task"].get("device", "?") for c in cands})),
                         duration_s=self.tune_seconds, extra=extra)

    def common_extra(self, n_candidates: int) -> dict:
        o = self.opts
        return {"search": o.name, "space": self.space.name, "sampler": o.sampler, "search_engine": o.engine,
                "search_selection": o.selection, "n_trials": o.trials, "n_candidates": n_candidates, "fidelity": o.fidelity,
                "command": o.command, **o.preset_fields(self.space.method)}

    def final_jobs(self, label: str, hparams_by_fold: dict[int, dict], done_paths: list) -> list[FinalSeedsJob]:
        """One job re-running the per-fold choices with every final seed not yet recorded (a
        finished search rerun retrains nothing); the seeds train together on the batched engine."""
        seeds, stems = [], []
        for seed in self.opts.final_seed_list:
            stem = final_stem(self.out, label, seed)
            if stem.with_suffix(".json").exists():
                done_paths.append(stem.with_suffix(".json"))
            else:
                seeds.append(seed)
                stems.append(stem)
        if not seeds:
            return []
        return [FinalSeedsJob(self.space.method, self.dataset, self.roots, hparams_by_fold, tuple(seeds), tuple(stems), label,
                              self.results, self.opts.compile, self.engine, self.opts.reader,
                              {**self.common_extra(0), "seed_role": "final"})]

    def baseline_jobs(self, done_paths: dict) -> list[BaselineJob]:
        """Baselines under inner-validation selection with the final seeds (the search seed when
        there are none), one job per baseline; runs that already exist on the same data are reused.
        Their protocol: inner-validation selection with the search's metric and the default
        inner-validation share (a space's own share applies to the searched method)."""
        seeds = self.opts.final_seed_list or [self.opts.seed]
        protocol = Protocol(selection="inner", metric=self.opts.metric)
        jobs = []
        for name in self.opts.baselines:
            spec = get_method(name)
            hp = resolve_hparams(spec, {}, protocol)
            cid = config_id(name, self.dataset, hp, self.data.fingerprint, engine_label(self.baseline_engine, compile=self.opts.compile))
            missing = []
            for seed in seeds:
                path = run_stem(runs_dir(self.results), self.dataset, name, cid, seed).with_suffix(".json")
                if path.exists():
                    done_paths.setdefault(name, []).append(path)
                else:
                    missing.append(seed)
            if missing:
                jobs.append(BaselineJob(name, self.dataset, self.roots, protocol, tuple(missing), self.results, self.opts.compile,
                                        self.baseline_engine, self.opts.reader))
        return jobs

    def run(self, submit: Callable[[list[Job]], Callable[[], list[list[Path]]]]) -> Callable[[], dict]:
        """Search and select now; ``submit(jobs)`` starts the final-seed and baseline runs and
        returns a function that waits for their record paths, so the next dataset's search can
        run meanwhile. Returns the function that waits and builds this dataset's summary."""
        start = time.time()
        docs = self.search_rounds()
        screening = None
        search_cands = candidates_of(docs, self.index_of)
        if not search_cands:
            reasons = sorted({t.get("reason", "") for d in docs for t in d["tasks"] if t["status"] != "ok"})
            raise StageIncomplete(f"error: no search task finished on {self.dataset}; failures: {reasons[:3]}", 1)
        if self.fidelity:
            docs, screening = self.confirm(docs)
            fold_cands = candidates_of(docs, self.index_of, roles=("confirm",))
            all_cands = candidates_of(docs, self.index_of)
        else:
            fold_cands = all_cands = search_cands
        self.tune_seconds = time.time() - start
        failed = [{"fold": t["fold"], "number": t["number"], "params": t["params"], "reason": t.get("reason", "")}
                  for d in docs for t in d["tasks"] if t["status"] != "ok"]
        label = self.opts.selection_label
        choice = per_fold_choice(fold_cands)
        missing = [f for f in self.folds if f not in choice]
        if missing:
            raise StageIncomplete(f"error: every task of fold(s) {missing} failed on {self.dataset}: {failed[:3]}", 1)
        common = common_candidates(all_cands, self.folds)
        # with one outer fold (a transfer) its choice, made on the training subjects alone, is the deployment model
        deploy_key = deployment_choice(common) if len(self.folds) > 1 else None
        test_key = chosen_on_test_folds(common, lambda cs: pooled_f1(cs, self.data, self.opts.metric))
        chosen = {str(f): {"number": c.number, "params": json.loads(c.params_key), "inner_f1": c.inner_f1} for f, c in choice.items()}
        records = {label: self.record(search_record_stem(self.out, label), list(choice.values()), label,
                                      {**self.common_extra(len(fold_cands)), "seed_role": "search", "chosen": chosen})}
        if test_key:
            records["selected_on_test_folds"] = self.record(
                search_record_stem(self.out, "selected_on_test_folds"), common[test_key], "selected_on_test_folds",
                {**self.common_extra(len(common)), "seed_role": "search", "chosen": json.loads(test_key)})
        per_test_fold = chosen_per_test_fold(fold_cands, choice, lambda c: test_counts(c, self.data), self.opts.metric)
        records["selected_per_test_fold"] = self.record(
            search_record_stem(self.out, "selected_per_test_fold"), list(per_test_fold.values()), "selected_per_test_fold",
            {**self.common_extra(len(fold_cands)), "seed_role": "search",
             "chosen": {str(f): {"number": c.number, "params": json.loads(c.params_key)} for f, c in per_test_fold.items()}})
        final_done, base_done = [], {}
        jobs = self.final_jobs(label, {f: c.payload["task"]["hparams"] for f, c in choice.items()}, final_done)
        deploy_done = []
        if deploy_key:
            deploy_hp = common[deploy_key][0].payload["task"]["hparams"]
            jobs += self.final_jobs("deployment", {f: deploy_hp for f in self.folds}, deploy_done)
        jobs += self.baseline_jobs(base_done)
        print(f"{self.dataset}: final seeds and baselines started ({len(jobs)} jobs, run while the next dataset is searched)", flush=True)
        wait = submit(jobs)
        selection = Selection(label, records, choice, chosen, common, deploy_key, docs, fold_cands, failed, screening, jobs,
                              final_done, deploy_done, base_done)
        return lambda: self.summary(selection, wait())

    def summary(self, sel: Selection, paths: list[list[Path]]) -> dict:
        """This dataset's part of the search summary, once the jobs gave their record paths (in job order)."""
        label, choice, common, deploy_key, records = sel.label, sel.choice, sel.common, sel.deploy_key, sel.records
        finished = list(zip(sel.jobs, paths))
        finals = sel.final_done + [p for job, ps in finished if isinstance(job, FinalSeedsJob) and job.label == label for p in ps]
        deploys = sel.deploy_done + [p for job, ps in finished if isinstance(job, FinalSeedsJob) and job.label == "deployment" for p in ps]
        base_done = sel.base_done
        for job, ps in finished:
            if isinstance(job, BaselineJob):
                base_done.setdefault(job.method, []).extend(ps)
        docs, fold_cands, failed, chosen, screening = sel.docs, sel.fold_cands, sel.failed, sel.chosen, sel.screening
        f1 = {k: load_record(p)["f1_avg"] for k, p in records.items()}
        headline = load_record(records[label])
        final_f1 = [load_record(p)["f1_avg"] for p in sorted(finals)]
        deploy_f1 = [load_record(p)["f1_avg"] for p in sorted(deploys)]
        agree = sum(1 for c in choice.values() if c.params_key == deploy_key)
        return {
            "dataset": self.dataset, "protocol": self.evaluation.describe(), "interval": headline["interval"][headline["metric"]],
            "selection": label, "n_folds": len(self.folds), "tasks_finished": len(fold_cands),
            "tasks_failed": failed, "headline_f1": f1[label], "headline_ci": headline["f1"][headline["metric"]]["ci95"],
            "selected_on_test_folds_f1": f1.get("selected_on_test_folds"),
            "selected_per_test_fold_f1": f1["selected_per_test_fold"],
            "final_seeds": self.opts.final_seed_list, "final_seeds_f1": final_f1,
            "final_seeds_mean": float(np.mean(final_f1)) if final_f1 else None,
            "final_seeds_std": float(np.std(final_f1, ddof=1)) if len(final_f1) > 1 else None,
            "chosen": chosen, "n_common_candidates": len(common),
            "engines": sorted({t.get("engine", "?") for d in docs for t in d["tasks"]}),
            "deployment": {"params": json.loads(deploy_key) if deploy_key else None, "folds_agreeing": agree,
                           "seeds_f1": deploy_f1, "mean": float(np.mean(deploy_f1)) if deploy_f1 else None},
            "screening": screening, "studies": getattr(self, "study_names", []), "tune_s": self.tune_seconds,
            "records": {**{k: str(p) for k, p in records.items()}, "final": [str(p) for p in sorted(finals)],
                        "deployment": [str(p) for p in sorted(deploys)], "baselines": {k: [str(p) for p in v] for k, v in base_done.items()}},
            "outputs": {"rounds": str(rounds_dir(self.out)), "confirm": str(confirm_dir(self.out)) if self.fidelity else None},
        }
