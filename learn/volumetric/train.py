"""Train and evaluate a volumetric model with grouped cross-validation (seed 000's recipe).

:func:`run_experiment` does, for each fold of leave-sites-out (AD) / leave-datasets-out (sex) CV:

1. check that no subject and no site / dataset is in both train and test (:func:`validate_split`);
2. split a random validation set off the training set (whole subjects; 120 AD / 600 sex scans);
3. build the model: the sex / age network, or the AD classifier whose stem is copied from
   ``model.base_checkpoint`` (a trained sex model);
4. train with SGD (Nesterov momentum 0.9), Keras per-batch decay ``lr0 / (1 + decay t)``, binary cross-entropy on
   logits, batch 24, 10 epochs, keeping the lowest-validation-loss weights (checkpoints in ``fold<k>/``);
5. score the held-out groups.

Then it pools the test predictions of all folds (accuracy, sensitivity, specificity, ROC AUC, 1000 x 50%
subsample intervals) and, when ``data.test_cohort`` is given, scores that independent set with the plain mean
of the fold models' probabilities. Outputs in ``output_dir``: ``config.json`` (resolved), ``fold<k>/best.pt``
(+ ``.config.json``), ``cv_predictions.csv``, ``test_predictions.csv``, ``results.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from learn import ConfigError, DataError
from learn.checkpoint import load_checkpoint
from learn.config import config_from_dict, load_config, save_resolved
from learn.cv import leave_groups_out, leave_one_group_out, stratified_group_kfold, validation_split
from learn.metrics import binary_metrics, regression_metrics, subsample_ci
from learn.training import ensemble_scores, evaluate, fit, keras_decay_scheduler
from learn.utils import get_device, init_distributed, is_main_process, set_seed
from learn.volumetric.config import ModelConfig, VolumetricConfig, resolve
from learn.volumetric.data import (
    VolumeDataset,
    check_grid,
    load_mask,
    read_cohort,
    resolve_crop,
    validate_split,
)
from learn.volumetric.model import (
    ADClassifier,
    InceptionResNetV2,
    build_age_model,
    build_sex_model,
    set_bn_momentum,
)

__all__ = [
    "build_model",
    "load_fold_models",
    "load_inputs",
    "load_volumetric_config",
    "make_splits",
    "predict_cohort",
    "run_experiment",
]

log = logging.getLogger(__name__)


def load_volumetric_config(path, overrides=None) -> VolumetricConfig:
    """Read a TOML/JSON config; relative paths are taken relative to the config file's folder."""
    cfg = load_config(path, VolumetricConfig, overrides)
    base = Path(path).resolve().parent if path is not None else Path.cwd()

    def _abs(p):
        return None if p in (None, "") else str(p if Path(p).is_absolute() else base / p)

    data = dataclasses.replace(cfg.data, cohort=_abs(cfg.data.cohort) or "", mask=_abs(cfg.data.mask),
                               test_cohort=_abs(cfg.data.test_cohort), cache_dir=_abs(cfg.data.cache_dir))
    model = dataclasses.replace(cfg.model, base_checkpoint=_abs(cfg.model.base_checkpoint))
    return dataclasses.replace(cfg, data=data, model=model, output_dir=_abs(cfg.output_dir))


def _base_from_checkpoint(path) -> InceptionResNetV2:
    ckpt = load_checkpoint(path)
    args = ckpt.get("args") or {}
    mcfg = config_from_dict(ModelConfig, args.get("model", {}))
    if mcfg.kind not in ("sex", "age"):
        raise ConfigError(f"model.base_checkpoint {str(path)!r} holds a {mcfg.kind!r} model; a sex or age model "
                          "is needed for the stem transfer")
    base = _build_base(mcfg)
    base.load_state_dict(ckpt["model"])
    return base


def _build_base(m: ModelConfig) -> InceptionResNetV2:
    builder = build_age_model if m.kind == "age" else build_sex_model
    return builder(m.width_mult, tuple(m.blocks), bn_gamma=m.bn_gamma, dropout=m.dropout)


def build_model(m: ModelConfig) -> nn.Module:
    """The network of ``m.kind``; the AD classifier takes the stem of ``m.base_checkpoint`` when given."""
    if isinstance(m.bn_momentum, str) and m.bn_momentum != "cumulative":
        raise ConfigError(f"model.bn_momentum should be a number or 'cumulative'; {m.bn_momentum!r} was provided")
    return set_bn_momentum(_build_model(m), None if m.bn_momentum == "cumulative" else float(m.bn_momentum))


def _build_model(m: ModelConfig) -> nn.Module:
    if m.kind in ("sex", "age"):
        return _build_base(m)
    if m.base_checkpoint:
        base = _base_from_checkpoint(m.base_checkpoint)
        log.info("AD classifier: stem transferred from %s", m.base_checkpoint)
    else:
        log.warning("AD classifier without model.base_checkpoint: the stem is untrained (no transfer)")
        base = _build_base(dataclasses.replace(m, kind="sex"))
    return ADClassifier.from_base(base, ad_head_prepool=m.ad_head_prepool,
                                  dropout=0.5 if m.dropout is None else m.dropout)


def make_splits(cohort, rows, cfg: VolumetricConfig):
    """(train_rows, test_rows) per fold over positions ``rows`` of the cohort, grouped as ``cfg.cv`` says."""
    col = cfg.cv.group_column
    if col not in cohort.columns:
        raise DataError(f"cv.group_column {col!r} is not a column of the cohort table ({list(cohort.columns)})")
    groups = cohort[col].astype(str).to_numpy()[rows]
    scheme = cfg.cv.scheme
    if scheme in ("leave-sites-out", "leave-datasets-out"):
        it = leave_groups_out(groups, cfg.cv.n_splits, cfg.train.seed, always_train=cfg.cv.always_train)
    elif scheme in ("leave-one-site-out", "leave-one-group-out"):
        it = leave_one_group_out(groups)
    else:
        y = cohort[cfg.data.label_column].to_numpy()[rows]
        it = stratified_group_kfold(y, groups, cfg.cv.n_splits, cfg.train.seed)
    return [(rows[tr], rows[te]) for tr, te in it]


def _loader(ds, batch_size, shuffle, num_workers, distributed, seed):
    sampler = None
    if distributed:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(ds, shuffle=shuffle, seed=seed)
        shuffle = False
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=num_workers,
                      drop_last=False)


def load_fold_models(output_dir, device="cpu") -> list[nn.Module]:
    """The kept (best or last) model of every fold of a finished run, in fold order, in eval mode."""
    out = Path(output_dir)
    folds = sorted(out.glob("fold*/model.pt"), key=lambda p: int(p.parent.name[4:]))
    if not folds:
        raise DataError(f"no fold models (fold*/model.pt) under {str(out)!r}; run 'surfmap-learn volumetric "
                        "train' first")
    models = []
    for p in folds:
        ckpt = load_checkpoint(p)
        cfg = config_from_dict(VolumetricConfig, ckpt["args"])
        m = build_model(dataclasses.replace(cfg.model, base_checkpoint=None)) if cfg.model.kind == "ad" else \
            build_model(cfg.model)
        m.load_state_dict(ckpt["model"])
        models.append(m.to(device).eval())
    return models


def run_experiment(cfg: VolumetricConfig) -> dict:
    """Cross-validate (and ensemble on ``data.test_cohort``) as configured; see the module docstring.

    Returns
    -------
    dict
        ``folds`` (per-fold metrics), ``cv`` (pooled metrics + ``ci``), ``test`` (ensemble metrics + ``ci``, when
        a test cohort is given), ``synthetic`` flag, ``output_dir``.
    """
    cfg = resolve(cfg)
    out = Path(cfg.output_dir)
    distributed = init_distributed()
    device = get_device(cfg.train.device)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, out / "config.json")
    regression = cfg.model.kind == "age"
    label = cfg.data.label_column
    cohort = read_cohort(cfg.data.cohort, label_column=None if regression else label)
    if label not in cohort.columns:
        raise DataError(f"data.label_column {label!r} is not a column of {cfg.data.cohort!r}")
    synthetic = bool("synthetic" in cohort.columns and cohort["synthetic"].astype(bool).any())
    if synthetic:
        log.warning("the cohort %s is SYNTHETIC: results test the pipeline, not real brains", cfg.data.cohort)
    if cfg.data.exclude_qc and "qc_excluded" in cohort.columns:
        cohort = cohort[~cohort["qc_excluded"].astype(bool)].reset_index(drop=True)
    shape, affine = check_grid(cohort, reference=cfg.data.mask)
    mask = load_mask(cfg.data.mask, shape, affine, threshold=cfg.data.mask_threshold) if cfg.data.mask else None
    crop = resolve_crop(cfg.data.crop, shape)
    rows = np.flatnonzero(cohort[label].notna().to_numpy())
    if rows.shape[0] == 0:
        raise DataError(f"no scan in {cfg.data.cohort!r} has a {label!r} value")
    splits = make_splits(cohort, rows, cfg)
    loss_fn = nn.L1Loss() if regression else nn.BCEWithLogitsLoss()
    task = "regression" if regression else "binary"
    metrics_fn = regression_metrics if regression else binary_metrics
    store: dict = {}
    ds_kw = dict(label_column=label, mask=mask, crop=crop, cache=cfg.data.cache, cache_dir=cfg.data.cache_dir,
                 cache_store=store, task=task)
    fold_results, preds = [], []
    folds_to_run = range(len(splits)) if cfg.cv.folds is None else cfg.cv.folds
    group_col = cfg.cv.group_column
    # never share a subject; for site-wise CV never a site, for dataset-wise CV never a dataset (nor its sites)
    leak_columns = ["subject", group_col]
    if "site" in cfg.cv.scheme and "site" in cohort.columns:
        leak_columns.append("site")
    if "dataset" in cfg.cv.scheme and "dataset" in cohort.columns:
        leak_columns.append("dataset")
    leak_columns = list(dict.fromkeys(leak_columns))
    for k in folds_to_run:
        train_rows, test_rows = splits[k]
        validate_split(cohort, train_rows, test_rows, by=leak_columns)
        fit_rows, val_rows = validation_split(train_rows, cfg.train.val_size, seed=cfg.train.seed + k,
                                              groups=cohort["subject"].to_numpy())
        set_seed(cfg.train.seed + k)
        train_labels = None
        if cfg.train.shuffle_labels:
            y = cohort[label].to_numpy(dtype=np.float64)[fit_rows]
            train_labels = np.random.default_rng(cfg.train.seed + 1000 + k).permutation(y)
            log.warning("fold %d: training labels SHUFFLED (negative control)", k)
        ds_fit = VolumeDataset(cohort, fit_rows, labels=train_labels, **ds_kw)
        ds_val = VolumeDataset(cohort, val_rows, **ds_kw)
        ds_test = VolumeDataset(cohort, test_rows, **ds_kw)
        model = build_model(cfg.model)
        for name, p in model.named_parameters():
            if any(name.startswith(f) for f in cfg.train.freeze):
                p.requires_grad_(False)
        model = model.to(device)
        if distributed:
            model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=cfg.train.lr, momentum=cfg.train.momentum, nesterov=cfg.train.nesterov)
        sched = keras_decay_scheduler(opt, cfg.train.decay)
        seed = cfg.train.seed + k
        hist = fit(model, _loader(ds_fit, cfg.train.batch_size, True, cfg.data.num_workers, distributed, seed),
                   _loader(ds_val, cfg.train.batch_size, False, cfg.data.num_workers, distributed, seed),
                   optimizer=opt, scheduler=sched, epochs=cfg.train.epochs, loss_fn=loss_fn, device=device,
                   checkpoint_dir=out / f"fold{k}", keep=cfg.train.keep, seed=seed, amp=cfg.train.amp,
                   progress=cfg.train.progress, args=cfg)
        ev = evaluate(model, _loader(ds_test, cfg.train.batch_size, False, cfg.data.num_workers, distributed, seed),
                      device, loss_fn, amp=cfg.train.amp)
        if is_main_process():
            from learn.checkpoint import save_checkpoint

            save_checkpoint(out / f"fold{k}" / "model.pt", model=model, epoch=hist["epochs_run"] - 1, args=cfg,
                            history=hist, kept=cfg.train.keep)
        try:
            m = metrics_fn(ev["y_true"], ev["scores"])
        except ValueError as exc:
            m = {"error": str(exc)}
        m.update(fold=k, n_train=int(fit_rows.shape[0]), n_val=int(val_rows.shape[0]),
                 test_groups=sorted(set(cohort[group_col].astype(str).to_numpy()[test_rows])),
                 best_epoch=hist["best_epoch"], val_loss=hist["val_loss"])
        fold_results.append(m)
        log.info("fold %d: %s", k, {kk: v for kk, v in m.items() if kk in ("accuracy", "auc", "mae", "r")})
        for r, y, s in zip(ev["ids"], ev["y_true"], ev["scores"]):
            preds.append({"row": int(r), "fold": k, "y_true": float(y), "score": float(s)})
        del model
    import pandas as pd

    pred_df = pd.DataFrame(preds)
    pred_df = pred_df.merge(cohort.drop(columns=["gmd_path", "gmv_path"]), on="row", how="left")
    results = {"name": cfg.name, "synthetic": synthetic, "folds": fold_results, "output_dir": str(out)}
    y, s = pred_df["y_true"].to_numpy(), pred_df["score"].to_numpy()
    if regression:
        results["cv"] = regression_metrics(y, s)
    else:
        results["cv"] = binary_metrics(y.astype(int), s)
        results["cv"]["ci"] = subsample_ci(y.astype(int), s, seed=cfg.train.seed)
    if cfg.data.test_cohort and not regression:
        results["test"] = _ensemble_test(cfg, out, device, mask, crop, shape, affine)
    if is_main_process():
        pred_df.to_csv(out / "cv_predictions.csv", index=False)
        with open(out / "results.json", "w") as fh:
            json.dump(results, fh, indent=2, default=str)
    return results


def _ensemble_test(cfg, out, device, mask, crop, shape, affine) -> dict:
    test = read_cohort(cfg.data.test_cohort, label_column=cfg.data.label_column)
    check_grid(test, reference=(shape, affine))
    rows = np.flatnonzero(test[cfg.data.label_column].notna().to_numpy())
    ds = VolumeDataset(test, rows, label_column=cfg.data.label_column, mask=mask, crop=crop, cache="memory")
    loader = DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=False)
    scores = []
    for m in load_fold_models(out, device):
        ev = evaluate(m, loader, device)
        scores.append(ev["scores"])
    mean = ensemble_scores(scores)
    y = ev["y_true"].astype(int)
    res = binary_metrics(y, mean)
    res["ci"] = subsample_ci(y, mean, seed=cfg.train.seed)
    res["screening"] = binary_metrics(y, mean, threshold=0.3)
    df = test.iloc[rows].drop(columns=["gmd_path", "gmv_path"]).copy()
    df["score"] = mean
    for k, s in enumerate(scores):
        df[f"score_fold{k}"] = s
    if is_main_process():
        df.to_csv(out / "test_predictions.csv", index=False)
    return res


def _run_inputs(run_dir):
    """Resolved config, mask and crop of a finished run (from ``run_dir/config.json``)."""
    cfg_path = Path(run_dir) / "config.json"
    if not cfg_path.is_file():
        raise DataError(f"{str(cfg_path)!r} does not exist; is {str(run_dir)!r} the output_dir of a training run?")
    cfg = config_from_dict(VolumetricConfig, json.loads(cfg_path.read_text()))
    return cfg


def load_inputs(run_dir, cohort_csv, *, labelled_only: bool = True):
    """Cohort rows and their (N, 2, X, Y, Z) model inputs, preprocessed as in the run ``run_dir``.

    Returns
    -------
    cohort : DataFrame (the selected rows), x : (N, 2, X, Y, Z) float32 tensor, crop, (shape, affine) of the grid
    """
    cfg = _run_inputs(run_dir)
    label = cfg.data.label_column
    cohort = read_cohort(cohort_csv, label_column=label if label else None)
    shape, affine = check_grid(cohort, reference=cfg.data.mask)
    mask = load_mask(cfg.data.mask, shape, affine, threshold=cfg.data.mask_threshold) if cfg.data.mask else None
    crop = resolve_crop(cfg.data.crop, shape)
    if labelled_only:
        cohort = cohort[cohort[label].notna()].reset_index(drop=True)
    if len(cohort) == 0:
        raise DataError(f"no scan to score in {str(cohort_csv)!r}")
    ds = VolumeDataset(cohort, label_column=label if labelled_only else None, mask=mask, crop=crop, cache=None)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    return cohort, x, crop, (shape, affine)


@torch.no_grad()
def predict_cohort(run_dir, cohort_csv, device="cpu", batch_size: int = 24):
    """Scores of every scan of ``cohort_csv`` (labelled or not, e.g. MCI) by each fold model and their mean."""
    cohort, x, _, _ = load_inputs(run_dir, cohort_csv, labelled_only=False)
    scores = []
    for m in load_fold_models(run_dir, device):
        s = [torch.sigmoid(m(x[i:i + batch_size].to(device)).float().reshape(-1)).cpu().numpy()
             for i in range(0, x.shape[0], batch_size)]
        scores.append(np.concatenate(s))
    out = cohort.drop(columns=["gmd_path", "gmv_path"]).copy()
    out["score"] = ensemble_scores(scores)
    for k, s in enumerate(scores):
        out[f"score_fold{k}"] = s
    return out
