"""Rasterization throughput (native and template mode) and cohort batch throughput."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _template_flatmap(template: str, hemi: str = "left"):
    """surfmap's flat map of a template cortex (``flatten``, method "area"), and the Hemisphere."""
    import surfmap

    h = surfmap.load_template(template, hemi)
    t0 = time.perf_counter()
    fm = surfmap.flatten(h.mesh, h.cortex, method="area")
    return fm, h, time.perf_counter() - t0


def _subject_pool(h, n_pool: int, rng) -> np.ndarray:
    """(n_pool, n_vertices, 4) float32 synthetic subject metrics: the template's maps plus noise
    (metrics the template lacks are smooth functions of position); medial wall 0."""
    V = h.mesh.vertices
    base = [np.nan_to_num(np.asarray(v, dtype=np.float64)) for v in list(h.metrics.values())[:4]]
    while len(base) < 4:
        base.append(np.sin(V[:, len(base) % 3] / 10.0))
    base = np.stack(base, axis=1).astype(np.float32)  # (n, 4)
    noise = rng.standard_normal((n_pool, *base.shape)).astype(np.float32) * 0.1
    X = base[None] + noise
    X[:, ~np.asarray(h.cortex, dtype=bool)] = 0.0
    return X


def raster(quick: bool = False, size: int = 224, n_subjects: int | None = None) -> dict:
    """Native mode: build the operator for a subject's own map, then rasterize its 4 metrics.
    Template mode: one operator, ``n_subjects`` x 4 metrics (default 1,000; 200 with quick)."""
    import surfmap

    template = "fsaverage5" if quick else "fslr32k"
    n_subjects = n_subjects or (200 if quick else 1000)
    try:
        fm, h, t_flat = _template_flatmap(template)
    except Exception as err:  # noqa: BLE001
        return dict(skipped=f"surfmap.flatten unavailable: {type(err).__name__}: {err}")
    rng = np.random.default_rng(0)
    X = _subject_pool(h, min(100, n_subjects), rng)

    t0 = time.perf_counter()
    R = surfmap.Rasterizer(fm, size=size)
    build_first = time.perf_counter() - t0
    builds = []
    for _ in range(2 if quick else 5):
        t0 = time.perf_counter()
        R = surfmap.Rasterizer(fm, size=size)
        builds.append(time.perf_counter() - t0)
    R(X[0])  # compile the apply kernel
    applies = []
    for i in range(10):
        t0 = time.perf_counter()
        R(X[i % len(X)])
        applies.append(time.perf_counter() - t0)
    build, apply1 = statistics.median(builds), statistics.median(applies)

    # template mode, chunks of the pool with one output buffer (what a cohort writer does)
    chunk = len(X)
    out = np.empty((chunk, 4, size, size), dtype=np.float32)
    R(X, out=out)  # warm
    t0 = time.perf_counter()
    done = 0
    while done < n_subjects:
        s = min(chunk, n_subjects - done)
        R(X[:s], out=out[:s])
        done += s
    t_template = time.perf_counter() - t0
    # template mode, one call per subject (fresh output each)
    t0 = time.perf_counter()
    for i in range(n_subjects):
        R(X[i % len(X)])
    t_loop = time.perf_counter() - t0

    res = dict(
        template=f"{template} left", flat_vertices=int(fm.n_vertices), size=size,
        flatten_s=t_flat,
        native_build_first_s=build_first, native_build_median_s=build, native_apply_4_metrics_s=apply1,
        native_subjects_per_s=1.0 / (build + apply1),
        template_subjects=n_subjects, template_batched_s=t_template,
        template_batched_subjects_per_s=n_subjects / t_template,
        template_per_subject_loop_s=t_loop,
        note=f"template mode: a pool of {len(X)} synthetic subjects cycled; batched = R(X[(100, n, 4)], out=buffer)",
    )
    res["summary"] = (f"native: build {build:.3f} s + apply {apply1 * 1e3:.1f} ms per subject; template: "
                      f"{n_subjects} x 4 metrics in {t_template:.2f} s batched, {t_loop:.2f} s one call each")
    return res


# ---------------------------------------------------------------------------------------------
# batch

def write_freesurfer_cohort(root: Path, n_subjects: int, seed: int = 0) -> list[str]:
    """A synthetic FreeSurfer SUBJECTS_DIR: fsaverage5 white surfaces, perturbed per subject
    (smooth random scaling plus 0.05 mm noise), thickness/sulc/curv from the template plus noise,
    and label/?h.cortex.label from the template's cortex mask."""
    import nibabel.freesurfer as fs

    import surfmap

    rng = np.random.default_rng(seed)
    names = []
    for s in range(n_subjects):
        sub = root / f"sub-{s:03d}"
        (sub / "surf").mkdir(parents=True, exist_ok=True)
        (sub / "label").mkdir(parents=True, exist_ok=True)
        for hemi, h in (("left", "lh"), ("right", "rh")):
            t = surfmap.load_template("fsaverage5", hemi)
            V = t.mesh.vertices * (1.0 + 0.03 * rng.standard_normal(3)) + 0.05 * rng.standard_normal(
                t.mesh.vertices.shape)
            fs.write_geometry(str(sub / "surf" / f"{h}.white"), V, t.mesh.faces.astype(np.int32))
            for name, key in (("thickness", "thickness"), ("sulc", "sulc"), ("curv", "curvature")):
                x = np.asarray(t.metrics[key], dtype=np.float64)
                fs.write_morph_data(str(sub / "surf" / f"{h}.{name}"),
                                    (x + 0.05 * rng.standard_normal(len(x))).astype(np.float32))
            idx = np.flatnonzero(t.cortex)
            with open(sub / "label" / f"{h}.cortex.label", "w") as fh:
                fh.write(f"#!ascii label , from subject {sub.name} vox2ras=TkReg\n{len(idx)}\n")
                for i in idx:
                    x, y, z = V[i]
                    fh.write(f"{i} {x:.3f} {y:.3f} {z:.3f} 0.0000000000\n")
        names.append(sub.name)
    return names


def _surfmap_cmd() -> list[str]:
    exe = shutil.which("surfmap")
    return [exe] if exe else [sys.executable, "-c", "import sys; from surfmap.cli import main; sys.exit(main())"]


def batch(workdir: Path, quick: bool = False, n_subjects: int | None = None, jobs=(1, 2)) -> dict:
    """Subjects per minute with ``surfmap batch --jobs N`` on a synthetic FreeSurfer cohort (both
    hemispheres per subject; the wall time includes process start and Numba cache loading)."""
    try:
        import surfmap.batch  # noqa: F401
        import surfmap.cli  # noqa: F401
    except ImportError as err:
        return dict(skipped=f"surfmap batch unavailable: {err}")
    n_subjects = n_subjects or (2 if quick else 4)
    root = Path(workdir) / "cohort"
    write_freesurfer_cohort(root, n_subjects)
    res = dict(cohort=f"{n_subjects} synthetic FreeSurfer subjects (fsaverage5 white, 2 hemispheres each)")
    parts = []
    for j in jobs:
        out = Path(workdir) / f"batch-out-j{j}"
        cmd = _surfmap_cmd() + ["batch", str(root), "-o", str(out), "--jobs", str(j)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            res[f"jobs{j}_error"] = (proc.stderr or proc.stdout)[-500:]
            continue
        res[f"jobs{j}_wall_s"] = wall
        res[f"jobs{j}_subjects_per_min"] = n_subjects * 60.0 / wall
        parts.append(f"--jobs {j}: {n_subjects * 60.0 / wall:.1f} subjects/min ({wall:.1f} s)")
    res["command"] = "surfmap batch COHORT -o OUT --jobs N"
    res["summary"] = "; ".join(parts) or "failed"
    return res
