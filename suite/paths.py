"""Where generated files go. Everything lives under one results folder (``--results`` or
``$MICRO_AU_RESULTS``, default ``./results``), resolved to an absolute path once, because Ray
trials run in temporary working directories."""
from __future__ import annotations

import os
from pathlib import Path


def results_dir(override: str | os.PathLike | None = None) -> Path:
    return Path(override or os.environ.get("MICRO_AU_RESULTS", "results")).resolve()


def cache_dir(results: Path | None = None) -> Path:
    return (results or results_dir()) / "cache"


def token_cache_dir(results: Path | None = None) -> Path:
    """Frozen-encoder features shared across trials and seeds (``suite.token_cache``)."""
    return cache_dir(results) / "tokens"


def synthetic_dir(results: Path | None = None, seed: int = 0, scale: str = "small") -> Path:
    return (results or results_dir()) / "synthetic" / f"seed{seed}-{scale}"


def search_dir(results: Path | None, name: str) -> Path:
    """One search's folder: its journal, identity files, slice outputs, records and summary."""
    return (results or results_dir()) / "searches" / name
