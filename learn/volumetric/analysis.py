"""Clinical analyses of predicted AD scores (seed 000, Results): MMSE correlation, MCI conversion, GLM.

- :func:`mmse_spearman`: Spearman rho (score, MMSE) per diagnostic group and overall.
- :func:`mci_conversion`: share of progressive vs stable MCI predicted as AD, and the AUC between them.
- :func:`glm_group_effect`: OLS ``score ~ 1 + group + age + sex`` (t, p of the group term, Cohen's d).
- :func:`accuracy_difference_test`: permutation test of the accuracy difference between two groups of test scans
  (the paper's 1.5T vs 3T comparison, 100,000 permutations).
- :func:`summary_table`: one row per analysis.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from learn import MetricUndefinedError
from learn.metrics import roc_auc

__all__ = ["accuracy_difference_test", "glm_group_effect", "mci_conversion", "mmse_spearman", "summary_table"]


def _finite_pairs(a, b, what: str):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"{what}: inputs should be 1-D of equal length; got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok], b[ok]


def mmse_spearman(scores, mmse, groups=None, *, min_n: int = 3) -> dict:
    """Spearman correlation of predicted scores with MMSE, overall and per group.

    Parameters
    ----------
    scores, mmse : (n,) float
        Missing MMSE (NaN) rows are skipped.
    groups : (n,) labels, optional
        Diagnosis per scan (AD, NC, MCI, ...).

    Returns
    -------
    dict
        ``{"all": {"rho", "p", "n"}, "<group>": {...}, ...}``.

    Raises
    ------
    MetricUndefinedError
        A group with fewer than ``min_n`` scans, or constant scores / MMSE in a group.
    """
    s_all = np.asarray(scores, dtype=np.float64)
    m_all = np.asarray(mmse, dtype=np.float64)
    sets = {"all": np.ones(s_all.shape[0], dtype=bool)}
    if groups is not None:
        g = np.asarray(groups).astype(str)
        if g.shape != s_all.shape:
            raise ValueError(f"'groups' has {g.shape[0]} entries for {s_all.shape[0]} scores")
        for lab in sorted(set(g.tolist())):
            sets[lab] = g == lab
    out = {}
    for name, sel in sets.items():
        s, m = _finite_pairs(s_all[sel], m_all[sel], "mmse_spearman")
        if s.shape[0] < min_n:
            raise MetricUndefinedError(f"group {name!r} has {s.shape[0]} scans with scores and MMSE; at least "
                                       f"{min_n} are needed for a Spearman correlation")
        if np.ptp(s) == 0 or np.ptp(m) == 0:
            raise MetricUndefinedError(f"group {name!r}: {'scores' if np.ptp(s) == 0 else 'MMSE'} are constant; "
                                       "Spearman's rho is undefined")
        rho, p = stats.spearmanr(s, m)
        out[name] = {"rho": float(rho), "p": float(p), "n": int(s.shape[0])}
    return out


def mci_conversion(scores, progressive, *, threshold: float = 0.5) -> dict:
    """Progressive vs stable MCI: share predicted AD (score > threshold) in each group and the AUC between them.

    Parameters
    ----------
    scores : (n,) float
        Mean fold-model probability of AD.
    progressive : (n,) bool
        True for pMCI (converted to AD), False for sMCI.

    Returns
    -------
    dict
        ``rate_pmci``, ``rate_smci``, ``ratio``, ``auc`` (pMCI as positives), ``n_pmci``, ``n_smci``.
    """
    s = np.asarray(scores, dtype=np.float64)
    p = np.asarray(progressive).astype(bool)
    if s.shape != p.shape:
        raise ValueError(f"'scores' and 'progressive' differ in length ({s.shape[0]} vs {p.shape[0]})")
    n_p, n_s = int(p.sum()), int((~p).sum())
    if n_p == 0 or n_s == 0:
        raise MetricUndefinedError(f"MCI conversion needs both groups; found {n_p} pMCI and {n_s} sMCI scans")
    rate_p = float(np.mean(s[p] > threshold))
    rate_s = float(np.mean(s[~p] > threshold))
    return {"rate_pmci": rate_p, "rate_smci": rate_s, "ratio": rate_p / rate_s if rate_s > 0 else float("inf"),
            "auc": roc_auc(p.astype(int), s), "n_pmci": n_p, "n_smci": n_s, "threshold": float(threshold)}


def glm_group_effect(values, group, age, sex) -> dict:
    """OLS ``values ~ 1 + group + age + sex``; the group term's t, two-sided p and Cohen's d.

    Parameters
    ----------
    values : (n,) float
        Predicted scores (or MMSE).
    group : (n,) bool or 0/1
        1 for pMCI, 0 for sMCI.
    age : (n,) float
    sex : (n,) 0/1

    Returns
    -------
    dict
        ``beta_group``, ``t``, ``p``, ``df``, ``cohens_d`` (raw group difference / pooled SD), ``n``.
    """
    y = np.asarray(values, dtype=np.float64)
    g = np.asarray(group, dtype=np.float64)
    a = np.asarray(age, dtype=np.float64)
    x = np.asarray(sex, dtype=np.float64)
    if not (y.shape == g.shape == a.shape == x.shape) or y.ndim != 1:
        raise ValueError("glm_group_effect: values, group, age and sex should be 1-D of equal length")
    ok = np.isfinite(y) & np.isfinite(g) & np.isfinite(a) & np.isfinite(x)
    y, g, a, x = y[ok], g[ok], a[ok], x[ok]
    n1, n0 = int((g == 1).sum()), int((g == 0).sum())
    if n1 < 2 or n0 < 2:
        raise MetricUndefinedError(f"the GLM needs at least 2 scans per group; found {n1} and {n0}")
    X = np.column_stack([np.ones_like(y), g, a, x])
    df = y.shape[0] - X.shape[1]
    if df < 1 or np.linalg.matrix_rank(X) < X.shape[1]:
        raise MetricUndefinedError("the GLM design is rank deficient (constant age or sex, or too few scans)")
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    sigma2 = float(resid @ resid) / df
    cov = sigma2 * np.linalg.inv(X.T @ X)
    t = float(beta[1] / np.sqrt(cov[1, 1])) if cov[1, 1] > 0 else float("inf")
    p = float(2 * stats.t.sf(abs(t), df))
    pooled = np.sqrt(((n1 - 1) * y[g == 1].var(ddof=1) + (n0 - 1) * y[g == 0].var(ddof=1)) / (n1 + n0 - 2))
    d = float((y[g == 1].mean() - y[g == 0].mean()) / pooled) if pooled > 0 else float("inf")
    return {"beta_group": float(beta[1]), "t": t, "p": p, "df": int(df), "cohens_d": d, "n": int(y.shape[0])}


def accuracy_difference_test(correct, group, *, n_permutations: int = 100_000, seed: int = 0,
                             chunk: int = 2000) -> dict:
    """Two-sided permutation test of the accuracy difference between the two groups of ``group``.

    The group labels are randomly re-allocated to the scans ``n_permutations`` times (the group sizes kept) and
    the p value is the share of permutations whose absolute accuracy difference reaches the observed one
    (with the observed allocation counted, so p >= 1 / (n_permutations + 1)).

    Parameters
    ----------
    correct : (n,) bool
        Whether each test scan was classified correctly.
    group : (n,) labels with exactly two distinct values (e.g. "1.5T", "3T")

    Returns
    -------
    dict
        ``groups`` (the two labels, sorted), ``accuracy`` (per group), ``n`` (per group), ``difference``
        (first minus second), ``p``, ``n_permutations``.
    """
    c = np.asarray(correct).astype(bool)
    g = np.asarray(group).astype(str)
    if c.shape != g.shape or c.ndim != 1:
        raise ValueError(f"'correct' and 'group' should be 1-D of equal length; got {c.shape} and {g.shape}")
    labels = sorted(set(g.tolist()))
    if len(labels) != 2:
        raise MetricUndefinedError(f"the permutation test compares two groups; found {len(labels)}: {labels[:10]}")
    if not (isinstance(n_permutations, (int, np.integer)) and n_permutations >= 1):
        raise ValueError(f"'n_permutations' should be a positive integer; {n_permutations!r} was provided")
    in_a = g == labels[0]
    n_a, n_b = int(in_a.sum()), int((~in_a).sum())
    obs = c[in_a].mean() - c[~in_a].mean()
    rng = np.random.default_rng(seed)
    cf = c.astype(np.float64)
    total = cf.sum()
    hits, done = 0, 0
    while done < n_permutations:
        m = min(chunk, n_permutations - done)
        keys = rng.random((m, c.shape[0]))
        idx = np.argpartition(keys, n_a - 1, axis=1)[:, :n_a] if n_a < c.shape[0] else np.tile(np.arange(n_a), (m, 1))
        sa = cf[idx].sum(axis=1)
        diff = sa / n_a - (total - sa) / n_b
        hits += int(np.sum(np.abs(diff) >= abs(obs) - 1e-12))
        done += m
    return {"groups": labels, "accuracy": [float(c[in_a].mean()), float(c[~in_a].mean())], "n": [n_a, n_b],
            "difference": float(obs), "p": (hits + 1) / (n_permutations + 1), "n_permutations": int(n_permutations)}


def summary_table(results: dict):
    """Flatten ``{"analysis": {metric: value}}`` into a DataFrame with one row per analysis."""
    import pandas as pd

    rows = []
    for name, vals in results.items():
        row = {"analysis": name}
        for k, v in vals.items():
            if isinstance(v, (tuple, list)) and len(v) == 2:
                row[f"{k}_lo"], row[f"{k}_hi"] = v
            elif not isinstance(v, dict):
                row[k] = v
        rows.append(row)
    return pd.DataFrame(rows)
