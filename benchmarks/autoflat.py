"""autoflatten (PyPI ``autoflatten``, the gallantlab pipeline) on a benchmark cortex.

The cortex disk is written as a FreeSurfer patch (``autoflatten.freesurfer.create_patch_file``,
everything outside the disk excluded as "mwall") next to the whole surface in FreeSurfer geometry
format, then ``autoflatten flatten PATCH --base-surface SURF -o OUT`` runs (the pyflatten backend,
no FreeSurfer binaries) in a child process. Its wall time is one call (it is far too slow to repeat);
its peak memory is the child's ``ru_maxrss`` (read by a small wrapper process that runs only it).
The flat patch it writes is read back and measured against the same 3D surface as every other method.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .measure import distortion


def write_inputs(case, d: Path) -> tuple[Path, Path]:
    """The whole surface (FreeSurfer geometry) and the cortex disk as a FreeSurfer patch, in ``d``."""
    import nibabel.freesurfer as fs
    from autoflatten.freesurfer import create_patch_file

    d.mkdir(parents=True, exist_ok=True)
    h = "rh" if "right" in case.name else "lh"
    surf = d / f"{h}.white"
    fs.write_geometry(str(surf), case.mesh.vertices, case.mesh.faces.astype(np.int32))
    outside = np.setdiff1d(np.arange(case.mesh.n_vertices), case.vertex_map)
    patch = d / f"{h}.cortex.patch.3d"
    create_patch_file(str(patch), case.mesh.vertices, case.mesh.faces, {"mwall": outside.tolist()})
    return surf, patch


def measure_output(case, flat: Path, faces_file: Path) -> dict:
    """Distortion of a flat patch (autoflatten's output) against the case's 3D surface."""
    from autoflatten.freesurfer import extract_patch_faces, read_patch

    xyz, orig, _border = read_patch(str(flat))
    F = extract_patch_faces(case.mesh.faces, orig)
    stats, dd, K = distortion(case.mesh.vertices[orig], F, xyz[:, :2])
    np.savez_compressed(faces_file, d=dd.astype(np.float32), K=K.astype(np.float32))
    return dict(distortion=stats, flat_vertices=int(len(orig)), faces_file=str(faces_file))


def run_case(case, workdir: Path, timeout: float = 3600.0) -> dict:
    d = Path(workdir) / f"autoflatten-{case.name}"
    surf, patch = write_inputs(case, d)
    flat = patch.with_name(patch.name.replace(".patch.3d", ".flat.patch.3d"))
    cmd = ["autoflatten", "flatten", str(patch), "--base-surface", str(surf), "-o", str(flat)]
    wrapper = [sys.executable, "-m", "benchmarks.autoflat", json.dumps(cmd), str(d / "run.json")]
    proc = subprocess.Popen(wrapper, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the wrapper and autoflatten under it
        proc.communicate()
        return dict(method="autoflatten", skipped=f"> {timeout:.0f} s (time cap)")
    try:
        run = json.loads((d / "run.json").read_text())
    except (OSError, ValueError):
        return dict(method="autoflatten", error=f"wrapper failed: {stderr[-1000:]}")
    if run["returncode"] != 0 or not flat.exists():
        return dict(method="autoflatten", error=f"autoflatten exited {run['returncode']}: {run['tail'][-1000:]}")
    res = dict(method="autoflatten", first_s=run["wall_s"], median_s=None, warm_s=[],
               peak_mem_mb=run["child_maxrss_mb"], mem_method="child ru_maxrss",
               note="one call (the CLI process, JAX compilation included); peak memory = the child's peak RSS")
    res.update(measure_output(case, flat, Path(workdir) / f"{case.name}.autoflatten.faces.npz"))
    return res


def main(argv=None) -> int:
    """Wrapper: run one command, record its wall time and its peak RSS (RUSAGE_CHILDREN)."""
    argv = sys.argv[1:] if argv is None else argv
    cmd, out = json.loads(argv[0]), Path(argv[1])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    out.write_text(json.dumps(dict(returncode=proc.returncode, wall_s=wall, child_maxrss_mb=rss,
                                   tail=(proc.stdout + proc.stderr)[-3000:])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
