"""The leaderboard's figures: matplotlib/seaborn PNGs, returned base64-encoded for embedding (no
network, no CDN) — per-AU heatmaps of a table's rows, a search's per-fold progress, and Optuna's
plots of a shared study."""
from __future__ import annotations

import base64
import io
import warnings
from pathlib import Path

import numpy as np

from ..aus import DATASET_AUS
from ..regimes import title
from .records import DATASET_NAMES
from .table import Row


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def heatmap(rows: list[Row], dataset: str, variant: str) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    aus = [f"AU{a}" for a in DATASET_AUS[dataset]]
    data = {}
    for r in rows:
        recs = [x for x in r.records if x["dataset"] == dataset]
        if recs:
            name = f"{r.method} [{title(r.selection)}, {r.config}]"
            data[name] = [100 * np.mean([x["f1"][variant]["per_au"].get(a, np.nan) if "f1" in x else
                                         (x["per_au_f1"].get(a, np.nan) if variant == "binary" else np.nan) for x in recs]) for a in aus]
    if not data:
        return None
    frame = pd.DataFrame(data, index=aus).T
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(aus), 0.8 + 0.38 * len(frame)))
    sns.heatmap(frame, annot=True, fmt=".0f", cmap="viridis", vmin=0, vmax=100, cbar_kws={"label": f"{variant} F1 (%)"}, ax=ax)
    ax.set_title(f"Per-AU {variant} F1, {DATASET_NAMES[dataset]}")
    return _png(fig)


def fold_progress(docs: list[dict], selection: str, dataset_name: str) -> str | None:
    """Inner-validation F1 (%) of every proposal, one line per fold study (integer proposal ticks)."""
    rows = [{"proposal": t["number"], "fold": t["fold"], "inner F1 (%)": 100 * t["inner_f1"]}
            for d in docs for t in d["tasks"] if t["status"] == "ok"]
    if len({r["proposal"] for r in rows}) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    frame = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    sns.lineplot(frame, x="proposal", y="inner F1 (%)", hue="fold", palette="viridis", marker="o", ax=ax, legend=False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 100)
    study = "one study per fold" if selection == "strict_nested" else "one shared study"
    ax.set_title(f"{dataset_name}: inner-validation F1 of each proposal, one line per fold ({study})", fontsize=9)
    return _png(fig)


def optuna_plots(journal: Path) -> list[dict]:
    if not journal.exists():
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from matplotlib.ticker import MaxNLocator
    from optuna.visualization import matplotlib as ovm

    from ..search.studies import journal_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = journal_storage(journal)
    plots = []
    # no custom ``target``: with one, Optuna drops the best-value line, reverses the colour scale and (its
    # default PED-ANOVA evaluator) ranks parameters by how they reach *low* values — low F1 here
    label = {"target_name": "inner-validation F1 (0–1)"}
    for name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        for title, fn, need, size in (("optimization history", ovm.plot_optimization_history, 1, (6.5, 3.6)),
                                      ("parallel coordinates", ovm.plot_parallel_coordinate, 2, (9.0, 4.5)),
                                      ("parameter importances", ovm.plot_param_importances, 2, (6.5, 3.6))):
            if len(complete) < need:
                continue
            try:
                ax = fn(study, **label)
            except (ValueError, RuntimeError, ZeroDivisionError) as e:  # e.g. importances with one distinct value
                plots.append({"study": name, "title": title, "png": None, "note": str(e)[:200]})
                continue
            axes = np.ravel(ax)
            if title == "optimization history":
                axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers
            fig = ax if hasattr(ax, "savefig") else axes[0].figure
            fig.set_size_inches(*size)
            note = (f"rests on {len(complete)} trials: too few for importances to mean much (read them from ~10 trials on)"
                    if title == "parameter importances" and len(complete) < 10 else None)
            plots.append({"study": name, "title": title, "png": _png(fig), "note": note})
            plt.close("all")
    return plots
