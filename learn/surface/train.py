"""Fine-tuning on flat-map images with seed 001's schedule, and cross-validation with per-subject predictions.

The schedule (every number configurable, :class:`ScheduleConfig`): 125 epochs; SGD with momentum 0.9, batch 64;
the first 75 epochs with mix-up (lambda ~ U(0, 1), i.e. Beta(1, 1)) and a learning rate of 0.01 divided by 10 every
25 epochs; then 50 epochs on the original images at a fixed 1e-4; the model of the last epoch is kept. Binary
cross-entropy on one logit. The training loop, mix-up, mixed precision, checkpoints and exact resume come from
:mod:`learn.training`; seeds, devices and ``torch.distributed`` from :mod:`learn.utils`; splitters from
:mod:`learn.cv`; metrics and bootstrap intervals from :mod:`learn.metrics`.

Cross-validation (:func:`cross_validate`): stratified 10-fold grouped by subject (``scheme="kfold"``), or
leave-one-site-out (``scheme="loso"``). Seed 001 trains one network per metric and hemisphere: each channel of
the dataset gets its own model per fold (``per_channel=True``), or all channels feed one network. The normaliser
is fitted on the training fold only. Every test subject's probability is saved (``predictions.csv``: subject, site,
label, fold, channel, score), which is what stacking needs; ``results.json`` holds accuracy, sensitivity,
specificity and AUC per fold and pooled over the out-of-fold predictions, with bootstrap intervals, per channel
and for the mean of the channels' probabilities.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from learn import ConfigError, MetricUndefinedError
from learn.checkpoint import save_checkpoint, to_jsonable, unwrap_model
from learn.cv import check_disjoint, leave_one_group_out, stratified_group_kfold
from learn.metrics import binary_metrics, bootstrap_ci
from learn.training import evaluate, fit
from learn.utils import get_device, is_distributed, is_main_process, progress_enabled, set_seed
from surfmap._atomic import atomic_write_bytes

from .config import CVConfig, ModelConfig, ScheduleConfig
from .dataset import Normalizer, SurfaceImageDataset
from .models import build_model, model_from_state

__all__ = [
    "CVConfig",
    "ModelConfig",
    "ScheduleConfig",
    "SeedSchedule",
    "cross_validate",
    "make_splits",
    "predict",
    "summarize_predictions",
    "train_model",
]

log = logging.getLogger(__name__)


class SeedSchedule:
    """Epoch hook setting the learning rate: ``lr * gamma ** (epoch // step)`` during the mix-up phase, then
    ``final_lr``. With the defaults: 0.01 (epochs 1-25), 0.001 (26-50), 1e-4 (51-75), 1e-4 (76-125)."""

    def __init__(self, cfg: ScheduleConfig):
        self.cfg = cfg

    def lr_at(self, epoch: int) -> float:
        c = self.cfg
        if epoch < c.mixup_epochs:
            return c.lr * c.lr_gamma ** (epoch // c.lr_step_epochs)
        return c.final_lr

    def __call__(self, epoch: int, optimizer) -> None:
        lr = self.lr_at(epoch)
        for g in optimizer.param_groups:
            g["lr"] = lr


def _loader(ds, batch_size: int, shuffle: bool, num_workers: int = 0, distributed: bool = False):
    sampler = None
    if distributed:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(ds, shuffle=shuffle)
        shuffle = False
    # a last batch of one sample breaks batch norm in training mode
    drop_last = shuffle and len(ds) % batch_size == 1
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last)


def train_model(train_ds, *, model_cfg: ModelConfig, schedule: ScheduleConfig, in_channels: int,
                device="auto", seed: int = 0, checkpoint_dir=None, resume=None, amp: bool = False,
                progress: bool = True, num_workers: int = 0, args=None, model: nn.Module | None = None):
    """Fine-tune one network on ``train_ds`` (items ``(x, y)``, already normalised) with the seed's schedule.

    Parameters
    ----------
    train_ds : torch Dataset
    model_cfg, schedule : ModelConfig, ScheduleConfig
    in_channels : int
    device : str or torch.device
    seed : int
        Seeds model initialisation, shuffling and mix-up.
    checkpoint_dir : path, optional
        ``last.pt`` written after every epoch (resumable).
    resume : path, optional
        A ``last.pt`` to continue from (same result as an uninterrupted run).
    model : nn.Module, optional
        Start from this network instead of building one from ``model_cfg`` (two-stage transfer).

    Returns
    -------
    model : nn.Module (on ``device``, unwrapped), history : dict
    """
    device = get_device(device)
    set_seed(seed)
    if model is None:
        model = build_model(model_cfg.name, weights=model_cfg.weights, in_channels=in_channels, num_outputs=1,
                            tiny_width=model_cfg.tiny_width, tiny_depth=model_cfg.tiny_depth)
    model = model.to(device)
    net = model
    distributed = is_distributed()
    if distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(net.parameters(), lr=schedule.lr, momentum=schedule.momentum,
                                weight_decay=schedule.weight_decay)
    loader = _loader(train_ds, schedule.batch_size, True, num_workers, distributed)
    history = fit(
        net, loader, None, optimizer=optimizer, epochs=schedule.epochs, loss_fn=nn.BCEWithLogitsLoss(),
        device=device, epoch_hook=SeedSchedule(schedule), checkpoint_dir=checkpoint_dir, keep="last",
        resume=resume, mixup_epochs=schedule.mixup_epochs, mixup_alpha=schedule.mixup_alpha, seed=seed, amp=amp,
        progress=progress, args=args,
    )
    return unwrap_model(net), history


def predict(model: nn.Module, ds, *, device="auto", batch_size: int = 64, amp: bool = False) -> np.ndarray:
    """Probabilities of class 1, ``(len(ds),)`` float64, in the dataset's order."""
    device = get_device(device)
    model = model.to(device)
    ev = evaluate(model, _loader(ds, batch_size, False), device, amp=amp)
    # under torch.distributed every rank scores the whole set and evaluate() gathers the copies: keep one
    return np.asarray(ev["scores"][: len(ds)], dtype=np.float64)


def make_splits(dataset: SurfaceImageDataset, cv: CVConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test index pairs; checks that no subject (nor, for "kfold", a group such as a family; for "loso",
    a site) is on both sides."""
    if cv.scheme == "kfold":
        splits = list(stratified_group_kfold(dataset.labels, dataset.groups, n_splits=cv.n_splits, seed=cv.seed))
    else:
        splits = list(leave_one_group_out(dataset.sites))
    for train, test in splits:
        check_disjoint(train, test, dataset.subjects, "subject")
        if cv.scheme == "kfold":
            check_disjoint(train, test, dataset.groups, "group")
        else:
            check_disjoint(train, test, dataset.sites, "site")
    return splits


def _safe_metrics(y, s) -> dict:
    try:
        return binary_metrics(y, s)
    except MetricUndefinedError as exc:
        acc = float(np.mean((np.asarray(s) >= 0.5) == np.asarray(y))) if len(y) else float("nan")
        return {"accuracy": acc, "sensitivity": float("nan"), "specificity": float("nan"), "auc": float("nan"),
                "n": len(y), "note": str(exc)}


def summarize_predictions(pred: pd.DataFrame, *, bootstrap_rounds: int = 1000, seed: int = 0) -> dict:
    """Per-fold and pooled metrics (with bootstrap intervals) for each channel of a predictions table (its
    ``role == "test"`` rows: pass those), plus
    ``"mean"``: the average of the channels' probabilities per subject (the seed's no-stacking ablation).

    Parameters
    ----------
    pred : DataFrame with columns subject, label, fold, channel, score
    """
    out = {}
    chans = list(dict.fromkeys(pred["channel"]))
    tables = {c: pred[pred["channel"] == c] for c in chans}
    if len(chans) > 1:
        mean = (pred.groupby(["subject", "fold", "label"], as_index=False)["score"].mean())
        tables["mean"] = mean
    for c, t in tables.items():
        folds = []
        for f, tf in t.groupby("fold"):
            m = _safe_metrics(tf["label"].to_numpy(), tf["score"].to_numpy())
            m["fold"] = int(f)
            folds.append(m)
        y, s = t["label"].to_numpy(), t["score"].to_numpy()
        pooled = _safe_metrics(y, s)
        try:
            ci = bootstrap_ci(y, s, n_rounds=bootstrap_rounds, seed=seed) if bootstrap_rounds >= 2 else {}
        except (MetricUndefinedError, ValueError) as exc:
            ci = {"note": str(exc)}
        fold_auc = [m["auc"] for m in folds if np.isfinite(m["auc"])]
        out[c] = {"pooled": pooled, "ci95": ci, "folds": folds,
                  "fold_mean": {k: _nanmean([m[k] for m in folds])
                                for k in ("accuracy", "sensitivity", "specificity", "auc")},
                  "n_folds_with_auc": len(fold_auc)}
    return out


def cross_validate(dataset: SurfaceImageDataset, *, model_cfg: ModelConfig, schedule: ScheduleConfig,
                   cv: CVConfig, out_dir=None, device="auto", seed: int = 0, amp: bool = False,
                   progress: bool = True, num_workers: int = 0, resume: bool = True, keep_models: bool = True,
                   args=None, channels=None, init_states: dict | None = None, reset_head: bool = True,
                   on_unit=None) -> dict:
    """Cross-validate one network per channel (or one on all channels) and save every prediction.

    Parameters
    ----------
    dataset : SurfaceImageDataset
    model_cfg, schedule, cv : configs
    out_dir : path, optional
        Writes ``predictions.csv`` (subject, site, label, fold, channel, score, role, inner_fold: ``role`` is
        "test" for the outer test subjects and "inner" for the inner out-of-fold predictions of
        ``cv.inner_splits``), ``results.json``, ``results.csv`` and ``folds/<channel>/fold<k>/{last.pt, model.pt,
        normalizer.npz, predictions.csv}``. A finished fold (its ``predictions.csv`` exists) is skipped when
        ``resume``; an interrupted one continues from its ``last.pt``.
    channels : sequence of str, optional
        Channels to model (default: all of the dataset's).
    keep_models : bool
        Keep each fold's final weights (``model.pt``, needed for occlusion maps and transfer); the bulky
        resume state (``last.pt`` with optimizer) is removed once a fold is done.
    init_states : dict of channel name -> state dict, optional
        Start every fold's network from these weights (two-stage transfer: the source-task model of the
        channel) instead of ``model_cfg.weights``; see :func:`learn.surface.transfer.model_from_state`.
    reset_head : bool
        With ``init_states``, re-initialise the final linear layer (the seed replaces it for each new task).
    on_unit : callable(dict), optional
        Called before each training unit (and for each unit skipped as done) with ``channel``, ``fold``,
        ``n_folds``, ``inner`` (-1 for the outer model), ``n_train``, ``epochs`` and ``skipped``: progress
        reporting (see :mod:`learn.surface.experiment`).

    Returns
    -------
    dict
        ``predictions`` (DataFrame), ``results`` (dict from :func:`summarize_predictions`), ``splits``.
    """
    channels = list(dataset.channels if channels is None else channels)
    if cv.shuffle_labels:
        rng = np.random.default_rng([cv.seed, 4242])
        dataset = dataset.with_labels(rng.permutation(dataset.labels))
        log.info("labels SHUFFLED (null run)")
    splits = make_splits(dataset, cv)
    groups = [[c] for c in channels] if cv.per_channel else [channels]
    out = Path(out_dir) if out_dir is not None else None
    rows = []
    main = is_main_process()
    jobs = [(gi, k) for gi in range(len(groups)) for k in range(len(splits))]
    bar = tqdm(jobs, desc="cv folds", disable=not progress_enabled(progress))
    for gi, k in bar:
        chans = groups[gi]
        name = chans[0] if len(chans) == 1 else "+".join(chans)
        ds = dataset.select(chans)
        train_idx, test_idx = splits[k]
        fold_dir = out / "folds" / _safe_name(name) / f"fold{k:02d}" if out is not None else None
        done_csv = fold_dir / "predictions.csv" if fold_dir is not None else None
        def unit(inner, n_train, skipped, name=name, k=k):
            if on_unit is not None:
                on_unit({"channel": name, "fold": k, "n_folds": len(splits), "inner": inner, "n_train": int(n_train),
                         "epochs": schedule.epochs, "skipped": skipped, "inner_splits": cv.inner_splits})

        if resume and done_csv is not None and done_csv.is_file():
            rows.append(pd.read_csv(done_csv, dtype={"subject": str}))
            for j in range(-1, cv.inner_splits):
                unit(j, len(train_idx) if j < 0 else len(train_idx) * (1 - 1 / cv.inner_splits), True)
            continue
        norm = Normalizer(cv.normalization).fit(ds.images, train_idx)
        last = fold_dir / "last.pt" if fold_dir is not None else None
        fold_seed = int(seed) + 1009 * k + 7919 * gi
        state = None if init_states is None else init_states.get(name)
        if init_states is not None and state is None:
            raise ConfigError(f"'init_states' has no weights for channel {name!r}; it has {sorted(init_states)}")

        n_in = len(chans)

        def initial(state=state, n_in=n_in, fold_seed=fold_seed):
            if state is None:
                return None
            return model_from_state(state, model_cfg, n_in, reset_head=reset_head, seed=fold_seed)

        unit(-1, len(train_idx), False)
        model, _ = train_model(
            ds.fold(train_idx, norm), model_cfg=model_cfg, schedule=schedule, in_channels=len(chans),
            device=device, seed=fold_seed, checkpoint_dir=fold_dir,
            resume=last if (resume and last is not None and last.is_file()) else None, amp=amp,
            progress=progress, num_workers=num_workers, args=args, model=initial(),
        )
        scores = predict(model, ds.fold(test_idx, norm), device=device, batch_size=schedule.batch_size, amp=amp)
        parts = [_prediction_rows(dataset, ds, test_idx, scores, k, name, "test", -1)]
        if cv.inner_splits:
            inner = stratified_group_kfold(ds.labels[train_idx], ds.groups[train_idx], n_splits=cv.inner_splits,
                                           seed=cv.seed + 1 + k)
            for j, (itr, ite) in enumerate(inner):
                itr, ite = train_idx[itr], train_idx[ite]
                check_disjoint(itr, ite, ds.subjects, "subject")
                # each inner fold is its own resumable unit: fold_dir/innerJ/{last.pt, predictions.csv}
                idir = fold_dir / f"inner{j}" if fold_dir is not None else None
                idone = idir / "predictions.csv" if idir is not None else None
                if resume and idone is not None and idone.is_file():
                    parts.append(pd.read_csv(idone, dtype={"subject": str}))
                    unit(j, len(itr), True)
                    continue
                unit(j, len(itr), False)
                ilast = idir / "last.pt" if idir is not None else None
                inorm = Normalizer(cv.normalization).fit(ds.images, itr)
                imodel, _ = train_model(
                    ds.fold(itr, inorm), model_cfg=model_cfg, schedule=schedule, in_channels=len(chans),
                    device=device, seed=fold_seed + 31 * (j + 1), amp=amp, progress=progress,
                    num_workers=num_workers, model=initial(), checkpoint_dir=idir,
                    resume=ilast if (resume and ilast is not None and ilast.is_file()) else None,
                )
                iscores = predict(imodel, ds.fold(ite, inorm), device=device, batch_size=schedule.batch_size,
                                  amp=amp)
                irows = _prediction_rows(dataset, ds, ite, iscores, k, name, "inner", j)
                parts.append(irows)
                if idir is not None and main:
                    _write_csv(irows, idone)
                    _remove_resume_state(ilast)
        df = pd.concat(parts, ignore_index=True)
        rows.append(df)
        if fold_dir is not None and main:
            fold_dir.mkdir(parents=True, exist_ok=True)
            np.savez(fold_dir / "normalizer.npz", **{k_: np.asarray(v) for k_, v in norm.state_dict().items()})
            if keep_models:
                save_checkpoint(fold_dir / "model.pt", model=model, epoch=schedule.epochs - 1, args=args,
                                channels=chans, train_idx=train_idx, test_idx=test_idx,
                                model_name=model_cfg.name)
            _write_csv(df, done_csv)
            _remove_resume_state(last)
    pred = pd.concat(rows, ignore_index=True)
    results = summarize_predictions(pred[pred["role"] == "test"], bootstrap_rounds=cv.bootstrap_rounds,
                                    seed=cv.seed)
    if out is not None and main:
        out.mkdir(parents=True, exist_ok=True)
        pred.to_csv(out / "predictions.csv", index=False)
        meta = {"scheme": cv.scheme, "n_splits": len(splits), "shuffled_labels": cv.shuffle_labels,
                "synthetic": bool("synthetic" in dataset.table.columns and dataset.table["synthetic"].any()),
                "channels": channels, "per_channel": cv.per_channel, "n_subjects": len(dataset)}
        (out / "results.json").write_text(json.dumps(to_jsonable({"meta": meta, "results": results}), indent=2))
        _results_table(results).to_csv(out / "results.csv", index=False)
    return {"predictions": pred, "results": results, "splits": splits}


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    """Atomically: a unit counts as done once its predictions.csv exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, df.to_csv(index=False).encode())


def _remove_resume_state(last) -> None:
    """Delete a finished unit's ``last.pt`` (model + optimizer + RNG states) and its config JSON."""
    if last is None:
        return
    for p in (last, last.with_name("last.config.json")):
        if p.exists():
            p.unlink()


def _prediction_rows(dataset, ds, idx, scores, fold, channel, role, inner_fold) -> pd.DataFrame:
    df = pd.DataFrame({
        "subject": ds.subjects[idx], "site": ds.sites[idx], "label": ds.labels[idx], "fold": fold,
        "channel": channel, "score": scores, "role": role, "inner_fold": inner_fold,
    })
    if "synthetic" in dataset.table.columns:
        df["synthetic"] = dataset.table["synthetic"].to_numpy()[idx]
    return df


def _nanmean(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _results_table(results: dict) -> pd.DataFrame:
    rows = []
    for c, r in results.items():
        p, ci = r["pooled"], r.get("ci95", {})
        row = {"channel": c, **{k: p[k] for k in ("accuracy", "sensitivity", "specificity", "auc", "n")}}
        for k in ("accuracy", "auc"):
            if isinstance(ci.get(k), (list, tuple)):
                row[f"{k}_ci_lo"], row[f"{k}_ci_hi"] = ci[k]
        rows.append(row)
    return pd.DataFrame(rows)


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_+" else "_" for ch in name)[:100]


