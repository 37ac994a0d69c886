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

__all__ = ["DEFAULT_GRID", "average_predictions", "feature_table", "fit_stacker", "stack_predictions"]

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
        model, best = fit_stacker(tr[channels].to_numpy(), ytr, param_grid=grid, inner_cv=inner_cv, seed=seed,
                                  n_jobs=n_jobs)
        scores = model.predict_proba(te[channels].to_numpy())[:, 1]
        out.append(pd.DataFrame({"subject": te.index.to_numpy(), "site": te["site"].to_numpy(),
                                 "label": te["label"].to_numpy().astype(int), "fold": k, "score": scores,
                                 "best_params": str(best)}))
        log.info("stacking fold %d: %d training subjects, best %s", k, len(tr), best)
    return pd.concat(out, ignore_index=True)


def fit_stacker(X, y, *, param_grid: dict | None = None, inner_cv: int = 3, seed: int = 0, n_jobs: int = 1):
    """Fit the XGBoost stacker on training features, its hyper-parameters grid-searched (ROC AUC, ``inner_cv``
    stratified folds, fewer when a class is rarer) on these subjects only.

    Parameters
    ----------
    X : (n_subjects, n_channels) float
        Out-of-fold probabilities of the training subjects.
    y : (n_subjects,) 0/1

    Returns
    -------
    model : xgboost.XGBClassifier (fitted), best_params : dict
    """
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from xgboost import XGBClassifier

    y = np.asarray(y).astype(int)
    grid = DEFAULT_GRID if param_grid is None else param_grid
    folds = min(inner_cv, int(np.bincount(y, minlength=2).min()))
    base = XGBClassifier(tree_method="hist", n_jobs=n_jobs, random_state=seed, eval_metric="logloss", verbosity=0)
    if folds < 2:
        return base.fit(X, y), {}
    search = GridSearchCV(base, grid, scoring="roc_auc", cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                          n_jobs=1, error_score=np.nan)
    search.fit(X, y)
    return search.best_estimator_, search.best_params_


def average_predictions(pred: pd.DataFrame, channels=None) -> pd.DataFrame:
    """The no-stacking ablation: per subject, the mean of the channels' test probabilities."""
    rows = pred[pred["role"] == "test"] if "role" in pred.columns else pred
    if channels is not None:
        rows = rows[rows["channel"].isin(list(channels))]
    return rows.groupby(["subject", "site", "label", "fold"], as_index=False)["score"].mean()
