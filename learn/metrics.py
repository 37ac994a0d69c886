"""Binary classification metrics and their confidence intervals.

The positive class is 1 (male for the sex model, AD for the AD model). ``scores`` are probabilities or any
monotone score (ROC AUC only depends on their order; the threshold applies to them as given).

Intervals follow BrainImageNet (J Big Data 2022): the metrics on ``n_rounds`` random 50% subsamples drawn
*without* replacement, 2.5 / 97.5 percentiles (:func:`subsample_ci`). :func:`bootstrap_ci` is the classical
resampling with replacement, sharing the same code.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from learn import MetricUndefinedError
from surfmap._validation import check_int, check_number

__all__ = ["METRIC_NAMES", "binary_metrics", "bootstrap_ci", "regression_metrics", "roc_auc", "subsample_ci"]

METRIC_NAMES = ("accuracy", "sensitivity", "specificity", "auc")


def _check_inputs(y_true, scores, what: str = "y_true") -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"'{what}' and 'scores' should be 1-D; shapes {y.shape} and {s.shape} were provided")
    if y.shape[0] != s.shape[0]:
        raise ValueError(
            f"'{what}' and 'scores' should have the same length; {y.shape[0]} and {s.shape[0]} were provided"
        )
    if y.shape[0] == 0:
        raise MetricUndefinedError(f"'{what}' is empty: no sample to score")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"'scores' holds {int((~np.isfinite(s)).sum())} NaN/inf values; all should be finite")
    vals = np.unique(y)
    if not np.all(np.isin(vals, [0, 1])):
        raise ValueError(
            f"'{what}' should hold binary labels 0/1; found values {vals[:10].tolist()}; recode the labels"
        )
    return y.astype(np.int64), s


def _auc_unchecked(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney ROC AUC (ties count 1/2); y in {0,1} with both classes present."""
    n1 = int(y.sum())
    n0 = y.shape[0] - n1
    r = rankdata(s)
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve (equals ``sklearn.metrics.roc_auc_score``).

    Raises
    ------
    MetricUndefinedError
        When only one class is present or all scores are equal.
    """
    y, s = _check_inputs(y_true, scores)
    n1 = int(y.sum())
    if n1 == 0 or n1 == y.shape[0]:
        raise MetricUndefinedError(
            f"ROC AUC is undefined with a single class: all {y.shape[0]} labels in 'y_true' are {int(y[0])}; "
            "score a set that holds both classes"
        )
    if np.ptp(s) == 0:
        raise MetricUndefinedError(
            f"ROC AUC is undefined for constant scores (all {y.shape[0]} scores equal {s[0]:.6g}); "
            "the model does not discriminate - check that it was trained and that its inputs are not empty"
        )
    return _auc_unchecked(y, s)


def _metrics_unchecked(y: np.ndarray, s: np.ndarray, threshold: float, with_auc: bool) -> dict:
    pred = s >= threshold
    pos = y == 1
    tp = int(np.sum(pred & pos))
    tn = int(np.sum(~pred & ~pos))
    n1 = int(pos.sum())
    n0 = y.shape[0] - n1
    out = {
        "accuracy": (tp + tn) / y.shape[0],
        "sensitivity": tp / n1 if n1 else float("nan"),
        "specificity": tn / n0 if n0 else float("nan"),
        "auc": _auc_unchecked(y, s) if (with_auc and n1 and n0 and np.ptp(s) > 0) else float("nan"),
        "n": int(y.shape[0]),
    }
    return out


def binary_metrics(y_true, scores, threshold: float = 0.5) -> dict:
    """Accuracy, sensitivity, specificity and ROC AUC of a binary classifier.

    Parameters
    ----------
    y_true : (n,) int
        Labels in {0, 1}; 1 is the positive class.
    scores : (n,) float
        Predicted probability (or score) of class 1. A sample is predicted positive when ``score >= threshold``.
    threshold : float
        Decision threshold (0.5 by default; BrainImageNet also reports a 0.3 "screening" threshold).

    Returns
    -------
    dict
        ``accuracy``, ``sensitivity`` (true-positive rate), ``specificity`` (true-negative rate), ``auc``, ``n``,
        plus ``threshold``, ``n_pos`` and ``n_neg``.

    Raises
    ------
    MetricUndefinedError
        Single class or constant scores (ROC AUC undefined), or empty input.
    ValueError
        Labels not 0/1, non-finite scores or mismatched lengths.
    """
    y, s = _check_inputs(y_true, scores)
    roc_auc(y, s)  # raises the clear errors for single class / constant scores
    out = _metrics_unchecked(y, s, float(threshold), True)
    out.update(threshold=float(threshold), n_pos=int(y.sum()), n_neg=int((y == 0).sum()))
    return out


def _resampled_ci(y, s, n_rounds, fraction, seed, threshold, replace, level) -> dict:
    y, s = _check_inputs(y, s)
    roc_auc(y, s)
    check_int("n_rounds", n_rounds, low=2)
    check_number("fraction", fraction, low=0, high=1, low_open=True)
    check_number("level", level, low=0, high=1, low_open=True, high_open=True)
    n = y.shape[0]
    k = max(2, int(round(fraction * n)))
    if not replace and k > n:
        raise ValueError(f"subsample size {k} exceeds the {n} samples")
    rng = np.random.default_rng(seed)
    vals = np.full((int(n_rounds), len(METRIC_NAMES)), np.nan)
    for r in range(int(n_rounds)):
        idx = rng.choice(n, size=k, replace=replace)
        m = _metrics_unchecked(y[idx], s[idx], threshold, True)
        vals[r] = [m[name] for name in METRIC_NAMES]
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for j, name in enumerate(METRIC_NAMES):
        v = vals[:, j]
        v = v[np.isfinite(v)]
        if v.shape[0] < 0.5 * n_rounds:
            raise MetricUndefinedError(
                f"{name} was undefined in {int(n_rounds) - v.shape[0]} of {n_rounds} resamples of {k} from {n} "
                "samples (a class missing from the resample); use a larger test set or a larger 'fraction'"
            )
        out[name] = (float(np.percentile(v, lo_q)), float(np.percentile(v, hi_q)))
    return out


def subsample_ci(y_true, scores, n_rounds: int = 1000, fraction: float = 0.5, seed: int = 0,
                 threshold: float = 0.5, level: float = 0.95) -> dict:
    """Seed-000 confidence intervals: metrics on random ``fraction`` subsamples without replacement.

    Parameters
    ----------
    y_true : (n,) int
        Labels in {0, 1}.
    scores : (n,) float
        Probabilities of class 1.
    n_rounds : int
        Number of subsamples (1,000 in the paper).
    fraction : float
        Share of the test set in each subsample (0.5 in the paper).
    seed : int
        Seed of the subsampling.
    threshold : float
        Decision threshold for accuracy / sensitivity / specificity.
    level : float
        Coverage; 0.95 gives the 2.5 / 97.5 percentiles.

    Returns
    -------
    dict
        metric name -> (lo, hi) for ``accuracy``, ``sensitivity``, ``specificity``, ``auc``.

    Raises
    ------
    MetricUndefinedError
        A single class or constant scores in the full set, or a class too rare to appear in most subsamples.
    """
    return _resampled_ci(y_true, scores, n_rounds, fraction, seed, float(threshold), False, level)


def bootstrap_ci(y_true, scores, n_rounds: int = 1000, seed: int = 0, threshold: float = 0.5,
                 level: float = 0.95, fraction: float = 1.0) -> dict:
    """Percentile bootstrap intervals (resampling with replacement, ``fraction`` x n per round).

    Same returns and errors as :func:`subsample_ci`.
    """
    return _resampled_ci(y_true, scores, n_rounds, fraction, seed, float(threshold), True, level)


def regression_metrics(y_true, y_pred) -> dict:
    """Mean absolute error, root mean squared error and Pearson r (for the age base model).

    Returns
    -------
    dict
        ``mae``, ``rmse``, ``r`` (NaN when a side is constant), ``n``.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if y.ndim != 1 or y.shape != p.shape or y.shape[0] == 0:
        raise ValueError(f"'y_true' and 'y_pred' should be non-empty 1-D of equal length; got {y.shape}, {p.shape}")
    err = p - y
    r = float(np.corrcoef(y, p)[0, 1]) if (np.ptp(y) > 0 and np.ptp(p) > 0) else float("nan")
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean())), "r": r, "n": int(y.shape[0])}
