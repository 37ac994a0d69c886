"""Training loop as a few plain functions (torchvision classification reference style).

- :func:`train_one_epoch`: one pass over a loader, optional per-batch scheduler, AMP and mix-up.
- :func:`evaluate`: loss, labels and scores (probabilities) over a loader.
- :func:`fit`: epochs, validation, lowest-validation-loss checkpoint, exact resume, per-epoch hooks.
- :func:`keras_decay_scheduler`: Keras ``SGD(decay=d)`` as ``lr_t = lr0 / (1 + d * t)``, t counting batches.
- :class:`ShardSampler`: evaluation under torch.distributed, each sample scored exactly once.

Batches may be ``(x, y)``, ``(x, y, ids)`` or dicts with ``"image"``/``"x"``, ``"label"``/``"y"`` and an optional
``"id"``. A model output of shape (N,) or (N, 1) is a logit (sigmoid for scores, float targets); (N, C) with
C > 1 are class logits (softmax; ``scores`` is the probability of class 1 when C == 2, else (N, C)).
Regression losses (MSE, L1, Huber) give the raw output as ``scores``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from learn.checkpoint import load_checkpoint, save_checkpoint, unwrap_model
from learn.utils import (
    all_gather_numpy,
    get_world_size,
    is_distributed,
    is_main_process,
    progress_enabled,
    rng_state,
    set_rng_state,
    set_seed,
)
from surfmap._validation import check_choice, check_int, check_number

__all__ = [
    "KerasDecay",
    "ShardSampler",
    "ensemble_scores",
    "evaluate",
    "fit",
    "keras_decay_scheduler",
    "mixup_batch",
    "train_one_epoch",
]

log = logging.getLogger(__name__)

_REGRESSION_LOSSES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)


class KerasDecay:
    """Picklable ``t -> 1 / (1 + decay * t)`` factor for :class:`torch.optim.lr_scheduler.LambdaLR`."""

    def __init__(self, decay: float):
        self.decay = check_number("decay", decay, low=0)

    def __call__(self, step: int) -> float:
        return 1.0 / (1.0 + self.decay * step)


def keras_decay_scheduler(optimizer: torch.optim.Optimizer, decay: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Keras-style time decay ``lr_t = lr0 / (1 + decay * t)``; call ``scheduler.step()`` after every batch.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
    decay : float
        Keras ``decay``: 3e-3 for the sex model, 2e-3 for the AD model in BrainImageNet (J Big Data 2022),
        1e-3 in its released AD code.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, KerasDecay(decay))


class ShardSampler(torch.utils.data.Sampler):
    """Contiguous, unpadded shard of ``range(n)`` for this process (evaluation under torch.distributed).

    ``DistributedSampler`` pads every shard to the same length by repeating samples, so gathered predictions
    hold duplicates whenever ``n`` is not a multiple of the world size. Here rank r takes
    ``range(r * n // world, (r + 1) * n // world)``: every sample is scored exactly once, and concatenating the
    shards in rank order (:func:`learn.utils.all_gather_numpy`) gives the original order. A shard may be empty.
    """

    def __init__(self, dataset_or_n, rank: int | None = None, world_size: int | None = None):
        from learn.utils import get_rank

        n = dataset_or_n if isinstance(dataset_or_n, int) else len(dataset_or_n)
        self.world_size = get_world_size() if world_size is None else int(world_size)
        self.rank = get_rank() if rank is None else int(rank)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"'rank' should be in [0, {self.world_size}); {self.rank} was provided")
        self.start = self.rank * n // self.world_size
        self.stop = (self.rank + 1) * n // self.world_size

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def _unpack(batch):
    if isinstance(batch, dict):
        x = batch.get("image", batch.get("x"))
        y = batch.get("label", batch.get("y"))
        ids = batch.get("id")
        if x is None or y is None:
            raise ValueError(f"a dict batch needs 'image' (or 'x') and 'label' (or 'y'); keys: {sorted(batch)}")
        return x, y, ids
    if isinstance(batch, (list, tuple)) and len(batch) in (2, 3):
        return batch[0], batch[1], (batch[2] if len(batch) == 3 else None)
    raise ValueError("a batch should be (x, y), (x, y, ids) or a dict with 'image' and 'label'")


def _is_regression(loss_fn) -> bool:
    return isinstance(loss_fn, _REGRESSION_LOSSES)


def _prepare(out: torch.Tensor, y: torch.Tensor, loss_fn) -> tuple[torch.Tensor, torch.Tensor]:
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.ndim == 1:
        y = y.to(out.dtype).reshape(out.shape)
    elif isinstance(loss_fn, nn.CrossEntropyLoss) and y.ndim == 1:
        y = y.long()
    return out, y


def _scores(out: torch.Tensor, loss_fn) -> torch.Tensor:
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if _is_regression(loss_fn):
        return out
    if out.ndim == 1:
        return torch.sigmoid(out)
    prob = torch.softmax(out, dim=1)
    return prob[:, 1] if prob.shape[1] == 2 else prob


def mixup_batch(x: torch.Tensor, generator: torch.Generator | None = None, alpha: float = 1.0):
    """Mix each sample with a random partner of the same batch.

    ``lam ~ Beta(alpha, alpha)`` (``alpha = 1``: uniform on [0, 1]); returns ``(lam * x + (1 - lam) * x[perm],
    perm, lam)``. The loss is then ``lam * L(out, y) + (1 - lam) * L(out, y[perm])``, equal to mixing the targets
    for binary cross-entropy.
    """
    if alpha == 1.0:
        lam = float(torch.rand((), generator=generator))
    else:
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], generator=generator, device="cpu").to(x.device)
    return lam * x + (1.0 - lam) * x[perm], perm, lam


def _autocast(device: torch.device, enabled: bool, dtype=None):
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    elif isinstance(dtype, str):
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, loss_fn, device, *,
                    scheduler=None, scaler=None, mixup: bool = False, mixup_alpha: float = 1.0,
                    progress: bool = True, epoch: int | None = None, amp: bool | None = None,
                    amp_dtype=None) -> float:
    """Train for one pass over ``loader``.

    Parameters
    ----------
    model : nn.Module
    loader : iterable of batches
    optimizer : torch.optim.Optimizer
    loss_fn : callable
        E.g. ``nn.BCEWithLogitsLoss()`` on logits.
    device : torch.device or str
    scheduler : LR scheduler, optional
        Stepped after every batch (Keras decay).
    scaler : torch.amp.GradScaler, optional
        Enables mixed precision (autocast) with loss scaling.
    mixup : bool
        Mix-up inside each batch (lambda ~ Beta(alpha, alpha), uniform for alpha = 1).
    progress : bool
        tqdm bar (shown only on a terminal, on the main process).
    amp : bool, optional
        Autocast without a scaler (e.g. bfloat16 on CPU); defaults to ``scaler is not None``.
    amp_dtype : {None, "bfloat16", "float16"} or torch.dtype
        Autocast dtype; None = float16 on CUDA, bfloat16 elsewhere.

    Returns
    -------
    float
        Mean training loss over samples (averaged across processes under torch.distributed).
    """
    device = torch.device(device)
    use_amp = (scaler is not None) if amp is None else bool(amp)
    model.train()
    total, count = 0.0, 0
    desc = "train" if epoch is None else f"epoch {epoch + 1} train"
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress_enabled(progress)):
        x, y, _ = _unpack(batch)
        x = x.to(device, non_blocking=True).float()
        y = y.to(device, non_blocking=True)
        if mixup:
            x, perm, lam = mixup_batch(x, alpha=mixup_alpha)
        with _autocast(device, use_amp, amp_dtype):
            out = model(x)
            out, yt = _prepare(out.float(), y, loss_fn)
            if mixup:
                loss = lam * loss_fn(out, yt) + (1.0 - lam) * loss_fn(out, yt[perm])
            else:
                loss = loss_fn(out, yt)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {loss.item()} (learning rate {optimizer.param_groups[0]['lr']:.3g}); "
                "lower the learning rate or check the inputs for NaN"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += float(loss.detach()) * x.shape[0]
        count += x.shape[0]
    if count == 0:
        raise ValueError("the training loader yielded no batch; check the training set and the batch size")
    if is_distributed():
        t = torch.tensor([total, count], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        total, count = float(t[0]), int(t[1])
    return total / count


@torch.no_grad()
def evaluate(model: nn.Module, loader, device, loss_fn=None, *, progress: bool = False,
             amp: bool = False, amp_dtype=None) -> dict:
    """Scores of ``model`` over ``loader`` (gathered across processes under torch.distributed).

    Under torch.distributed, give each process a :class:`ShardSampler` so that every sample is scored once; the
    gathered arrays are the shards concatenated in rank order.

    Returns
    -------
    dict
        ``loss`` (mean over samples, NaN without ``loss_fn``), ``y_true`` (n,), ``scores`` (n,) probabilities of
        class 1 (raw outputs for regression losses), ``logits`` (n,) or (n, C), and ``ids`` when batches carry ids.
    """
    device = torch.device(device)
    # no DistributedDataParallel in evaluation: its forward broadcasts buffers (a collective), and shards of
    # unequal length run unequal numbers of batches
    model = unwrap_model(model)
    model.eval()
    ys, ss, ls, ids = [], [], [], []
    total, count = 0.0, 0
    for batch in tqdm(loader, desc="eval", leave=False, disable=not progress_enabled(progress)):
        x, y, bid = _unpack(batch)
        x = x.to(device, non_blocking=True).float()
        y = y.to(device, non_blocking=True)
        with _autocast(device, amp, amp_dtype):
            out = model(x).float()
        if loss_fn is not None:
            o, yt = _prepare(out, y, loss_fn)
            total += float(loss_fn(o, yt)) * x.shape[0]
        count += x.shape[0]
        logits = out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out
        ls.append(logits.cpu().numpy())
        ss.append(_scores(out, loss_fn).cpu().numpy())
        ys.append(y.cpu().numpy())
        if bid is not None:
            ids.extend(list(bid))
    if count == 0 and not is_distributed():
        raise ValueError("the evaluation loader yielded no batch; check the evaluation set")
    if count == 0:  # an empty shard of a small set under torch.distributed
        ys, ss, ls = [np.zeros(0, np.float32)], [np.zeros(0)], [np.zeros(0)]
    result = {
        "loss": total / count if (loss_fn is not None and count) else float("nan"),
        "y_true": all_gather_numpy(np.concatenate(ys)),
        "scores": all_gather_numpy(np.concatenate(ss).astype(np.float64)),
        "logits": all_gather_numpy(np.concatenate(ls).astype(np.float64)),
    }
    if is_distributed():  # every process takes part in the gather, even with an empty shard
        mine = np.asarray([i.item() if torch.is_tensor(i) else i for i in ids]) if ids else np.zeros(0, np.int64)
        gathered = all_gather_numpy(mine)
        if gathered.shape[0]:
            result["ids"] = gathered
    elif ids:
        result["ids"] = np.asarray(ids)
    if is_distributed() and loss_fn is not None:
        t = torch.tensor([total, count], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        result["loss"] = float(t[0] / t[1])
    return result


def fit(model: nn.Module, train_loader, val_loader=None, *, optimizer: torch.optim.Optimizer, epochs: int,
        loss_fn, device, scheduler=None, epoch_scheduler=None, checkpoint_dir=None, keep: str = "best",
        resume=None, mixup_epochs: int = 0, mixup_alpha: float = 1.0,
        epoch_hook: Callable[[int, torch.optim.Optimizer], None] | None = None,
        metrics_fn: Callable[[np.ndarray, np.ndarray], dict] | None = None, seed: int | None = None,
        amp: bool = False, progress: bool = True, args=None, amp_dtype=None) -> dict:
    """Train for ``epochs`` epochs, validating after each and keeping the best (or last) weights.

    Parameters
    ----------
    model : nn.Module
        Already on ``device`` (and wrapped in DistributedDataParallel when distributed).
    train_loader, val_loader : iterables of batches
        ``val_loader`` may be None (then ``keep`` is forced to "last").
    optimizer : torch.optim.Optimizer
    epochs : int
        Total number of epochs (a resumed run continues up to this number).
    loss_fn : callable
    device : torch.device or str
    scheduler : optional
        Stepped after every batch (e.g. :func:`keras_decay_scheduler`).
    epoch_scheduler : optional
        Stepped after every epoch (e.g. ``MultiStepLR`` / ``LambdaLR`` in epochs).
    checkpoint_dir : path, optional
        Writes ``last.pt`` after every epoch (model, optimizer, schedulers, RNG states, history) and ``best.pt``
        when the validation loss improves; the resolved ``args`` go beside each as JSON.
    keep : {"best", "last"}
        Which weights the model holds on return: the lowest validation loss (as in
        BrainImageNet, J Big Data 2022) or the last epoch.
    resume : path, optional
        A ``last.pt`` to continue from; the result equals an uninterrupted run (same seeds, same loaders).
    mixup_epochs : int
        Mix-up in epochs ``0 .. mixup_epochs-1`` (Cerebral Cortex 2022 uses the first 75 of 125).
    epoch_hook : callable(epoch, optimizer), optional
        Called at the start of every epoch (e.g. to set a step learning rate).
    metrics_fn : callable(y_true, scores) -> dict, optional
        Validation metrics recorded in the history (e.g. :func:`learn.metrics.binary_metrics`).
    seed : int, optional
        Seeds all RNGs before the first epoch (not on resume, which restores the saved RNG states).
    amp : bool
        Mixed precision (float16 + GradScaler on CUDA, bfloat16 autocast on CPU).
    amp_dtype : {None, "bfloat16", "float16"}
        Autocast dtype (None: the default above). bfloat16 on CUDA needs no GradScaler.
    progress : bool
        Progress bars on a terminal.
    args : dataclass or dict, optional
        Resolved configuration stored in every checkpoint.

    Returns
    -------
    dict
        ``train_loss``, ``val_loss``, ``lr`` (per epoch lists), ``val_metrics`` (list of dicts, when
        ``metrics_fn``), ``best_epoch``, ``best_val_loss``, ``epochs_run``.
    """
    check_choice("keep", keep, ("best", "last"))
    check_int("epochs", epochs, low=1)
    device = torch.device(device)
    if val_loader is None:
        keep = "last"
    scaler = torch.amp.GradScaler("cuda") if (amp and device.type == "cuda" and amp_dtype in (None, "float16",
                                                                                              torch.float16)) else None
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    history = {"train_loss": [], "val_loss": [], "lr": [], "val_metrics": [], "best_epoch": -1,
               "best_val_loss": float("inf"), "epochs_run": 0}
    best_state = None
    start = 0
    if resume is not None:
        ckpt = load_checkpoint(resume, model, optimizer, scheduler)
        if epoch_scheduler is not None and ckpt.get("epoch_scheduler") is not None:
            epoch_scheduler.load_state_dict(ckpt["epoch_scheduler"])
        if scaler is not None and ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
        history = ckpt.get("history", history)
        best_state = ckpt.get("best_model")
        if ckpt.get("rng") is not None:
            set_rng_state(ckpt["rng"])
        start = int(ckpt["epoch"]) + 1
        log.info("resumed from %s at epoch %d", resume, start + 1)
    elif seed is not None:
        set_seed(seed)
    t_start = time.monotonic()
    for epoch in range(start, epochs):
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if epoch_hook is not None:
            epoch_hook(epoch, optimizer)
        lr = optimizer.param_groups[0]["lr"]
        train_loss = train_one_epoch(
            model, train_loader, optimizer, loss_fn, device, scheduler=scheduler, scaler=scaler,
            mixup=epoch < mixup_epochs, mixup_alpha=mixup_alpha, progress=progress, epoch=epoch,
            amp=amp, amp_dtype=amp_dtype,
        )
        val_loss, vm = float("nan"), None
        if val_loader is not None:
            ev = evaluate(model, val_loader, device, loss_fn, amp=amp, amp_dtype=amp_dtype)
            val_loss = ev["loss"]
            if metrics_fn is not None:
                try:
                    vm = metrics_fn(ev["y_true"], ev["scores"])
                except ValueError as exc:  # e.g. a single class in a tiny validation set
                    vm = {"error": str(exc)}
        if epoch_scheduler is not None:
            epoch_scheduler.step()
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        history["lr"].append(lr)
        history["val_metrics"].append(vm)
        history["epochs_run"] = epoch + 1
        improved = val_loader is not None and val_loss < history["best_val_loss"]
        if improved:
            history["best_val_loss"] = val_loss
            history["best_epoch"] = epoch
            best_state = {k: v.detach().clone() for k, v in unwrap_model(model).state_dict().items()}
        elapsed = time.monotonic() - t_start
        eta = elapsed / (epoch + 1 - start) * (epochs - epoch - 1)
        if val_loader is None:  # no validation set: no "val loss nan"
            log.info("epoch %d/%d: train loss %.4f (lr %.3g%s; %.0f s elapsed, ETA %.0f s)", epoch + 1, epochs,
                     train_loss, lr, ", mix-up" if epoch < mixup_epochs else "", elapsed, eta)
        else:
            log.info("epoch %d/%d: train loss %.4f, val loss %.4f%s (%.0f s elapsed, ETA %.0f s)", epoch + 1, epochs,
                     train_loss, val_loss, " (best)" if improved else "", elapsed, eta)
        if ckdir is not None and is_main_process():
            extra = {"history": history, "rng": rng_state(), "world_size": get_world_size(),
                     "epoch_scheduler": epoch_scheduler.state_dict() if epoch_scheduler is not None else None,
                     "scaler": scaler.state_dict() if scaler is not None else None,
                     "best_model": best_state}
            save_checkpoint(ckdir / "last.pt", model=model, optimizer=optimizer, lr_scheduler=scheduler,
                            epoch=epoch, args=args, **extra)
            if improved:
                save_checkpoint(ckdir / "best.pt", model=model, epoch=epoch, args=args,
                                history=history, val_loss=val_loss)
    if keep == "best" and best_state is not None:
        unwrap_model(model).load_state_dict(best_state)
    return history


def ensemble_scores(score_list) -> np.ndarray:
    """Plain mean of the fold models' probabilities (the 5-fold ensemble on independent sets of
    BrainImageNet, J Big Data 2022).

    Parameters
    ----------
    score_list : sequence of (n,) float arrays, one per model, same sample order.
    """
    arrs = [np.asarray(s, dtype=np.float64) for s in score_list]
    if not arrs:
        raise ValueError("'score_list' is empty: no model scores to average")
    shapes = {a.shape for a in arrs}
    if len(shapes) != 1:
        raise ValueError(f"every model should score the same samples; shapes {sorted(shapes)} were provided")
    return np.mean(np.stack(arrs), axis=0)
