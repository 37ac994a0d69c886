"""Seeding, device choice and ``torch.distributed`` (torchrun) helpers."""

from __future__ import annotations

import logging
import os
import random
import sys

import numpy as np
import torch

from surfmap._validation import check_int, invalid

__all__ = [
    "all_gather_numpy",
    "barrier",
    "get_device",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "progress_enabled",
    "rng_state",
    "set_rng_state",
    "set_seed",
]

log = logging.getLogger(__name__)


def set_seed(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device).

    Parameters
    ----------
    seed : int
        Non-negative seed.
    deterministic : bool
        Also ask torch for deterministic algorithms (slower on GPU; warns where none exists).
    """
    seed = check_int("seed", seed, low=0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def get_device(pref: str | torch.device = "auto") -> torch.device:
    """Return the device to train on.

    Parameters
    ----------
    pref : {"auto", "cpu", "cuda", "cuda:N", "mps", "meta"} or torch.device
        ``"auto"`` picks the local CUDA device of this process (``LOCAL_RANK`` under torchrun), else CPU.
    """
    if isinstance(pref, torch.device):
        return pref
    if not isinstance(pref, str):
        raise invalid("pref", "a device name such as 'auto', 'cpu' or 'cuda'", repr(pref))
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {pref!r} was requested but CUDA is not available here; use 'cpu' or 'auto'")
    try:
        return torch.device(pref)
    except RuntimeError as exc:
        raise ValueError(f"'pref' {pref!r} is not a torch device name ({exc})") from None


def init_distributed(backend: str | None = None) -> bool:
    """Initialise the default process group when launched by ``torchrun``.

    Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment. Outside torchrun (no ``WORLD_SIZE``
    or ``WORLD_SIZE == 1``) nothing happens and False is returned.

    Returns
    -------
    bool
        True when a process group with more than one process is active.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    if dist.is_initialized():
        return True
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    log.info("torch.distributed: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return True


def is_distributed() -> bool:
    """True inside an initialised process group."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank (0 outside a process group)."""
    import torch.distributed as dist

    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes (1 outside a process group)."""
    import torch.distributed as dist

    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 (or without a process group): only it writes checkpoints and logs results."""
    return get_rank() == 0


def barrier() -> None:
    """Synchronise processes (no-op without a process group)."""
    import torch.distributed as dist

    if is_distributed():
        dist.barrier()


def all_gather_numpy(arr: np.ndarray) -> np.ndarray:
    """Concatenate a 1-D/ND array along axis 0 across processes (identity without a process group)."""
    import torch.distributed as dist

    if not is_distributed():
        return arr
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, arr)
    return np.concatenate(out, axis=0)


def rng_state() -> dict:
    """Snapshot of the Python, NumPy and torch RNG states (stored in checkpoints for exact resume)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore a snapshot taken by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def progress_enabled(progress: bool | None = True) -> bool:
    """Progress bars only on the main process and only when stderr is a terminal."""
    if not progress:
        return False
    return is_main_process() and sys.stderr.isatty()
