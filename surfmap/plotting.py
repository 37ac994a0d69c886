"""Figures of flat maps and their images (matplotlib, non-interactive Agg backend).

Images follow :mod:`surfmap.raster`'s convention (row 0 at the top, ``v`` up): they are shown
with ``origin="upper", extent=(0, 1, 0, 1)``, so an image and the flat mesh drawn by
:func:`plot_flatmap` line up in the same ``(u, v)`` axes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ._atomic import atomic_write
from .exceptions import ParameterError

__all__ = ["face_distortion", "plot_distortion_histograms", "plot_flatmap", "plot_images", "save_figure"]

# metrics whose sign matters (curvature, sulcal depth): a diverging map centred on 0
_DIVERGING = ("curv", "sulc", "curvature", "depth", "log")


def _pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo") and not _interactive():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _interactive() -> bool:
    import sys

    return hasattr(sys, "ps1") or "ipykernel" in sys.modules


def _limits(img: np.ndarray, name: str):
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return "viridis", 0.0, 1.0
    lo, hi = np.percentile(finite, [1, 99])
    if any(key in name.lower() for key in _DIVERGING) and lo < 0 < hi:
        m = max(-lo, hi)
        return "RdBu_r", -m, m
    if hi <= lo:
        hi = lo + 1.0
    return "viridis", float(lo), float(hi)


def _boundary_uv(fm) -> np.ndarray:
    """Closed polyline (b + 1, 2) of the flat map's boundary loop."""
    from .mesh import boundary_loops

    loops = boundary_loops(fm.faces)
    loop = max(loops, key=len)
    return fm.uv[np.r_[loop, loop[:1]]]


def plot_images(images, channels=None, *, fm=None, title: str | None = None, ncols: int | None = None,
                units: dict | None = None, panel_size: float = 3.2):
    """Flat images side by side, each with a labelled colour bar.

    Parameters
    ----------
    images : (C, size, size) array
        In :mod:`surfmap.raster`'s convention (row 0 at the top).
    channels : sequence of str, optional
        Panel titles and colour-bar labels; default ``channel 0, 1, ...``.
    fm : FlatMap, optional
        Draws the map's boundary (the edge of the cortex in the plane) over each image.
    title : str, optional
        Figure title.
    ncols : int, optional
        Panels per row (default: all in one row up to 4).
    units : dict, optional
        Channel name -> unit for the colour-bar label (e.g. ``{"thickness": "mm"}``).
    panel_size : float
        Inches per panel.

    Returns
    -------
    matplotlib.figure.Figure
        Signed metrics (curvature, sulcal depth) use a diverging map centred on 0; limits are the
        1st and 99th percentiles.
    """
    plt = _pyplot()
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise ParameterError(f"images: expected shape (C, size, size); found {images.shape}")
    C = images.shape[0]
    channels = list(channels) if channels is not None else [f"channel {c}" for c in range(C)]
    if len(channels) != C:
        raise ParameterError(f"channels: expected {C} names (one per image); found {len(channels)}")
    units = units or {}
    ncols = ncols or min(C, 4)
    nrows = math.ceil(C / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols * 1.18, panel_size * nrows + 0.5),
                             squeeze=False, layout="constrained")
    outline = _boundary_uv(fm) if fm is not None else None
    for c in range(nrows * ncols):
        ax = axes.flat[c]
        if c >= C:
            ax.axis("off")
            continue
        name = channels[c]
        cmap, lo, hi = _limits(images[c], name)
        im = ax.imshow(images[c], origin="upper", extent=(0, 1, 0, 1), cmap=cmap, vmin=lo, vmax=hi,
                       interpolation="nearest")
        if outline is not None:
            ax.plot(outline[:, 0], outline[:, 1], color="k", lw=0.8)
        ax.set_title(name)
        ax.set_xlabel("u")
        ax.set_ylabel("v")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        cb = fig.colorbar(im, ax=ax, shrink=0.85)
        cb.set_label(f"{name} ({units[name]})" if name in units else name)
    if title:
        fig.suptitle(title)
    return fig


def plot_flatmap(fm, values=None, *, ax=None, label: str | None = None, edges: bool = True,
                 max_edges: int = 6000, title: str | None = None):
    """The flat mesh in the unit square: faces coloured by ``values``, edges, boundary, corners.

    Parameters
    ----------
    fm : FlatMap
    values : (k,) array or (m,) array, optional
        Per flat vertex (Gouraud shading) or per face (flat shading).
    ax : matplotlib Axes, optional
    label : str, optional
        Colour-bar label for ``values``.
    edges : bool
        Draw the mesh edges (thin) when the map has at most ``max_edges`` faces.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    from matplotlib.tri import Triangulation

    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 4.4), layout="constrained")
    else:
        fig = ax.figure
    tri = Triangulation(fm.uv[:, 0], fm.uv[:, 1], fm.faces)
    if values is not None:
        values = np.asarray(values, dtype=np.float64)
        name = label or "value"
        cmap, lo, hi = _limits(values, name)
        if len(values) != fm.n_vertices and len(values) == fm.n_original:
            values = fm.to_flat(values)  # one value per vertex of the mesh given to flatten
        if len(values) == fm.n_vertices:
            pc = ax.tripcolor(tri, values, shading="gouraud", cmap=cmap, vmin=lo, vmax=hi)
        elif len(values) == len(fm.faces):
            pc = ax.tripcolor(tri, facecolors=values, cmap=cmap, vmin=lo, vmax=hi)
        else:
            raise ParameterError(f"values: expected {fm.n_vertices} (vertices) or {len(fm.faces)} (faces) "
                                 f"entries; found {len(values)}. Pass one value per flat vertex (fm.to_flat "
                                 f"takes the surface's values there) or per face")
        fig.colorbar(pc, ax=ax, shrink=0.85).set_label(name)
    if edges and len(fm.faces) <= max_edges:
        ax.triplot(tri, color="0.3", lw=0.15, alpha=0.6)
    outline = _boundary_uv(fm)
    ax.plot(outline[:, 0], outline[:, 1], color="k", lw=1.0)
    cuv = fm.uv[fm.corners]
    ax.plot(cuv[:, 0], cuv[:, 1], "o", color="crimson", ms=5, label="corners")
    ax.set_aspect("equal")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("u")
    ax.set_ylabel("v")
    ax.set_title(title or f"{fm.info.get('method', 'flat map')}: {fm.n_vertices} vertices")
    return fig


def face_distortion(fm, mesh=None) -> dict:
    """Per-face distortion of a flat map against its 3D surface (from :func:`surfmap.distortion`).

    Parameters
    ----------
    fm : FlatMap
    mesh : Mesh, optional
        The mesh ``fm.vertex_map`` indexes, when ``fm`` has no 3D ``vertices``.

    Returns
    -------
    dict
        ``"log_area_ratio"`` (m,) float64: ``log((A_flat / sum A_flat) / (A_3d / sum A_3d))``;
        ``"dilatation"`` (m,) float64: ``sigma1 / sigma2 >= 1`` of the face's affine map 3D -> plane.
    """
    from .distortion import distortion

    return _per_face(distortion(fm, mesh))


def _per_face(d) -> dict:
    """``{"log_area_ratio", "dilatation"}`` of a :class:`surfmap.Distortion` (or such a dict)."""
    if isinstance(d, dict):
        return d
    return {"log_area_ratio": np.asarray(d.log_area_ratio), "dilatation": np.asarray(d.dilatation)}


def plot_distortion_histograms(maps: dict, *, bins: int = 80, title: str | None = None):
    """Histograms of per-face area and angle distortion, one colour per map.

    Parameters
    ----------
    maps : dict
        Label (e.g. ``"conformal"``, ``"area-preserving"``) -> FlatMap with 3D ``vertices``, a
        :class:`surfmap.Distortion`, or a dict as returned by :func:`face_distortion`.
    bins : int
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Left: ``log(flat area / 3D area)`` of each face (areas normalised to sum 1; 0 = area kept);
        values past the 0.5 / 99.5 percentiles are counted in the end bins. When one map spreads
        over less than a tenth of the common range (an area-preserving map beside a conformal
        one), an inset shows that map's range with bins of its own, so it is not a single spike.
        Right: dilatation ``sigma1 / sigma2`` (1 = angles kept), log scale.
    """
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    per_map = {label: _per_face(m) if isinstance(m, dict) or hasattr(m, "log_area_ratio") else face_distortion(m)
               for label, m in maps.items()}
    lar_all = np.concatenate([d["log_area_ratio"][np.isfinite(d["log_area_ratio"])] for d in per_map.values()])
    lo, hi = np.percentile(lar_all, [0.5, 99.5]) if lar_all.size else (-1, 1)
    edges_a = np.linspace(min(lo, -0.1), max(hi, 0.1), bins + 1)
    dil_all = np.concatenate([d["dilatation"][np.isfinite(d["dilatation"])] for d in per_map.values()])
    top = max(float(np.percentile(dil_all, 99.5)) if dil_all.size else 2.0, 1.05)
    edges_d = np.geomspace(1.0, top, bins + 1)
    for label, d in per_map.items():
        lar, dil = d["log_area_ratio"], d["dilatation"]
        p95 = np.percentile(np.abs(lar[np.isfinite(lar)]), 95)
        ax1.hist(np.clip(lar, edges_a[0], edges_a[-1]), bins=edges_a, histtype="stepfilled", alpha=0.45,
                 label=f"{label} (|log ratio| p95 = {p95:.2f})")
        ax2.hist(np.clip(dil, 1.0, top), bins=edges_d, histtype="stepfilled", alpha=0.45,
                 label=f"{label} (mean = {np.nanmean(dil):.2f})")
    ax1.axvline(0.0, color="k", lw=0.8)
    ax1.set_xlabel("log(flat area / surface area) per face")
    ax1.set_ylabel("faces (log scale)")
    ax1.set_yscale("log")
    _zoom_inset(ax1, per_map, edges_a, bins)
    ax1.set_title("area distortion")
    ax1.legend(fontsize=8)
    ax2.set_xscale("log")
    ax2.set_xlabel("dilatation sigma1 / sigma2 per face (1 = conformal)")
    ax2.set_ylabel("faces")
    ax2.set_title("angle distortion")
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def _zoom_inset(ax, per_map: dict, edges: np.ndarray, bins: int) -> None:
    """Inset of the log area ratios around 0 when a map is too narrow to read in the common bins."""
    spreads = [np.percentile(np.abs(x), 99.5) for x in
               (d["log_area_ratio"][np.isfinite(d["log_area_ratio"])] for d in per_map.values()) if x.size]
    if len(spreads) < 2 or min(spreads) <= 0 or min(spreads) > 0.1 * (edges[-1] - edges[0]):
        return
    lo, hi = ax.get_ylim()  # log scale: lift the top so the bars fill the lower half, the inset the upper
    ax.set_ylim(lo, lo * (hi / lo) ** 1.9)
    ax.set_yticks([10.0**k for k in range(int(np.ceil(np.log10(hi))) + 1)])  # no ticks over the inset
    r = 1.2 * min(spreads)
    inner = np.linspace(-r, r, bins // 2 + 1)
    inset = ax.inset_axes((0.64, 0.5, 0.33, 0.34))
    for k, d in enumerate(per_map.values()):
        lar = d["log_area_ratio"]
        lar = lar[np.isfinite(lar) & (np.abs(lar) <= r)]
        inset.hist(lar, bins=inner, histtype="stepfilled", alpha=0.45, color=f"C{k}")
    inset.axvline(0.0, color="k", lw=0.6)
    inset.set_xlim(-r, r)
    inset.set_title(f"zoom: |log ratio| <= {r:.2g}", fontsize=7)
    inset.set_ylabel("faces", fontsize=6)
    inset.tick_params(labelsize=6)


def save_figure(fig, path, dpi: int = 120) -> Path:
    """Write a figure (PNG by the suffix) atomically and close it."""
    path = Path(path)
    fmt = path.suffix[1:].lower() or None  # a file object does not tell savefig the format
    atomic_write(path, lambda fh: fig.savefig(fh, dpi=dpi, format=fmt))
    _pyplot().close(fig)
    return path
