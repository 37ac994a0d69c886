"""Stacking of the per-metric, per-hemisphere probabilities with XGBoost (seed 001), without leakage.

Input: the predictions of :func:`learn.surface.train.cross_validate` run with ``cv.inner_splits >= 2``. For outer
fold ``k``:

- the stacker's *training* features are the ``role == "inner"`` rows of fold ``k``: out-of-fold probabilities of
  the outer training subjects, from inner models trained on parts of the outer training set only;
- its hyper-parameters are grid-searched (``GridSearchCV``, ROC AUC) on those training features only;
- a *test* subject's features are its ``role == "test"`` rows of fold ``k``: from the fold-``k`` models, which
  never saw that subject (nor did any inner model).

:func:`average_predictions` is the seed's no-stacking ablation (the mean of the channels' probabilities).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from learn import DataError
from learn.cv import check_disjoint

__all__ = ["DEFAULT_GRID", "average_predictions", "feature_table", "stack_predictions"]

log = logging.getLogger(__name__)

DEFAULT_GRID = {"max_depth": [1, 2, 3], "n_estimators": [25, 100], "learning_rate": [0.05, 0.2]}


def feature_table(pred: pd.DataFrame, fold: int, role: str, channels) -> pd.DataFrame:
    """Subjects x channels probabilities of one outer fold and role, with ``label`` and ``site`` columns."""
    rows = pred[(pred["fold"] == fold) & (pred["role"] == role)]
    wide = rows.pivot_table(index="subject", columns="channel", values="score", aggfunc="first")
    missing = [c for c in channels if c not in wide.columns]
    if missing:
        raise DataError(f"fold {fold}, role {role!r}: no predictions for channel(s) {missing}")
    wide = wide[list(channels)]
    if wide.isna().any().any():
        bad = wide.index[wide.isna().any(axis=1)].tolist()
        raise DataError(f"fold {fold}, role {role!r}: subjects {bad[:5]} lack a prediction for some channel")
    meta = rows.drop_duplicates("subject").set_index("subject")[["label", "site"]]
    return wide.join(meta)


def stack_predictions(pred: pd.DataFrame, *, channels=None, param_grid: dict | None = None, inner_cv: int = 3,
                      seed: int = 0, n_jobs: int = 1) -> pd.DataFrame:
    """Out-of-fold stacked probabilities, one row per subject.

    Parameters
    ----------
    pred : DataFrame
        ``predictions.csv`` of a nested cross-validation (columns subject, site, label, fold, channel, score,
        role, inner_fold).
    channels : sequence of str, optional
        Features (default: every channel of ``pred``).
    param_grid : dict, optional
        XGBoost hyper-parameter grid (default :data:`DEFAULT_GRID`).
    inner_cv : int
        Folds of the grid search, inside the outer training subjects.

    Returns
    -------
    DataFrame with subject, site, label, fold, score, best_params (one row per subject)

    Raises
    ------
    DataError
        No ``role == "inner"`` rows (run cross_validate with ``cv.inner_splits >= 2``), or a subject in both the
        training and the test features of a fold.
    """
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from xgboost import XGBClassifier

    if "role" not in pred.columns or not (pred["role"] == "inner").any():
        raise DataError(
            "stacking needs out-of-fold training features: run cross_validate with cv.inner_splits >= 2 "
            "(rows with role == 'inner'); stacking on the outer predictions themselves would leak"
        )
    channels = sorted(pred["channel"].unique()) if channels is None else list(channels)
    grid = DEFAULT_GRID if param_grid is None else param_grid
    out = []
    for k in sorted(pred["fold"].unique()):
        tr = feature_table(pred, k, "inner", channels)
        te = feature_table(pred, k, "test", channels)
        subjects = np.concatenate([tr.index.to_numpy(), te.index.to_numpy()])
        check_disjoint(np.arange(len(tr)), np.arange(len(tr), len(subjects)), subjects, "subject")
        ytr = tr["label"].to_numpy().astype(int)
        n_min = int(np.bincount(ytr, minlength=2).min())
        folds = min(inner_cv, n_min)
        base = XGBClassifier(tree_method="hist", n_jobs=n_jobs, random_state=seed, eval_metric="logloss",
                             verbosity=0)
        if folds >= 2:
            search = GridSearchCV(base, grid, scoring="roc_auc",
                                  cv=StratifiedKFold(folds, shuffle=True, random_state=seed), n_jobs=1,
                                  error_score=np.nan)
            search.fit(tr[channels].to_numpy(), ytr)
            model, best = search.best_estimator_, search.best_params_
        else:
            model, best = base.fit(tr[channels].to_numpy(), ytr), {}
        scores = model.predict_proba(te[channels].to_numpy())[:, 1]
        out.append(pd.DataFrame({"subject": te.index.to_numpy(), "site": te["site"].to_numpy(),
                                 "label": te["label"].to_numpy().astype(int), "fold": k, "score": scores,
                                 "best_params": str(best)}))
        log.info("stacking fold %d: %d training subjects, best %s", k, len(tr), best)
    return pd.concat(out, ignore_index=True)


def average_predictions(pred: pd.DataFrame, channels=None) -> pd.DataFrame:
    """The no-stacking ablation: per subject, the mean of the channels' test probabilities."""
    rows = pred[pred["role"] == "test"] if "role" in pred.columns else pred
    if channels is not None:
        rows = rows[rows["channel"].isin(list(channels))]
    return rows.groupby(["subject", "site", "label", "fold"], as_index=False)["score"].mean()
