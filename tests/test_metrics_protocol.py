"""Metrics against scikit-learn, and the leave-one-subject-out protocol's leakage checks."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score

from suite.metrics import classification_scores, f1_per_au, fold_mean_f1, roc_auc
from suite.protocol import Fold, LeakageError, loso_folds, verify_fold


@settings(max_examples=100, deadline=None)
@given(arrays(np.int8, (30, 4), elements=st.integers(0, 1)), arrays(np.int8, (30, 4), elements=st.integers(0, 1)))
def test_f1_matches_sklearn(y, p):
    assert np.allclose(f1_per_au(y, p), f1_score(y, p, average=None, zero_division=0))
    assert np.allclose(f1_per_au(y, p, "binary"), [f1_score(y[:, k], p[:, k], average="binary", zero_division=0) for k in range(4)])
    assert np.allclose(f1_per_au(y, p, "macro"), [f1_score(y[:, k], p[:, k], average="macro", zero_division=0) for k in range(4)])


@settings(max_examples=100, deadline=None)
@given(arrays(np.int8, (30, 3), elements=st.integers(0, 1)), arrays(np.int8, (30, 3), elements=st.integers(0, 1)),
       arrays(np.bool_, (30, 3)), arrays(np.int8, 30, elements=st.integers(0, 3)), st.sampled_from(["binary", "macro"]))
def test_masked_pooled_and_fold_mean_f1_match_sklearn(y, p, known, folds, variant):
    """An AU's masked labels are left out of its F1, pooled and inside every fold."""
    pooled = [f1_score(y[known[:, k], k], p[known[:, k], k], average=variant, zero_division=0) if known[:, k].any() else 0.0
              for k in range(3)]
    assert np.allclose(f1_per_au(y, p, variant, known), pooled)
    per_fold = [[f1_score(y[m, k], p[m, k], average=variant, zero_division=0) if m.any() else 0.0
                 for k in range(3) for m in [(folds == f) & known[:, k]]] for f in np.unique(folds)]
    assert np.allclose(fold_mean_f1(y, p, folds, variant, known), np.mean(per_fold, 0))


@settings(max_examples=100, deadline=None)
@given(arrays(np.int8, 25, elements=st.integers(0, 1)), arrays(np.float64, 25, elements=st.floats(0, 1)))
def test_auc_matches_sklearn(y, s):
    s = np.round(s, 1)  # ties
    if len(set(y)) < 2:
        assert np.isnan(roc_auc(y, s))
    else:
        assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from("abcd"), min_size=5, max_size=40), st.data())
def test_recognition_scores_match_sklearn(y_true, data):
    y_pred = data.draw(st.lists(st.sampled_from("abcd"), min_size=len(y_true), max_size=len(y_true)))
    classes = sorted(set(y_true))
    ours = classification_scores(y_true, y_pred, classes)
    assert ours["uf1"] == pytest.approx(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0))
    assert ours["uar"] == pytest.approx(recall_score(y_true, y_pred, labels=classes, average="macro", zero_division=0))
    assert ours["wf1"] == pytest.approx(f1_score(y_true, y_pred, labels=classes, average="weighted", zero_division=0))
    assert ours["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))


def test_fold_mean_differs_from_pooled():
    y = np.array([[1], [0], [0], [0], [1], [1]])
    p = np.array([[1], [0], [1], [1], [1], [0]])
    folds = np.array([0, 0, 1, 1, 2, 2])
    per_fold = [f1_score(y[folds == f], p[folds == f], average="binary", zero_division=0) for f in range(3)]
    assert fold_mean_f1(y, p, folds)[0] == pytest.approx(np.mean(per_fold))
    assert f1_per_au(y, p)[0] == pytest.approx(f1_score(y, p))


def test_loso_folds_are_subject_disjoint():
    subjects = np.array(["s1"] * 3 + ["s2"] * 4 + ["s3"] * 2 + ["s4"] * 5 + ["s5"] * 3)
    folds = loso_folds(subjects, 0.25, seed=0)
    assert [f.test_subject for f in folds] == ["s1", "s2", "s3", "s4", "s5"]
    covered = np.concatenate([f.test for f in folds])
    assert sorted(covered) == list(range(len(subjects)))
    for f in folds:
        assert set(subjects[f.test]) == {f.test_subject}
        assert f.test_subject not in set(subjects[f.train]) | set(subjects[f.inner_val])
        assert not set(subjects[f.inner_train]) & set(subjects[f.inner_val]) and len(f.inner_val) > 0
        assert sorted(np.concatenate([f.inner_train, f.inner_val])) == sorted(f.train)
    assert [f.inner_val.tolist() for f in folds] == [f.inner_val.tolist() for f in loso_folds(subjects, 0.25, seed=0)]


def test_leakage_check_fires_on_corrupted_split():
    subjects = np.array(["a", "a", "b", "b", "c", "c", "d"])
    good = loso_folds(subjects)[0]
    leaked = Fold(good.index, good.test_subject, np.append(good.train, good.test[0]), good.test, good.inner_train, good.inner_val)
    with pytest.raises(LeakageError, match="train/test"):
        verify_fold(subjects, leaked)
    val_leak = Fold(good.index, good.test_subject, good.train, good.test, good.inner_train, np.append(good.inner_val, good.test[0]))
    with pytest.raises(LeakageError, match="inner val/test"):
        verify_fold(subjects, val_leak)


def test_objective_rules_follow_the_table_most_specific_first():
    from suite.emotions import objective_class, objective_matches

    assert objective_class({6}) == 1 and objective_class({1, 2}) == 2 and objective_class({1, 2, 4}) == 6  # 3 AUs beat 2
    assert objective_class({4, 7, 10}) == 4 and objective_class({4, 7}) == 3 and objective_class({14}) == 7
    assert objective_matches({12, 15}) == {1: 1, 5: 1} and objective_class({12, 15}) == 1  # a tie: the a-priori order


def test_oracle_recognition_equals_a_hand_count():
    """The oracle puts the true evaluated AUs through the same rules. Four SAMM clips (AU2, 4, 7,
    12 evaluated): {12} → I (true I); {4, 7} → III (true III); {} (the clip's AU14 is not
    evaluated) → VII (true V); {2} → VII (true II). Oracle predictions: I, III, VII, VII against
    I, III, V, II: per-class F1 over the present classes I, II, III, V = 1, 0, 1, 0 → UF1 0.5;
    accuracy 2/4."""
    from suite.metrics import recognition_metrics

    true_sets = [{12}, {4, 7}, set(), {2}]
    out = recognition_metrics("samm", [set()] * 4, ["Other"] * 4, [1, 3, 5, 2], true_sets)["objective"]
    assert out["oracle"]["uf1"] == pytest.approx(0.5) and out["oracle"]["accuracy"] == pytest.approx(0.5)
    assert out["uf1"] == pytest.approx(0.0)  # nothing predicted: every clip → VII, a class no clip has
