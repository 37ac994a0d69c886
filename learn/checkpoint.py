"""Checkpoints as one dict ``{"model", "optimizer", "lr_scheduler", "epoch", "args", ...}``.

The layout follows torchvision's classification reference. Files are written atomically (a temporary file in
the same folder, then :func:`os.replace`), so an interrupted run never leaves a half-written checkpoint. When
``args`` is given, the resolved configuration is also written as JSON beside the checkpoint
(``<name>.config.json``), readable without torch.

Checkpoints contain only tensors and plain data (dicts, lists, tuples, str, int, float, bool, None): NumPy
arrays become tensors, NumPy scalars Python numbers, dataclasses and paths dicts and strings, and anything else is
refused when writing. They are read with ``torch.load(weights_only=True)``, which cannot run code, so a file that
needs more (a pickled object, e.g. ``os.system``) is refused with an error that names it;
:func:`convert_trusted_checkpoint` rewrites a file you made yourself with older code into the safe layout.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from surfmap._atomic import atomic_write, atomic_write_bytes
from surfmap.exceptions import FormatError, InputFileNotFoundError

__all__ = ["convert_trusted_checkpoint", "load_checkpoint", "plain_state", "safe_torch_load", "save_checkpoint",
           "to_jsonable", "unwrap_model"]


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


def plain_state(obj, where: str = "checkpoint"):
    """``obj`` with only tensors and plain data, loadable by ``torch.load(weights_only=True)``.

    NumPy arrays become tensors, NumPy scalars Python numbers, dataclasses dicts, paths strings;
    dicts (including ``OrderedDict``), lists and tuples are converted item by item.

    Raises
    ------
    TypeError
        Any other object (a function, a module, an arbitrary class), naming its place in ``obj``.
    """
    if isinstance(obj, np.generic):  # before the plain types: np.float64 is a float subclass
        return obj.item()
    if isinstance(obj, torch.Tensor) or obj is None or type(obj) in (str, bool, int, float):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError(f"{where}: a NumPy array of Python objects cannot be stored; give numbers")
        if obj.dtype.kind in "SU":
            return obj.tolist()
        return torch.from_numpy(np.ascontiguousarray(obj.astype(np.int64) if obj.dtype == np.uint32 else obj))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain_state(getattr(obj, f.name), f"{where}.{f.name}") for f in dataclasses.fields(obj)}
    if isinstance(obj, (str, Path)):  # str subclasses (enums) and paths -> str
        return str(obj)
    if isinstance(obj, (int, float)):  # int / float subclasses, e.g. IntEnum
        return type(1.0 if isinstance(obj, float) else 1)(obj)
    if isinstance(obj, (torch.Size, torch.dtype, torch.device)):
        return obj
    if isinstance(obj, dict):
        out = {k: plain_state(v, f"{where}.{k}") for k, v in obj.items()}
        return OrderedDict(out) if isinstance(obj, OrderedDict) else out  # state_dicts keep their type
    if isinstance(obj, (list, tuple)):
        items = [plain_state(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(
        f"{where}: a {type(obj).__module__}.{type(obj).__qualname__} cannot be stored in a checkpoint; checkpoints "
        "hold only tensors and plain data (dict, list, tuple, str, int, float, bool, None). Store its state "
        "(e.g. .state_dict() or dataclasses.asdict) instead"
    )


_UNSAFE_HINT = (
    "it holds Python objects beyond tensors and plain data, and unpickling them could run code, so it is read "
    "with torch.load(weights_only=True) only. If you made this file yourself (e.g. with an older surfmap), "
    "convert it once: python -c \"from learn.checkpoint import convert_trusted_checkpoint as c; "
    "c('{src}', '{dst}')\" and use the new file; never convert a file from someone you do not trust"
)


def safe_torch_load(path: Path, what: str, error: type = FormatError, map_location="cpu"):
    """``torch.load(path, weights_only=True)``; an unsafe or unreadable file raises ``error`` saying why."""
    import pickle
    import re

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"unsupported GLOBAL\s+(\S+)|Unsupported global: GLOBAL\s+(\S+)", text, re.IGNORECASE)
        if found is None:  # not a pickle torch can read: corrupt, truncated, or not a torch file
            detail = next((ln.strip() for ln in text.splitlines() if ln.strip().startswith(("Unsupported",
                                                                                        "invalid"))), "")
            raise error(f"{what} {str(path)!r} could not be read: not a torch file, or truncated or corrupt "
                        f"({detail or type(exc).__name__}); re-copy or re-create it") from None
        name = next(g for g in found.groups() if g)
        dst = path.with_name(path.stem + ".safe" + path.suffix)
        raise error(f"{what} {str(path)!r} was not loaded: it needs the Python object {name}; "
                    + _UNSAFE_HINT.format(src=path, dst=dst)) from None
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise error(f"{what} {str(path)!r} could not be read ({type(exc).__name__}: {exc})") from exc


def convert_trusted_checkpoint(src, dst) -> Path:
    """Rewrite a checkpoint YOU made with older code into the safe layout (tensors and plain data).

    This unpickles ``src`` with ``weights_only=False``, which runs any code the file holds: use it
    only on your own files. The output loads with :func:`load_checkpoint`.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise InputFileNotFoundError(f"checkpoint {str(src)!r} does not exist; check the path")
    ckpt = torch.load(src, map_location="cpu", weights_only=False)  # explicit, documented opt-in
    state = plain_state(ckpt, "checkpoint")
    atomic_write(dst, lambda fh: torch.save(state, fh))
    return dst


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
    state = plain_state(state)
    atomic_write(path, lambda fh: torch.save(state, fh))
    if args is not None:
        text = json.dumps(to_jsonable(args), indent=2, sort_keys=True).encode()
        atomic_write_bytes(path.with_name(path.stem + ".config.json"), text)
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
        Not a checkpoint written by :func:`save_checkpoint`, a file holding more than tensors and plain
        data (refused unread: see :func:`convert_trusted_checkpoint`), or a state that does not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileNotFoundError(f"checkpoint {str(path)!r} does not exist; check the path or the run folder")
    ckpt = safe_torch_load(path, "checkpoint", FormatError, map_location)
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
