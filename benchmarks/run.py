"""One command for surfmap's benchmarks: ``python -m benchmarks.run [--quick] [--autoflatten] [-o DIR]``.

Sections (each can be skipped):

1. comparison: every method (see :mod:`benchmarks.methods`) on the cortex of fsaverage5 and
   fs_LR 32k, both hemispheres, each in a process of its own (time, peak memory, distortion);
   FreeSurfer's own fsaverage5 flat patch against the pial and white surfaces; autoflatten
   behind ``--autoflatten``.
2. scaling: the same maps on fsaverage5 (~9.5k), fs_LR 32k (~29k) and fs_LR 32k refined by
   midpoint subdivision (~117k, ~470k) left cortices, fitted exponents, stage timings, profiles.
3. raster: Rasterizer build per subject map (native mode) and 1,000 subjects x 4 metrics at
   224 x 224 with one operator (template mode).
4. batch: ``surfmap batch --jobs 1`` and ``--jobs 2`` on a synthetic FreeSurfer cohort.
5. with ``--s1 DIR``: the real subject (pycortex's S1, left white and inflated cortex), see
   :mod:`benchmarks.real_subject`.

Writes ``results.json``, ``results.md`` and PNG plots to the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import report
from .meshes import HEMIS, Case, freesurfer_flat_patch, refined_case, template_case
from .methods import METHODS
from .measure import distortion

ROOT = Path(__file__).resolve().parent.parent
SCALING_LARGEST = ["surfmap_conformal", "surfmap_ot", "igl_lscm", "igl_harmonic_disk"]
SCALING_NOTE = (
    "Refined meshes: one call per method (the first in its process; Numba's cache is loaded by then, a "
    "small part at these sizes); smaller meshes: warm medians from the comparison. On the largest mesh only "
    "the conformal map, the OT stage, LSCM and the harmonic disk map run (flatten is cut + conformal + OT; "
    "the harmonic square map is the same solve as the disk one), each capped: not started when the line "
    "through the two smaller sizes predicts more than the cap, and stopped past cap + 60 s."
)
COMPARE_METHODS = ["surfmap_conformal", "surfmap_ot", "surfmap_flatten", "igl_lscm", "igl_harmonic_disk",
                   "igl_harmonic_square"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine_info() -> dict:
    model = platform.processor() or ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    from importlib import metadata

    versions = {}
    for dist in ("numpy", "scipy", "numba", "libigl", "surfmap", "autoflatten"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return dict(cpu=model, cores=os.cpu_count(), python=platform.python_version(),
                platform=platform.platform(), loadavg_at_start=load, versions=versions,
                date=time.strftime("%Y-%m-%d %H:%M:%S"))


# ---------------------------------------------------------------------------------------------
# one method on one case, in its own process

def measure_method(case_path: Path, method: str, workdir: Path, *, repeats: int, profile: bool = False,
                   kwargs: dict | None = None, timeout: float = 600.0, cap: float | None = None,
                   save_map: bool = False) -> dict:
    """Run :func:`benchmarks.measure.run_worker` in a fresh process; never raises."""
    tag = f"{Path(case_path).stem}.{method}"
    spec = dict(case=str(case_path), method=method, repeats=repeats, profile=profile, save_map=save_map,
                kwargs=kwargs or {}, cap=cap, out=str(workdir / f"{tag}.faces.npz"),
                result=str(workdir / f"{tag}.result.json"))
    spec_path = workdir / f"{tag}.spec.json"
    spec_path.write_text(json.dumps(spec))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.measure", str(spec_path)], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(method=method, skipped=f"> {timeout:.0f} s (time cap)")
    wall = time.perf_counter() - t0
    try:
        res = json.loads(Path(spec["result"]).read_text())
    except (OSError, ValueError):
        return dict(method=method, error=f"worker exited {proc.returncode}: {proc.stderr[-2000:]}")
    res["process_wall_s"] = wall
    res["faces_file"] = spec["out"] if Path(spec["out"]).exists() else None
    return res


def _brief(r: dict) -> str:
    if "error" in r:
        return f"ERROR {r['error'][:200]}"
    if "skipped" in r:
        return f"skipped: {r['skipped']}"
    d = r.get("distortion", {})
    med = r.get("median_s")
    timing = "no timing" if r.get("first_s") is None else (
        f"first {r['first_s']:.3f}s warm " + ("-" if med is None else f"{med:.3f}s")
        + f" mem +{r['peak_mem_mb']:.0f}MB")
    return (f"{timing} flips {d.get('flipped')} "
            f"|d|95 {d.get('logarea_abs_p95', float('nan')):.3f} K {d.get('dilatation_mean', float('nan')):.3f}")


# ---------------------------------------------------------------------------------------------
# 1. comparison

def _kwargs_for(name: str, case: Case, workdir: Path, corners) -> dict:
    m = METHODS[name]
    kwargs = {}
    if m.needs_corners:
        kwargs["corners"] = corners
    conformal = str(workdir / f"{case.name}.conformal.npz")
    if m.gives_conformal:
        kwargs["save_to"] = conformal
    if m.needs_conformal:
        kwargs["init_path"] = conformal
    return kwargs


def run_methods(case: Case, methods: list[str], workdir: Path, *, repeats: int, profile: bool = False,
                timeout: float = 1800.0, cap: float | None = None, predicted: dict | None = None,
                save_map: bool = False) -> list[dict]:
    """Each method on one case, in order (surfmap's conformal first: its corners and map feed the
    harmonic square map and the OT stage). ``predicted``: method -> predicted seconds; a method
    predicted over ``cap`` is not run and is reported skipped."""
    path = case.save(workdir / f"{case.name}.npz")
    corners, rows = None, []
    for name in methods:
        m = METHODS[name]
        kwargs = _kwargs_for(name, case, workdir, corners)
        skip = None
        if predicted and cap and predicted.get(name) and predicted[name] > cap:
            skip = f"> {cap:.0f} s cap (predicted {predicted[name]:.0f} s from the two smaller meshes)"
        elif m.needs_conformal and "surfmap_conformal" in methods and not Path(kwargs["init_path"]).exists():
            skip = "needs surfmap's conformal map of this mesh, which did not finish"
        if skip:
            r = dict(method=name, skipped=skip)
        else:
            if m.needs_corners and corners is None:
                log(f"  {case.name} {name}: surfmap's corners unavailable; quarter points by arc length")
            r = measure_method(path, name, workdir, repeats=repeats, kwargs=kwargs,
                               profile=profile and name.startswith("surfmap"), timeout=timeout, cap=cap,
                               save_map=save_map)
        r.update(case=case.name, n=case.n, label=m.label, tool=m.tool)
        if name in ("surfmap_conformal", "surfmap_flatten_conformal") and "info" in r and corners is None:
            corners = r["info"].get("corners")  # disk indices: flatten's uv rows are the disk's vertices
        log(f"  {case.name:<18} {name:<20} {_brief(r)}")
        rows.append(r)
    return rows


def run_comparison(cases: list[Case], workdir: Path, *, repeats: int, profile_case: str | None) -> list[dict]:
    rows = []
    for case in cases:
        rows += run_methods(case, COMPARE_METHODS, workdir, repeats=repeats, profile=case.name == profile_case)
    return rows


def run_freesurfer_flat(workdir: Path) -> list[dict]:
    """FreeSurfer's own fsaverage5 flat patch (no timing: it is precomputed), against pial and white."""
    rows = []
    for hemi in HEMIS:
        p = freesurfer_flat_patch(hemi)
        used = np.unique(p["faces"])
        for surf in ("pial", "white"):
            stats, d, K = distortion(p[surf], p["faces"], p["uv"])
            out = workdir / f"fsaverage5-{hemi}.freesurfer_flat_{surf}.faces.npz"
            np.savez_compressed(out, d=d.astype(np.float32), K=K.astype(np.float32))
            r = dict(method=f"freesurfer_flat_{surf}", label=f"FreeSurfer flat patch vs {surf}",
                     tool="FreeSurfer", case=f"fsaverage5-{hemi}", n=int(len(used)), distortion=stats,
                     faces_file=str(out), note="precomputed patch (mris_flatten): no timing")
            log(f"  fsaverage5-{hemi:<7} freesurfer_flat_{surf:<6} {_brief(r)}")
            rows.append(r)
    return rows


def run_autoflatten(cases: list[Case], workdir: Path, timeout: float) -> list[dict]:
    """autoflatten (gallantlab) on each case: patch file from the cortex disk, then ``autoflatten flatten``."""
    try:
        from autoflatten.freesurfer import create_patch_file  # noqa: F401
    except ImportError:
        log("  autoflatten is not installed (pip install -e '.[autoflatten]'): skipped")
        return [dict(method="autoflatten", skipped="not installed (pip install -e '.[autoflatten]')")]
    from . import autoflat

    rows = []
    for case in cases:
        r = autoflat.run_case(case, workdir, timeout=timeout)
        r.update(case=case.name, n=case.n, label="autoflatten (pyflatten)", tool="autoflatten")
        log(f"  {case.name:<18} autoflatten          {_brief(r)}")
        rows.append(r)
    return rows


# ---------------------------------------------------------------------------------------------
# 2. scaling

def fit_exponent(n, t) -> float | None:
    """Least-squares slope of log t against log n (None with fewer than 2 finite points)."""
    n, t = np.asarray(n, dtype=float), np.asarray(t, dtype=float)
    ok = np.isfinite(n) & np.isfinite(t) & (t > 0)
    if ok.sum() < 2:
        return None
    return float(np.polyfit(np.log(n[ok]), np.log(t[ok]), 1)[0])


def _time_of(r: dict) -> float | None:
    if "error" in r or "skipped" in r:
        return None
    return r["median_s"] if r.get("median_s") is not None else r.get("first_s")


_COUNTERS = ("iteration", "factorisation", "factorization", "count", "n_")


def _stage_timings(r: dict) -> dict:
    """Stage -> seconds from ``fm.info["timings"]`` (counters such as iteration numbers left out)."""
    info = r.get("info") or {}
    t = info.get("timings") or info.get("timing") or {}
    return {k: float(v) for k, v in t.items()
            if isinstance(v, (int, float)) and not any(c in k for c in _COUNTERS)}


def _predict(rows: list[dict], name: str, n: int) -> float | None:
    """Time at ``n`` extrapolated from the two largest sizes measured for ``name`` (log-log line)."""
    rs = sorted([r for r in rows if r.get("method") == name and _time_of(r)], key=lambda r: r["n"])[-2:]
    if len(rs) < 2:
        return None
    e = fit_exponent([r["n"] for r in rs], [_time_of(r) for r in rs])
    return _time_of(rs[-1]) * (n / rs[-1]["n"]) ** e


def run_scaling(base_rows: list[dict], cases: list[Case], workdir: Path, *, cap: float, methods: list[str],
                methods_largest: list[str] | None = None) -> dict:
    """The methods on growing meshes (first call only: at these sizes Numba's cache load is a small
    part). On the largest, only ``methods_largest``, each under a hard time limit of ``cap`` (its process
    killed past cap + 60 s) and not started when predicted over ``cap`` from the two smaller sizes."""
    rows = [r for r in base_rows if r.get("method") in methods]
    for i, case in enumerate(cases):
        largest = i == len(cases) - 1 and len(cases) > 1
        ms = methods_largest if (largest and methods_largest is not None) else methods
        pred = {name: _predict(rows, name, case.n) for name in ms} if largest else None
        rows += run_methods(case, ms, workdir, repeats=0, timeout=(cap + 60.0) if largest else 4 * cap + 60.0,
                            cap=cap if largest else None, predicted=pred)
    exponents, stage_exponents = {}, {}
    for name in methods:
        rs = sorted([r for r in rows if r.get("method") == name], key=lambda r: r["n"])
        exponents[name] = fit_exponent([r["n"] for r in rs], [_time_of(r) or np.nan for r in rs])
        stages = sorted({k for r in rs for k in _stage_timings(r)})
        for s in stages:
            ts = [_stage_timings(r).get(s, np.nan) for r in rs]
            if not np.nanmin(ts) >= 0.01:  # stages under 10 ms somewhere: noise, no exponent
                continue
            e = fit_exponent([r["n"] for r in rs], ts)
            if e is not None:
                stage_exponents[f"{name}.{s}"] = e
    return dict(rows=rows, exponents=exponents, stage_exponents=stage_exponents)


# ---------------------------------------------------------------------------------------------
# 3. raster and 4. batch (in benchmarks.throughput)

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="fsaverage5 only, 2 warm repeats, small scaling/raster/batch runs (a few minutes)")
    ap.add_argument("--autoflatten", action="store_true",
                    help="also run autoflatten (optional extra; takes minutes per hemisphere)")
    ap.add_argument("-o", "--out", default="benchmarks/results", help="output folder (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=None, help="warm calls per method (default 3; 2 with --quick)")
    ap.add_argument("--cap", type=float, default=None,
                    help="time cap in seconds for one method on the largest refined mesh (default 90)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["comparison", "scaling", "raster", "batch", "s1"],
                    help="sections to leave out")
    ap.add_argument("--s1", metavar="DIR", default=None,
                    help="adds the real-subject section: pycortex's S1 surfaces in DIR (wm_lh.gii, flat_lh.gii, ...; "
                         "see benchmarks/README.md), left white and inflated cortex")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 3)
    cap = args.cap if args.cap is not None else 90.0
    templates = ["fsaverage5"] if args.quick else ["fsaverage5", "fslr32k"]
    t_start = time.perf_counter()
    results: dict = dict(machine=machine_info(), settings=dict(quick=args.quick, repeats=repeats, cap_s=cap,
                                                                 templates=templates))
    log(f"machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; "
        f"load {results['machine']['loadavg_at_start']}")

    from . import throughput

    def save():
        (out / "results.json").write_text(json.dumps(results, indent=1, default=report.json_default))
        (out / "results.md").write_text(report.markdown(results))

    def section(name, fn):
        """Run one section; an error is recorded (with its traceback in the JSON) and the rest goes on."""
        if name in args.skip:
            return
        try:
            fn()
        except Exception as err:  # noqa: BLE001
            import traceback

            log(f"   {name} failed: {type(err).__name__}: {err}")
            results.setdefault("errors", {})[name] = traceback.format_exc()
        save()

    with tempfile.TemporaryDirectory(prefix="surfmap-bench-") as tmp:
        work = Path(tmp)
        log("loading template cortices")
        cases = [template_case(t, h) for t in templates for h in HEMIS]
        compare_rows: list[dict] = []
        main_case = "fsaverage5-left" if args.quick else "fslr32k-left"

        def comparison():
            log(f"1. comparison ({len(cases)} cortices, {repeats} warm calls each)")
            compare_rows.extend(run_comparison(cases, work, repeats=repeats, profile_case=main_case))
            results["comparison"] = [report.strip_row(r) for r in compare_rows]
            save()
            compare_rows.extend(run_freesurfer_flat(work))
            if args.autoflatten:
                log("   autoflatten")
                compare_rows.extend(run_autoflatten(cases, work, timeout=3600.0))
            results["comparison"] = [report.strip_row(r) for r in compare_rows]
            report.write_histograms(compare_rows, out, case=main_case)

        def scaling():
            base = next(c for c in cases if c.name == main_case)
            bigger = [refined_case(base, 1)] if args.quick else [refined_case(base, 1), refined_case(base, 2)]
            log(f"2. scaling: {', '.join(f'{c.name} ({c.n})' for c in bigger)}; on the largest: "
                f"{', '.join(SCALING_LARGEST)}, cap {cap:.0f} s each")
            small = [r for r in compare_rows if r.get("case") in ("fsaverage5-left", "fslr32k-left")]
            sc = run_scaling(small, bigger, work, cap=cap, methods=COMPARE_METHODS,
                             methods_largest=None if args.quick else SCALING_LARGEST)
            results["scaling"] = dict(rows=[report.strip_row(r) for r in sc["rows"]], exponents=sc["exponents"],
                                      stage_exponents=sc["stage_exponents"], note=SCALING_NOTE)
            report.plot_scaling(sc["rows"], out)

        def raster():
            log("3. rasterization throughput")
            results["raster"] = throughput.raster(quick=args.quick)
            log(f"   {results['raster'].get('summary', results['raster'])}")

        def batch():
            log("4. batch throughput")
            results["batch"] = throughput.batch(work, quick=args.quick)
            log(f"   {results['batch'].get('summary', results['batch'])}")

        def s1():
            from . import real_subject

            log(f"5. real subject S1 ({args.s1})")
            results["s1"] = real_subject.run_s1(args.s1, out, work / "s1", repeats=min(repeats, 1), log=log)

        if args.s1:
            real_subject_dir = Path(args.s1)
            if not (real_subject_dir / "flat_lh.gii").exists():
                ap.error(f"--s1 {args.s1}: expected pycortex's S1 surfaces (flat_lh.gii, wm_lh.gii, ...) there; "
                         "see benchmarks/README.md")
            (work / "s1").mkdir()
        section("comparison", comparison)
        section("scaling", scaling)
        section("raster", raster)
        section("batch", batch)
        if args.s1:
            section("s1", s1)
    results["total_s"] = time.perf_counter() - t_start
    save()
    log(f"done in {results['total_s']:.0f} s: {out / 'results.md'}, {out / 'results.json'}, plots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
