"""Repeated cross-validation and permutation tests for ``surfmap-learn volumetric train`` (``cv.repeats``,
``cv.permutations``), on top of :mod:`learn.uncertainty`.

The seed-000 intervals of ``results.json`` (``cv.ci``: metrics on 1,000 random 50% subsamples of the pooled
test scans) are kept and labelled for what they are: the trained models are held fixed, so they measure
subject sampling only. Beside them, ``uncertainty`` holds the interval that also includes training and
fold-assignment variance (the corrected resampled t over every fold of every repeat) and the permutation test
against chance.

Repeat 0 is the standard run (``output_dir`` itself). Repeat r >= 1 reruns it with ``train.seed + 1000 r``,
which reallocates the groups to folds (leave-sites-out, leave-datasets-out, stratified-group) and reseeds the
training, into ``repeats/rNNN/``; permutation p reruns it with repeat 0's seeds on a copy of the cohort whose
labels are permuted within site (subjects move whole), into ``permutations/pNNNN/``. Independent test cohorts
are scored by the standard run only. A finished unit (``unit.json``) is skipped on a rerun; its checkpoints
are deleted once its predictions are summarised (they are not reused).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from learn.uncertainty import (
    format_summary,
    plot_null_distribution,
    run_units,
    summarize_units,
    uncertainty_table,
)

__all__ = ["SUBSAMPLE_CI_METHOD", "run_experiment_with_uncertainty"]

log = logging.getLogger(__name__)

SUBSAMPLE_CI_METHOD = ("seed 000: 2.5/97.5 percentiles of the metrics on 1000 random 50% subsamples of "
                       "the pooled test scans, models held fixed (subject sampling only; see 'uncertainty' "
                       "for the interval that includes training variance)")
_REPEAT_SEED_STEP = 1000  # fold k of a run trains with train.seed + k


def _unit_predictions(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={"subject": str})
    return pd.DataFrame({"subject": df["subject"], "label": df["y_true"].astype(int), "fold": df["fold"],
                         "score": df["score"], "channel": "cv"})


def _prune_checkpoints(unit_dir: Path) -> None:
    for p in unit_dir.glob("fold*/*.pt"):
        p.unlink()


def run_experiment_with_uncertainty(cfg) -> dict:
    """:func:`learn.volumetric.train.run_experiment` plus ``cv.repeats - 1`` repeats and ``cv.permutations``
    permutations (binary tasks); writes the ``uncertainty`` section into ``results.json``, ``results.csv``,
    ``permutation_null.csv`` and ``null_distribution.png``.

    Returns
    -------
    dict
        ``run_experiment``'s results with ``uncertainty`` (binary tasks) and ``cv.ci_method``.
    """
    from learn.checkpoint import to_jsonable
    from learn.utils import is_main_process
    from learn.volumetric.config import resolve
    from learn.volumetric.data import read_cohort
    from learn.volumetric.train import run_experiment

    cfg = resolve(cfg)
    binary = cfg.model.kind != "age"
    label = cfg.data.label_column
    cohort = read_cohort(cfg.data.cohort, label_column=label if binary else None)
    rows = np.flatnonzero(cohort[label].notna().to_numpy()) if label in cohort.columns else np.arange(0)
    repeats, permutations = (cfg.cv.repeats, cfg.cv.permutations) if binary else (1, 0)
    if cfg.cv.folds is not None:
        n_folds = len(cfg.cv.folds)
    elif str(cfg.cv.scheme).startswith("leave-one") and cfg.cv.group_column in cohort.columns:
        n_folds = cohort[cfg.cv.group_column].iloc[rows].nunique()
    else:
        n_folds = cfg.cv.n_splits
    (log.warning if repeats + permutations > 1 else log.info)(
        "this run trains %d models: %d repeat(s) + %d permutation(s) of a cross-validation that trains %d",
        n_folds * (repeats + permutations), repeats, permutations, n_folds)
    results = run_experiment(cfg)
    out = Path(cfg.output_dir)
    if (not binary or cfg.cv.scheme == "none" or "cv" not in results
            or not (out / "cv_predictions.csv").is_file()):
        return results  # nothing held out (all-data mode) or nothing to summarise
    site_col = "site" if "site" in cohort.columns else cfg.cv.group_column
    lab = cohort.iloc[rows]

    def run_unit(unit):
        udir = Path(unit.dir)
        data = dataclasses.replace(cfg.data, test_cohort=None)
        train = cfg.train
        if unit.kind == "repeat":
            log.info("repeat %d of %d", unit.index + 1, repeats)
            train = dataclasses.replace(cfg.train, seed=cfg.train.seed + _REPEAT_SEED_STEP * unit.index)
        else:
            log.info("permutation %d of %d (labels permuted within %s)", unit.index, permutations, site_col)
            # the whole cohort (QC exclusions and unlabelled scans are left to run_experiment), labels permuted
            permuted = cohort.drop(columns=["row"])
            permuted.loc[permuted.index[rows], label] = unit.labels
            udir.mkdir(parents=True, exist_ok=True)
            path = udir / "permuted_cohort.csv"
            permuted.to_csv(path, index=False)
            data = dataclasses.replace(data, cohort=str(path))
        ucfg = dataclasses.replace(cfg, output_dir=str(udir), data=data, train=train,
                                   cv=dataclasses.replace(cfg.cv, repeats=1, permutations=0))
        run_experiment(ucfg)
        _prune_checkpoints(udir)
        return _unit_predictions(udir / "cv_predictions.csv")

    units = run_units(run_unit, labels=lab[label].to_numpy().astype(int),
                      sites=lab[site_col].astype(str).to_numpy(),
                      subjects=lab["subject"].astype(str).to_numpy(), repeats=repeats,
                      permutations=permutations,
                      out_dir=out, seed=cfg.train.seed, first=_unit_predictions(out / "cv_predictions.csv"),
                      trainings_per_unit=n_folds, progress=cfg.train.progress)
    naive = {"cv": results["cv"]["ci"]} if "ci" in results.get("cv", {}) else None
    summary = summarize_units(units, naive_ci=naive)
    if "naive_bootstrap_ci" in summary["cv"]:
        summary["cv"]["naive_subsample_ci"] = {**summary["cv"].pop("naive_bootstrap_ci"),
                                               "method": SUBSAMPLE_CI_METHOD}
    results["cv"]["ci_method"] = SUBSAMPLE_CI_METHOD
    results["uncertainty"] = to_jsonable(summary)
    if is_main_process():
        with open(out / "results.json", "w") as fh:
            json.dump(results, fh, indent=2, default=str)
        uncertainty_table(summary).to_csv(out / "results.csv", index=False)
        if permutations:
            p = summary["cv"]["permutation"]
            pd.DataFrame({"permutation": range(1, p["n"] + 1), "auc": p["null_auc"]}).to_csv(
                out / "permutation_null.csv", index=False)
            plot_null_distribution(summary, out / "null_distribution.png",
                                   title=("SYNTHETIC data: " if results.get("synthetic") else "")
                                   + "permutation null vs observed AUC")
        for line in format_summary(summary):
            log.info("%s", line)
    return results
