"""Where generated files go: the one owner of the results folder's layout. Everything lives under
one results folder (``--results`` or ``$MICRO_AU_RESULTS``, default ``./results``), resolved to an
absolute path once, because Ray trials run in temporary working directories. Every module asks
here for a folder or file of the layout below; none spells it itself::

    <results>/
      cache/                       data caches (suite.data); cache/tokens/: frozen-encoder features
      synthetic/seed<k>-<scale>/   generated releases
      runs/<dataset>/<method>/<config id>/seed<k>.json (+ .parquet)    a fixed-configuration run (suite.train)
      searches/<name>/             one search (suite.search)
        optuna.journal, summary.json, summary.txt, data.json, engine.json
        <dataset>/
          rounds/, confirm/        slice outputs of the search and of a two-fidelity confirmation
                                   (file format: suite.search.slices)
          <label>.json (+ .parquet)                   the search's records, one per regime
          final/<label>/seed<k>.json (+ .parquet)     per-fold choices re-run with the final seeds
      leaderboard.html             suite.leaderboard

A record's path without its suffix is its *stem* (``suite.results.write_run`` adds ``.json`` and
the predictions' ``.parquet``)."""
from __future__ import annotations

import os
from pathlib import Path

RUNS, SEARCHES, FINAL, ROUNDS, CONFIRM = "runs", "searches", "final", "rounds", "confirm"
JOURNAL, SUMMARY, SUMMARY_TEXT = "optuna.journal", "summary.json", "summary.txt"
DATA_FINGERPRINTS, ENGINE = "data.json", "engine.json"


def results_dir(override: str | os.PathLike | None = None) -> Path:
    return Path(override or os.environ.get("MICRO_AU_RESULTS", "results")).resolve()


def cache_dir(results: Path | None = None) -> Path:
    return (results or results_dir()) / "cache"


def token_cache_dir(results: Path | None = None) -> Path:
    """Frozen-encoder features shared across trials and seeds (``suite.token_cache``)."""
    return cache_dir(results) / "tokens"


def synthetic_dir(results: Path | None = None, seed: int = 0, scale: str = "small") -> Path:
    return (results or results_dir()) / "synthetic" / f"seed{seed}-{scale}"


# --- runs outside a search (suite.train, a search's baselines) -----------------------------------
def runs_dir(results: Path | None = None) -> Path:
    return results_dir(results) / RUNS


def run_stem(runs: Path, dataset: str, method: str, config_id: str, seed: int) -> Path:
    """One seed's record of a fixed-configuration run, under ``runs`` (``runs_dir``, or a
    folder given with ``suite.train --out``)."""
    return Path(runs) / dataset / method / config_id / f"seed{seed}"


# --- searches ----------------------------------------------------------------------------------
def search_dir(results: Path | None, name: str) -> Path:
    """One search's folder: its journal, identity files, slice outputs, records and summary."""
    return (results or results_dir()) / SEARCHES / name


def search_journal(search: Path) -> Path:
    """The Optuna journal of every study of a search (``search``: its ``search_dir``)."""
    return Path(search) / JOURNAL


def search_summary(search: Path) -> Path:
    """A finished search's summary (``suite.search.run``), read by ``suite.train --from-search``,
    the leaderboard and the benchmarks."""
    return Path(search) / SUMMARY


def search_summary_text(search: Path) -> Path:
    """The same summary as text (what the command printed)."""
    return Path(search) / SUMMARY_TEXT


def search_data_file(search: Path) -> Path:
    """The data fingerprints a search was computed on (a resume on other data is refused)."""
    return Path(search) / DATA_FINGERPRINTS


def search_engine_file(search: Path) -> Path:
    """The engine and fold-protocol version a search's stored outputs were computed with."""
    return Path(search) / ENGINE


def search_dataset_dir(search: Path, dataset: str) -> Path:
    """One dataset's part of a search (``search``: its ``search_dir``): its slice folders and
    records. The functions below take this folder."""
    return Path(search) / dataset


def rounds_dir(part: Path) -> Path:
    """The slice outputs of a dataset's search rounds (``part``: ``search_dataset_dir``; the
    format: ``suite.search.slices``)."""
    return Path(part) / ROUNDS


def confirm_dir(part: Path) -> Path:
    """The slice outputs of a two-fidelity search's confirmation stage."""
    return Path(part) / CONFIRM


def all_rounds_dirs(search: Path) -> list[Path]:
    """Every dataset's rounds folder of a search (whether it has outputs at all)."""
    return sorted(Path(search).glob(f"*/{ROUNDS}"))


def search_record_stem(part: Path, label: str) -> Path:
    """A search's record of one regime (``label``) on one dataset, with the search seed."""
    return Path(part) / label


def final_stem(part: Path, label: str, seed: int) -> Path:
    """The per-fold choices of regime ``label`` re-run with final seed ``seed``."""
    return Path(part) / FINAL / label / f"seed{seed}"


# --- what the leaderboard reads ------------------------------------------------------------------
# Every record of the layout above, in the order the leaderboard reads them (each glob sorted).
RECORD_GLOBS = (f"{RUNS}/*/*/*/seed*.json", f"{SEARCHES}/*/*/*.json", f"{SEARCHES}/*/*/{FINAL}/*/seed*.json")


def record_paths(results: Path) -> list[Path]:
    """Every record file under ``results`` (runs, a search's records and its final seeds); a
    search's summary and anything under a ``trials`` folder are not records."""
    found = [p for pattern in RECORD_GLOBS for p in sorted(Path(results).glob(pattern))]
    return [p for p in found if p.name != SUMMARY and p.parent.name != "trials"]


def search_summaries(results: Path) -> list[Path]:
    """Every finished search's summary under ``results``, by search name."""
    return sorted(Path(results).glob(f"{SEARCHES}/*/{SUMMARY}"))
