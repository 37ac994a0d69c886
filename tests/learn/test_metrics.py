import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from learn import MetricUndefinedError
from learn.metrics import binary_metrics, bootstrap_ci, regression_metrics, roc_auc, subsample_ci


def test_binary_metrics_hand_counts():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    s = np.array([0.9, 0.6, 0.2, 0.1, 0.4, 0.7, 0.3, 0.5])
    m = binary_metrics(y, s)
    # predictions at 0.5: 1 1 0 0 0 1 0 1 -> TP 3, FN 1, TN 3, FP 1
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["n"] == 8
    m3 = binary_metrics(y, s, threshold=0.3)
    assert m3["sensitivity"] == pytest.approx(3 / 4) and m3["specificity"] == pytest.approx(1 / 4)  # 0.3 >= 0.3 counts positive


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 1)
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_binary_metrics_single_class():
    with pytest.raises(MetricUndefinedError, match="single class"):
        binary_metrics([1, 1, 1], [0.2, 0.5, 0.9])


def test_binary_metrics_constant_scores():
    with pytest.raises(MetricUndefinedError, match="constant scores"):
        binary_metrics([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5])


def test_binary_metrics_non_binary_labels():
    with pytest.raises(ValueError, match="binary labels"):
        binary_metrics([0, 1, 2], [0.1, 0.2, 0.3])


def test_binary_metrics_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        binary_metrics([0, 1], [0.1, 0.2, 0.3])


def test_subsample_ci_contains_point_estimate_and_is_deterministic():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.clip(0.5 + 0.3 * (y - 0.5) + 0.25 * rng.standard_normal(300), 0, 1)
    m = binary_metrics(y, s)
    ci = subsample_ci(y, s, n_rounds=300, seed=3)
    for name in ("accuracy", "sensitivity", "specificity", "auc"):
        lo, hi = ci[name]
        assert lo <= m[name] <= hi
        assert hi - lo < 0.2
    assert subsample_ci(y, s, n_rounds=300, seed=3) == ci
    bci = bootstrap_ci(y, s, n_rounds=300, seed=3)
    assert bci["auc"][0] <= m["auc"] <= bci["auc"][1]


def test_subsample_ci_rare_class():
    y = np.array([1] + [0] * 40)
    s = np.linspace(0, 1, 41)
    with pytest.raises(MetricUndefinedError, match="undefined in"):
        subsample_ci(y, s, n_rounds=100)


def test_regression_metrics_values():
    m = regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
    assert m["mae"] == pytest.approx(2 / 3)
    assert m["rmse"] == pytest.approx(np.sqrt(4 / 3))
