"""Scratch benchmark: the area-preserving (optimal transport) stage against libigl's LSCM.

Runs on the cortex of fs_LR 32k and fsaverage5, both hemispheres, and prints per hemisphere:
Newton iterations, halvings, max relative cell-area error, per-face |log area ratio| 95th
percentile, flipped faces, the OT time and the whole-flatten time, with their ratios to
``igl.lscm`` on the same disk in the same run (after a compiling call; rounds interleaved and the
best of each kept, since a shared machine is noisy).

    python benchmarks/transport_vs_lscm.py [--templates fslr32k fsaverage5] [--hemis left right]
        [--flatten] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import surfmap
from surfmap.mesh import Mesh, face_areas


def load_hemisphere(template: str, hemi: str):
    """(Mesh, cortex mask): surfmap.load_template when it exists, else the raw package files."""
    try:
        h = surfmap.load_template(template, hemi)
        return h.mesh, np.asarray(h.cortex, dtype=bool)
    except (ImportError, AttributeError, ModuleNotFoundError):
        pass
    import nibabel as nib

    if template == "fslr32k":
        import importlib.util

        base = os.path.join(os.path.dirname(importlib.util.find_spec("brainspace").origin), "datasets", "surfaces")
        h = "lh" if hemi == "left" else "rh"
        g = nib.load(os.path.join(base, f"conte69_32k_{h}.gii"))
        V, F = g.darrays[0].data, g.darrays[1].data
        keep = np.loadtxt(os.path.join(base, f"conte69_32k_{h}_mask.csv")) > 0
        return Mesh(V, F, name=f"fslr32k_{hemi}"), keep
    import nilearn

    base = os.path.join(os.path.dirname(nilearn.__file__), "datasets", "data", "fsaverage5")
    g = nib.load(os.path.join(base, f"pial_{hemi}.gii.gz"))
    flat = nib.load(os.path.join(base, f"flat_{hemi}.gii.gz"))
    V, F = g.darrays[0].data, g.darrays[1].data
    keep = np.zeros(len(V), dtype=bool)
    keep[np.unique(flat.darrays[1].data)] = True
    return Mesh(V, F, name=f"fsaverage5_{hemi}"), keep


def face_log_ratio(fm, mesh3d):
    A = face_areas(mesh3d.vertices, mesh3d.faces)
    a = fm.signed_areas()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log((a / a.sum()) / (A / A.sum()))


def lscm_once(disk):
    import igl

    V, F = disk.vertices, disk.faces
    bnd = igl.boundary_loop(F)
    b = np.array([bnd[0], bnd[len(bnd) // 2]], dtype=np.int64)
    bc = np.array([[0.0, 0.0], [1.0, 0.0]])
    t0 = time.perf_counter()
    igl.lscm(V, F, b, bc)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--templates", nargs="+", default=["fslr32k", "fsaverage5"])
    ap.add_argument("--hemis", nargs="+", default=["left", "right"])
    ap.add_argument("--flatten", action="store_true", help="also time the whole flatten")
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds (best of each is reported)")
    args = ap.parse_args(argv)
    from surfmap.transport import _harmonic_square_map

    print(f"load average {os.getloadavg()[0]:.1f}; best of {args.repeat} rounds, LSCM / OT / flatten interleaved")
    for template in args.templates:
        for hemi in args.hemis:
            mesh, keep = load_hemisphere(template, hemi)
            disk = surfmap.cut(mesh, keep).mesh
            try:
                init = surfmap.conformal_map(disk)
                init_name = "conformal"
            except (ImportError, AttributeError, ModuleNotFoundError):
                init = _harmonic_square_map(disk)
                init_name = "harmonic"
            lscm_once(disk)  # compile / warm up every timed call once
            fm = surfmap.area_preserving_map(disk, init)
            if args.flatten:
                surfmap.flatten(mesh, keep)
            t_lscm = t_ot = t_fl = np.inf
            stage = {}
            for _ in range(args.repeat):
                t_lscm = min(t_lscm, lscm_once(disk))
                t0 = time.perf_counter()
                fm = surfmap.area_preserving_map(disk, init)
                t = time.perf_counter() - t0
                if t < t_ot:
                    t_ot, stage = t, fm.info["timings"]
                if args.flatten:
                    t0 = time.perf_counter()
                    surfmap.flatten(mesh, keep)
                    t_fl = min(t_fl, time.perf_counter() - t0)
            d = face_log_ratio(fm, disk)
            d0 = face_log_ratio(init, disk)
            info = fm.info
            line = (
                f"{template:10s} {hemi:5s} n={disk.n_vertices:6d} init={init_name} "
                f"newton={info['newton_iterations']} halvings={info['halvings']} "
                f"lu={info.get('factorizations', '-')} cg={info.get('cg_iterations', '-')} "
                f"cell_err={info['cell_area_error']:.2e} |d|95={np.percentile(np.abs(d), 95):.4f} "
                f"(init {np.percentile(np.abs(d0), 95):.3f}) flips={int((fm.signed_areas() <= 0).sum())} "
                f"inside={bool(((fm.uv >= 0) & (fm.uv <= 1)).all())} "
                f"ot={t_ot:.2f}s lscm={t_lscm:.3f}s ratio={t_ot / t_lscm:.2f}"
            )
            if args.flatten:
                line += f" flatten={t_fl:.2f}s ratio={t_fl / t_lscm:.2f}"
            print(line, flush=True)
            print("   OT stage timings (s):", {k: round(v, 3) for k, v in stage.items()}, flush=True)


if __name__ == "__main__":
    main()
