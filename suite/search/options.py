"""A search's options, resolved once from the command line (or a test) into a frozen value that
every part of the search reads; pre-flight checks that fail before any work starts."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..data.options import ReaderOptions

SAMPLERS = ("tpe", "gp", "cmaes", "random")
DATA_INDEPENDENT_SAMPLERS = ("random",)
SELECTIONS = ("strict", "shared")
DEFAULT_BASELINES = ("constant", "prior", "clip_global")
MAX_FAILURES = 2  # Tune retries of a crashed slice (a process lost, not a failed configuration)


class SearchError(Exception):
    """A problem found before any work starts."""


@dataclass(frozen=True)
class SearchOptions:
    space: str
    datasets: tuple[str, ...] = ("casme2", "samm")  # the releases read (under loso: one evaluation each)
    protocol: str = "loso"  # suite.evaluation: loso | transfer:SRC->DST | composite:A+B[+C]
    data_root: str | None = None
    reader: ReaderOptions = ReaderOptions()  # how the releases are read (AU-string rules, frames, face boxes)
    # the default main job: 4 shared random start-up proposals (the common candidates), then 4 per
    # fold from each fold's own adapted sampler — past start-up, within 5 minutes on 2 CPU cores
    trials: int = 8  # configurations per fold study
    round_size: int = 4  # proposals each fold study is asked for per round
    startup_trials: int | None = 4  # the sampler's random start-up proposals (None: the sampler's own default)
    selection: str = "strict"
    sampler: str = "tpe"
    seed: int = 0
    final_seeds: int = 3
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    search_baselines: bool = False  # search each baseline's own space (search_spaces/<name>.yaml) like the main one
    fidelity: str | None = None
    confirm_top: int = 3
    concurrency: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None
    fold_workers: int = 1
    address: str | None = None
    name: str | None = None
    compile: str | None = None
    engine: str = "auto"  # auto | batched | sequential (suite.batched)
    metric: str = "binary"  # F1 variant of every choice and of the headline (suite.metrics.F1_VARIANTS)
    rerun: bool = False  # a finished search runs again (over its stored outputs) instead of printing its summary
    dry_run: bool = False  # pre-flight only: check space, data, caches and baselines, print the plan, run nothing
    preset: str | None = None  # a named configuration (suite.presets) under the space's own values
    results: Path | None = None
    command: str = ""

    def with_(self, **changes) -> "SearchOptions":
        return replace(self, **changes)

    def identity(self, space_text: str, roots: dict, fingerprints: dict) -> str:
        """A digest of what defines this search's numbers (not how it runs: concurrency,
        resources, address) — the engine asked for included (``engine_request``: the engines
        agree only within tolerance, docs/protocol.md), and the data's content fingerprints, so a
        corrected spreadsheet or frame is never answered with the summary of the data before (they
        also cover how the releases were read: AU-string rules, frames, face boxes): a finished
        search with the same identity is not run again."""
        import hashlib
        import json

        keys = ("datasets", "protocol", "trials", "round_size", "startup_trials", "selection", "sampler", "seed", "final_seeds", "baselines",
                "search_baselines", "fidelity", "confirm_top", "metric", "preset")
        from ..folds import PROTOCOL_VERSION

        blob = json.dumps({**{k: getattr(self, k) for k in keys}, "engine": self.engine_label, "protocol": PROTOCOL_VERSION, "space": space_text,
                           "roots": {d: str(r) for d, r in roots.items()}, "data": fingerprints}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def evaluations(self) -> list:
        """The evaluations this search runs (``suite.evaluation.parse_protocol``), one study set each."""
        from ..evaluation import parse_protocol

        return parse_protocol(self.protocol, self.datasets)

    @property
    def engine_asked(self) -> str:
        """The engine every stage asks for, once --fold-workers and --compile are taken into account (``suite.folds.engine_request``)."""
        from ..folds import engine_request

        return engine_request(self.engine, self.fold_workers, self.compile)[0]

    @property
    def engine_label(self) -> str:
        """How the search's numbers are computed, as its identity carries it (``suite.folds.engine_label``)."""
        from ..folds import engine_label

        return engine_label(self.engine, self.fold_workers, self.compile)

    def preset_overrides(self, method: str) -> dict:
        from ..presets import preset_overrides

        return preset_overrides(self.preset, method)[0]

    def preset_fields(self, method: str) -> dict:
        from ..presets import preset_overrides

        return preset_overrides(self.preset, method)[1]

    @property
    def final_seed_list(self) -> list[int]:
        """Final seeds differ from the search seed: seed+1 … seed+n."""
        return [self.seed + 1 + i for i in range(self.final_seeds)]

    @property
    def selection_label(self) -> str:
        """The record label of the per-fold choice this search makes."""
        if self.selection == "strict":
            return "strict_nested"
        return "shared_nested_data_independent" if self.sampler in DATA_INDEPENDENT_SAMPLERS else "shared_nested"


def token_auth_environment(address: str | None) -> None:
    """Ray's authentication mode for this process and every Ray process it starts, failing closed.
    It must be set before Ray is imported (Ray reads it into its configuration then), so the
    command line calls this first. Joining a cluster (``address``) requires its token. A local
    cluster uses Ray's own default (since 2.59): token authentication with ``~/.ray/auth_token``,
    which Ray generates on first use — but only when the mode is not set explicitly, so an explicit
    ``token`` without any token is left to that default. ``disabled`` is refused."""
    import os

    mode = os.environ.get("RAY_AUTH_MODE", "").lower()
    if mode == "disabled":
        raise SearchError("Ray's auth mode in this environment turns authentication off: refusing to run Ray without token "
                          "authentication (anyone who can reach its ports could run code here); unset it. Clusters: run "
                          "`ray get-auth-token --generate` before `ray up`")
    token = os.environ.get("RAY_AUTH_TOKEN") or os.path.exists(os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token"))
    if address or token:
        os.environ["RAY_AUTH_MODE"] = "token"
    elif mode == "token":
        del os.environ["RAY_AUTH_MODE"]


def parse_fidelity(value: str | None, space, confirm_top: int, trials: int) -> tuple[str, str] | None:
    """``LOW:HIGH`` backbone modes (e.g. ``frozen:full``) → (low, high), checked against the space."""
    from ..models.clip_backbone import BACKBONE_MODES
    from ..registry import get_method

    if not value:
        return None
    modes = value.split(":")
    if len(modes) != 2 or not all(m in BACKBONE_MODES for m in modes) or modes[0] == modes[1]:
        raise SearchError(f"--fidelity {value!r}: expected LOW:HIGH, two different backbone modes of {BACKBONE_MODES}, e.g. frozen:full")
    if "backbone_mode" not in get_method(space.method).defaults:
        raise SearchError(f"--fidelity: method {space.method!r} has no backbone_mode to vary")
    if "backbone_mode" in space.fixed or any(p.name == "backbone_mode" for p in space.params):
        raise SearchError(f"--fidelity: space {space.name!r} already sets backbone_mode; remove it or drop --fidelity")
    if not 1 <= confirm_top <= trials:
        raise SearchError(f"--confirm-top {confirm_top}: must be between 1 and --trials ({trials})")
    return modes[0], modes[1]


def check_counts(opts: SearchOptions) -> None:
    if opts.trials < 1:
        raise SearchError("--trials must be at least 1")
    if opts.round_size < 1:
        raise SearchError("--round-size must be at least 1")
    if opts.fold_workers < 1:
        raise SearchError("--fold-workers must be at least 1")
    if opts.startup_trials is not None and opts.startup_trials < 0:
        raise SearchError("--startup-trials must be 0 or more")
    if opts.selection not in SELECTIONS:
        raise SearchError(f"--selection {opts.selection!r}: choose one of {SELECTIONS}")
    from ..folds import EngineChoiceError, engine_request

    try:
        engine_request(opts.engine, opts.fold_workers, opts.compile)
    except EngineChoiceError as e:
        raise SearchError(str(e)) from None
    from .studies import check_sampler

    check_sampler(opts.sampler)  # unknown, or one whose state would not survive a resume: refused with the reason
