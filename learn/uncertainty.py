"""Uncertainty of a cross-validated classifier: repeated cross-validation, permutation tests against chance.

Two questions, two answers:

- *How well would this pipeline do on new subjects from these sites?* The interval must include the variance
  of the training runs and of the fold assignment, not only the sampling of test subjects.
  :func:`corrected_t_interval` is the corrected resampled t-interval (Nadeau and Bengio 2003, "Inference for
  the generalization error"; applied to R x K repeated cross-validation by Bouckaert and Frank 2004): the mean
  of the J = R x K per-fold estimates, with variance ``(1/J + n_test/n_train) * s**2``, where ``s**2`` is the
  variance of the per-fold estimates and the ``n_test/n_train`` term accounts for the overlap of the training
  sets, and a Student t quantile with ``J - 1`` degrees of freedom. The percentile bootstrap over the pooled
  out-of-fold predictions of one run (:func:`learn.metrics.bootstrap_ci`) holds the trained models fixed: it
  is too narrow.
- *Is there any signal at all?* :func:`permutation_pvalue` (Ojala and Garriga 2010, test 1): the whole
  pipeline (splits, training, scoring) is rerun on P label permutations, permuted within site
  (:func:`permute_labels`) so that site structure is kept, and
  ``p = (1 + #{null AUC >= observed AUC}) / (P + 1)``. The observed statistic is the pooled AUC of the first
  repeat, computed exactly as each permutation's (same splits and training seeds), so the test is exact for
  any P.

:func:`run_units` runs repeats and permutations of any pipeline given as a function (a CNN cross-validation,
or a logistic regression on features), one resumable unit per folder, and :func:`summarize_units` turns the
unit summaries into the ``uncertainty`` section that both learning paths write into ``results.json``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from learn import ConfigError, MetricUndefinedError

__all__ = [
    "CORRECTED_METHOD",
    "PERMUTATION_METHOD",
    "Unit",
    "corrected_t_interval",
    "format_summary",
    "permutation_pvalue",
    "permute_labels",
    "plot_null_distribution",
    "run_units",
    "summarize_units",
    "uncertainty_table",
    "unit_summary",
]

log = logging.getLogger(__name__)

CORRECTED_METHOD = ("corrected resampled t-interval (Nadeau and Bengio 2003) over the per-fold estimates of "
                    "all repeats: includes training and fold-assignment variance")
PERMUTATION_METHOD = ("whole-pipeline label permutation test (Ojala and Garriga 2010, test 1), labels "
                      "permuted within site; p = (1 + #{null >= observed}) / (P + 1)")
UNIT_FILE = "unit.json"


@dataclass(frozen=True)
class Unit:
    """One rerun of a pipeline: ``kind`` "repeat" (index r: fold assignment and training seeds of repeat r,
    true labels) or "permutation" (index p >= 1: repeat 0's seeds, permuted labels)."""

    kind: str
    index: int
    labels: np.ndarray
    dir: Path | None

    @property
    def name(self) -> str:
        return f"r{self.index:03d}" if self.kind == "repeat" else f"p{self.index:04d}"


def _check_count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"'{name}' should be an integer >= {minimum}; {value!r} was provided")
    return int(value)


def permute_labels(labels, *, sites=None, subjects=None, seed=0) -> np.ndarray:
    """Labels permuted within each site, subject by subject (all rows of a subject keep one label).

    Parameters
    ----------
    labels : (n,) int
        One label per row (scan, image).
    sites : (n,) labels, optional
        Permute only within each site (the null keeps each site's label balance); None: one site.
    subjects : (n,) labels, optional
        Rows of one subject move together; None: every row is its own subject.
    seed : int or sequence of int
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    (n,) array of the dtype of ``labels``

    Raises
    ------
    ValueError
        Mismatched lengths, or a subject with two labels or in two sites.
    """
    y = np.asarray(labels)
    n = y.shape[0]
    subj = np.arange(n) if subjects is None else np.asarray(subjects).astype(str)
    site = np.zeros(n, dtype=np.int64) if sites is None else np.asarray(sites).astype(str)
    if y.ndim != 1 or subj.shape != (n,) or site.shape != (n,):
        raise ValueError(f"'labels', 'subjects' and 'sites' should be 1-D of one length; shapes {y.shape}, "
                         f"{subj.shape} and {site.shape} were provided")
    uniq, first, inverse = np.unique(subj, return_index=True, return_inverse=True)
    if not (np.array_equal(y, y[first][inverse]) and np.array_equal(site, site[first][inverse])):
        raise ValueError("a subject has rows with different labels or sites; give one label and one site per "
                         "subject")
    y_subj, site_subj = y[first], site[first]
    rng = np.random.default_rng(seed)
    out = y_subj.copy()
    for s in np.unique(site_subj):
        idx = np.flatnonzero(site_subj == s)
        out[idx] = y_subj[idx[rng.permutation(idx.shape[0])]]
    return out[inverse]


def corrected_t_interval(values, test_train_ratio: float, level: float = 0.95) -> dict:
    """Corrected resampled t-interval of the mean of per-fold estimates (Nadeau and Bengio 2003).

    Parameters
    ----------
    values : (J,) float
        One estimate (AUC, accuracy) per fold of every repeat; NaN entries (undefined folds) are dropped.
    test_train_ratio : float
        ``n_test / n_train`` of a fold (the mean over folds when they differ).
    level : float
        Coverage.

    Returns
    -------
    dict
        ``mean``, ``lo``, ``hi`` (clipped to [0, 1]), ``sd`` (of the per-fold values), ``se`` (corrected),
        ``n_estimates``.

    Raises
    ------
    ValueError
        Fewer than 2 finite values, a ratio <= 0, or a level outside (0, 1).

    >>> r = corrected_t_interval([0.6, 0.7, 0.5, 0.6], test_train_ratio=1 / 3)
    >>> round(r["mean"], 3), r["n_estimates"]
    (0.6, 4)
    """
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if v.shape[0] < 2:
        raise ValueError(f"a corrected t-interval needs at least 2 per-fold estimates; {v.shape[0]} were "
                         "provided")
    if not test_train_ratio > 0:
        raise ValueError(f"'test_train_ratio' should be > 0; {test_train_ratio!r} was provided")
    if not 0.0 < level < 1.0:
        raise ValueError(f"'level' should be in (0, 1); {level!r} was provided")
    J = v.shape[0]
    mean, sd = float(v.mean()), float(v.std(ddof=1))
    se = math.sqrt((1.0 / J + float(test_train_ratio)) * sd**2)
    half = float(t.ppf(0.5 + level / 2.0, J - 1)) * se
    return {"mean": mean, "lo": max(0.0, mean - half), "hi": min(1.0, mean + half), "sd": sd, "se": se,
            "n_estimates": J}


def permutation_pvalue(observed: float, null) -> float:
    """``(1 + #{null >= observed}) / (P + 1)``: exact under exchangeability, never 0 (Ojala and Garriga 2010).

    NaN null values (a permutation whose AUC was undefined) count as at least as extreme (conservative).
    """
    null = np.asarray(null, dtype=np.float64).reshape(-1)
    if null.shape[0] == 0:
        raise ValueError("'null' is empty: run at least one permutation")
    if not np.isfinite(observed):
        raise ValueError(f"'observed' should be finite; {observed!r} was provided")
    extreme = np.sum(~np.isfinite(null) | (null >= observed - 1e-12))
    return float((1 + extreme) / (null.shape[0] + 1))


def _metrics(y, s) -> dict:
    from learn.metrics import binary_metrics

    try:
        m = binary_metrics(y, s)
        return {"auc": m["auc"], "accuracy": m["accuracy"]}
    except MetricUndefinedError:
        return {"auc": float("nan"), "accuracy": float(np.mean((np.asarray(s) >= 0.5) == np.asarray(y)))}


def unit_summary(pred, n_samples: int) -> dict:
    """Pooled and per-fold AUC / accuracy of one unit's test predictions, per channel.

    Parameters
    ----------
    pred : DataFrame
        Columns ``label``, ``fold``, ``score`` and optionally ``channel`` (one channel "all" when absent).
    n_samples : int
        Labelled samples of the cohort: a fold trains on ``n_samples - n_test`` of them (upper bound when a
        validation set is also split off; it only enters the ``n_test / n_train`` correction).

    Returns
    -------
    dict
        channel -> ``{"auc", "accuracy", "folds": [{"fold", "auc", "accuracy", "n_test"}],
        "test_train_ratio"}``
    """
    if "channel" not in pred.columns:
        pred = pred.assign(channel="all")
    out = {}
    for ch, t in pred.groupby("channel", sort=False):
        folds, ratios = [], []
        for f, tf in t.groupby("fold"):
            m = _metrics(tf["label"].to_numpy().astype(int), tf["score"].to_numpy())
            folds.append({"fold": int(f), **m, "n_test": len(tf)})
            ratios.append(len(tf) / max(1, n_samples - len(tf)))
        out[str(ch)] = {**_metrics(t["label"].to_numpy().astype(int), t["score"].to_numpy()), "folds": folds,
                        "test_train_ratio": float(np.mean(ratios))}
    return out


def _write_json(path: Path, data) -> None:
    from learn.checkpoint import to_jsonable
    from surfmap._atomic import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(to_jsonable(data), indent=2).encode())


def run_units(run_unit: Callable[[Unit], object], *, labels, sites=None, subjects=None, repeats: int = 1,
              permutations: int = 0, out_dir=None, seed: int = 0, first=None, resume: bool = True,
              trainings_per_unit: int | None = None, progress: bool = True) -> dict:
    """Run repeats and permutations of a pipeline; each unit's summary is saved and skipped on a rerun.

    Parameters
    ----------
    run_unit : callable
        ``run_unit(unit) -> DataFrame`` of the unit's test predictions (``label``, ``fold``, ``score``,
        optional ``channel``): cross-validate with the seeds of repeat ``unit.index`` (kind "repeat") or of
        repeat 0 (kind "permutation") on ``unit.labels``, writing anything it keeps under ``unit.dir``.
    labels : (n,) int
        True labels of the rows (the order ``run_unit`` uses).
    sites, subjects : (n,) labels, optional
        Permutations stay within site and move subjects whole (:func:`permute_labels`).
    repeats : int
        R >= 1 cross-validations with different fold assignments and training seeds.
    permutations : int
        P >= 0 reruns on permuted labels.
    out_dir : path, optional
        Units go to ``out_dir/repeats/rNNN`` and ``out_dir/permutations/pNNNN``, each with ``unit.json``.
    seed : int
        Seed of the permutations (permutation p uses ``[seed, p]``).
    first : DataFrame, optional
        Predictions of repeat 0 when the caller has already run it (the standard run).
    resume : bool
        Skip units whose ``unit.json`` exists.
    trainings_per_unit : int, optional
        Only for the cost stated before the run (models trained per unit).

    Returns
    -------
    dict
        ``{"repeats": [unit summaries], "permutations": [unit summaries], "n_samples"}``.
    """
    from tqdm.auto import tqdm

    from learn.utils import is_main_process, progress_enabled

    repeats = _check_count(repeats, "repeats", 1)
    permutations = _check_count(permutations, "permutations", 0)
    y = np.asarray(labels)
    out = Path(out_dir) if out_dir is not None else None
    units = [Unit("repeat", r, y, None if out is None else out / "repeats" / f"r{r:03d}")
             for r in range(repeats)]
    units += [Unit("permutation", p, permute_labels(y, sites=sites, subjects=subjects, seed=[int(seed), p]),
                   None if out is None else out / "permutations" / f"p{p:04d}")
              for p in range(1, permutations + 1)]
    n_run = len(units) - (first is not None)
    cost = f"{n_run} cross-validation(s)" + (f" = {n_run * trainings_per_unit} model trainings"
                                             if trainings_per_unit else "")
    log.info("uncertainty: %d repeat(s) and %d permutation(s) -> %s", repeats, permutations, cost)
    summaries = {"repeat": [], "permutation": []}
    bar = tqdm(units, desc="repeats+permutations", disable=not progress_enabled(progress))
    for unit in bar:
        bar.set_postfix_str(unit.name)
        path = unit.dir / UNIT_FILE if unit.dir is not None else None
        if resume and path is not None and path.is_file():
            summaries[unit.kind].append(json.loads(path.read_text()))
            continue
        pred = first if (unit.kind == "repeat" and unit.index == 0 and first is not None) else run_unit(unit)
        s = {"kind": unit.kind, "index": unit.index, "channels": unit_summary(pred, y.shape[0])}
        if path is not None and is_main_process():
            _write_json(path, s)
        summaries[unit.kind].append(s)
    return {"repeats": summaries["repeat"], "permutations": summaries["permutation"],
            "n_samples": int(y.shape[0])}


def _ci(values, ratio, level) -> dict:
    try:
        r = corrected_t_interval(values, ratio, level)
        return {"mean": r["mean"], "ci": [r["lo"], r["hi"]], "se": r["se"], "n_estimates": r["n_estimates"]}
    except ValueError as exc:
        return {"mean": float("nan"), "ci": None, "note": str(exc)}


def summarize_units(units: dict, *, level: float = 0.95, alpha: float = 0.05,
                    naive_ci: dict | None = None) -> dict:
    """The ``uncertainty`` section of ``results.json``, per channel.

    Parameters
    ----------
    units : dict
        :func:`run_units`'s return.
    level : float
        Coverage of the corrected interval.
    alpha : float
        A channel "beats chance" when its permutation p-value is <= ``alpha``.
    naive_ci : dict, optional
        channel -> ``{"auc": (lo, hi), ...}``: the bootstrap interval of repeat 0 (models held fixed), copied
        beside the corrected one under its own name.

    Returns
    -------
    dict
        channel -> ``{"repeats": {...}, "corrected_ci": {...}, "permutation": {...}, "naive_bootstrap_ci"}``
    """
    reps, perms = units["repeats"], units["permutations"]
    if not reps:
        raise ValueError("no repeat unit to summarise; run_units needs repeats >= 1")
    out = {}
    for ch in reps[0]["channels"]:
        per = [u["channels"][ch] for u in reps if ch in u["channels"]]
        auc = np.array([p["auc"] for p in per], dtype=np.float64)
        acc = np.array([p["accuracy"] for p in per], dtype=np.float64)
        folds = [f for p in per for f in p["folds"]]
        ratio = float(np.mean([p["test_train_ratio"] for p in per]))
        sd = (lambda v: float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else float("nan"))
        entry = {
            "repeats": {"n": len(per), "auc": auc.tolist(), "auc_mean": float(np.nanmean(auc)) if np.isfinite(
                auc).any() else float("nan"), "auc_sd": sd(auc), "accuracy": acc.tolist(),
                "accuracy_mean": float(np.mean(acc)), "accuracy_sd": sd(acc)},
            "corrected_ci": {"method": CORRECTED_METHOD, "level": level, "test_train_ratio": ratio,
                             "n_folds_undefined_auc": int(sum(not np.isfinite(f["auc"]) for f in folds)),
                             "auc": _ci([f["auc"] for f in folds], ratio, level),
                             "accuracy": _ci([f["accuracy"] for f in folds], ratio, level)},
        }
        if naive_ci is not None and ch in naive_ci:
            entry["naive_bootstrap_ci"] = {
                "method": "percentile bootstrap of the pooled predictions of repeat 0, models held fixed "
                          "(subject sampling only: too narrow)",
                **{k: list(v) for k, v in naive_ci[ch].items() if k in ("auc", "accuracy")}}
        if perms:
            null = np.array([u["channels"].get(ch, {}).get("auc", np.nan) for u in perms], dtype=np.float64)
            observed = float(per[0]["auc"])
            entry["permutation"] = {"method": PERMUTATION_METHOD, "n": len(perms), "observed_auc": observed,
                                    "null_auc": null.tolist(), "alpha": alpha}
            if np.isfinite(observed):
                p = permutation_pvalue(observed, null)
                entry["permutation"].update(p_value=p, beats_chance=bool(p <= alpha),
                                            null_mean=float(np.nanmean(null)) if np.isfinite(null).any()
                                            else float("nan"),
                                            min_p_value=1.0 / (len(perms) + 1))
                if 1.0 / (len(perms) + 1) > alpha:
                    entry["permutation"]["note"] = (
                        f"{len(perms)} permutations cannot give p <= {alpha:g} (the smallest p is "
                        f"1/{len(perms) + 1}); run at least {math.ceil(1 / alpha) - 1}")
            else:
                entry["permutation"].update(p_value=None, beats_chance=False,
                                            note="the observed AUC is undefined (one class or constant "
                                                 "scores)")
        out[ch] = entry
    return out


def _num(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def _fmt_ci(ci) -> str:
    return "n/a" if ci is None else f"[{_num(ci[0])}, {_num(ci[1])}]"


def format_summary(summary: dict) -> list[str]:
    """One printed line per channel: repeats, corrected interval, permutation verdict."""
    lines = []
    for ch, e in summary.items():
        r, c = e["repeats"], e["corrected_ci"]["auc"]
        text = (f"{ch}: AUC over {r['n']} repeat(s) {_num(r['auc_mean'])} (SD {_num(r['auc_sd'])}); "
                f"corrected {int(100 * e['corrected_ci']['level'])}% CI {_fmt_ci(c.get('ci'))}")
        p = e.get("permutation")
        if p is not None:
            if p.get("p_value") is None:
                text += f"; permutation test: {p.get('note')}"
            else:
                verdict = "beats chance" if p["beats_chance"] else "does NOT beat chance"
                note = f"; {p['note']}" if "note" in p else ""
                text += (f"; permutation p = {_num(p['p_value'])} over {p['n']} permutations: {verdict} "
                         f"(alpha {p['alpha']:g}{note})")
        lines.append(text)
    return lines


def uncertainty_table(summary: dict):
    """One row per channel: repeat mean/SD, corrected interval, permutation p-value (for ``results.csv``)."""
    import pandas as pd

    rows = []
    for ch, e in summary.items():
        c = e["corrected_ci"]
        row = {"channel": ch, "repeats": e["repeats"]["n"], "auc_repeat_mean": e["repeats"]["auc_mean"],
               "auc_repeat_sd": e["repeats"]["auc_sd"], "auc_fold_mean": c["auc"]["mean"]}
        ci = c["auc"].get("ci")
        row["auc_corrected_ci_lo"], row["auc_corrected_ci_hi"] = (ci if ci is not None else (np.nan, np.nan))
        p = e.get("permutation")
        row["permutations"] = 0 if p is None else p["n"]
        row["permutation_p"] = np.nan if p is None or p.get("p_value") is None else p["p_value"]
        row["beats_chance"] = None if p is None else p["beats_chance"]
        rows.append(row)
    return pd.DataFrame(rows)


def plot_null_distribution(summary: dict, path, title: str = "") -> Path:
    """Histogram of the permutation null AUCs and the observed AUC, one panel per channel, in ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    chans = [c for c, e in summary.items() if "permutation" in e]
    if not chans:
        raise ValueError("no channel has a permutation test; run with permutations >= 1")
    fig, axes = plt.subplots(1, len(chans), figsize=(3.6 * len(chans), 3.0), squeeze=False)
    for ax, ch in zip(axes[0], chans):
        p = summary[ch]["permutation"]
        null = np.asarray(p["null_auc"], dtype=np.float64)
        null = null[np.isfinite(null)]
        ax.hist(null, bins=40, range=(0.0, 1.0), color="0.7",
                label=f"null ({p['n']} permutations)")
        ax.axvline(0.5, color="0.3", lw=0.8, ls=":")
        if np.isfinite(p["observed_auc"]):
            pv = p.get("p_value")
            text = f"observed {p['observed_auc']:.3f}" + (f", p = {pv:.3f}" if pv is not None else "")
            ax.axvline(p["observed_auc"], color="C3", lw=2, label=text)
        ax.set_title(ch, fontsize=9)
        ax.set_xlabel("AUC")
        ax.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylabel("permutations")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
