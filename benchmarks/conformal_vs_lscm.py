"""Scratch benchmark: the conformal map (Ricci flow) against libigl's LSCM on the same disk.

For each template hemisphere: cut the cortex to a disk, call ``surfmap.conformal_map`` once to
compile (numba cache), then time ``repeats`` calls of each method alternately in one run and
print the best times, their ratio, and the acceptance numbers (iterations, flips, curvature
residuals, flipped faces, dilatation, area distortion).

    python benchmarks/conformal_vs_lscm.py [--templates fslr32k fsaverage5] [--hemis left right] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import surfmap
from surfmap.mesh import boundary_loop


def lscm(mesh):
    """igl.lscm with two boundary vertices pinned (half the boundary apart)."""
    import igl

    b = boundary_loop(mesh.faces)
    pins = np.array([b[0], b[len(b) // 2]], dtype=np.int64)
    return igl.lscm(mesh.vertices, mesh.faces, pins, np.array([[0.0, 0.0], [1.0, 0.0]]))


def best_time(fn, repeats):
    """Result and best (wall, CPU) seconds of ``repeats`` calls; CPU time (process_time) is less
    inflated than wall time on a shared machine."""
    out, best, best_cpu = None, np.inf, np.inf
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    return out, best, best_cpu


def run(template, hemi, repeats):
    h = surfmap.load_template(template, hemi)
    disk = surfmap.cut(h.mesh, h.cortex).mesh
    t = time.perf_counter()
    surfmap.conformal_map(disk)  # compiling / cache-loading call
    first = time.perf_counter() - t
    t_conf = t_lscm = c_conf = c_lscm = np.inf
    fm = None
    for _ in range(repeats):  # alternate so that both see the same machine load
        fm, tc, cc = best_time(lambda: surfmap.conformal_map(disk), 1)
        _, tl, cl = best_time(lambda: lscm(disk), 1)
        t_conf, t_lscm = min(t_conf, tc), min(t_lscm, tl)
        c_conf, c_lscm = min(c_conf, cc), min(c_lscm, cl)
    d = surfmap.distortion(fm)
    i = fm.info
    print(
        f"{template} {hemi}: {disk.n_vertices} vertices | conformal {t_conf:.3f} s (first call {first:.2f} s), "
        f"igl.lscm {t_lscm:.3f} s, ratio {t_conf / t_lscm:.2f} | CPU {c_conf:.3f} s vs {c_lscm:.3f} s, "
        f"ratio {c_conf / c_lscm:.2f}\n"
        f"  iterations {i['iterations']}, flips {i['flips']}, residuals {i['residuals']}\n"
        f"  modulus {i['modulus']:.4f}, folded input faces {i['folded_input_faces']}, flipped faces {d.n_flipped}, "
        f"dilatation mean {d.dilatation_mean:.4f} / 95th {d.dilatation_p95:.4f}, "
        f"|ln area ratio| 95th {d.area_abs_p95:.3f}\n"
        f"  timings { {k: round(v, 3) for k, v in i['timings'].items()} }"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--templates", nargs="+", default=["fslr32k"])
    ap.add_argument("--hemis", nargs="+", default=["left"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    for t in args.templates:
        for h in args.hemis:
            run(t, h, args.repeats)


if __name__ == "__main__":
    main()
