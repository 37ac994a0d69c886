"""Repeated cross-validation and permutation tests for ``surfmap-learn surface run`` (``cv.repeats``,
``cv.permutations``), on top of :mod:`learn.uncertainty`.

Repeat 0 is the standard run (its files stay where they were: ``predictions.csv``, ``folds/``). Repeat r >= 1
reruns :func:`~learn.surface.train.cross_validate` with ``cv.seed + r`` (another fold assignment) and training
seeds shifted by r, into ``repeats/rNNN/``; permutation p reruns it with repeat 0's seeds on labels permuted
within site, into ``permutations/pNNNN/``. Units and their folds resume like the folds of the standard run.
Every unit scores each channel, the mean of the channels' probabilities (``mean``) and, with
``cv.inner_splits >= 2``, the XGBoost stack (``stacked``).

Outputs added to the run folder: an ``uncertainty`` section in ``results.json`` (per channel: AUC mean and SD
over repeats, the corrected interval, the permutation p-value and null AUCs, and whether the result beats
chance), the matching columns of ``results.csv``, ``permutation_null.csv`` and ``null_distribution.png``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pandas as pd

from learn.uncertainty import (
    format_summary,
    plot_null_distribution,
    run_units,
    summarize_units,
    uncertainty_table,
)

__all__ = ["add_uncertainty", "n_trainings", "unit_predictions"]

log = logging.getLogger(__name__)

_REPEAT_SEED_STEP = 100_003  # training seeds of repeat r: seed + r * step (folds use steps 1009 and 7919)


def n_trainings(dataset, cv) -> int:
    """Models trained by one cross-validation of ``dataset``: folds x channel groups x (1 + inner folds)."""
    n_folds = cv.n_splits if cv.scheme == "kfold" else len(set(dataset.sites.tolist()))
    n_groups = len(dataset.channels) if cv.per_channel else 1
    return n_folds * n_groups * (1 + cv.inner_splits)


def announce_cost(dataset, cv) -> int:
    """Log (before anything is trained) how many models the whole run trains; returns the number."""
    per = n_trainings(dataset, cv)
    units = cv.repeats + cv.permutations
    log.info("this run trains %d models: %d repeat(s) + %d permutation(s) of a cross-validation that "
             "trains %d", per * units, cv.repeats, cv.permutations, per)
    return per * units


def unit_predictions(pred: pd.DataFrame, *, stack: bool = False, seed: int = 0) -> pd.DataFrame:
    """Test predictions of one cross-validation with the ``mean`` (and ``stacked``) pseudo-channels added."""
    test = pred[pred["role"] == "test"] if "role" in pred.columns else pred
    parts = [test[["subject", "label", "fold", "channel", "score"]]]
    if test["channel"].nunique() > 1:
        mean = test.groupby(["subject", "fold", "label"], as_index=False)["score"].mean()
        parts.append(mean.assign(channel="mean"))
        if stack:
            from .stacking import stack_predictions

            st = stack_predictions(pred, seed=seed)
            parts.append(st[["subject", "label", "fold", "score"]].assign(channel="stacked"))
    return pd.concat(parts, ignore_index=True)


def add_uncertainty(dataset, cfg, result: dict, out_dir) -> dict:
    """Run ``cfg.cv.repeats - 1`` more repeats and ``cfg.cv.permutations`` permutations of the experiment
    whose standard run gave ``result`` (from :func:`~learn.surface.train.cross_validate`); write their
    figures.

    Returns
    -------
    dict
        ``result`` with ``uncertainty``: the per-channel summary of :func:`learn.uncertainty.summarize_units`.
    """
    from learn.utils import is_main_process

    from .train import cross_validate

    cv = cfg.cv
    stack = cv.inner_splits >= 2 and len(dataset.channels) > 1 and cv.per_channel
    out = Path(out_dir) if out_dir is not None else None

    def run_unit(unit):
        if unit.kind == "repeat":
            ucv = dataclasses.replace(cv, seed=cv.seed + unit.index, bootstrap_rounds=0)
            seed, ds = cfg.seed + _REPEAT_SEED_STEP * unit.index, dataset
            log.info("repeat %d of %d", unit.index + 1, cv.repeats)
        else:
            ucv = dataclasses.replace(cv, bootstrap_rounds=0)
            seed, ds = cfg.seed, dataset.with_labels(unit.labels)
            log.info("permutation %d of %d (labels permuted within site)", unit.index, cv.permutations)
        r = cross_validate(ds, model_cfg=cfg.model, schedule=cfg.schedule, cv=ucv, out_dir=unit.dir,
                           device=cfg.device, seed=seed, amp=cfg.amp, progress=cfg.progress,
                           num_workers=cfg.num_workers, resume=cfg.resume, keep_models=False, args=cfg)
        return unit_predictions(r["predictions"], stack=stack, seed=cv.seed)

    units = run_units(run_unit, labels=dataset.labels, sites=dataset.sites, subjects=dataset.subjects,
                      repeats=cv.repeats, permutations=cv.permutations, out_dir=out, seed=cv.seed,
                      first=unit_predictions(result["predictions"], stack=stack, seed=cv.seed),
                      resume=cfg.resume, trainings_per_unit=n_trainings(dataset, cv), progress=cfg.progress)
    naive = {ch: r["ci95"] for ch, r in result["results"].items()
             if isinstance(r.get("ci95", {}).get("auc"), tuple)}
    summary = summarize_units(units, naive_ci=naive)
    result = {**result, "uncertainty": summary}
    if out is not None and is_main_process():
        write_outputs(out, summary, synthetic=bool(dataset.table.get("synthetic", pd.Series([False])).any()))
    return result


def write_outputs(out: Path, summary: dict, *, synthetic: bool) -> None:
    """Add the summary to ``results.json`` / ``results.csv``; write the null distribution (CSV and figure)."""
    from learn.checkpoint import to_jsonable

    res_path = out / "results.json"
    data = json.loads(res_path.read_text()) if res_path.is_file() else {}
    data["uncertainty"] = to_jsonable(summary)
    data.setdefault("meta", {})["ci95_method"] = (
        "ci95 / *_ci_lo, *_ci_hi: percentile bootstrap of the pooled predictions of one run, models held "
        "fixed (subject sampling only); see 'uncertainty' for the interval that includes training variance")
    res_path.write_text(json.dumps(data, indent=2))
    table = uncertainty_table(summary)
    csv = out / "results.csv"
    if csv.is_file():
        old = pd.read_csv(csv)
        table = old.drop(columns=[c for c in table.columns if c in old.columns and c != "channel"]).merge(
            table, on="channel", how="outer")
    table.to_csv(csv, index=False)
    nulls = [pd.DataFrame({"channel": ch, "permutation": range(1, e["permutation"]["n"] + 1),
                           "auc": e["permutation"]["null_auc"]})
             for ch, e in summary.items() if "permutation" in e]
    if nulls:
        pd.concat(nulls, ignore_index=True).to_csv(out / "permutation_null.csv", index=False)
        title = ("SYNTHETIC data: " if synthetic else "") + "permutation null vs observed AUC"
        plot_null_distribution(summary, out / "null_distribution.png", title=title)
    for line in format_summary(summary):
        log.info("%s", line)
