"""The search summary as a person reads it (terminal and ``summary.txt``): percentages, what each
figure is, and whose labels chose it."""
from __future__ import annotations

from ..regimes import regime
from ..stats import interval_label

HEADLINE = " (headline)"  # on the row the page ranks: the final seeds' mean when there are final seeds


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:5.1f}"


def format_summary(summary: dict) -> str:
    lines = [f"search {summary['name']} — space {summary['space']}, method {summary['method']}, sampler {summary['sampler']} "
             f"(Optuna), {summary['trials']} configurations per fold study, {summary['wall_s']:.0f} s",
             f"F1: {summary.get('metric', 'binary')} F1 per AU on test predictions pooled over the outer folds "
             f"({'LOSO' if summary.get('protocol', 'loso') == 'loso' else summary['protocol']}), averaged over the evaluated AUs (%); "
             "[..]: subject-bootstrap interval, conditional on the chosen models (what it covered: per dataset below)"]
    width = 58
    for d in summary["datasets"]:
        lines.append(f"  {d['dataset']}: {d['n_folds']} folds, {d['tasks_finished']} fold tasks finished, {len(d['tasks_failed'])} failed "
                     f"({' + '.join(d.get('engines', []))} engine)")
        if d.get("protocol", {}).get("name", "loso") != "loso":
            p = d["protocol"]
            lines.append(f"    {p['spec']}: trained on {' + '.join(p['train'])}, tested on {' + '.join(p['test'])}, AUs {', '.join(p['aus'])} "
                         f"({p['aus_rule']}); every choice on {'the training release' if p['name'] == 'transfer' else 'inner-validation subjects'}")
        lines.append(f"    [..]: {d.get('interval') or interval_label(d['n_folds'], summary.get('metric', 'binary'), d['dataset'])}")
        if d.get("screening"):
            sc = d["screening"]
            n = sum(c["role"] == "confirm" for c in sc["confirmed"])
            lines.append(f"    screened with backbone {sc['fidelity']['search']}, confirmed {n} fold tasks with {sc['fidelity']['confirm']}")
        seeds = d["final_seeds_f1"]
        ci = d.get("headline_ci")
        label, ranked = regime(d["selection"]).terminal, regime(d["selection"]).ranked
        rows = [(f"{label}{HEADLINE if ranked and not seeds else ''}, search seed",
                 pct(d["headline_f1"]) + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""))]
        if seeds:
            spread = f" ± {100 * d['final_seeds_std']:.1f} (sd)" if d["final_seeds_std"] is not None else ""
            rows.append((f"{label}{HEADLINE if ranked else ''}, final seeds {d['final_seeds']} (mean)", pct(d["final_seeds_mean"]) + spread))
        rows.append(("selected on test folds, common candidates (optimistic)", pct(d["selected_on_test_folds_f1"])))
        if "selected_per_test_fold_f1" in d:
            among = "each fold's confirmed candidates" if d.get("screening") else "every proposal"
            rows.append((f"selected on test folds, {among} (optimistic)", pct(d["selected_per_test_fold_f1"])))
        dep = d["deployment"]
        if dep["params"] is not None and dep["seeds_f1"]:
            n = len(dep["seeds_f1"])
            rows.append((f"deployment configuration, {n} seed{'s' if n != 1 else ''} (optimistic)", pct(dep["mean"])))
        lines += [f"    {label:<{width}} {value}" for label, value in rows]
        if dep["params"] is not None:
            lines.append(f"    deployment configuration (chosen on all subjects): {fmt_params(dep['params'])}; "
                         f"{dep['folds_agreeing']} of {d['n_folds']} folds chose it")
        for fold, c in d["chosen"].items():
            lines.append(f"      fold {fold}: proposal {c['number']}, inner F1 {pct(c['inner_f1']).strip()}  {fmt_params(c['params'])}")
        for f in d["tasks_failed"][:5]:
            lines.append(f"    failed task fold {f['fold']} proposal {f['number']}: {f['reason']}")
    return "\n".join(lines)


def fmt_params(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
