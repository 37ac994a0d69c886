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

LOG_1_1 = float(np.log(1.1))


def _distortion(V3: np.ndarray, F: np.ndarray, uv: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
    """Area and angle distortion of the map ``V3 -> uv`` on faces ``F`` (ALGORITHMS.md section 3).

    Orientation is the one of most of the area (a map mirrored as a whole is not "flipped").
    Log ratios use the natural log on normalised totals; flipped faces are counted, and left
    out of the log-ratio and dilatation statistics.

    Returns
    -------
    stats : dict
    d : (m_ok,) float64, per-face log area ratio of the faces that are not flipped
    K : (m_ok,) float64, per-face dilatation sigma1 / sigma2 of the same faces
    """
    V3 = np.asarray(V3, dtype=np.float64)
    uv = np.asarray(uv, dtype=np.float64)[:, :2]
    F = np.asarray(F, dtype=np.int64)
    p0, p1, p2 = V3[F[:, 0]], V3[F[:, 1]], V3[F[:, 2]]
    q0, q1, q2 = uv[F[:, 0]], uv[F[:, 1]], uv[F[:, 2]]
    e1, e2 = p1 - p0, p2 - p0
    A3 = 0.5 * np.linalg.norm(np.cross(e1, e2), axis=1)
    f1, f2 = q1 - q0, q2 - q0
    a2 = 0.5 * (f1[:, 0] * f2[:, 1] - f1[:, 1] * f2[:, 0])
    sign = 1.0 if a2.sum() >= 0 else -1.0
    a2 = sign * a2
    total2 = float(a2.sum())
    flipped = a2 <= 0
    degenerate = np.abs(a2) < 1e-14 * total2
    ok = ~flipped & (A3 > 0)
    d = np.log((a2[ok] / total2) / (A3[ok] / A3.sum()))
    # Jacobian in a local orthonormal frame of each 3D triangle: J = Y X^-1
    l1 = np.linalg.norm(e1, axis=1)
    x11 = l1
    x12 = np.einsum("ij,ij->i", e2, e1) / l1
    x22 = 2.0 * A3 / l1
    # X = [[x11, x12], [0, x22]];  X^-1 = [[1/x11, -x12/(x11 x22)], [0, 1/x22]]
    i11, i12, i22 = 1.0 / x11, -x12 / (x11 * x22), 1.0 / x22
    j11 = f1[:, 0] * i11
    j12 = f1[:, 0] * i12 + f2[:, 0] * i22
    j21 = f1[:, 1] * i11
    j22 = f1[:, 1] * i12 + f2[:, 1] * i22
    fro2 = j11**2 + j12**2 + j21**2 + j22**2
    det = np.abs(j11 * j22 - j12 * j21)
    disc = np.sqrt(np.maximum(fro2**2 - 4.0 * det**2, 0.0))
    s1 = np.sqrt(0.5 * (fro2 + disc))
    s2 = np.sqrt(np.maximum(0.5 * (fro2 - disc), 0.0))
    s2 = np.maximum(s2, det / np.maximum(s1, 1e-300))  # the stabler form of sigma2
    K = (s1 / s2)[ok]
    mu = ((s1 - s2) / (s1 + s2))[ok]
    ad = np.abs(d)
    w = (A3[ok] / A3[ok].sum())
    stats = dict(
        n_faces=int(len(F)),
        flipped=int(flipped.sum()),
        degenerate=int(degenerate.sum()),
        logarea_abs_mean=float(ad.mean()),
        logarea_abs_median=float(np.median(ad)),
        logarea_abs_p95=float(np.percentile(ad, 95)),
        logarea_abs_areaweighted=float((w * ad).sum()),
        logarea_sd=float(d.std()),
        logarea_frac_within_10pct=float((ad < LOG_1_1).mean()),
        dilatation_mean=float(K.mean()),
        dilatation_median=float(np.median(K)),
        dilatation_p95=float(np.percentile(K, 95)),
        beltrami_abs_mean=float(mu.mean()),
    )
    return stats, d, K


def distortion(V3, F, uv) -> tuple[dict, np.ndarray, np.ndarray]:
    """Distortion statistics of a map, with the per-face arrays for histograms.

    The statistics are the benchmark's own (:func:`_distortion`), so that every method,
    surfmap's and the baselines', is measured by the same code.
    """
    return _distortion(V3, F, uv)


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
        np.savez_compressed(spec["out"], d=d.astype(np.float32), K=K.astype(np.float32))
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
    Path(spec["result"]).write_text(json.dumps(result, default=_json_default))
    return 0


def _json_default(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return str(x)


if __name__ == "__main__":
    sys.exit(main())
