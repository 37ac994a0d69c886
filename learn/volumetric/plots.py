"""Figures for the volumetric analyses (matplotlib, Agg-safe): orthogonal slices, MMSE scatter, QC."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_orthogonal", "plot_qc", "plot_scores_vs_mmse"]


def _fig():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_orthogonal(volume, path, *, background=None, affine=None, title: str = "", cut=None,
                    cmap: str = "hot", label: str = "") -> Path:
    """Sagittal, coronal and axial slices through ``cut`` (default: the map's maximum) over ``background``.

    Parameters
    ----------
    volume : (X, Y, Z) array
        The map (occlusion accuracy drop, Grad-CAM).
    path : path
        Output image (.png / .pdf).
    background : (X, Y, Z) array, optional
        Template shown in grey under the map.
    affine : (4, 4), optional
        Used to print the cut position in mm.
    """
    plt = _fig()
    vol = np.asarray(volume, dtype=np.float64)
    if cut is None:
        cut = np.unravel_index(np.nanargmax(vol), vol.shape)
    cut = tuple(int(c) for c in cut)
    fig, axes = plt.subplots(1, 3, figsize=(11, 4))
    vmax = np.nanmax(np.abs(vol)) or 1.0
    signed = np.nanmin(vol) < 0
    if signed and cmap == "hot":  # e.g. occlusion raising the accuracy somewhere: a diverging map, 0 in white
        cmap = "RdBu_r"
    for ax, axis, name in zip(axes, range(3), ("sagittal", "coronal", "axial")):
        sl = [slice(None)] * 3
        sl[axis] = cut[axis]
        if background is not None:
            ax.imshow(np.asarray(background)[tuple(sl)].T, origin="lower", cmap="gray")
        m = vol[tuple(sl)].T
        im = ax.imshow(np.ma.masked_where(np.abs(m) < 0.05 * vmax, m), origin="lower", cmap=cmap,
                       vmin=-vmax if signed else 0, vmax=vmax, alpha=0.8)
        ax.set_title(name)
        ax.axis("off")
    where = f"voxel {cut}"
    if affine is not None:
        xyz = np.asarray(affine)[:3, :3] @ np.asarray(cut) + np.asarray(affine)[:3, 3]
        where += f" = MNI ({xyz[0]:.0f}, {xyz[1]:.0f}, {xyz[2]:.0f}) mm"
    fig.suptitle(f"{title}\n[{where}]", fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.7, label=label)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_scores_vs_mmse(scores, mmse, groups, path, title: str = "", threshold: float | None = None) -> Path:
    """Scatter of predicted AD score against MMSE, one colour per group (dashed line: the decision threshold)."""
    plt = _fig()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    g = np.asarray(groups).astype(str)
    for lab in sorted(set(g.tolist())):
        sel = g == lab
        ax.scatter(np.asarray(mmse)[sel], np.asarray(scores)[sel], s=12, label=lab, alpha=0.7)
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=0.8)
    ax.set_xlabel("MMSE")
    ax.set_ylabel("predicted AD score")
    ax.set_title(title, fontsize=9)
    ax.legend()
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_qc(report, path, group: str = "dataset", title: str = "QC: template correlation (red: excluded)") -> Path:
    """Template correlation per scan, per group, with each group's exclusion threshold."""
    plt = _fig()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (g, sub) in enumerate(report.groupby(group)):
        ex = sub["qc_excluded"].to_numpy()
        xs = i + 0.1 * np.random.default_rng(i).standard_normal(len(sub))
        ax.scatter(xs[~ex], sub["qc_corr"][~ex], s=10, c="tab:blue")
        ax.scatter(xs[ex], sub["qc_corr"][ex], s=14, c="tab:red", marker="x")
        ax.hlines(sub["qc_threshold"].iloc[0], i - 0.3, i + 0.3, colors="k")
    ax.set_xticks(range(report[group].nunique()), sorted(report[group].unique()), rotation=45, ha="right")
    ax.set_ylabel("r with grand-mean GMV")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
