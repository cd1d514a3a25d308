"""The search's work outside its rounds, as typed jobs: a per-fold choice re-run with the final
seeds (``FinalSeedsJob``) and a baseline run with the same seeds (``BaselineJob``). A job is a
callable value: calling it trains (``suite.runs``) and returns its record paths, in this process
or in a Ray task (``tune_rounds.submit_to_ray``) — nothing is looked up by name."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..data.options import ReaderOptions
from ..protocol import Protocol


@dataclass(frozen=True)
class FinalSeedsJob:
    """Per-fold choices (``hparams_by_fold``: fold index → resolved hyper-parameters) of regime
    ``label`` re-run with ``seeds``, one record per seed at ``stems`` (``suite.runs.run_chosen``)."""

    method: str
    dataset: str  # the evaluation's key (suite.evaluation)
    data_root: dict  # release → its folder (None: the synthetic default)
    hparams_by_fold: dict
    seeds: tuple[int, ...]
    stems: tuple[Path, ...]
    label: str  # the records' regime: the search's per-fold choice label, or deployment
    results: Path | None
    compile: str | None = None
    engine: str = "auto"
    reader: ReaderOptions = ReaderOptions()
    extra: dict = field(default_factory=dict)

    @property
    def description(self) -> str:
        return f"{self.method} on {self.dataset}, {self.label} seeds"

    def __call__(self) -> list[Path]:
        from ..runs import run_chosen

        return run_chosen(self.method, self.dataset, self.data_root, self.hparams_by_fold, list(self.seeds), list(self.stems),
                          self.label, self.results, compile=self.compile, extra=self.extra, engine=self.engine, reader=self.reader)


@dataclass(frozen=True)
class BaselineJob:
    """Baseline ``method`` with its declared defaults under ``protocol`` (inner-validation
    selection, the search's metric) with ``seeds`` (``suite.runs.run``)."""

    method: str
    dataset: str  # the evaluation's key (suite.evaluation)
    data_root: dict  # release → its folder (None: the synthetic default)
    protocol: Protocol
    seeds: tuple[int, ...]
    results: Path | None
    compile: str | None = None
    engine: str = "auto"
    reader: ReaderOptions = ReaderOptions()

    @property
    def description(self) -> str:
        return f"{self.method} on {self.dataset}"

    def __call__(self) -> list[Path]:
        from ..runs import run

        return run(self.method, self.dataset, self.data_root, {}, list(self.seeds), results=self.results, log=None,
                   compile=self.compile, engine=self.engine, reader=self.reader, protocol=self.protocol)


Job = FinalSeedsJob | BaselineJob
