"""Repeated cross-validation, corrected intervals and permutation tests (learn.uncertainty).

Calibration runs on SYNTHETIC multi-site cohorts with a cheap pipeline (ridge-penalised linear classifier,
leave-sites-out folds), so that 40 cohorts x (3 repeats + 19 permutations) fit in a few seconds. Measured with these
settings (SYNTHETIC, no planted effect, 40 cohorts): the percentile bootstrap of the pooled predictions excludes
AUC 0.5 in 11/40 runs, the corrected interval in 2/40; the permutation p-value is <= 0.05 in 2/40 (mean p 0.51).
"""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as student_t

from learn import ConfigError
from learn.metrics import bootstrap_ci
from learn.uncertainty import (
    corrected_t_interval,
    format_summary,
    permutation_pvalue,
    permute_labels,
    plot_null_distribution,
    run_units,
    summarize_units,
    uncertainty_table,
)


def site_cohort(seed, effect=0.0, n_sites=8, per_site=15, d=20, site_rates=(0.25, 0.75), site_shift=1.0):
    """SYNTHETIC: sites with their own label rate and feature offset; ``effect`` is added to 3 features of class 1."""
    rng = np.random.default_rng(seed)
    site = np.repeat(np.arange(n_sites), per_site)
    rate = rng.uniform(*site_rates, n_sites)
    y = (rng.random(site.shape[0]) < rate[site]).astype(int)
    X = rng.normal(size=(site.shape[0], d)) + rng.normal(scale=site_shift, size=(n_sites, d))[site]
    X[:, :3] += effect * y[:, None]
    return X, y, site


def _ridge_scores(X, y, tr, te, lam=0.1):
    mu, sd = X[tr].mean(0), X[tr].std(0)
    Z = np.c_[(X[tr] - mu) / sd, np.ones(tr.sum())]
    w = np.linalg.solve(Z.T @ Z + lam * tr.sum() * np.diag([1.0] * X.shape[1] + [0.0]), Z.T @ (2 * y[tr] - 1))
    return 1 / (1 + np.exp(-3 * (np.c_[(X[te] - mu) / sd, np.ones(te.sum())] @ w)))


def leave_sites_out_pipeline(X, site, n_splits=4):
    """run_unit for run_units: sites allocated to folds at random (seed = repeat index; permutations use repeat 0)."""
    n_sites = site.max() + 1

    def run(unit):
        y = unit.labels
        r = unit.index if unit.kind == "repeat" else 0
        fold = (np.random.default_rng(r).permutation(n_sites) % n_splits)[site]
        parts = [pd.DataFrame({"label": y[fold == k], "fold": k, "score": _ridge_scores(X, y, fold != k, fold == k)})
                 for k in range(n_splits)]
        return pd.concat(parts, ignore_index=True)

    return run


def kfold_pipeline(X, n_splits=5):
    """run_unit with folds that ignore sites (stratified by label only)."""

    def run(unit):
        y = unit.labels
        rng = np.random.default_rng(unit.index if unit.kind == "repeat" else 0)
        fold = np.empty(y.shape[0], dtype=int)
        for c in (0, 1):
            idx = np.flatnonzero(y == c)
            fold[idx[rng.permutation(idx.shape[0])]] = np.arange(idx.shape[0]) % n_splits
        parts = [pd.DataFrame({"label": y[fold == k], "fold": k, "score": _ridge_scores(X, y, fold != k, fold == k)})
                 for k in range(n_splits)]
        return pd.concat(parts, ignore_index=True)

    return run


def _first(run, y):
    from learn.uncertainty import Unit

    return run(Unit("repeat", 0, y, None))


def test_corrected_t_interval_formula():
    v = np.array([0.55, 0.62, 0.48, 0.71, 0.5, 0.66])
    r = corrected_t_interval(v, test_train_ratio=0.25, level=0.9)
    se = np.sqrt((1 / 6 + 0.25) * v.var(ddof=1))
    half = student_t.ppf(0.95, 5) * se
    np.testing.assert_allclose([r["mean"], r["se"], r["lo"], r["hi"]], [v.mean(), se, v.mean() - half,
                                                                         v.mean() + half], rtol=1e-12)
    # NaN folds (undefined AUC) are dropped; the interval is clipped to [0, 1]; a larger overlap widens it
    wide = corrected_t_interval(np.r_[v, np.nan], test_train_ratio=1.0)
    assert wide["n_estimates"] == 6 and wide["hi"] - wide["lo"] > r["hi"] - r["lo"]
    assert corrected_t_interval([0.0, 1.0], 1.0)["lo"] == 0.0


@pytest.mark.parametrize("args, match", [
    (([0.5], 0.25), "at least 2 per-fold estimates; 1 were"),
    (([0.5, np.nan, 0.6], 0.0), "'test_train_ratio' should be > 0; 0.0"),
    (([0.5, 0.6], 0.25, 1.5), "'level' should be in"),
])
def test_corrected_t_interval_errors(args, match):
    with pytest.raises(ValueError, match=match):
        corrected_t_interval(*args)


def test_permutation_pvalue_counts_ties_and_nan_as_extreme():
    assert permutation_pvalue(0.7, [0.5, 0.7, 0.8, 0.6]) == pytest.approx(3 / 5)
    assert permutation_pvalue(0.9, [0.5, np.nan, 0.6]) == pytest.approx(2 / 4)
    assert permutation_pvalue(0.9, [0.1] * 19) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="'null' is empty"):
        permutation_pvalue(0.5, [])
    with pytest.raises(ValueError, match="'observed' should be finite"):
        permutation_pvalue(np.nan, [0.5])


def test_permute_labels_within_site_moves_subjects_whole():
    rng = np.random.default_rng(0)
    subjects = np.repeat([f"s{i}" for i in range(30)], 2)  # two scans per subject
    site_of = rng.integers(0, 3, 30)
    y_of = rng.integers(0, 2, 30)
    sites, y = site_of.repeat(2), y_of.repeat(2)
    seen = set()
    for seed in range(5):
        p = permute_labels(y, sites=sites, subjects=subjects, seed=seed)
        np.testing.assert_array_equal(p[::2], p[1::2])  # both scans of a subject keep one label
        for s in range(3):
            assert p[sites == s].sum() == y[sites == s].sum()  # each site keeps its label balance
        seen.add(tuple(p))
    assert len(seen) == 5 and tuple(y) not in seen
    with pytest.raises(ValueError, match="different labels or sites"):
        permute_labels([0, 1], subjects=["a", "a"])
    with pytest.raises(ValueError, match="1-D of one length"):
        permute_labels([0, 1, 1], sites=[0, 1])


def test_calibration_no_effect_and_strong_effect():
    """SYNTHETIC: 40 no-effect cohorts x (3 repeats + 19 permutations), then one strong-effect cohort."""
    naive_out, corrected_out, pvals = [], [], []
    for seed in range(40):
        X, y, site = site_cohort(seed)
        run = leave_sites_out_pipeline(X, site)
        first = _first(run, y)
        naive = bootstrap_ci(first["label"], first["score"], n_rounds=300, seed=seed)
        units = run_units(run, labels=y, sites=site, repeats=3, permutations=19, first=first, seed=seed,
                          progress=False)
        s = summarize_units(units, naive_ci={"all": naive})["all"]
        lo, hi = s["corrected_ci"]["auc"]["ci"]
        naive_out.append(not naive["auc"][0] <= 0.5 <= naive["auc"][1])
        corrected_out.append(not lo <= 0.5 <= hi)
        pvals.append(s["permutation"]["p_value"])
        assert s["naive_bootstrap_ci"]["auc"] == list(naive["auc"])
    naive_out, corrected_out, pvals = map(np.array, (naive_out, corrected_out, pvals))
    # today's interval excludes chance far more often than 5%; the corrected one about 5% of the time
    assert naive_out.sum() >= 6, naive_out.sum()
    assert corrected_out.sum() <= 3, corrected_out.sum()
    assert (~corrected_out[naive_out]).mean() >= 0.75  # covers 0.5 in most runs where today's does not
    # the permutation p-value is uniform-ish: about 1 run in 20 below 0.05
    assert (pvals <= 0.05).sum() <= 3 and 0.4 <= pvals.mean() <= 0.6, pvals
    X, y, site = site_cohort(1000, effect=0.8)
    s = summarize_units(run_units(leave_sites_out_pipeline(X, site), labels=y, sites=site, repeats=3,
                                  permutations=39, progress=False))["all"]
    assert s["permutation"]["p_value"] == pytest.approx(1 / 40) and s["permutation"]["beats_chance"]
    assert s["corrected_ci"]["auc"]["ci"][0] > 0.6 and s["repeats"]["auc_sd"] > 0


def test_permutations_within_site_keep_site_confound():
    """SYNTHETIC: labels depend on the site only, and sites shift the features. Folds that ignore sites let the
    classifier predict the label from the site: a global permutation calls that signal, a within-site one does not."""
    X, y, site = site_cohort(7, site_rates=(0.1, 0.9), site_shift=2.0)
    run = kfold_pipeline(X)
    within = summarize_units(run_units(run, labels=y, sites=site, permutations=19, progress=False))["all"]
    across = summarize_units(run_units(run, labels=y, permutations=19, progress=False))["all"]
    assert within["permutation"]["observed_auc"] > 0.7
    assert across["permutation"]["p_value"] == pytest.approx(0.05)
    assert within["permutation"]["p_value"] > 0.2


def test_run_units_resumes_and_states_progress(tmp_path, caplog):
    X, y, site = site_cohort(3)
    calls = []
    base = leave_sites_out_pipeline(X, site)

    def run(unit):
        calls.append(unit.name)
        assert unit.dir == tmp_path / ("repeats" if unit.kind == "repeat" else "permutations") / unit.name
        return base(unit)

    with caplog.at_level("INFO", logger="learn.uncertainty"):
        a = run_units(run, labels=y, sites=site, repeats=2, permutations=3, out_dir=tmp_path,
                      trainings_per_unit=4, progress=False)
    assert "2 repeat(s) and 3 permutation(s) -> 5 cross-validation(s) = 20 model trainings" in caplog.text
    assert calls == ["r000", "r001", "p0001", "p0002", "p0003"]
    (tmp_path / "permutations" / "p0002" / "unit.json").unlink()
    calls.clear()
    b = run_units(run, labels=y, sites=site, repeats=2, permutations=3, out_dir=tmp_path, progress=False)
    assert calls == ["p0002"]
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    with pytest.raises(ConfigError, match="'repeats' should be an integer >= 1; 0"):
        run_units(run, labels=y, repeats=0)


def test_summary_outputs(tmp_path):
    X, y, site = site_cohort(5, effect=0.8)
    units = run_units(leave_sites_out_pipeline(X, site), labels=y, sites=site, repeats=2, permutations=4,
                      progress=False)
    summary = summarize_units(units)
    line = format_summary(summary)[0]
    assert line.startswith("all: AUC over 2 repeat(s)") and "does NOT beat chance" in line
    assert "4 permutations cannot give p <= 0.05 (the smallest p is 1/5); run at least 19" in line
    table = uncertainty_table(summary)
    assert table.loc[0, "permutations"] == 4 and table.loc[0, "permutation_p"] == pytest.approx(0.2)
    assert table.loc[0, "auc_corrected_ci_lo"] < table.loc[0, "auc_fold_mean"] < table.loc[0, "auc_corrected_ci_hi"]
    assert plot_null_distribution(summary, tmp_path / "null.png").stat().st_size > 5000
    with pytest.raises(ValueError, match="no channel has a permutation test"):
        plot_null_distribution(summarize_units({**units, "permutations": []}), tmp_path / "x.png")
