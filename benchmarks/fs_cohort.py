"""A synthetic FreeSurfer cohort whose subjects have their own meshes, and how its images agree.

Each subject's ``?h.sphere.reg`` is fsaverage5's sphere (nilearn's) turned by a random rotation
and jittered along the sphere, so no two subjects share vertex positions (nor the template's);
its white surface is fsaverage5's white surface (or ``inflated``) carried onto that mesh and
scaled by a subject factor, its pial surface the white one scaled by 1.03. The metrics are
functions of the position on the registered sphere (the "true" map, the same for every subject),
so images made through a common mesh should agree pixel for pixel within the resampling error,
and native images (each subject's own flat map) should not. Everything here is synthetic; no
real subject is involved.

``python -m benchmarks.fs_cohort [-n 4] [--target fslr32k]`` builds a cohort in a temporary
folder, runs ``surfmap batch`` on it with and without ``--resample``, and prints how far each
subject's images are from the first subject's (percent of each channel's range).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

METRICS = ("thickness", "sulc", "curv")


def true_maps(P: np.ndarray) -> dict:
    """The planted maps at sphere positions ``P`` (any radius): smooth functions of the direction."""
    p = P / np.linalg.norm(P, axis=1, keepdims=True)
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    return {"thickness": 2.5 + 0.8 * np.sin(3 * x) * np.cos(2 * y) + 0.4 * z,
            "sulc": np.sin(4 * y + 1) * np.cos(2 * z),
            "curv": 0.2 * np.cos(5 * x + 3 * z)}


def _rotation(rng) -> np.ndarray:
    q = rng.normal(size=4)
    a, b, c, d = q / np.linalg.norm(q)
    return np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                     [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
                     [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d]])


def _write_label(path: Path, idx: np.ndarray, V: np.ndarray) -> None:
    lines = ["#!ascii label , from surfmap's synthetic cohort", str(len(idx))]
    lines += [f"{i} {V[i, 0]:.3f} {V[i, 1]:.3f} {V[i, 2]:.3f} 0.000000" for i in idx]
    path.write_text("\n".join(lines) + "\n")


def make_subject(subjects_dir, subject: str, seed: int, hemis=("left",), surface: str = "white") -> Path:
    """Write one synthetic FreeSurfer subject (``surf/``, ``label/``); returns its folder."""
    from nibabel.freesurfer import write_geometry, write_morph_data

    from surfmap import Resampler, load_template
    from surfmap.templates import load_standard_sphere

    rng = np.random.default_rng(seed)
    sdir = Path(subjects_dir) / subject
    (sdir / "surf").mkdir(parents=True, exist_ok=True)
    (sdir / "label").mkdir(parents=True, exist_ok=True)
    for hemi in hemis:
        h = "lh" if hemi == "left" else "rh"
        tpl = load_template("fsaverage5", hemi)
        fs5 = load_standard_sphere("fsaverage5", hemi)
        R = _rotation(rng)
        P = fs5.vertices @ R.T
        P += rng.normal(scale=0.15, size=P.shape) * np.linalg.norm(fs5.vertices[fs5.faces[:, 0]] - fs5.vertices[
            fs5.faces[:, 1]], axis=1).mean()
        P *= 100.0 / np.linalg.norm(P, axis=1, keepdims=True)
        F = fs5.faces
        to_subject = Resampler(fs5, P_mesh := type(fs5)(P, F), "barycentric")
        white = to_subject(tpl.surface(surface).vertices) * rng.uniform(0.9, 1.1)
        centre = white.mean(axis=0)
        pial = centre + 1.03 * (white - centre)
        write_geometry(str(sdir / "surf" / f"{h}.sphere.reg"), P.astype(np.float32), F.astype(np.int32))
        write_geometry(str(sdir / "surf" / f"{h}.white"), white.astype(np.float32), F.astype(np.int32))
        write_geometry(str(sdir / "surf" / f"{h}.pial"), pial.astype(np.float32), F.astype(np.int32))
        for name, values in true_maps(P).items():
            write_morph_data(str(sdir / "surf" / f"{h}.{name}"), values.astype(np.float32))
        cortex = Resampler(fs5, P_mesh, "nearest")(tpl.cortex.astype(float)) > 0.5
        _write_label(sdir / "label" / f"{h}.cortex.label", np.flatnonzero(cortex), white)
    return sdir


def make_cohort(subjects_dir, n_subjects: int = 3, seed: int = 0, hemis=("left",), surface: str = "white"):
    """``n_subjects`` synthetic subjects ``sub-01``... under ``subjects_dir``; returns their folders."""
    return [make_subject(subjects_dir, f"sub-{i + 1:02d}", seed + i, hemis, surface) for i in range(n_subjects)]


def disagreement(out, subjects, hemi: str = "left") -> dict:
    """Per subject (but the first) and channel: p99 and max of |image - first subject's image|, in % of
    the first image's range over the square."""
    ref = np.load(Path(out) / subjects[0] / hemi / "images.npz")
    result = {}
    for s in subjects[1:]:
        img = np.load(Path(out) / s / hemi / "images.npz")
        for c, name in enumerate(ref["channels"]):
            a, b = ref["images"][c].astype(np.float64), img["images"][c].astype(np.float64)
            d = np.abs(a - b)
            rng = float(np.ptp(a))
            result[(s, str(name))] = {"p99": float(np.percentile(d, 99) / rng * 100),
                                      "max": float(d.max() / rng * 100)}
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", "--subjects", type=int, default=4)
    p.add_argument("--target", default="fslr32k", choices=["fslr32k", "fsaverage5"])
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("-o", "--out", help="write fs_cohort.json (the numbers printed) in this folder")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "subjects"
        dirs = make_cohort(root, args.subjects)
        names = [d.name for d in dirs]
        results = {}
        for label, extra in (("native", []), (f"--resample {args.target}", ["--resample", args.target])):
            out = Path(tmp) / ("native" if label == "native" else "resampled")
            subprocess.run([sys.executable, "-m", "surfmap", "batch", str(root), "-o", str(out), "--hemi", "left",
                            "--no-progress", "--jobs", str(args.jobs), *extra], check=True)
            d = disagreement(out, names)
            results[label] = [{"subject": s, "channel": c, **v} for (s, c), v in d.items()]
            print(f"{label}: |image - {names[0]}'s| in % of range (p99 / max):")
            for (s, c), v in d.items():
                print(f"  {s} {c:<10} {v['p99']:7.2f} / {v['max']:7.2f}")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "fs_cohort.json").write_text(json.dumps(
            {"synthetic": True, "subjects": args.subjects, "target": args.target, "percent_of_range": results},
            indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
