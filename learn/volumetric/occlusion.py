"""Occlusion maps as in seed 000 (``Occlusion_AD.py``): group accuracy drop when a cube is zeroed.

A cube of ``cube`` voxels (12 = 18 mm at 1.5 mm; 6 at 3 mm) is stepped by ``step`` voxels (6 = 9 mm) over the
input, ``ceil((dim - cube) / step) + 1`` positions per axis (15x19x14 on 96x120x86), clipped at the border. At
each position the cube is set to 0 in both channels for every test subject at once; the value is the baseline
accuracy minus the occluded accuracy. The voxel map is the mean value of the cubes covering each voxel.
Occluded copies are scored in batches of ``batch_size`` volumes (a full 1.5 mm map is practical on a GPU).

:class:`OracleAD` is a hand-built model (no training) whose logit is a fixed logistic function of the mean GMD
inside the planted hippocampal map, for checking that a map peaks where the effect is.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from torch import nn

from learn import DataError

__all__ = ["OracleAD", "cube_starts", "occlusion_map", "to_input_space"]

log = logging.getLogger(__name__)


def cube_starts(dim: int, cube: int, step: int) -> list[int]:
    """Start indices of the cubes along one axis (the last cube may be clipped at the border)."""
    if cube < 1 or step < 1:
        raise ValueError(f"'cube' and 'step' should be positive; got {cube} and {step}")
    n = max(math.ceil((dim - cube) / step), 0) + 1
    return [k * step for k in range(n)]


@torch.no_grad()
def _predict(model, x, device, batch_size):
    out = []
    for i in range(0, x.shape[0], batch_size):
        logit = model(x[i:i + batch_size].to(device)).float().reshape(-1)
        out.append((logit > 0).cpu())  # sigmoid(logit) > 0.5
    return torch.cat(out)


@torch.no_grad()
def occlusion_map(model: nn.Module, x, y, *, cube: int = 12, step: int = 6, batch_size: int = 24,
                  device="cpu", fill: float = 0.0, progress: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Group accuracy-drop occlusion map.

    Parameters
    ----------
    model : nn.Module
        Returns one logit per volume; put in eval mode here.
    x : (N, C, X, Y, Z) tensor or array
        All test subjects (the cropped model input).
    y : (N,) 0/1 labels
    cube, step : int
        Cube edge and step in voxels (12 / 6 at 1.5 mm, 6 / 3 at 3 mm).
    batch_size : int
        Volumes per forward pass.
    fill : float
        Value written into the cube (0 in the paper).
    progress : bool
        A tqdm bar on a terminal; in any case a log line (INFO) about every 10% of the positions with the
        elapsed time and an ETA.

    Returns
    -------
    voxel_map : (X, Y, Z) float64
        Mean accuracy drop of the cubes covering each voxel.
    grid : (nx, ny, nz) float64
        Accuracy drop per cube position.
    baseline : float
        Accuracy without occlusion.
    """
    from tqdm.auto import tqdm

    from learn.utils import progress_enabled

    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).float()
    y = torch.as_tensor(np.asarray(y)).reshape(-1).bool()
    if x.ndim != 5 or x.shape[0] != y.shape[0]:
        raise DataError(f"'x' should be (N, C, X, Y, Z) with N = len(y) = {y.shape[0]}; shape {tuple(x.shape)} given")
    if x.shape[0] == 0:
        raise DataError("no test subject to occlude")
    model = model.eval().to(device)
    base = float((_predict(model, x, device, batch_size) == y).float().mean())
    dims = x.shape[2:]
    starts = [cube_starts(int(d), cube, step) for d in dims]
    grid = np.zeros([len(s) for s in starts])
    total = np.zeros(tuple(int(d) for d in dims))
    count = np.zeros_like(total)
    positions = [(i, j, k) for i in range(len(starts[0])) for j in range(len(starts[1])) for k in range(len(starts[2]))]
    xo = x.clone()
    t0 = time.monotonic()
    every = max(1, len(positions) // 10)
    log.info("occlusion: %d cube positions x %d subjects", len(positions), x.shape[0])
    for n_done, (i, j, k) in enumerate(tqdm(positions, desc="occlusion", disable=not progress_enabled(progress)), 1):
        sl = tuple(slice(s[n], s[n] + cube) for s, n in zip(starts, (i, j, k)))
        xo[(slice(None), slice(None)) + sl] = fill
        acc = float((_predict(model, xo, device, batch_size) == y).float().mean())
        xo[(slice(None), slice(None)) + sl] = x[(slice(None), slice(None)) + sl]
        grid[i, j, k] = base - acc
        total[sl] += base - acc
        count[sl] += 1
        if n_done % every == 0 or n_done == len(positions):
            el = time.monotonic() - t0
            log.info("occlusion: %d/%d positions, %.0f s elapsed, ETA %.0f s", n_done, len(positions), el,
                     el / n_done * (len(positions) - n_done))
    voxel_map = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return voxel_map, grid, base


def to_input_space(volume, crop, full_shape) -> np.ndarray:
    """Place a map computed on the cropped input back into the full grid (zeros outside the crop)."""
    volume = np.asarray(volume)
    if crop is None:
        if volume.shape != tuple(full_shape):
            raise DataError(f"map shape {volume.shape} differs from the grid {tuple(full_shape)} and no crop is given")
        return volume
    out = np.zeros(tuple(full_shape), dtype=volume.dtype)
    out[tuple(crop)] = volume
    return out


class OracleAD(nn.Module):
    """Hand-built AD "model": logit = ``slope * (threshold - weighted mean GMD inside H)``.

    Parameters
    ----------
    weights : (X, Y, Z) array
        Non-negative voxel weights (e.g. the planted hippocampal map H), on the model input grid.
    threshold : float
        Weighted mean GMD at which the prediction flips (e.g. midway between the NC and AD means).
    slope : float
    """

    def __init__(self, weights, threshold: float, slope: float = 50.0):
        super().__init__()
        w = torch.as_tensor(np.asarray(weights, dtype=np.float32))
        if w.ndim != 3 or float(w.sum()) <= 0:
            raise DataError("OracleAD 'weights' should be a non-negative 3D map with a positive sum")
        self.register_buffer("w", w / w.sum())
        self.threshold = float(threshold)
        self.slope = float(slope)

    def hippocampal_mean(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) != tuple(self.w.shape):
            raise DataError(f"input grid {tuple(x.shape[2:])} differs from the oracle's {tuple(self.w.shape)}")
        return torch.einsum("nxyz,xyz->n", x[:, 0], self.w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.slope * (self.threshold - self.hippocampal_mean(x)))[:, None]
