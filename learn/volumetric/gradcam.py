"""Grad-CAM for the volumetric networks (torch hooks; MONAI's ``GradCAM`` gives the same on a named layer).

``cam = ReLU(sum_k w_k A_k)`` with ``w_k`` the spatial mean of d(logit)/dA_k over the target layer's activations
``A``, upsampled (trilinear) to the input grid and min-max normalised per subject. The sex network's ``conv_7b``
map is 4x6x4 at full size; for the AD classifier use ``ad_head.conv2`` (4x6x4) or ``stem`` (21x27x19): the last
AD map is 1x2x1.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["grad_cam"]


def grad_cam(model: nn.Module, x, layer: str = "conv_7b", *, target: int = 1, normalize: bool = True) -> np.ndarray:
    """Grad-CAM maps of ``model`` at the module named ``layer``.

    Parameters
    ----------
    model : nn.Module
        One logit per volume (class 1 = AD / male).
    x : (N, C, X, Y, Z) tensor
    layer : str
        A name from ``model.named_modules()`` (e.g. "conv_7b", "ad_head.conv2", "stem").
    target : {1, 0}
        Explain the logit (1) or its negation (class 0).
    normalize : bool
        Min-max scale each map to [0, 1].

    Returns
    -------
    (N, X, Y, Z) float32
    """
    names = dict(model.named_modules())
    if layer not in names:
        near = [n for n in names if n and "." not in n][:12]
        raise ValueError(f"'layer' {layer!r} is not a module of the model; top-level modules: {near}")
    if target not in (0, 1):
        raise ValueError(f"'target' should be 0 or 1; {target!r} was provided")
    acts, grads = {}, {}
    h1 = names[layer].register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    h2 = names[layer].register_full_backward_hook(lambda m, gi, go: grads.__setitem__("g", go[0]))
    was_training = model.training
    model.eval()
    try:
        x = torch.as_tensor(x).float().requires_grad_(True)
        logit = model(x).reshape(-1)
        (logit if target == 1 else -logit).sum().backward()
    finally:
        h1.remove()
        h2.remove()
        model.train(was_training)
    a, g = acts["a"].detach(), grads["g"].detach()
    w = g.mean(dim=(2, 3, 4), keepdim=True)
    cam = F.relu((w * a).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(x.shape[2:]), mode="trilinear", align_corners=False)[:, 0]
    if normalize:
        flat = cam.flatten(1)
        lo, hi = flat.min(1).values, flat.max(1).values
        cam = (cam - lo[:, None, None, None]) / (hi - lo).clamp_min(1e-12)[:, None, None, None]
    return cam.numpy().astype(np.float32)
