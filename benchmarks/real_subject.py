"""The real-subject case: pycortex's FreeSurfer subject S1, left hemisphere, side by side.

``python -m benchmarks.real_subject --s1 DIR [-o DIR] [--surfaces white inflated] [--repeats 1]``
(or ``python -m benchmarks.run --s1 DIR``, which adds this section to the full run).

``DIR`` holds pycortex 1.4.0's ``filestore/db/S1/surfaces`` files (``wm_lh.gii``, ``pia_lh.gii``,
``inflated_lh.gii``, ``flat_lh.gii``; see benchmarks/README.md for how to get them); nothing is
downloaded. The cortex mask is the vertices of the faces of ``flat_lh.gii``, pycortex's hand-cut
flat patch. On each surface, each method in a fresh process (:mod:`benchmarks.measure`: first call,
warm calls, peak memory, distortion):

- ``surfmap.flatten(..., method="conformal")`` and ``method="area"`` (cut included);
- libigl LSCM (two fixed boundary vertices) and the harmonic map onto the square (surfmap's
  corners) and onto the disk, on the same cut disk;
- pycortex's flat patch (hand cuts and FreeSurfer's relaxation; precomputed, so no time) against
  the same surface, on its own faces.

Reports flatten / LSCM time, peak memory against LSCM's, the stage timings of ``flatten``
(``fm.info["timings"]`` and the stages' own), and writes ``s1_maps_<surface>.png`` (each map, faces
coloured by log area ratio) and ``hist_S1-left-<surface>.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import report
from .meshes import Case
from .measure import distortion

S1_FILES = {"white": "wm_{h}.gii", "pial": "pia_{h}.gii", "inflated": "inflated_{h}.gii"}
METHODS_S1 = ["surfmap_flatten_conformal", "surfmap_flatten", "igl_lscm", "igl_harmonic_square", "igl_harmonic_disk"]
HOW_TO_GET = ("pip download --no-deps pycortex==1.4.0, unpack the sdist, and pass its filestore/db/S1/surfaces "
              "folder")


def check_dir(s1_dir) -> Path:
    d = Path(s1_dir)
    missing = [f for f in ("flat_lh.gii", "wm_lh.gii") if not (d / f).exists()]
    if missing:
        raise FileNotFoundError(f"--s1 {d}: expected pycortex's S1 surfaces there; missing {missing}. "
                                f"To get them: {HOW_TO_GET}")
    return d


def cortex_mask(s1_dir, hemi: str = "left", n_vertices: int | None = None) -> np.ndarray:
    """The vertices of the faces of pycortex's flat patch."""
    import surfmap

    h = "lh" if hemi == "left" else "rh"
    flat = surfmap.read_surface(Path(s1_dir) / f"flat_{h}.gii")
    keep = np.zeros(n_vertices or flat.n_vertices, dtype=bool)
    keep[np.unique(flat.faces)] = True
    return keep


def s1_case(s1_dir, surface: str, hemi: str = "left") -> tuple[Case, dict]:
    """The S1 surface as a benchmark case, and what the cut did."""
    import surfmap

    h = "lh" if hemi == "left" else "rh"
    mesh = surfmap.read_surface(Path(s1_dir) / S1_FILES[surface].format(h=h))
    keep = cortex_mask(s1_dir, hemi, mesh.n_vertices)
    t0 = time.perf_counter()
    c = surfmap.cut(mesh, keep)
    cut_s = time.perf_counter() - t0
    case = Case(f"S1-{hemi}-{surface}", mesh, keep, c.mesh, c.vertex_map)
    return case, {"repairs": list(c.repairs), "inserted": int(c.n_inserted), "n_mesh": int(mesh.n_vertices),
                  "n_disk": int(c.mesh.n_vertices), "cut_s": cut_s}


def pycortex_row(s1_dir, case: Case, surface: str, workdir: Path, hemi: str = "left") -> dict:
    """Distortion of pycortex's hand-made flat patch against ``case.mesh``, on the patch's faces."""
    import surfmap

    h = "lh" if hemi == "left" else "rh"
    flat = surfmap.read_surface(Path(s1_dir) / f"flat_{h}.gii")
    F = flat.faces
    used = np.unique(F)
    stats, d, K = distortion(case.mesh.vertices, F, flat.vertices[:, :2])
    out = workdir / f"{case.name}.pycortex_flat.faces.npz"
    np.savez_compressed(out, d=d.astype(np.float32), K=K.astype(np.float32), uv=flat.vertices[:, :2], faces=F,
                        vertices3d=case.mesh.vertices)
    return dict(method="pycortex_flat", label=f"pycortex flat patch vs {surface}", tool="pycortex",
                case=case.name, n=int(len(used)), distortion=stats, faces_file=str(out),
                note="hand cuts + FreeSurfer relaxation; precomputed, no timing; its own faces")


def _time(r):
    return report._time(r)


def summary(rows: list[dict]) -> dict:
    """Per case: flatten / LSCM time, peak memory / LSCM's, and the flatten stage timings."""
    out = {}
    for case in dict.fromkeys(r["case"] for r in rows):
        rs = {r["method"]: r for r in rows if r["case"] == case}
        lscm = rs.get("igl_lscm")
        t_l, m_l = (_time(lscm), lscm.get("peak_mem_mb")) if lscm else (None, None)
        s = {}
        for name in ("surfmap_flatten", "surfmap_flatten_conformal"):
            r = rs.get(name)
            if r is None or not _time(r):
                continue
            s[name] = dict(
                seconds=_time(r), warm=r.get("median_s") is not None, x_lscm=_time(r) / t_l if t_l else None,
                peak_mem_mb=r.get("peak_mem_mb"),
                mem_x_lscm=(r["peak_mem_mb"] / m_l) if m_l and r.get("peak_mem_mb") is not None else None,
                stages=_stages(r.get("info") or {}))
        out[case] = dict(lscm_s=t_l, lscm_mem_mb=m_l, methods=s)
    return out


def _stages(info: dict) -> dict:
    """flatten's stage timings, with each stage's own timings nested ("conformal.newton", ...)."""
    from .run import _COUNTERS

    def seconds(t: dict):
        return {k: float(v) for k, v in t.items()
                if isinstance(v, (int, float)) and k != "total" and not any(c in k for c in _COUNTERS)}

    st = seconds(info.get("timings") or {})
    for stage in ("conformal", "transport"):
        st.update({f"{stage}.{k}": v for k, v in seconds((info.get(stage) or {}).get("timings") or {}).items()})
    return st


def plot_maps(rows: list[dict], out: Path, case: str) -> Path | None:
    """One panel per method: the flat map, faces coloured by log area ratio (shared scale)."""
    from surfmap.distortion import distortion as surfmap_distortion
    from surfmap.flatmap import FlatMap

    plt = report._plt()
    rs = [r for r in rows if r.get("case") == case and r.get("faces_file")]
    panels = []
    for r in rs:
        with np.load(r["faces_file"]) as z:
            if "uv" not in z:
                continue
            uv, F, V = z["uv"].astype(float), z["faces"], z["vertices3d"]
        e1, e2 = uv[F[:, 1]] - uv[F[:, 0]], uv[F[:, 2]] - uv[F[:, 0]]
        if (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum() < 0:
            uv = uv * [-1, 1]
        fm = FlatMap(uv, F, np.arange(len(uv)), np.zeros(4, dtype=np.int64), vertices=V)
        d = surfmap_distortion(fm)
        panels.append((r, uv, F, d))
    if not panels:
        return None
    n = len(panels)
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 4.1 * nrows), layout="constrained")
    axes = np.atleast_1d(axes).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax, (r, uv, F, d) in zip(axes, panels):
        used = np.unique(F)
        lo, hi = uv[used].min(0), uv[used].max(0)
        xy = (uv - lo) / (hi - lo).max()
        pc = ax.tripcolor(xy[:, 0], xy[:, 1], F, facecolors=np.clip(np.nan_to_num(d.log_area_ratio), -2, 2),
                          cmap="RdBu_r", vmin=-2, vmax=2, rasterized=True)
        flipped = d.signed_area <= 0
        if flipped.any():
            c = xy[F[flipped]].mean(axis=1)
            ax.plot(c[:, 0], c[:, 1], "kx", ms=6, mew=1.2)
        ax.set_aspect("equal")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"{r.get('label', r['method'])}\nflipped {d.n_flipped}, p95 |d| {d.area_abs_p95:.2f}, "
                     f"mean K {d.dilatation_mean:.2f}", fontsize=8)
    fig.colorbar(pc, ax=list(axes[:n]), shrink=0.8, label="log area ratio d (clipped to ±2)")
    fig.suptitle(f"{case}: flat maps, faces coloured by area distortion (x: flipped faces)", fontsize=10)
    p = out / f"s1_maps_{case.split('-')[-1]}.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def run_s1(s1_dir, out: Path, workdir: Path, *, surfaces=("white", "inflated"), repeats: int = 1,
           cap: float | None = None, log=print) -> dict:
    """Every method on each S1 surface; figures into ``out``. Never raises on a method's failure."""
    from .run import run_methods

    s1_dir = check_dir(s1_dir)
    rows, cuts = [], {}
    for surface in surfaces:
        case, cut_info = s1_case(s1_dir, surface)
        cuts[case.name] = cut_info
        log(f"  {case.name}: {case.n} disk vertices ({cut_info['inserted']} inserted by the cut), "
            f"cut {cut_info['cut_s']:.1f} s")
        rows += run_methods(case, METHODS_S1, workdir, repeats=repeats, timeout=1800.0, cap=cap, save_map=True)
        rows.append(pycortex_row(s1_dir, case, surface, workdir))
        report.write_histograms(rows, out, case=case.name)
        plot_maps(rows, out, case.name)
    return dict(rows=[report.strip_row(r) for r in rows], cuts=cuts, summary=summary(rows),
                settings=dict(surfaces=list(surfaces), repeats=repeats, cap_s=cap, s1_dir=str(s1_dir)))


def markdown(s1: dict) -> str:
    lines = ["## Real subject: pycortex's S1, left hemisphere\n",
             "Cortex = the vertices of the faces of pycortex's hand-cut `flat_lh.gii`. The pycortex row is measured "
             "on its own patch (its relaxation cuts), the others on surfmap's cut of the same mask.\n",
             report.comparison_table(s1["rows"]), ""]
    for case, c in s1.get("cuts", {}).items():
        lines.append(f"- {case}: {c['n_mesh']} vertices, disk {c['n_disk']} ({c['inserted']} inserted by the cut); "
                     f"cut {c['cut_s']:.2f} s; repairs: {'; '.join(c['repairs'])}")
    lines += ["", "| cortex | method | time (s) | × LSCM | peak mem (MB) | × LSCM's | stage timings (s) |",
              "|---|---|---:|---:|---:|---:|---|"]
    for case, s in s1.get("summary", {}).items():
        for name, m in s["methods"].items():
            st = ", ".join(f"{k} {v:.2f}" for k, v in m["stages"].items())
            lines.append(f"| {case} | {name}{'' if m['warm'] else ' (first call)'} | {m['seconds']:.2f} | "
                         f"{report._f(m['x_lscm'], '{:.2f}')} | {report._f(m['peak_mem_mb'], '{:.0f}')} | "
                         f"{report._f(m['mem_x_lscm'], '{:.2f}')} | {st} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.real_subject", description=__doc__.split("\n\n")[0])
    ap.add_argument("--s1", required=True, metavar="DIR", help=f"pycortex's S1 surfaces ({HOW_TO_GET})")
    ap.add_argument("-o", "--out", default="benchmarks/results", help="output folder (default %(default)s)")
    ap.add_argument("--surfaces", nargs="+", default=["white", "inflated"], choices=list(S1_FILES))
    ap.add_argument("--repeats", type=int, default=1, help="warm calls per method (default 1)")
    ap.add_argument("--cap", type=float, default=None, help="skip warm calls of a method whose first call "
                    "times (1 + repeats) exceeds this many seconds")
    args = ap.parse_args(argv)
    try:
        check_dir(args.s1)
    except FileNotFoundError as err:
        ap.error(str(err))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from .run import log, machine_info

    t0 = time.perf_counter()
    res = dict(machine=machine_info())
    with tempfile.TemporaryDirectory(prefix="surfmap-s1-") as tmp:
        res["s1"] = run_s1(args.s1, out, Path(tmp), surfaces=args.surfaces, repeats=args.repeats, cap=args.cap,
                           log=log)
    res["total_s"] = time.perf_counter() - t0
    (out / "s1.json").write_text(json.dumps(res, indent=1, default=report.json_default))
    md = f"Machine: {res['machine']['cpu']}, load at start {res['machine']['loadavg_at_start']}; " \
         f"{res['machine']['date']}; {res['total_s']:.0f} s.\n\n" + markdown(res["s1"])
    (out / "s1.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
