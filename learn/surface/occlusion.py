"""Occlusion maps (seed 001, after Zeiler & Fergus): which parts of the flat image, and so of the cortex, matter.

A square patch (30 x 30 pixels at 224 x 224, moved with a stride of 4) replaces the image content; the drop in
the model's performance at each position, averaged over subjects and spread back over the pixels each patch
covered ("resized to the image"), is the map. :func:`occlusion_to_cortex` reads it back at every vertex with
``Rasterizer.backproject`` and writes a GIFTI file for Connectome Workbench / FreeSurfer viewers;
:func:`plot_occlusion` draws it on the flat square and on the 3D surface.

The score per position is the mean drop of the true class's probability (``"probability"``, smooth, the default)
or of the accuracy (``"accuracy"``, the seed's wording). The patch holds ``fill`` in the normalised input
(0 = the training mean: the information is removed without adding an extreme value; the seed's "black square"
on a z-scored image).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from learn import ConfigError

__all__ = ["occlusion_map", "occlusion_maps", "occlusion_to_cortex", "plot_occlusion", "scaled_patch"]

log = logging.getLogger(__name__)


def scaled_patch(size: int, patch: int = 30, stride: int = 4, reference: int = 224) -> tuple[int, int]:
    """The seed's 30-pixel patch and stride 4 at 224 pixels, scaled to an image of ``size`` pixels."""
    p = max(1, int(round(patch * size / reference)))
    s = max(1, int(round(stride * size / reference)))
    return p, s


def occlusion_map(model, images, labels, *, patch: int | None = None, stride: int | None = None,
                  fill: float = 0.0, score: str = "probability", batch_size: int = 64, device="cpu") -> np.ndarray:
    """Mean performance drop when each image region is hidden.

    Parameters
    ----------
    model : nn.Module
        Outputs one logit per image.
    images : (N, C, H, W) float array or tensor
        Normalised inputs, as the model saw them (H == W).
    labels : (N,) 0/1
    patch, stride : int, optional
        Default: :func:`scaled_patch` of the image size (30 and 4 at 224).
    fill : float
        Value inside the patch.
    score : {"probability", "accuracy"}
        Drop of the true-class probability, or of the accuracy (the seed's score).

    Returns
    -------
    (H, W) float64
        At each pixel, the mean over the patch positions covering it of the drop (baseline minus occluded).
    """
    return occlusion_maps(model, images, labels, patch=patch, stride=stride, fill=fill, scores=(score,),
                          batch_size=batch_size, device=device)[score]


@torch.no_grad()
def occlusion_maps(model, images, labels, *, patch: int | None = None, stride: int | None = None,
                   fill: float = 0.0, scores=("probability", "accuracy"), batch_size: int = 64,
                   device="cpu") -> dict:
    """:func:`occlusion_map` for several scores from the same occluded forward passes.

    Returns
    -------
    dict of score -> (H, W) float64
    """
    scores = tuple(scores)
    bad = [s for s in scores if s not in ("probability", "accuracy")]
    if bad or not scores:
        raise ConfigError(f"'score' should be 'probability' or 'accuracy'; {bad[0] if bad else scores!r} was provided")
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if x.ndim != 4 or x.shape[2] != x.shape[3]:
        raise ConfigError(f"'images' should have shape (N, C, H, H); found {tuple(x.shape)}")
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    N, _, H, W = x.shape
    p0, s0 = scaled_patch(H)
    patch = p0 if patch is None else int(patch)
    stride = s0 if stride is None else int(stride)
    if not 1 <= patch <= H or stride < 1:
        raise ConfigError(f"'patch' should be in [1, {H}] and 'stride' >= 1; found patch={patch}, stride={stride}")
    model = model.to(device).eval()

    def perf(batch):
        return torch.sigmoid(model(batch.to(device)).float().reshape(-1)).cpu()

    base = torch.cat([perf(x[i : i + batch_size]) for i in range(0, N, batch_size)])
    starts = list(range(0, H - patch + 1, stride))
    if starts[-1] != H - patch:
        starts.append(H - patch)  # the last row / column of pixels is covered too

    def value(prob, score):
        if score == "probability":
            return torch.where(y == 1, prob, 1 - prob)
        return ((prob >= 0.5).float() == y).float()

    v0 = {s: value(base, s) for s in scores}
    total = {s: np.zeros((H, W)) for s in scores}
    count = np.zeros((H, W))
    for r in starts:
        for c in starts:
            probs = []
            for i in range(0, N, batch_size):
                b = x[i : i + batch_size].clone()
                b[:, :, r : r + patch, c : c + patch] = fill
                probs.append(perf(b))
            prob = torch.cat(probs)
            for s in scores:
                total[s][r : r + patch, c : c + patch] += float((v0[s] - value(prob, s)).mean())
            count[r : r + patch, c : c + patch] += 1
    return {s: total[s] / np.maximum(count, 1) for s in scores}


def occlusion_to_cortex(image, rasterizer, n_vertices: int | None = None, path=None,
                        hemi: str | None = None) -> np.ndarray:
    """Read an occlusion map back on the cortex (``rasterizer.backproject``), optionally writing GIFTI.

    Parameters
    ----------
    image : (H, W) array
    rasterizer : surfmap.Rasterizer
        The operator the images were made with.
    n_vertices : int, optional
        Vertex count of the mesh given to ``flatten``: values for every vertex, NaN outside the cut
        (medial wall).
    path : path, optional
        ``.func.gii`` / ``.shape.gii`` file written with :func:`surfmap.write_metric`.
    hemi : {"left", "right"}, optional
        Recorded in the file (``AnatomicalStructurePrimary``) so that Workbench attaches it to the surface.

    Returns
    -------
    (n_vertices,) or (k,) float64
    """
    import surfmap

    values = np.asarray(rasterizer.backproject(np.asarray(image, dtype=np.float64), to_original=n_vertices))
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        surfmap.write_metric(values.astype(np.float32), path, hemi=hemi)
    return values


def plot_occlusion(image, mesh=None, values=None, *, title: str = "occlusion map", synthetic: bool = True,
                   view: str = "lateral", hemi: str = "left", score: str = "probability"):
    """Figure: the map on the flat square and, given ``mesh`` and per-vertex ``values``, on the 3D surface.

    Returns the matplotlib Figure. ``synthetic`` adds "(SYNTHETIC data)" to the title.
    """
    import matplotlib.pyplot as plt

    label = f"{title} (SYNTHETIC data)" if synthetic else title
    ncols = 2 if mesh is not None and values is not None else 1
    fig = plt.figure(figsize=(5 * ncols, 4.5))
    ax = fig.add_subplot(1, ncols, 1)
    im = ax.imshow(np.asarray(image), cmap="hot", origin="upper")
    ax.set_title("flat map")
    ax.set_xticks([]), ax.set_yticks([])
    what = "true-class probability" if score == "probability" else "accuracy"
    fig.colorbar(im, ax=ax, label=f"mean drop of the {what}")
    if ncols == 2:
        from nilearn import plotting

        ax3 = fig.add_subplot(1, 2, 2, projection="3d")
        vals = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
        plotting.plot_surf_stat_map((np.array(mesh.vertices), np.array(mesh.faces)), vals, hemi=hemi,
                                    view=view, cmap="hot", axes=ax3, figure=fig, colorbar=False,
                                    threshold=None)
        ax3.set_title("on the cortex")
    fig.suptitle(label)
    return fig
