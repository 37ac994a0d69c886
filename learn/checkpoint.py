"""Checkpoints as one dict ``{"model", "optimizer", "lr_scheduler", "epoch", "args", ...}``.

The layout follows torchvision's classification reference. Files are written atomically (a temporary file in
the same folder, then :func:`os.replace`), so an interrupted run never leaves a half-written checkpoint. When
``args`` is given, the resolved configuration is also written as JSON beside the checkpoint
(``<name>.config.json``), readable without torch.

Checkpoints hold NumPy RNG states, so they are loaded with ``weights_only=False``: load only files you trust.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path

import torch

from surfmap.exceptions import FormatError, InputFileNotFoundError

__all__ = ["load_checkpoint", "save_checkpoint", "to_jsonable", "unwrap_model"]


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel / DataParallel / compiled wrapper."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


def to_jsonable(obj):
    """Dataclasses, paths, tuples and NumPy scalars -> plain JSON types (NaN and inf -> None)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # NaN / inf are not JSON: an undefined metric is written as null
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path, *, model: torch.nn.Module, optimizer=None, lr_scheduler=None, epoch: int,
                    args=None, **extra) -> Path:
    """Write a checkpoint atomically.

    Parameters
    ----------
    path : str or Path
        Destination ``.pt`` file; parent folders are created.
    model : torch.nn.Module
        Its ``state_dict`` is stored (unwrapped from DDP).
    optimizer, lr_scheduler : optional
        Their ``state_dict`` is stored when given.
    epoch : int
        Last completed epoch (0-based).
    args : dataclass or dict, optional
        The resolved configuration; stored in the dict and as ``<name>.config.json`` beside the file.
    **extra
        More entries (RNG states, history, best validation loss, ...).

    Returns
    -------
    Path
    """
    path = Path(path)
    state = {
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "lr_scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
        "epoch": int(epoch),
        "args": to_jsonable(args) if args is not None else None,
    }
    state.update(extra)
    _atomic_write(path, lambda fh: torch.save(state, fh))
    if args is not None:
        text = json.dumps(to_jsonable(args), indent=2, sort_keys=True).encode()
        _atomic_write(path.with_name(path.stem + ".config.json"), lambda fh: fh.write(text))
    return path


def load_checkpoint(path, model: torch.nn.Module | None = None, optimizer=None, lr_scheduler=None, *,
                    map_location="cpu", strict: bool = True) -> dict:
    """Read a checkpoint and optionally restore model / optimizer / scheduler in place.

    Parameters
    ----------
    path : str or Path
    model, optimizer, lr_scheduler : optional
        Objects whose state is restored from the file.
    map_location : device or str
    strict : bool
        Passed to ``load_state_dict`` of the model.

    Returns
    -------
    dict
        The whole checkpoint.

    Raises
    ------
    InputFileNotFoundError
        No such file.
    FormatError
        Not a checkpoint written by :func:`save_checkpoint`, or a state that does not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileNotFoundError(f"checkpoint {str(path)!r} does not exist; check the path or the run folder")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise FormatError(f"checkpoint {str(path)!r} could not be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise FormatError(
            f"checkpoint {str(path)!r} is not a dict with a 'model' entry; was it written by learn.checkpoint?"
        )
    if model is not None:
        try:
            unwrap_model(model).load_state_dict(ckpt["model"], strict=strict)
        except RuntimeError as exc:
            raise FormatError(f"checkpoint {str(path)!r} does not fit the model: {exc}") from exc
    if optimizer is not None:
        if ckpt.get("optimizer") is None:
            raise FormatError(f"checkpoint {str(path)!r} holds no optimizer state to resume from")
        optimizer.load_state_dict(ckpt["optimizer"])
    if lr_scheduler is not None:
        if ckpt.get("lr_scheduler") is None:
            raise FormatError(f"checkpoint {str(path)!r} holds no lr_scheduler state to resume from")
        lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
    return ckpt
