"""Coverage of the subject-bootstrap interval (``suite.stats.bootstrap_interval``) where the suite
is used: simulated LOSO result tables in a CASME II-like and a SAMM-like regime.

A *population* is one simulated dataset: its subjects' per-AU confusion counts [S, K, 4], as
``suite.stats.subject_counts`` builds them from a predictions table. Per subject s and AU k:

* clips: the regime's per-subject clip counts (all of them at the regime's own subject count; a
  random subset without replacement at fewer subjects);
* AU occurrence clustered by subject: the subject's rate pi_sk ~ Beta(c p_k, c (1 - p_k)), mean
  the AU's prevalence p_k, concentration c = 2; each clip's label ~ Bernoulli(pi_sk);
* detection quality varying by subject: q_s = clip(q + N(0, sd), 0.05, 0.95) (q 0.6, sd 0.15);
  a clip's prediction is its label with probability q_s, else a fair coin.

The estimand is the **population pooled F1**: the pooled F1 over infinitely many subjects drawn
the same way (clip counts uniform over the regime's list), i.e. the F1 of the expected per-clip
confusion counts. Labels, quality and clip count are independent, so those expectations are exact
(``population_f1``); ``tests/test_stats.py`` checks them against 100,000 simulated subjects.

    python tests/simulate_regimes.py --populations 500           # the coverage table (docs/protocol.md)
    python tests/simulate_regimes.py --populations 500 --methods BCa studentised-logit
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from suite.metrics import F1_VARIANTS, f1_from_counts  # noqa: E402
from suite.stats import INTERVAL_METHOD, N_BOOTSTRAP, bootstrap_interval  # noqa: E402


@dataclass(frozen=True)
class Regime:
    name: str
    clips: tuple[int, ...]  # clips per subject
    positives: dict  # AU -> clips with the AU, of sum(clips)
    concentration: float = 2.0
    quality: float = 0.6
    quality_sd: float = 0.15

    @property
    def prevalence(self) -> np.ndarray:
        return np.array(list(self.positives.values()), float) / sum(self.clips)


# CASME II: 26 subjects, 255 clips, 2-36 per subject (one subject with 36; a list shaped like the
# release's, not copied from it); its 8 evaluated AUs with their counts of 255.
CASME2 = Regime("CASME II-like",
                (9, 13, 7, 5, 15, 5, 9, 3, 13, 14, 10, 12, 8, 4, 3, 4, 36, 3, 16, 14, 2, 2, 12, 12, 7, 17),
                {1: 26, 2: 21, 4: 129, 7: 38, 12: 34, 14: 27, 15: 16, 17: 25})
# SAMM: 29 subjects, 159 clips, 1-20 per subject; its 4 evaluated AUs (approximate counts of 159).
SAMM = Regime("SAMM-like",
              (6, 2, 20, 1, 7, 3, 1, 5, 3, 10, 6, 7, 4, 12, 5, 7, 3, 6, 6, 2, 1, 3, 3, 6, 9, 5, 11, 3, 2),
              {2: 24, 4: 23, 7: 45, 12: 24})
REGIMES = {"casme2": CASME2, "samm": SAMM}
assert len(CASME2.clips) == 26 and sum(CASME2.clips) == 255 and (min(CASME2.clips), max(CASME2.clips)) == (2, 36)
assert len(SAMM.clips) == 29 and sum(SAMM.clips) == 159 and (min(SAMM.clips), max(SAMM.clips)) == (1, 20)


def draw_population(rng: np.random.Generator, regime: Regime, n_subjects: int | None = None,
                    clips: np.ndarray | None = None) -> np.ndarray:
    """Per-subject confusion counts [S, K, 4] of one simulated dataset. ``clips`` overrides the
    clip counts (e.g. many subjects for the Monte Carlo check of ``population_f1``)."""
    if clips is None:
        all_clips = np.array(regime.clips)
        n = len(all_clips) if n_subjects is None else n_subjects
        clips = all_clips if n == len(all_clips) else rng.choice(all_clips, n, replace=False)
    clips = np.asarray(clips)
    p, c = regime.prevalence, regime.concentration
    s, k = len(clips), len(p)
    rate = rng.beta(c * p, c * (1 - p), (s, k))
    quality = np.clip(regime.quality + rng.normal(0, regime.quality_sd, s), 0.05, 0.95)
    subject = np.repeat(np.arange(s), clips)
    y = rng.random((len(subject), k)) < rate[subject]
    pred = np.where(rng.random(y.shape) < quality[subject, None], y, rng.random(y.shape) < 0.5)
    cell = np.select([y & pred, ~y & pred, y & ~pred], [0, 1, 2], 3)
    flat = (subject[:, None] * k + np.arange(k)) * 4 + cell
    return np.bincount(flat.ravel(), minlength=s * k * 4).reshape(s, k, 4)


def population_f1(regime: Regime, variant: str) -> float:
    """The estimand: pooled F1 over infinitely many subjects, from the expected per-clip counts."""
    a, b, mu, sd = 0.05, 0.95, regime.quality, regime.quality_sd
    lo, hi = (a - mu) / sd, (b - mu) / sd
    q = a * norm.cdf(lo) + b * norm.sf(hi) + mu * (norm.cdf(hi) - norm.cdf(lo)) + sd * (norm.pdf(lo) - norm.pdf(hi))  # E[q_s]
    p = regime.prevalence
    right = q + (1 - q) / 2  # P(prediction equals the label)
    expected = np.stack([p * right, (1 - p) * (1 - right), p * (1 - right), (1 - p) * right], -1)
    return float(f1_from_counts(expected, variant).mean())


def coverage(regime: Regime, n_subjects: int, methods=(INTERVAL_METHOD,), variants=F1_VARIANTS, populations: int = 500,
             seed: int = 0, n_resamples: int = N_BOOTSTRAP) -> dict:
    """Per (method, variant): share of ``populations`` whose interval covers the population
    pooled F1, misses below (interval under the truth) and above, mean width. Population j is
    drawn from ``default_rng([seed, n_subjects, j])``: every method sees the same datasets."""
    truth = {v: population_f1(regime, v) for v in variants}
    hits = {(m, v): [] for m in methods for v in variants}
    for j in range(populations):
        counts = draw_population(np.random.default_rng([seed, n_subjects, j]), regime, n_subjects)[None]
        for m in methods:
            for v in variants:
                lo, hi = bootstrap_interval(counts, v, n_resamples, seed=j, method=m)
                hits[m, v].append((lo <= truth[v] <= hi, hi < truth[v], lo > truth[v], hi - lo))
    out = {}
    for key, rows in hits.items():
        cov, under, over, width = np.array(rows, float).mean(0)
        out[key] = {"coverage": cov, "miss_low_interval": under, "miss_high_interval": over, "width": width,
                    "truth": truth[key[1]], "populations": populations}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--populations", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resamples", type=int, default=N_BOOTSTRAP)
    ap.add_argument("--methods", nargs="+", default=["BCa", "percentile-t", INTERVAL_METHOD])
    ap.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    ap.add_argument("--subjects", nargs="+", type=int, default=[26, 8], help="26 means the regime's own count (29 for SAMM)")
    args = ap.parse_args(argv)
    print(f"populations {args.populations}, seed {args.seed}, {args.resamples} resamples; "
          "coverage of the population pooled F1 (interval below truth / above truth), mean width")
    print("| regime | variant | subjects | method | coverage | below / above | width | truth |")
    print("|---|---|---|---|---|---|---|---|")
    for r in args.regimes:
        regime = REGIMES[r]
        for n in args.subjects:
            n = len(regime.clips) if n == 26 else n
            t0 = time.perf_counter()
            res = coverage(regime, n, args.methods, populations=args.populations, seed=args.seed, n_resamples=args.resamples)
            for v in F1_VARIANTS:
                for m in args.methods:
                    x = res[m, v]
                    print(f"| {regime.name} | {v} | {n} | {m} | {100 * x['coverage']:.1f} % | {100 * x['miss_low_interval']:.1f} / "
                          f"{100 * x['miss_high_interval']:.1f} % | {x['width']:.3f} | {x['truth']:.3f} |", flush=True)
            print(f"<!-- {regime.name}, {n} subjects: {time.perf_counter() - t0:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
