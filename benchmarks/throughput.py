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
    """surfmap's flat map of a template cortex (``flatten``, method "area"), the Hemisphere, the time."""
    import surfmap

    h = surfmap.load_template(template, hemi)
    t0 = time.perf_counter()
    fm = surfmap.flatten(h.mesh, h.cortex, method="area")
    return fm, h, time.perf_counter() - t0


def synthetic_map(n_vertices: int, seed: int = 0):
    """A jittered grid map of the square with about ``n_vertices`` vertices: the same operator size
    as a cortex map (one to three entries per pixel), for when ``flatten`` is unavailable."""
    from surfmap import FlatMap

    n = int(np.ceil(np.sqrt(n_vertices)))
    g = np.linspace(0.0, 1.0, n)
    U, V = np.meshgrid(g, g)
    uv = np.column_stack([U.ravel(), V.ravel()])
    inner = (uv > 0).all(1) & (uv < 1).all(1)
    uv[inner] += np.random.default_rng(seed).uniform(-0.3, 0.3, (inner.sum(), 2)) / (n - 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    F = np.concatenate([np.column_stack([a, b, c]), np.column_stack([a, c, d])])
    return FlatMap(uv, F, np.arange(n * n), [idx[0, 0], idx[0, -1], idx[-1, -1], idx[-1, 0]])


def raster(quick: bool = False, size: int = 224, n_subjects: int | None = None, n_metrics: int = 4,
           chunk: int = 100) -> dict:
    """Rasterization throughput.

    Native mode (a map per subject): build the operator for the map, then rasterize the subject's
    ``n_metrics`` metrics; the flatten itself is measured in the comparison. Template mode (one map
    for the cohort): ``n_subjects`` (default 1,000; 200 with quick) x ``n_metrics`` at ``size`` x
    ``size`` through one operator, in chunks of ``chunk`` subjects written into one output buffer,
    as a batch run reading metrics from disk would pass them (reading is not timed). Metrics are
    random float32 arrays of the template's full length with the medial wall NaN (never read); the
    scipy ``matrix @ dense`` product on the same data is timed for reference.
    """
    import numba

    import surfmap

    template = "fsaverage5" if quick else "fslr32k"
    n_subjects = n_subjects or (200 if quick else 1000)
    try:
        fm, h, t_flat = _template_flatmap(template)
        source = f"{template} left cortex, surfmap.flatten (area-preserving)"
        n_full = h.mesh.n_vertices
    except Exception as err:  # noqa: BLE001  (the map is an input here; stand in a grid of the same size)
        n_cortex = 9465 if quick else 29271
        fm = synthetic_map(n_cortex)
        t_flat = None
        source = f"synthetic jittered grid ({fm.n_vertices} vertices): flatten unavailable ({type(err).__name__})"
        n_full = fm.n_vertices

    t0 = time.perf_counter()
    R = surfmap.Rasterizer(fm, size=size)
    build_first = time.perf_counter() - t0
    builds = []
    for _ in range(2 if quick else 5):
        t0 = time.perf_counter()
        R = surfmap.Rasterizer(fm, size=size)
        builds.append(time.perf_counter() - t0)

    rng = np.random.default_rng(0)
    chunk = min(chunk, n_subjects)
    X = rng.normal(size=(chunk, n_full, n_metrics)).astype(np.float32)
    outside = np.ones(n_full, dtype=bool)
    outside[fm.vertex_map] = False
    X[:, outside, :] = np.nan  # medial wall: never read
    R(X[0])  # compile the apply kernel
    applies = []
    for i in range(10):
        t0 = time.perf_counter()
        R(X[i % chunk])
        applies.append(time.perf_counter() - t0)
    build, apply1 = statistics.median(builds), statistics.median(applies)

    out = np.empty((chunk, n_metrics, size, size), dtype=np.float32)
    R(X[:1], out=out[:1])
    t0 = time.perf_counter()
    for start in range(0, n_subjects, chunk):
        m = min(chunk, n_subjects - start)
        R(X[:m], out=out[:m])
    t_template = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(n_subjects):
        R(X[i % chunk])
    t_loop = time.perf_counter() - t0
    # reference: scipy CSR @ dense on the cortex values (k, chunk * C), then to (chunk, C, H, W)
    Xk = np.ascontiguousarray(X[:, fm.vertex_map, :].transpose(1, 0, 2).reshape(fm.n_vertices, -1))
    t0 = time.perf_counter()
    Y = R.matrix @ Xk
    np.ascontiguousarray(Y.T.reshape(chunk, n_metrics, size, size))
    t_scipy = (time.perf_counter() - t0) * n_subjects / chunk

    res = dict(
        map=source, flat_vertices=int(fm.n_vertices), mesh_vertices=int(n_full), size=size,
        operator_nnz=int(R.matrix.nnz), numba_threads=int(numba.get_num_threads()),
        flatten_s=t_flat,
        native_build_first_s=build_first, native_build_median_s=build,
        native_apply_metrics_s=apply1, native_subjects_per_s=1.0 / (build + apply1),
        template_subjects=n_subjects, template_metrics=n_metrics, template_chunk=chunk,
        template_total_s=t_template, template_subjects_per_s=n_subjects / t_template,
        template_one_call_per_subject_s=t_loop, scipy_csr_at_dense_s=t_scipy,
        template_bar_s=5.0 if (n_subjects, n_metrics, size) == (1000, 4, 224) else None,
    )
    res["summary"] = (f"native: operator {build:.3f} s + {n_metrics} metrics {apply1 * 1e3:.1f} ms per subject map; "
                      f"template: {n_subjects} x {n_metrics} at {size}x{size} in {t_template:.2f} s (chunks of "
                      f"{chunk}), {t_loop:.2f} s one call per subject, scipy CSR@dense {t_scipy:.2f} s")
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
    names = write_freesurfer_cohort(root, n_subjects)
    res = dict(cohort=f"{n_subjects} synthetic FreeSurfer subjects (fsaverage5 white, 2 hemispheres each)")
    parts = []
    # template mode reads the same metric files through a table (FreeSurfer folders mean native meshes)
    table = Path(workdir) / "cohort.csv"
    with open(table, "w") as fh:
        fh.write("subject,hemi,thickness,sulc,curv\n")
        for name in names:
            for h in ("lh", "rh"):
                fh.write(f"{name},{h}," + ",".join(str(root / name / "surf" / f"{h}.{m}")
                                                  for m in ("thickness", "sulc", "curv")) + "\n")
    runs = [("native", j, root, []) for j in jobs] + [
        ("template", 1, table, ["--mode", "template", "--template", "fsaverage5"])]
    for mode, j, source, extra in runs:
        out = Path(workdir) / f"batch-out-{mode}-j{j}"
        cmd = _surfmap_cmd() + ["batch", str(source), "-o", str(out), "--jobs", str(j), "--no-progress"] + extra
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - t0
        key = f"{mode}_jobs{j}"
        if proc.returncode != 0:
            res[f"{key}_error"] = (proc.stderr or proc.stdout)[-500:]
            parts.append(f"{mode} --jobs {j}: failed")
            continue
        res[f"{key}_wall_s"] = wall
        res[f"{key}_subjects_per_min"] = n_subjects * 60.0 / wall
        parts.append(f"{mode} --jobs {j}: {n_subjects * 60.0 / wall:.1f} subjects/min ({wall:.1f} s)")
    res["command"] = ("surfmap batch COHORT -o OUT --jobs N --no-progress; template mode: "
                      "surfmap batch COHORT.csv -o OUT --mode template --template fsaverage5")
    res["summary"] = "; ".join(parts) or "failed"
    return res
