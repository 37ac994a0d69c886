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
of the fold models' probabilities. Outputs in ``output_dir``: ``config.json`` (resolved), ``fold<k>/model.pt``
(the kept weights), ``fold<k>/best.pt`` / ``last.pt`` (+ ``.config.json``), ``fold<k>/split.json`` (the subjects
that trained, validated and tested that fold), ``cv_predictions.csv`` (out-of-fold scores), ``test_predictions.csv``,
``results.json``. A metric that is undefined (a test set with one class, constant scores) is recorded as NaN with
its reason; the run's outputs are written anyway. ``cv.scheme = "none"`` trains one model on all labelled scans
(``fold0/model.pt``), e.g. the sex base model before transfer.

Before anything is trained, :func:`check_model_input` checks that the network runs on the (cropped) input and
resolves ``model.ad_head_prepool = "auto"``.
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

from learn import ConfigError, DataError, MetricUndefinedError
from learn.checkpoint import load_checkpoint
from learn.config import config_from_dict, load_config, save_resolved
from learn.cv import leave_groups_out, leave_one_group_out, stratified_group_kfold, validation_split
from learn.metrics import METRIC_NAMES, binary_metrics, regression_metrics, subsample_ci
from learn.training import ShardSampler, ensemble_scores, evaluate, fit, keras_decay_scheduler
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
from surfmap.exceptions import InputFileNotFoundError

__all__ = [
    "CHANNELS",
    "MIN_INPUT",
    "apply_qc_report",
    "build_model",
    "check_model_input",
    "fold_splits",
    "intact_transfer",
    "safe_metrics",
    "training_subjects",
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
                               test_cohort=_abs(cfg.data.test_cohort), cache_dir=_abs(cfg.data.cache_dir),
                               qc_report=_abs(cfg.data.qc_report))
    model = dataclasses.replace(cfg.model, base_checkpoint=_abs(cfg.model.base_checkpoint))
    return dataclasses.replace(cfg, data=data, model=model, output_dir=_abs(cfg.output_dir))


CHANNELS = {"gmd": 0, "gmv": 1}
#: smallest input (voxels per axis) each network runs on: the base network and the AD head without its first
#: max-pool need 37, the released AD head (``ad_head_prepool=True``) 69; the seed's 96x120x86 fits both.
MIN_INPUT = {"base": 37, "ad_prepool": 69}


def _base_from_checkpoint(path, m: ModelConfig | None = None, in_channels: int | None = None) -> InceptionResNetV2:
    ckpt = load_checkpoint(path)
    args = ckpt.get("args") or {}
    mcfg = config_from_dict(ModelConfig, args.get("model", {}))
    if mcfg.kind not in ("sex", "age"):
        raise ConfigError(f"model.base_checkpoint {str(path)!r} holds a {mcfg.kind!r} model; a sex or age model "
                          "is needed for the stem transfer")
    base_channels = len(args.get("data", {}).get("channels", ["gmd", "gmv"]))
    if in_channels is not None and base_channels != in_channels:
        raise ConfigError(f"model.base_checkpoint {str(path)!r} was trained on {base_channels} input channel(s); "
                          f"this run has {in_channels} (data.channels): use the same data.channels as the base run")
    if m is not None and (float(m.width_mult) != float(mcfg.width_mult) or tuple(m.blocks) != tuple(mcfg.blocks)):
        raise ConfigError(f"model.width_mult / model.blocks ({m.width_mult}, {list(m.blocks)}) differ from those of "
                          f"model.base_checkpoint {str(path)!r} ({mcfg.width_mult}, {list(mcfg.blocks)}); set them "
                          "to the base model's")
    base = _build_base(mcfg, base_channels)
    base.load_state_dict(ckpt["model"])
    return base


def _build_base(m: ModelConfig, in_channels: int = 2) -> InceptionResNetV2:
    builder = build_age_model if m.kind == "age" else build_sex_model
    return builder(m.width_mult, tuple(m.blocks), bn_gamma=m.bn_gamma, dropout=m.dropout, in_channels=in_channels)


def build_model(m: ModelConfig, in_channels: int = 2, *, weights_follow: bool = False) -> nn.Module:
    """The network of ``m.kind``; the AD classifier takes the stem (or, with ``m.transfer = "intact"``, the whole
    network) of ``m.base_checkpoint`` when given.

    Parameters
    ----------
    m : ModelConfig
        ``ad_head_prepool = "auto"`` is taken as True here; :func:`check_model_input` resolves it for an input.
    in_channels : int
        1 or 2 (``data.channels``).
    weights_follow : bool
        The caller loads trained weights next (no warning about an untrained stem).
    """
    if isinstance(m.bn_momentum, str) and m.bn_momentum != "cumulative":
        raise ConfigError(f"model.bn_momentum should be a number or 'cumulative'; {m.bn_momentum!r} was provided")
    model = _build_model(m, in_channels, weights_follow)
    return set_bn_momentum(model, None if m.bn_momentum == "cumulative" else float(m.bn_momentum))


def _build_model(m: ModelConfig, in_channels: int, weights_follow: bool) -> nn.Module:
    if m.kind in ("sex", "age"):
        return _build_base(m, in_channels)
    if m.base_checkpoint:
        base = _base_from_checkpoint(m.base_checkpoint, m, in_channels)
        log.info("AD classifier: %s transferred from %s", "whole network" if m.transfer == "intact" else "stem",
                 m.base_checkpoint)
    else:
        if not weights_follow:
            log.warning("AD classifier without model.base_checkpoint: the %s is untrained (no transfer)",
                        "network" if m.transfer == "intact" else "stem")
        base = _build_base(dataclasses.replace(m, kind="sex"), in_channels)
    dropout = 0.5 if m.dropout is None else m.dropout
    if m.transfer == "intact":
        return intact_transfer(base, dropout)
    prepool = True if m.ad_head_prepool == "auto" else bool(m.ad_head_prepool)
    return ADClassifier.from_base(base, ad_head_prepool=prepool, dropout=dropout)


def intact_transfer(base: InceptionResNetV2, dropout: float = 0.5) -> InceptionResNetV2:
    """The paper's supplementary "intact" AD model: the whole base network with a new Dropout + Dense(1).

    An age base model loses its 128-unit layer; the new Dense takes the pooled ``conv_7b`` features.
    """
    base.dropout = nn.Dropout(dropout)
    f = base.conv_7b.conv.out_channels
    if base.head == "age":
        del base.fc_age
        base.head = "sex"
        base.config["head"] = "sex"
    base.fc = nn.Linear(f, 1)
    nn.init.xavier_uniform_(base.fc.weight)
    nn.init.zeros_(base.fc.bias)
    return base


def check_model_input(m: ModelConfig, input_shape, in_channels: int = 2) -> ModelConfig:
    """Check that the network of ``m`` runs on inputs of ``input_shape`` voxels; resolve ``ad_head_prepool="auto"``.

    Parameters
    ----------
    m : ModelConfig
    input_shape : (3,) ints
        The model input after the crop (96x120x86 in the seed, 48x60x43 on the 3 mm synthetic grid).
    in_channels : int

    Returns
    -------
    ModelConfig
        With ``ad_head_prepool`` a bool.

    Raises
    ------
    ConfigError
        The input is too small for the network; the message names the setting to change.
    """
    shape = tuple(int(v) for v in input_shape)
    txt = "x".join(map(str, shape))
    n = min(shape)
    uses_head = m.kind == "ad" and m.transfer == "stem"
    prepool = m.ad_head_prepool
    if uses_head and prepool == "auto":
        prepool = n >= MIN_INPUT["ad_prepool"]
        if not prepool:
            log.warning("model.ad_head_prepool = 'auto': the %s input has fewer than %d voxels on an axis, so the AD "
                        "head skips its first max-pool (a deviation from the released model, fine for the 3 mm "
                        "synthetic grid; set model.ad_head_prepool = false to make it explicit)", txt,
                        MIN_INPUT["ad_prepool"])
    elif not uses_head:
        prepool = bool(prepool) if prepool != "auto" else True
    if uses_head and prepool and n < MIN_INPUT["ad_prepool"]:
        raise ConfigError(f"the model input is {txt} voxels (after data.crop); the AD head with model.ad_head_prepool "
                          f"= true needs at least {MIN_INPUT['ad_prepool']} per axis: set model.ad_head_prepool = "
                          "'auto' (or false), or enlarge data.crop")
    if n < MIN_INPUT["base"]:
        what = "the AD head" if uses_head else f"the {m.kind if m.kind != 'ad' else 'intact'} network"
        raise ConfigError(f"the model input is {txt} voxels (after data.crop); {what} needs at least "
                          f"{MIN_INPUT['base']} per axis: enlarge or remove data.crop (or use a finer grid)")
    resolved = dataclasses.replace(m, ad_head_prepool=bool(prepool), base_checkpoint=None)
    probe = _build_model(dataclasses.replace(resolved, width_mult=0.01, blocks=(1, 1, 1)), in_channels, True)
    try:
        with torch.no_grad():
            probe.to("meta").eval()(torch.empty((1, in_channels) + shape, device="meta"))
    except RuntimeError as exc:  # pragma: no cover - the bounds above are exact for the released layers
        raise ConfigError(f"model.kind = {m.kind!r} cannot run on a {txt} input ({exc}); enlarge data.crop") from exc
    return dataclasses.replace(m, ad_head_prepool=bool(prepool))


def make_splits(cohort, rows, cfg: VolumetricConfig):
    """(train_rows, test_rows) per fold over positions ``rows`` of the cohort, grouped as ``cfg.cv`` says.

    ``cv.scheme = "none"`` gives one "fold" that trains on every row and tests on none.
    """
    if cfg.cv.scheme == "none":
        return [(np.asarray(rows, dtype=np.int64), np.zeros(0, dtype=np.int64))]
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
    """Training loaders (``shuffle=True``) use a DistributedSampler under torch.distributed; evaluation loaders a
    :class:`learn.training.ShardSampler`, so that each sample is scored exactly once."""
    sampler = None
    training = shuffle
    if distributed:
        if shuffle:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(ds, shuffle=True, seed=seed)
        else:
            sampler = ShardSampler(ds)
        shuffle = False
    n = len(sampler) if sampler is not None else len(ds)
    # a last training batch of one scan breaks BatchNorm on the 1x1x1 maps of the head: drop that one scan
    # (a different one each epoch, as the order is shuffled)
    drop_last = training and n % batch_size == 1 and n > 1
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last)


def safe_metrics(fn, *args, names=METRIC_NAMES, what: str = "metrics", **kwargs) -> dict:
    """``fn(*args, **kwargs)``, or NaN for each of ``names`` plus ``undefined`` (the reason) when a metric is
    undefined (a single class, constant scores), so that one degenerate metric never throws away a run."""
    try:
        return fn(*args, **kwargs)
    except MetricUndefinedError as exc:
        log.warning("%s undefined: %s", what, exc)
        out = {n: float("nan") for n in names}
        out["undefined"] = str(exc)
        return out


def _ci(y, s, **kwargs) -> dict:
    try:
        return subsample_ci(y, s, **kwargs)
    except MetricUndefinedError as exc:
        return {"undefined": str(exc)}


def load_fold_models(output_dir, device="cpu") -> list[nn.Module]:
    """The kept (best or last) model of every fold of a finished run, in fold order, in eval mode."""
    return [m for _, m in _fold_models(output_dir, device)]


def _fold_models(output_dir, device="cpu") -> list[tuple[int, nn.Module]]:
    out = Path(output_dir)
    folds = sorted(out.glob("fold*/model.pt"), key=lambda p: int(p.parent.name[4:]))
    if not folds:
        raise DataError(f"no fold models (fold*/model.pt) under {str(out)!r}; run 'surfmap-learn volumetric "
                        "train' first")
    models = []
    for p in folds:
        ckpt = load_checkpoint(p)
        cfg = config_from_dict(VolumetricConfig, ckpt["args"])
        mcfg = dataclasses.replace(cfg.model, base_checkpoint=None)
        m = build_model(mcfg, len(cfg.data.channels), weights_follow=True)
        m.load_state_dict(ckpt["model"])
        models.append((int(p.parent.name[4:]), m.to(device).eval()))
    return models


def fold_splits(output_dir) -> dict[int, dict]:
    """``{fold: {"fit": [...], "val": [...], "test": [...]}}`` subject ids of a finished run (``fold<k>/split.json``)."""
    out = {}
    for p in sorted(Path(output_dir).glob("fold*/split.json")):
        out[int(p.parent.name[4:])] = json.loads(p.read_text())
    return out


def apply_qc_report(cohort, report_path):
    """Drop the scans that ``surfmap-learn volumetric qc`` excluded (``qc_report.csv``), matched on subject (and
    session when both tables have it). Scans absent from the report are kept (and counted in the log)."""
    import pandas as pd

    path = Path(report_path)
    if not path.is_file():
        raise InputFileNotFoundError(f"data.qc_report {str(path)!r} does not exist; write it with "
                                     "'surfmap-learn volumetric qc'")
    rep = pd.read_csv(path)
    if "subject" not in rep.columns or "qc_excluded" not in rep.columns:
        raise DataError(f"data.qc_report {str(path)!r} lacks 'subject' / 'qc_excluded'; found {list(rep.columns)}")
    key = ["subject", "session"] if ("session" in rep.columns and "session" in cohort.columns) else ["subject"]
    rep = rep[key + ["qc_excluded"]].copy()
    rep["subject"] = rep["subject"].astype(str)
    if "session" in key:
        rep["session"] = rep["session"].astype(str)
    left = cohort[key].astype(str)
    merged = left.merge(rep, on=key, how="left")
    excluded = merged["qc_excluded"].fillna(False).astype(bool).to_numpy()
    n_missing = int(merged["qc_excluded"].isna().sum())
    log.info("data.qc_report: %d of %d scans excluded by QC%s", int(excluded.sum()), len(cohort),
             f"; {n_missing} scans are not in the report (kept)" if n_missing else "")
    out = cohort[~excluded].reset_index(drop=True)
    out["row"] = np.arange(len(out))
    return out, int(excluded.sum())


def run_experiment(cfg: VolumetricConfig) -> dict:
    """Cross-validate (and ensemble on ``data.test_cohort``) as configured; see the module docstring.

    Returns
    -------
    dict
        ``folds`` (per-fold metrics), ``cv`` (pooled metrics + ``ci``), ``test`` (ensemble metrics + ``ci``, when
        a test cohort is given), ``synthetic`` flag, ``output_dir``. A metric that is undefined (one class in a
        test set, constant scores) is NaN with the reason under ``undefined``; the outputs are written anyway.
    """
    cfg = resolve(cfg)
    out = Path(cfg.output_dir)
    distributed = init_distributed()
    device = get_device(cfg.train.device)
    regression = cfg.model.kind == "age"
    label = cfg.data.label_column
    cohort = read_cohort(cfg.data.cohort, label_column=None if regression else label)
    if label not in cohort.columns:
        raise DataError(f"data.label_column {label!r} is not a column of {cfg.data.cohort!r}")
    synthetic = bool("synthetic" in cohort.columns and cohort["synthetic"].astype(bool).any())
    if synthetic:
        log.warning("the cohort %s is SYNTHETIC: results test the pipeline, not real brains", cfg.data.cohort)
    n_qc = 0
    if cfg.data.exclude_qc and "qc_excluded" in cohort.columns:
        n_qc = int(cohort["qc_excluded"].astype(bool).sum())
        cohort = cohort[~cohort["qc_excluded"].astype(bool)].reset_index(drop=True)
        cohort["row"] = np.arange(len(cohort))
    if cfg.data.qc_report:
        cohort, n_qc = apply_qc_report(cohort, cfg.data.qc_report)
    shape, affine = check_grid(cohort, reference=cfg.data.mask)
    mask = load_mask(cfg.data.mask, shape, affine, threshold=cfg.data.mask_threshold) if cfg.data.mask else None
    crop = resolve_crop(cfg.data.crop, shape)
    input_shape = tuple(len(range(*sl.indices(n))) for sl, n in zip(crop, shape)) if crop else tuple(shape)
    channels = [CHANNELS[c] for c in cfg.data.channels]
    cfg = dataclasses.replace(cfg, model=check_model_input(cfg.model, input_shape, len(channels)))
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, out / "config.json")
    rows = np.flatnonzero(cohort[label].notna().to_numpy())
    if rows.shape[0] == 0:
        raise DataError(f"no scan in {cfg.data.cohort!r} has a {label!r} value")
    if cfg.train.shuffle_labels:
        import pandas as pd

        cohort = cohort.copy()
        vals = cohort[label].astype("float64").to_numpy(na_value=np.nan).copy()
        vals[rows] = np.random.default_rng(cfg.train.seed + 1000).permutation(vals[rows])
        cohort[label] = pd.Series(vals, index=cohort.index).astype("float64" if regression else "Int64")
        log.warning("train.shuffle_labels: ALL %d labels permuted before the split (null control)", rows.shape[0])
    splits = make_splits(cohort, rows, cfg)
    loss_fn = nn.L1Loss() if regression else nn.BCEWithLogitsLoss()
    task = "regression" if regression else "binary"
    metrics_fn = regression_metrics if regression else binary_metrics
    names = ("mae", "rmse", "r") if regression else METRIC_NAMES
    store: dict = {}
    ds_kw = dict(label_column=label, mask=mask, crop=crop, cache=cfg.data.cache, cache_dir=cfg.data.cache_dir,
                 cache_store=store, task=task, channels=channels)
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
    subjects = cohort["subject"].astype(str).to_numpy()
    for i_fold, k in enumerate(folds_to_run):
        train_rows, test_rows = splits[k]
        if test_rows.shape[0]:
            validate_split(cohort, train_rows, test_rows, by=leak_columns)
        fit_rows, val_rows = validation_split(train_rows, cfg.train.val_size, seed=cfg.train.seed + k,
                                              groups=cohort["subject"].to_numpy())
        log.info("fold %d (%d of %d): training on %d scans, validating on %d, testing on %d", k, i_fold + 1,
                 len(folds_to_run), fit_rows.shape[0], val_rows.shape[0], test_rows.shape[0])
        set_seed(cfg.train.seed + k)
        if is_main_process():
            (out / f"fold{k}").mkdir(parents=True, exist_ok=True)
            (out / f"fold{k}" / "split.json").write_text(json.dumps(
                {part: sorted(set(subjects[r].tolist())) for part, r in
                 (("fit", fit_rows), ("val", val_rows), ("test", test_rows))}, indent=1))
        ds_fit = VolumeDataset(cohort, fit_rows, **ds_kw)
        ds_val = VolumeDataset(cohort, val_rows, **ds_kw)
        model = build_model(cfg.model, len(channels))
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
                   _loader(ds_val, cfg.train.batch_size, False, cfg.data.num_workers, distributed, seed)
                   if len(ds_val) else None,
                   optimizer=opt, scheduler=sched, epochs=cfg.train.epochs, loss_fn=loss_fn, device=device,
                   checkpoint_dir=out / f"fold{k}", keep=cfg.train.keep, seed=seed, amp=cfg.train.amp,
                   amp_dtype=cfg.train.amp_dtype, progress=cfg.train.progress, args=cfg)
        if is_main_process():
            from learn.checkpoint import save_checkpoint

            save_checkpoint(out / f"fold{k}" / "model.pt", model=model, epoch=hist["epochs_run"] - 1, args=cfg,
                            history=hist, kept=cfg.train.keep)
        m = {}
        if test_rows.shape[0]:
            ds_test = VolumeDataset(cohort, test_rows, **ds_kw)
            ev = evaluate(model, _loader(ds_test, cfg.train.batch_size, False, cfg.data.num_workers, distributed,
                                         seed), device, loss_fn, amp=cfg.train.amp, amp_dtype=cfg.train.amp_dtype)
            m = safe_metrics(metrics_fn, ev["y_true"], ev["scores"], names=names, what=f"fold {k} metrics")
            for r, y, s in zip(ev["ids"], ev["y_true"], ev["scores"]):
                preds.append({"row": int(r), "fold": k, "y_true": float(y), "score": float(s)})
        else:
            m = {"undefined": "cv.scheme = 'none': every labelled scan trains this model; nothing is held out"}
        m.update(fold=k, n_train=int(fit_rows.shape[0]), n_val=int(val_rows.shape[0]),
                 n_test=int(test_rows.shape[0]),
                 test_groups=sorted(set(cohort[group_col].astype(str).to_numpy()[test_rows])) if group_col in
                 cohort.columns else [], best_epoch=hist["best_epoch"], val_loss=hist["val_loss"])
        fold_results.append(m)
        log.info("fold %d: %s", k, {kk: v for kk, v in m.items() if kk in ("accuracy", "auc", "mae", "r")})
        del model
    import pandas as pd

    results = {"name": cfg.name, "synthetic": synthetic, "shuffled_labels": bool(cfg.train.shuffle_labels),
               "qc_excluded": n_qc, "folds": fold_results, "output_dir": str(out)}
    pred_df = pd.DataFrame(preds, columns=["row", "fold", "y_true", "score"])
    pred_df = pred_df.merge(cohort.drop(columns=["gmd_path", "gmv_path"]), on="row", how="left")
    if pred_df.shape[0] == 0:
        results["cv"] = {"undefined": "no held-out predictions (cv.scheme = 'none' trains on all data)"}
    else:
        y, s = pred_df["y_true"].to_numpy(), pred_df["score"].to_numpy()
        if regression:
            results["cv"] = safe_metrics(regression_metrics, y, s, names=names, what="pooled CV metrics")
        else:
            results["cv"] = safe_metrics(binary_metrics, y.astype(int), s, what="pooled CV metrics")
            results["cv"]["ci"] = _ci(y.astype(int), s, seed=cfg.train.seed)
            thr = cfg.train.screening_threshold
            results["cv"]["screening"] = safe_metrics(binary_metrics, y.astype(int), s, threshold=thr,
                                                      what="screening metrics")
    if is_main_process():
        pred_df.to_csv(out / "cv_predictions.csv", index=False)
        _write_results(out, results)  # written before the test set, so a failure there keeps the CV results
    if cfg.data.test_cohort and not regression:
        results["test"] = _ensemble_test(cfg, out, device, mask, crop, shape, affine, channels)
        if is_main_process():
            _write_results(out, results)
    return results


def _write_results(out: Path, results: dict) -> None:
    with open(out / "results.json", "w") as fh:
        json.dump(results, fh, indent=2, default=str)


def _ensemble_test(cfg, out, device, mask, crop, shape, affine, channels) -> dict:
    test = read_cohort(cfg.data.test_cohort, label_column=cfg.data.label_column)
    check_grid(test, reference=(shape, affine))
    rows = np.flatnonzero(test[cfg.data.label_column].notna().to_numpy())
    ds = VolumeDataset(test, rows, label_column=cfg.data.label_column, mask=mask, crop=crop, cache="memory",
                       channels=channels)
    loader = DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=False)
    scores = []
    for m in load_fold_models(out, device):
        ev = evaluate(m, loader, device, amp=cfg.train.amp, amp_dtype=cfg.train.amp_dtype)
        scores.append(ev["scores"])
    mean = ensemble_scores(scores)
    y = ev["y_true"].astype(int)
    res = safe_metrics(binary_metrics, y, mean, what="test-set metrics")
    res["ci"] = _ci(y, mean, seed=cfg.train.seed)
    res["screening"] = safe_metrics(binary_metrics, y, mean, threshold=cfg.train.screening_threshold,
                                    what="test-set screening metrics")
    df = test.iloc[rows].drop(columns=["gmd_path", "gmv_path"]).copy()
    df["score"] = mean
    df["in_sample"] = False
    for k, s in enumerate(scores):
        df[f"score_fold{k}"] = s
    if is_main_process():
        df.to_csv(out / "test_predictions.csv", index=False)
    return res


def _run_inputs(run_dir):
    """Resolved config of a finished run (from ``run_dir/config.json``)."""
    cfg_path = Path(run_dir) / "config.json"
    if not cfg_path.is_file():
        raise DataError(f"{str(cfg_path)!r} does not exist; is {str(run_dir)!r} the output_dir of a training run?")
    cfg = config_from_dict(VolumetricConfig, json.loads(cfg_path.read_text()))
    return cfg


def load_inputs(run_dir, cohort_csv, *, labelled_only: bool = True):
    """Cohort rows and their (N, C, X, Y, Z) model inputs, preprocessed as in the run ``run_dir``.

    Returns
    -------
    cohort : DataFrame (the selected rows), x : (N, C, X, Y, Z) float32 tensor, crop, (shape, affine) of the grid
    """
    cfg = _run_inputs(run_dir)
    label = cfg.data.label_column
    cohort = read_cohort(cohort_csv, label_column=label if labelled_only else None)
    shape, affine = check_grid(cohort, reference=cfg.data.mask)
    mask = load_mask(cfg.data.mask, shape, affine, threshold=cfg.data.mask_threshold) if cfg.data.mask else None
    crop = resolve_crop(cfg.data.crop, shape)
    if labelled_only:
        if label not in cohort.columns:
            raise DataError(f"{str(cohort_csv)!r} has no {label!r} column (the run's data.label_column)")
        cohort = cohort[cohort[label].notna()].reset_index(drop=True)
    if len(cohort) == 0:
        raise DataError(f"no scan to score in {str(cohort_csv)!r}")
    ds = VolumeDataset(cohort, label_column=label if labelled_only else None, mask=mask, crop=crop, cache=None,
                       channels=[CHANNELS[c] for c in cfg.data.channels])
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    return cohort, x, crop, (shape, affine)


def training_subjects(run_dir) -> set[str]:
    """Subjects that trained (or validated) any fold model of a run; from ``fold<k>/split.json``, or, for runs
    without them, every labelled subject of the run's cohort (conservative)."""
    splits = fold_splits(run_dir)
    if splits:
        return {s for sp in splits.values() for part in ("fit", "val") for s in sp.get(part, [])}
    cfg = _run_inputs(run_dir)
    co = read_cohort(cfg.data.cohort, label_column=None, check_files=False)
    lab = cfg.data.label_column
    return set(co.loc[co[lab].notna(), "subject"].astype(str)) if lab in co.columns else set(co["subject"])


@torch.no_grad()
def predict_cohort(run_dir, cohort_csv, device="cpu", batch_size: int = 24):
    """Scores of every scan of ``cohort_csv`` (labelled or not, e.g. MCI) by each fold model and their mean.

    The ``in_sample`` column is True for scans whose subject trained (or validated) any of the fold models:
    their scores are in-sample and ``clinical`` refuses them (use the run's ``cv_predictions.csv`` instead).
    """
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
    seen = training_subjects(run_dir)
    out["in_sample"] = out["subject"].astype(str).isin(seen).to_numpy()
    n_in = int(out["in_sample"].sum())
    if n_in:
        log.warning("%d of %d scans belong to subjects that trained the fold models: their scores are in-sample "
                    "(column in_sample); for those use the run's cv_predictions.csv", n_in, len(out))
    return out
