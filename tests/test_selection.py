"""Selection without leakage: the cross-fitted inner objective (scored once on the pooled
out-of-half predictions), tie rules, and seeded simulations: the bias of every regime with the
suite's own folds (no true differences between configurations), and CASME II-like halves without
an AU's positives under macro F1 (``simulate_inner``)."""
import numpy as np
import pytest

from suite.metrics import f1_per_au
from suite.protocol import loso_folds
from suite.selection import (THRESHOLD_GRID, Candidate, choose_thresholds, common_candidates, crossfit_inner_f1,
                             deployment_choice, halves, per_fold_choice, pick, chosen_on_test_folds, top_per_fold)
from simulate_inner import simulate


def test_threshold_ties_take_the_middle_of_the_tied_range():
    y = np.array([[1], [0], [1], [0]])
    prob = np.array([[0.9], [0.1], [0.8], [0.2]])  # every threshold in (0.2, 0.8] separates perfectly
    tied = [t for t in THRESHOLD_GRID if 0.2 < t <= 0.8]
    assert choose_thresholds(y, prob)[0] == tied[len(tied) // 2]
    assert choose_thresholds(np.zeros((4, 1)), prob)[0] == 0.5  # no positives: nothing to choose on


def test_crossfit_does_not_score_a_model_without_signal_on_the_predictions_that_tuned_it():
    """A model with no signal: choosing thresholds and epochs on the same predictions they are
    scored on inflates the inner F1; cross-fitting over subjects scores it like fresh clips."""
    rng = np.random.default_rng(0)
    in_sample, crossfit, fresh = [], [], []
    for _ in range(40):
        n, k, e = 40, 4, 5
        y = (rng.random((n, k)) < 0.3).astype(int)
        probs = rng.random((e, n, k))
        subjects = np.repeat(np.arange(4), n // 4)
        pos = int(np.argmax([f1_per_au(y, p >= 0.5).mean() for p in probs]))
        thr = choose_thresholds(y, probs[pos])
        in_sample.append(f1_per_au(y, probs[pos] >= thr).mean())
        crossfit.append(crossfit_inner_f1(y, probs, subjects))
        y_new, p_new = (rng.random((n, k)) < 0.3).astype(int), rng.random((n, k))
        fresh.append(f1_per_au(y_new, p_new >= thr).mean())
    assert np.mean(in_sample) > np.mean(fresh) + 0.05
    assert abs(np.mean(crossfit) - np.mean(fresh)) < 0.04


def test_crossfit_with_one_subject_chooses_nothing():
    y = np.array([[1, 0], [0, 1], [1, 1]])
    probs = np.array([[[0.6, 0.4], [0.3, 0.7], [0.8, 0.2]], [[0.9, 0.1], [0.1, 0.9], [0.7, 0.6]]])
    assert crossfit_inner_f1(y, probs, np.array(["s1"] * 3)) == pytest.approx(f1_per_au(y, probs[-1] >= 0.5).mean())


def test_crossfit_scores_the_pooled_out_of_half_predictions_once():
    """The inner F1 is f1_per_au, on the known labels, of all inner-validation samples, each half
    predicted with the epoch and thresholds chosen on the other half — not a mean over halves."""
    rng = np.random.default_rng(1)
    n, k, e = 45, 4, 3
    subjects = np.array([f"s{i}" for i in rng.integers(0, 5, n)])
    y = (rng.random((n, k)) < 0.25).astype(int)
    probs = np.clip(0.35 * y[None] + 0.65 * rng.random((e, n, k)), 0, 1)
    known = rng.random((n, k)) < 0.9
    a, b = halves(subjects)
    for variant in ("binary", "macro"):
        ea, ta = pick(y[a], probs[:, a], variant, known[a])  # chosen on a, predicts b
        eb, tb = pick(y[b], probs[:, b], variant, known[b])  # chosen on b, predicts a
        order = np.concatenate([a, b])
        pred = np.concatenate([probs[eb][a] >= tb, probs[ea][b] >= ta])
        pooled = f1_per_au(y[order], pred, variant, known[order]).mean()
        assert crossfit_inner_f1(y, probs, subjects, variant, known) == pytest.approx(pooled, abs=1e-12)


def test_macro_no_longer_rewards_silence_on_an_au_absent_from_one_half():
    """The issue's case: a rare AU with its one positive in half a (subjects s0, s2, s4; 10 clips)
    and none in half b (s1, s3, s5; 5 clips). A detecting model finds the positive and makes one
    false positive in b; a silent model never predicts the AU. Scored per half and averaged (the
    old objective), b alone gives the silent model macro F1 1.0 and the detector 0.44 (one false
    positive among 5 clips), and silence wins; scored once on the pooled out-of-half predictions,
    the detector wins, as it does under the pooled macro headline."""
    subjects = np.array(["s0"] * 4 + ["s2"] * 3 + ["s4"] * 3 + ["s1"] * 2 + ["s3"] * 2 + ["s5"])
    a, b = halves(subjects)
    assert list(a) == list(range(10)) and list(b) == list(range(10, 15))
    common = np.array([1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0])  # an AU both models detect alike
    rare = np.zeros(15, int)
    rare[0] = 1
    y = np.stack([common, rare], 1)
    p_common = np.where(common == 1, 0.8, 0.2)
    p_common[[2, 11]] = 0.7  # one false positive per half
    p_detect = np.full(15, 0.1)
    p_detect[0], p_detect[10] = 0.9, 0.6  # the positive, and a false positive in half b
    detecting = np.stack([p_common, p_detect], 1)[None]  # one epoch
    silent = np.stack([p_common, np.zeros(15)], 1)[None]

    def old_objective(probs):  # the definition before: each half scored alone, averaged
        scores = []
        for choose_on, score_on in ((a, b), (b, a)):
            e, thr = pick(y[choose_on], probs[:, choose_on], "macro")
            scores.append(f1_per_au(y[score_on], probs[e][score_on] >= thr, "macro").mean())
        return np.mean(scores), scores

    (old_silent, (silent_on_b, silent_on_a)), (old_detect, (detect_on_b, detect_on_a)) = old_objective(silent), old_objective(detecting)
    rare_on = lambda pred, rows: f1_per_au(y[rows, 1:], pred[rows, None], "macro")[0]  # noqa: E731
    assert rare_on(np.zeros(15, bool), b) == 1.0  # silence on a half without positives: a perfect macro F1
    assert rare_on(p_detect >= 0.55, b) == pytest.approx(4 / 9)  # one false positive among 5 clips: 0.44
    assert silent_on_a < detect_on_a and silent_on_b > detect_on_b
    assert old_silent > old_detect  # the bug: silence won
    new_silent, new_detect = crossfit_inner_f1(y, silent, subjects, "macro"), crossfit_inner_f1(y, detecting, subjects, "macro")
    assert new_detect > new_silent + 0.1  # per rare AU: 0.815 (tp 1, fp 1, tn 13) vs 0.483 (fn 1, tn 14)
    assert (new_detect - new_silent) * 2 == pytest.approx((2 / 3 + 26 / 27) / 2 - (0 + 28 / 29) / 2)
    # binary F1 agrees on the direction (it never rewarded silence)
    assert crossfit_inner_f1(y, detecting, subjects) > crossfit_inner_f1(y, silent, subjects)


def test_simulated_casme2_halves_without_positives_no_longer_reward_silence():
    """CASME II-like inner validation (6 subjects, 2–36 clips each, subject-specific AUs; see
    ``tests/simulate_inner.py``): halves often hold no positive of a rare AU; the old per-half
    objective then often ranks a silent model above a detecting one under macro F1, the pooled
    objective rarely, and its gap tracks the pooled test-subject reference."""
    res = simulate(reps=100, seed=0)
    rare = [au for au in res if au != "AU4"]
    assert min(res[au]["half_lacks_positives"] for au in rare) > 0.05
    assert res["AU15"]["half_lacks_positives"] > 0.3
    mean = lambda key: np.mean([res[au][key] for au in rare])  # noqa: E731
    assert mean("silent_wins_old") > 2 * mean("silent_wins_new") + 0.1
    assert mean("gap_new") > mean("gap_old") + 0.05
    assert abs(mean("gap_new") - mean("gap_reference")) < abs(mean("gap_old") - mean("gap_reference"))


def test_per_fold_ties_break_by_proposal_number_not_input_order():
    a, b = Candidate(0, 3, "a", 0.5), Candidate(0, 1, "b", 0.5)
    assert per_fold_choice([a, b])[0] is b and per_fold_choice([b, a])[0] is b
    assert top_per_fold([a, b, Candidate(0, 2, "c", 0.6)], 2)[0] == [Candidate(0, 2, "c", 0.6), b]


def _simulate(n_configs=20, n_subjects=26, reps=300, seed=0):
    """Per config c and subject s a score e[c, s] ~ N(0, 1), the same distribution for every
    config (no true differences). Inner score of c on fold k: mean of e over fold k's
    inner-validation subjects; test score: e[c, k]. Returns each regime's estimate (σ units)."""
    folds = loso_folds(np.arange(n_subjects), 0.25, 0)
    rng = np.random.default_rng(seed)
    out = {"strict": [], "test_folds": [], "deployment": [], "shared_top3": []}
    for _ in range(reps):
        e = rng.standard_normal((n_configs, n_subjects))
        inner = np.array([[e[c, f.inner_val].mean() for f in folds] for c in range(n_configs)])
        cands = [Candidate(k, c, str(c), float(inner[c, k]), e[c, k]) for c in range(n_configs) for k in range(n_subjects)]
        choice = per_fold_choice(cands)
        out["strict"].append(np.mean([choice[k].payload for k in range(n_subjects)]))
        common = common_candidates(cands, list(range(n_subjects)))
        test_key = chosen_on_test_folds(common, lambda cs: np.mean([c.payload for c in cs]))
        out["test_folds"].append(np.mean([c.payload for c in common[test_key]]))
        out["deployment"].append(np.mean([c.payload for c in common[deployment_choice(common)]]))
        # the shared route: an adaptive step keeps the top 3 by all-fold inner mean, then per-fold picks
        top3 = sorted(common, key=lambda k: -np.mean([c.inner_f1 for c in common[k]]))[:3]
        shared = per_fold_choice(c for k in top3 for c in common[k])
        out["shared_top3"].append(np.mean([shared[k].payload for k in range(n_subjects)]))
    return {k: (float(np.mean(v)), float(np.std(v) / np.sqrt(len(v)))) for k, v in out.items()}


def test_simulated_bias_strict_is_unbiased_and_the_others_are_not():
    est = _simulate()
    mean, se = est["strict"]
    assert abs(mean) < 3 * se + 0.01  # unbiased within its standard error
    assert est["test_folds"][0] > 0.25  # choosing on test subjects: strongly optimistic
    assert est["deployment"][0] > 0.15  # chosen on every subject's inner scores
    assert est["shared_top3"][0] > mean + 0.1  # candidates shaped by the test subject


def test_selection_on_test_folds_over_every_proposal_is_a_local_optimum_of_the_pooled_test_f1():
    """6 folds × 5 proposals with random test counts: the per-fold choice on test folds scores at
    least the strictly nested start and the best common configuration, no single fold can improve
    it, and the input order of the candidates does not change it."""
    from suite.metrics import f1_from_counts
    from suite.selection import chosen_per_test_fold

    rng = np.random.default_rng(3)
    counts = {(f, n): rng.integers(0, 6, (3, 4)) for f in range(6) for n in range(5)}
    cands = [Candidate(f, n, f'{{"p": {n}}}', float(rng.random())) for f, n in counts]
    pooled = lambda choice: float(f1_from_counts(sum(counts[c.fold, c.number] for c in choice.values()), "binary").mean())
    start = per_fold_choice(cands)
    got = chosen_per_test_fold(cands, start, lambda c: counts[c.fold, c.number], "binary")
    assert sorted(got) == list(range(6)) and all(c.fold == f for f, c in got.items())
    assert pooled(got) >= pooled(start)
    best_common = max(pooled({f: c for f, c in zip(range(6), cs)}) for cs in common_candidates(cands, range(6)).values())
    assert pooled(got) >= best_common - 1e-12
    for f in range(6):
        for c in (c for c in cands if c.fold == f):
            assert pooled({**got, f: c}) <= pooled(got) + 1e-12
    assert chosen_per_test_fold(cands[::-1], start, lambda c: counts[c.fold, c.number], "binary") == got


def test_an_au_without_any_inner_positive_is_not_scored():
    """No inner-validation subject shows AU k: under macro F1 a model silent on it would score 1.0
    and a detector with one false positive less — the AU is left out, so only the AUs with
    positives rank the two, and with none the score is a constant."""
    subjects = np.repeat(np.arange(4), 5)
    y = np.zeros((20, 2), int)
    y[[0, 6, 11, 16], 0] = 1  # AU a: positives in every subject; AU b: none
    detect = np.where(y == 1, 0.9, 0.1)[None].astype(float)
    detect[0, 3, 1] = 0.9  # one false positive on AU b
    silent_on_b = detect.copy()
    silent_on_b[0, :, 1] = 0.0
    assert crossfit_inner_f1(y, detect, subjects, "macro") == crossfit_inner_f1(y, silent_on_b, subjects, "macro") == 1.0
    assert crossfit_inner_f1(y[:, [1]], detect[:, :, [1]], subjects, "macro") == 0.0 == \
        crossfit_inner_f1(y[:, [1]], silent_on_b[:, :, [1]], subjects, "macro")
