"""Distortion of a flat map and the per-method worker process (time and peak memory).

Every method is measured the same way, in a fresh Python process of its own
(``python -m benchmarks.measure SPEC.json``):

- the case mesh is loaded and every module the method needs is imported first;
- the kernel's peak resident-set counter is reset (``/proc/self/clear_refs``) and the current
  resident set read (elsewhere: ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the peak so far);
- the first call is timed on its own (it includes Numba compilation or loading of Numba's
  on-disk cache, as a user's first call in a new process would);
- ``repeats`` warm calls are timed and their median reported;
- the peak (``VmHWM``, or ``ru_maxrss``) is read again: the difference is the peak memory the
  method added over the process's baseline, native allocations (libigl, SuiteSparse, Qhull,
  Numba) included; tracemalloc would see only Python's.
- optionally one more call runs under cProfile, and the top functions are kept;
- distortion of the last result is computed outside the timed region.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from .report import json_default


def distortion(V3, F, uv) -> tuple[dict, np.ndarray, np.ndarray]:
    """Distortion of the map ``V3 -> uv`` on faces ``F``, by :func:`surfmap.distortion` for every method.

    A map that comes out mirrored as a whole (e.g. LSCM, by the choice of its two fixed vertices)
    is mirrored back first (u -> -u), so that "flipped" means folded, not mirrored; no statistic
    depends on the map's position, scale or mirror image.

    Returns
    -------
    stats : dict
        ``surfmap.Distortion.to_dict()`` under the benchmark's names (see ``_NAMES``), plus
        ``mirrored``.
    d : (m_ok,) float64
        Per-face log area ratio of the non-degenerate faces (for histograms).
    K : (m_ok,) float64
        Per-face dilatation sigma1 / sigma2 of the same faces.
    """
    from surfmap.distortion import distortion as surfmap_distortion
    from surfmap.flatmap import FlatMap

    V3 = np.asarray(V3, dtype=np.float64)
    uv = np.array(uv, dtype=np.float64)[:, :2]
    F = np.asarray(F, dtype=np.int64)
    e1, e2 = uv[F[:, 1]] - uv[F[:, 0]], uv[F[:, 2]] - uv[F[:, 0]]
    mirrored = bool((e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum() < 0)
    if mirrored:
        uv[:, 0] = -uv[:, 0]
    k = len(uv)
    fm = FlatMap(uv, F, np.arange(k), np.zeros(4, dtype=np.int64), vertices=V3)
    dist = surfmap_distortion(fm)
    raw = dist.to_dict()
    stats = {ours: raw[theirs] for ours, theirs in _NAMES.items()}
    stats["mirrored"] = mirrored
    ok = np.isfinite(dist.log_area_ratio) & np.isfinite(dist.dilatation)
    return stats, dist.log_area_ratio[ok], dist.dilatation[ok]


# benchmark name -> surfmap.Distortion field
_NAMES = dict(
    n_faces="n_faces",
    flipped="n_flipped",
    degenerate="n_degenerate",
    logarea_abs_mean="area_mean_abs",
    logarea_abs_median="area_median_abs",
    logarea_abs_p95="area_abs_p95",
    logarea_abs_areaweighted="area_weighted_mean_abs",
    logarea_sd="area_sd",
    logarea_frac_within_10pct="area_fraction_within_10pct",
    dilatation_mean="dilatation_mean",
    dilatation_median="dilatation_median",
    dilatation_p95="dilatation_p95",
    beltrami_abs_mean="beltrami_mean",
    angle_diff_abs_mean_deg="angle_mean_abs",
    angle_diff_sd_deg="angle_sd",
    angle_diff_abs_max_deg="angle_max_abs",
)


# ---------------------------------------------------------------------------------------------
# worker process

def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return float(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _memory_start() -> tuple[float, str]:
    """Baseline for the peak-memory measurement: current RSS after resetting the peak counter
    (Linux), else the peak so far (``ru_maxrss``, which can hide a smaller method's peak)."""
    if _reset_peak():
        rss = _proc_status_mb("VmRSS")
        if rss is not None:
            return rss, "VmHWM"
    return _maxrss_mb(), "ru_maxrss"


def _memory_peak(how: str) -> float:
    if how == "VmHWM":
        v = _proc_status_mb("VmHWM")
        if v is not None:
            return v
    return _maxrss_mb()


def _profile_top(fn, n_top: int = 15) -> list[dict]:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    st = pstats.Stats(prof)
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _callers) in st.stats.items():
        rows.append(dict(function=f"{Path(file).name}:{line}({func})", ncalls=int(nc),
                         tottime=float(tt), cumtime=float(ct)))
    rows.sort(key=lambda r: r["tottime"], reverse=True)
    return rows[:n_top]


def run_worker(spec: dict) -> dict:
    """Measure one method on one case; see the module docstring. ``spec`` keys: case (npz path),
    method, repeats, profile (bool), out (npz path for per-face arrays), kwargs (dict)."""
    from .meshes import Case
    from .methods import METHODS

    case = Case.load(spec["case"])
    method = METHODS[spec["method"]]
    kwargs = spec.get("kwargs") or {}
    prepared = method.prepare(case, **kwargs)  # imports, inputs computed outside the timing
    rss0, how = _memory_start()
    t0 = time.perf_counter()
    res = method.run(prepared)
    t_first = time.perf_counter() - t0
    warm = []
    repeats = int(spec.get("repeats", 3))
    cap = spec.get("cap")
    note = None
    if cap and repeats and t_first * (1 + repeats) > cap:
        note = f"warm calls skipped: the first call took {t_first:.1f} s (cap {cap:.0f} s)"
        repeats = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = method.run(prepared)
        warm.append(time.perf_counter() - t0)
    rss1 = _memory_peak(how)
    out = dict(
        method=spec["method"], case=case.name, n=case.n, n_faces=int(case.disk.n_faces),
        first_s=t_first, warm_s=warm, median_s=statistics.median(warm) if warm else None,
        peak_mem_mb=rss1 - rss0, rss_before_mb=rss0, rss_peak_mb=rss1, mem_method=how,
        info=res.info,
    )
    if note:
        out["note"] = note
    if spec.get("profile"):
        out["profile"] = _profile_top(lambda: method.run(prepared))
    if method.finish is not None:
        method.finish(prepared, res)
    stats, d, K = distortion(res.vertices3d, res.faces, res.uv)
    out["distortion"] = stats
    if spec.get("out"):
        extra = {}
        if spec.get("save_map"):  # the map itself, for figures
            extra = dict(uv=np.asarray(res.uv, dtype=np.float64), faces=np.asarray(res.faces, dtype=np.int64),
                         vertices3d=np.asarray(res.vertices3d, dtype=np.float64))
        np.savez_compressed(spec["out"], d=d.astype(np.float32), K=K.astype(np.float32), **extra)
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path = Path(argv[0])
    spec = json.loads(spec_path.read_text())
    try:
        result = run_worker(spec)
    except Exception as err:  # recorded by the parent; the benchmark goes on
        import traceback

        result = dict(method=spec["method"], error=f"{type(err).__name__}: {err}",
                      traceback=traceback.format_exc())
    Path(spec["result"]).write_text(json.dumps(result, default=json_default))
    return 0


if __name__ == "__main__":
    sys.exit(main())
