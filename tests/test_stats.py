"""Subject-level intervals and paired tests (suite.stats) on simulated LOSO populations."""
import numpy as np
import pytest

from suite.metrics import confusion_counts
from suite.stats import bootstrap_interval, holm, paired_test, pooled_f1


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


def test_interval_covers_the_population_f1_at_about_the_nominal_rate():
    rng = np.random.default_rng(0)
    truth = float(pooled_f1(_subjects(rng, 40_000, 0.6), "binary"))  # the population's pooled F1
    hits = [lo <= truth <= hi for lo, hi in (bootstrap_interval(_subjects(rng, 26, 0.6)[None], "binary", 1000) for _ in range(200))]
    assert 0.90 <= np.mean(hits) <= 0.98


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


def test_holm_matches_a_hand_count():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
