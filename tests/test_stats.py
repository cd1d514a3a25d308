"""Subject-level intervals and paired tests (suite.stats) on simulated LOSO populations; the
CASME II-like and SAMM-like regimes are in ``tests/simulate_regimes.py``."""
import numpy as np
import pytest

from suite.metrics import confusion_counts
from suite.stats import (INTERVAL_METHOD, INTERVAL_METHOD_NAME, MIN_RELIABLE_SUBJECTS, SIMULATED_COVERAGE, TOO_FEW_SUBJECTS,
                         bootstrap_interval, holm, interval_label, interval_reliable, paired_test, pooled_f1)

from simulate_regimes import CASME2, REGIMES, SAMM, coverage, draw_population, population_f1


def _labels(rng, n, prevalence=0.3, k=2):
    """n subjects' labels: 3–15 clips each."""
    return [rng.random((rng.integers(3, 16), k)) < prevalence for _ in range(n)]


def _predict(rng, labels, quality):
    """counts [n, K, 4]: each subject its own detection quality around ``quality`` (heterogeneity)."""
    out = []
    for y in labels:
        q = np.clip(quality + rng.normal(0, 0.15), 0.05, 0.95)
        out.append(confusion_counts(y, np.where(rng.random(y.shape) < q, y, rng.random(y.shape) < 0.5)))
    return np.stack(out)


def _subjects(rng, n, quality):
    return _predict(rng, _labels(rng, n), quality)


def test_interval_covers_the_population_f1_in_an_easy_regime_without_being_vacuous():
    """2 AUs at prevalence 0.3, 3–15 clips, no clustering: the calibrated interval over-covers a
    little here (it is calibrated on the harder CASME II-like regime) but is not trivially wide."""
    rng = np.random.default_rng(0)
    truth = float(pooled_f1(_subjects(rng, 40_000, 0.6), "binary"))  # the population's pooled F1
    hits = [lo <= truth <= hi for lo, hi in (bootstrap_interval(_subjects(rng, 26, 0.6)[None], "binary", 1000) for _ in range(100))]
    assert 0.93 <= np.mean(hits) <= 1.0
    lo, hi = bootstrap_interval(_subjects(rng, 26, 0.6)[None], "binary")
    assert hi - lo < 0.3


@pytest.mark.parametrize("regime", [CASME2, SAMM], ids=["casme2", "samm"])
def test_population_f1_is_the_pooled_f1_of_very_many_subjects(regime):
    """The estimand, from expected per-clip counts, against 100,000 simulated subjects."""
    counts = draw_population(np.random.default_rng(7), regime, clips=np.tile(regime.clips, 100_000 // len(regime.clips)))
    for variant in ("binary", "macro"):
        assert float(pooled_f1(counts, variant)) == pytest.approx(population_f1(regime, variant), abs=0.003)


def test_simulated_regimes_have_the_datasets_shapes():
    assert (len(CASME2.clips), sum(CASME2.clips), max(CASME2.clips), list(CASME2.positives)) == (26, 255, 36, [1, 2, 4, 7, 12, 14, 15, 17])
    assert (len(SAMM.clips), sum(SAMM.clips), min(SAMM.clips), max(SAMM.clips), len(SAMM.positives)) == (29, 159, 1, 20, 4)
    counts = draw_population(np.random.default_rng(0), CASME2, 8)
    assert counts.shape == (8, 8, 4) and set(counts.sum((1, 2)) // 8) <= set(CASME2.clips)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["casme2", "samm"])
def test_interval_covers_the_population_f1_in_the_dataset_like_regimes(name):
    """At the dataset's own subject count (26 / 29), both F1 variants: coverage ≥ 93 % over 300
    simulated datasets (1,000 resamples; seed 1, not the table's seed 0). Here it gives 95.0–95.7 %,
    the full run (docs/protocol.md, 500 populations, 2,000 resamples) 95.2–97.2 %; the binomial
    standard error of 300 populations at 95.5 % is 1.2 points, so 93 % sits two of them below, and
    scipy's former BCa interval fails it on these datasets (86.7–89.7 %)."""
    regime = REGIMES[name]
    res = coverage(regime, len(regime.clips), (INTERVAL_METHOD,), populations=300, seed=1, n_resamples=1000)
    for variant in ("binary", "macro"):
        assert res[INTERVAL_METHOD, variant]["coverage"] >= 0.93, (variant, res[INTERVAL_METHOD, variant])


def test_interval_labels_name_the_method_and_its_measured_coverage():
    for (regime, variant, n), cov in SIMULATED_COVERAGE.items():
        if n >= MIN_RELIABLE_SUBJECTS:
            assert cov >= 0.93
    label = interval_label(26)
    assert label.startswith("95 % subject-bootstrap interval") and INTERVAL_METHOD_NAME in label
    assert f"covered {100 * SIMULATED_COVERAGE['casme2', 'binary', 26]:.0f} %" in label and "CASME II-like" in label
    assert "SAMM-like simulation with 29 subjects" in interval_label(29, "macro", "samm")
    assert interval_reliable(MIN_RELIABLE_SUBJECTS) and not interval_reliable(MIN_RELIABLE_SUBJECTS - 1)
    few = interval_label(8)
    assert few.startswith(TOO_FEW_SUBJECTS) and "95 % subject" not in few
    assert f"covered {100 * SIMULATED_COVERAGE['casme2', 'binary', 8]:.0f} % with 8 subjects" in few and "(8 subjects;" in few


def test_interval_is_sane_on_tiny_and_degenerate_inputs():
    rng = np.random.default_rng(4)
    two = _subjects(rng, 2, 0.6)[None]
    lo, hi = bootstrap_interval(two, "binary", 200)
    assert 0 <= lo <= float(pooled_f1(two, "binary").mean()) <= hi <= 1
    same = np.repeat(_subjects(rng, 1, 0.6), 10, 0)[None]  # ten identical subjects: nothing moves
    value = float(pooled_f1(same, "binary").mean())
    assert bootstrap_interval(same, "binary", 200) == (value, value)
    runs = np.stack([_subjects(np.random.default_rng(s), 20, 0.6) for s in range(3)])  # three seeds, the same subjects' shapes
    lo, hi = bootstrap_interval(runs, "macro", 500)
    assert 0 <= lo <= float(pooled_f1(runs, "macro").mean()) <= hi <= 1
    with pytest.raises(ValueError):
        bootstrap_interval(runs, "macro", method="nope")


def test_interval_is_wider_with_fewer_subjects_and_reproducible():
    rng = np.random.default_rng(1)
    many = _subjects(rng, 26, 0.6)[None]
    width = lambda c: np.subtract(*bootstrap_interval(c, "binary")[::-1])
    assert width(many[:, :8]) > width(many)
    assert bootstrap_interval(many, "macro", seed=3) == bootstrap_interval(many, "macro", seed=3)
    lo, hi = bootstrap_interval(many, "macro")
    assert lo <= float(pooled_f1(many, "macro").mean()) <= hi


def test_paired_test_finds_a_planted_difference_and_not_an_absent_one():
    """Two methods predicting the same subjects' labels: a planted quality gap is found in nearly
    every population; with equal quality, rejections stay near the 5 % level."""
    planted, null = [], []
    for s in range(40):
        rng = np.random.default_rng(s)
        labels = _labels(rng, 26)
        good, bad, equal = _predict(rng, labels, 0.8), _predict(rng, labels, 0.3), _predict(rng, labels, 0.8)
        planted.append(paired_test(good[None], bad[None], "binary", 999)["p"])
        null.append(paired_test(good[None], equal[None], "binary", 999)["p"])
    assert np.mean(np.array(planted) < 0.05) >= 0.9
    assert np.mean(np.array(null) < 0.05) <= 0.125
    assert paired_test(good[None], good[None], "binary", 99) == {"difference": 0.0, "p": 1.0}


def test_paired_difference_is_the_difference_of_the_displayed_cells():
    """Three seeds of different quality against one seed (and against three): the test's
    difference is the cells' difference — the mean over seeds of each seed's pooled F1, computed
    here from per-clip predictions with ``suite.metrics`` — not the F1 of seed-averaged counts."""
    from suite.metrics import f1_per_au

    rng = np.random.default_rng(5)
    labels = _labels(rng, 12, prevalence=0.2, k=3)
    truth = np.concatenate(labels)

    def seed_run(quality):
        preds = [np.where(rng.random(y.shape) < quality, y, rng.random(y.shape) < 0.5) for y in labels]
        return np.stack([confusion_counts(y, p) for y, p in zip(labels, preds)]), np.concatenate(preds)

    a_runs = [seed_run(q) for q in (0.95, 0.5, 0.15)]
    for b_qualities in ((0.6,), (0.7, 0.4, 0.3)):
        b_runs = [seed_run(q) for q in b_qualities]
        for variant in ("binary", "macro"):
            cell = lambda runs: np.mean([f1_per_au(truth, pred, variant).mean() for _, pred in runs])
            a, b = np.stack([c for c, _ in a_runs]), np.stack([c for c, _ in b_runs])
            got = paired_test(a, b, variant, 199)
            assert got["difference"] == pytest.approx(cell(a_runs) - cell(b_runs), abs=1e-12)
            averaged = float(pooled_f1(a.mean(0), variant) - pooled_f1(b.mean(0), variant))
            assert abs(got["difference"] - averaged) > 1e-3  # the former statistic differs on this fixture
            assert 0 < got["p"] <= 1


def test_holm_matches_a_hand_count():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
