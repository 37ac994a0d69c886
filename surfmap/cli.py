"""The ``surfmap`` command: ``demo``, ``flatten``, ``batch``.

Errors from surfmap (bad files, meshes that are not disks, ...) print one line,
``surfmap: error: <message>``, on stderr and exit with status 1; ``--debug`` shows the traceback.
``surfmap batch`` exits with status 3 when some subjects failed (the others are done; the
reasons are in ``failures.tsv``), 130 or 143 when SIGINT or SIGTERM stopped it (after writing
the manifest); usage errors exit with status 2 (argparse).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

from . import __version__
from .exceptions import ParameterError, SurfmapError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("surfmap")

_UNITS = {"thickness": "mm", "sulc": "mm", "curvature": "1/mm", "curv": "1/mm", "myelin": "T1w/T2w"}


def _metric_arg(text: str):
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE (e.g. thickness=lh.thickness); found {text!r}")
    return name, path


def _hemi_arg(text: str) -> str:
    from .io import normalize_hemi

    try:
        return normalize_hemi(text, "--hemi", ParameterError)
    except ParameterError:
        raise argparse.ArgumentTypeError(f"expected left or right (or lh, rh); found {text!r}") from None


# API names in library messages -> the flags of this command
_CLI_NAMES = (
    ("nan_policy='ignore'", "--nan-policy ignore"),
    ("nan_policy='propagate'", "--nan-policy propagate"),
    ("nan_policy", "--nan-policy"),
    ("n_jobs (--jobs)", "--jobs"),
    ("n_jobs", "--jobs"),
    ("hemi='left' or hemi='right'", "--hemi left or --hemi right"),
    ("size: expected", "--size: expected"),
    ("method: expected", "--method: expected"),
)


def _cli_message(msg: str) -> str:
    for api, flag in _CLI_NAMES:
        msg = msg.replace(api, flag)
    return msg


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="surfmap",
        description="Flatten cortical surfaces onto the unit square (conformal Ricci flow, area-preserving "
                    "optimal transport) and turn vertex metrics into images.",
    )
    p.add_argument("--version", action="version", version=f"surfmap {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of errors")
    common.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser("demo", parents=[common], help="flatten a bundled template, write figures (no input)",
                       description="Flatten a bundled template hemisphere with both methods, rasterize its "
                                   "metrics and write figures. No input files, no network.")
    d.add_argument("-o", "--out", default="surfmap-demo", help="output folder (default: %(default)s)")
    d.add_argument("--template", default="fsaverage5", choices=["fsaverage5", "fslr32k"])
    d.add_argument("--hemi", default="left", choices=["left", "right"])
    d.add_argument("--size", type=int, default=224, help="image side in pixels (default: %(default)s)")
    d.set_defaults(func=cmd_demo)

    f = sub.add_parser("flatten", parents=[common], help="flatten one surface, rasterize its metrics",
                       description="Flatten one surface and write flatmap.npz, images.npz (channel names "
                                   "inside), distortion.json, preview.png and the map as a Workbench flat surface "
                                   "of the input mesh (lh.flat.surf.gii / rh.flat.surf.gii, or flat.surf.gii when "
                                   "the hemisphere is unknown) in OUT.")
    f.add_argument("surface", help="surface file (FreeSurfer geometry, .surf.gii, OBJ/PLY/OFF)")
    f.add_argument("--mask", help="cortex mask (FreeSurfer .label, GIFTI label, 0/1 metric); default: every "
                                  "vertex (the surface must then be a disk)")
    f.add_argument("--metric", action="append", type=_metric_arg, default=[], metavar="NAME=FILE",
                   help="a metric to rasterize (repeat for more channels, in order); default: the x, y, z "
                        "coordinates")
    f.add_argument("--hemi", type=_hemi_arg, help="left/right: the surface's hemisphere (default: from the "
                                                  "surface file's name or GIFTI metadata); selects it in CIFTI "
                                                  "files, and files of the other hemisphere are refused")
    f.add_argument("--method", default="area", choices=["area", "conformal"])
    f.add_argument("--size", type=int, default=224)
    f.add_argument("--sampling", default="barycentric", choices=["barycentric", "area"],
                   help="pixel values: barycentric interpolation (default) or average of vertices in the pixel")
    f.add_argument("--nan-policy", default="raise", choices=["raise", "ignore", "propagate"])
    f.add_argument("-o", "--out", required=True, help="output folder")
    f.set_defaults(func=cmd_flatten)

    b = sub.add_parser("batch", parents=[common], help="a whole cohort: FreeSurfer, HCP or a CSV table",
                       description="Flatten and rasterize every subject and hemisphere of a cohort. Writes "
                                   "OUT/<subject>/<hemi>/images.npz, OUT/manifest.tsv and OUT/failures.tsv; "
                                   "re-running skips finished work and retries failed subjects. Exit "
                                   "status 0 when every job is done, 3 when some failed (see failures.tsv).")
    b.add_argument("source", help="FreeSurfer SUBJECTS_DIR, HCP folder (<subj>/MNINonLinear/fsaverage_LR32k), "
                                  "or a CSV/TSV table (subject, hemi, surface, mask, metric columns)")
    b.add_argument("-o", "--out", required=True, help="output folder")
    b.add_argument("--layout", default="auto", choices=["auto", "freesurfer", "hcp", "table"])
    b.add_argument("--hemi", nargs="+", type=_hemi_arg, default=["left", "right"],
                   help="hemispheres (default: both)")
    b.add_argument("--surface", help="surface to flatten (FreeSurfer default: white; HCP: midthickness)")
    b.add_argument("--metrics", nargs="+", help="metric names (FreeSurfer default: thickness sulc curv; HCP: "
                                                "thickness sulc curvature myelin)")
    b.add_argument("--metric-suffix", default="", help="FreeSurfer: appended to metric file names, e.g. "
                                                       ".fwhm10.fsaverage5.mgh")
    b.add_argument("--mode", choices=["native", "template"],
                   help="native: one map per subject; template: one shared map (default: template for HCP "
                        "and for tables with --template, else native)")
    b.add_argument("--template", help="template mode: fslr32k, fsaverage5, or a flatmap.npz path (may hold "
                                      "{hemi}); default fslr32k for HCP")
    b.add_argument("--template-surface", help="template mode: surface of the template to flatten (a name such "
                                              "as midthickness, or a file with the template's vertex count)")
    b.add_argument("--resample", choices=["fslr32k", "fsaverage5"],
                   help="FreeSurfer: put every subject on this mesh first (through surf/?h.sphere.reg, as HCP's "
                        "PostFreeSurfer does), then rasterize with the template's one map, so that every pixel "
                        "is the same cortex in every subject; the resampled surfaces and metrics are written "
                        "as GIFTI in the HCP layout (OUT/<subject>/MNINonLinear/fsaverage_LR32k/)")
    b.add_argument("--resample-method", default="adaptive", choices=["adaptive", "barycentric"],
                   help="with --resample: how metrics are resampled (default: %(default)s, Workbench's "
                        "ADAP_BARY_AREA)")
    b.add_argument("--subjects", nargs="+", help="only these subjects")
    b.add_argument("--method", default="area", choices=["area", "conformal"])
    b.add_argument("--size", type=int, default=224)
    b.add_argument("--sampling", default="barycentric", choices=["barycentric", "area"])
    b.add_argument("--nan-policy", default="raise", choices=["raise", "ignore", "propagate"])
    b.add_argument("--jobs", type=int, default=1, help="local worker processes (default: 1)")
    b.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786): run on that cluster")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_batch)
    return p


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="surfmap: %(levelname)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (SurfmapError, OSError) as err:
        if args.debug:
            raise
        msg = _cli_message(" ".join(str(err).split()) or type(err).__name__)
        print(f"surfmap: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        from .batch import BatchInterrupted

        if isinstance(err, BatchInterrupted) and err.result is not None:
            print(f"surfmap: stopped by {signal.Signals(err.signum).name}: {err.result.summary()}; manifest: "
                  f"{err.result.manifest}. Run the same command again to finish", file=sys.stderr)
            return 128 + err.signum
        print("surfmap: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------------------------
# flatten


def _check_size(size: int) -> int:
    from .raster import check_image_size

    if size < 2:
        raise ParameterError(f"--size: expected an image side of at least 2 pixels; found {size}; pass e.g. --size 224")
    try:
        return check_image_size(size)
    except ParameterError as err:
        raise ParameterError(f"--{err}") from None


def _check_out(out) -> Path:
    """The output folder, checked before any work: it must be a folder or not exist yet."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"-o/--out: {out} is a file; expected an output folder (existing or new). Pass "
                             "another path")
    return out


def cmd_flatten(args) -> int:
    import numpy as np

    from .batch import distortion_dict, write_json_atomic, write_npz_atomic
    from .io import read_mask, read_metric, read_surface
    from .plotting import plot_images, save_figure
    from .raster import Rasterizer

    from .io import file_hemi

    size = _check_size(args.size)
    out = _check_out(args.out)
    hemi = args.hemi or file_hemi(args.surface)  # so a mask or metric of the other hemisphere is refused
    mesh = read_surface(args.surface)
    keep = read_mask(args.mask, mesh.n_vertices, hemi=hemi) if args.mask else np.ones(mesh.n_vertices, bool)
    values = {}
    for name, path in args.metric:
        if name in values:
            raise ParameterError(f"--metric {name}=...: the name {name!r} is given twice; give each channel its own "
                                 "name")
        values[name] = read_metric(path, hemi=hemi, n_vertices=mesh.n_vertices)
    if not values:
        values = {"x": mesh.vertices[:, 0], "y": mesh.vertices[:, 1], "z": mesh.vertices[:, 2]}
    from .pipeline import flatten

    t0 = time.perf_counter()
    fm = flatten(mesh, keep, method=args.method)
    t_flat = time.perf_counter() - t0
    R = Rasterizer(fm, size=size, mode=args.sampling, nan_policy=args.nan_policy)
    images = R(values)
    channels = list(values)
    prefix = {"left": "lh.", "right": "rh."}.get(hemi, "")
    paths = {
        "flatmap": fm.save(out / "flatmap.npz"),
        # Workbench flat surface of the input mesh: any metric of that mesh opens on it
        "flat_surface": fm.to_gifti(out / f"{prefix}flat.surf.gii", hemi=hemi, n_vertices=mesh.n_vertices),
        "images": write_npz_atomic(out / "images.npz", images=images, channels=np.array(channels)),
        "distortion": write_json_atomic(distortion_dict(fm, mesh), out / "distortion.json"),
    }
    fig = plot_images(images, channels, fm=fm, units=_UNITS,
                      title=f"{Path(args.surface).name}: {args.method} map, {fm.n_vertices} vertices")
    paths["preview"] = save_figure(fig, out / "preview.png")
    print(f"flattened {args.surface} ({fm.n_vertices} of {mesh.n_vertices} vertices, {args.method}) in "
          f"{t_flat:.2f} s; images {len(channels)} x {size} x {size} ({', '.join(channels)})")
    for key, path in paths.items():
        print(f"  {key:<10} {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# batch


def cmd_batch(args) -> int:
    from . import batch

    _check_size(args.size)
    _check_out(args.out)
    if args.jobs < 1:
        raise ParameterError(f"--jobs: expected a positive number of worker processes; found {args.jobs}")
    layout = batch.detect_layout(args.source) if args.layout == "auto" else args.layout
    common = {"method": args.method, "size": args.size, "sampling": args.sampling, "nan_policy": args.nan_policy}
    mode = args.mode or ("template" if layout == "hcp" or (layout == "table" and args.template)
                         or args.resample else "native")
    if args.resample and layout != "freesurfer":
        raise ParameterError(f"--resample: expected a FreeSurfer SUBJECTS_DIR (subjects with surf/?h.sphere.reg); "
                             f"found a {layout} layout. HCP folders are on fs_LR 32k already: drop --resample")
    if args.resample:
        if mode != "template" or args.template_surface or args.surface or (
                args.template and not (args.template.endswith(".npz") or "/" in args.template)):
            raise ParameterError("--resample: every subject is rasterized with one map of the --resample mesh "
                                 "(template mode): the template's, or a flatmap.npz given with --template (e.g. "
                                 "another cohort's OUT/_template/{hemi}/flatmap.npz); --mode native, "
                                 "--template-surface and --surface do not apply. For native maps of the resampled "
                                 "surfaces, run surfmap batch OUT --layout hcp --mode native afterwards")
        jobs = batch.freesurfer_jobs(args.source, args.out, hemis=args.hemi,
                                     metrics=args.metrics or batch.FREESURFER_METRICS,
                                     metric_suffix=args.metric_suffix, subjects=args.subjects,
                                     resample=args.resample, resample_method=args.resample_method,
                                     template=args.template, **common)
    elif layout == "freesurfer":
        if mode == "template":
            raise ParameterError("--mode template: expected a table or an HCP folder; found a FreeSurfer "
                                 "layout, whose subjects have their own meshes. Pass --resample fslr32k (put "
                                 "every subject on fs_LR 32k first), drop --mode (native), or list "
                                 "fsaverage-resampled metrics in a table with --template fsaverage5")
        jobs = batch.freesurfer_jobs(args.source, args.out, hemis=args.hemi, surface=args.surface or "white",
                                     metrics=args.metrics or batch.FREESURFER_METRICS,
                                     metric_suffix=args.metric_suffix, subjects=args.subjects, **common)
    elif layout == "hcp":
        jobs = batch.hcp_jobs(args.source, args.out, hemis=args.hemi, metrics=args.metrics or batch.HCP_METRICS,
                              mode=mode, template=args.template or "fslr32k",
                              template_surface=args.template_surface, surface=args.surface or "midthickness",
                              subjects=args.subjects, **common)
    else:
        if mode == "template" and not args.template:
            raise ParameterError("--mode template with a table: expected --template (fslr32k, fsaverage5 or "
                                 "a flatmap.npz); found none. Pass --template, or drop --mode (native)")
        jobs = batch.table_jobs(args.source, args.out, template=args.template if mode == "template" else None,
                                template_surface=args.template_surface, **common)
        if args.subjects:
            jobs = [j for j in jobs if j.subject in set(args.subjects)]
    progress = False if args.no_progress else None
    result = batch.run_batch(jobs, args.out, n_jobs=args.jobs, scheduler=args.scheduler, progress=progress)
    print(f"{result.summary()}; manifest: {result.manifest}")
    if result.count("failed"):
        print(f"failures ({result.count('failed')}): {result.failures}")
    return 0 if result.count("failed") == 0 else 3


# ---------------------------------------------------------------------------------------------
# demo


def cmd_demo(args) -> int:
    import numpy as np

    from .batch import write_json_atomic, write_npz_atomic
    from .distortion import distortion
    from .pipeline import flatten
    from .mesh import cut
    from .plotting import plot_distortion_histograms, plot_flatmap, plot_images, save_figure
    from .raster import Rasterizer
    from .templates import load_template

    size = _check_size(args.size)
    out = _check_out(args.out)
    out.mkdir(parents=True, exist_ok=True)
    warm_up = _warm_up()
    tpl = load_template(args.template, args.hemi)
    disk = cut(tpl.mesh, tpl.cortex)
    print(f"template {args.template} {args.hemi} ({tpl.surface_kind}): {tpl.n_vertices} vertices, "
          f"{int(tpl.cortex.sum())} cortex; cut to a disk of {disk.mesh.n_vertices} vertices, "
          f"{disk.mesh.n_faces} faces" + (f" (repairs: {'; '.join(disk.repairs)})" if disk.repairs else ""))
    metrics = dict(tpl.metrics)
    files = []
    per_face = {}
    summary = {}
    for method, label in (("conformal", "conformal"), ("area", "area-preserving")):
        t0 = time.perf_counter()
        fm = flatten(tpl.mesh, tpl.cortex, method=method)
        seconds = time.perf_counter() - t0
        R = Rasterizer(fm, size=size)
        images = R(metrics)
        dist = distortion(fm, tpl.mesh)  # once: the summary, the face colours and the histograms
        d = dist.to_dict()
        summary[method] = {"seconds": round(seconds, 2), **_short_distortion(d)}
        files.append(fm.save(out / f"flatmap_{method}.npz"))
        channels = list(metrics)
        files.append(write_npz_atomic(out / f"images_{method}.npz", images=images, channels=np.array(channels)))
        files.append(write_json_atomic(d, out / f"distortion_{method}.json"))
        fig = plot_images(images, channels, fm=fm, units=_UNITS,
                          title=f"{args.template} {args.hemi}: {label} map, {size}x{size} images")
        files.append(save_figure(fig, out / f"images_{method}.png"))
        per_face[label] = dist
        fig = plot_flatmap(fm, dist.log_area_ratio, label="log(flat area / surface area)",
                           title=f"{label} map, {fm.n_vertices} vertices\nfaces coloured by area distortion")
        files.append(save_figure(fig, out / f"flatmap_{method}.png"))
    fig = plot_distortion_histograms(per_face, title=f"{args.template} {args.hemi}: distortion per face")
    files.append(save_figure(fig, out / "distortion_histograms.png"))
    print(f"  (seconds: the method's own; compiling or loading surfmap's Numba kernels took {warm_up:.2f} s "
          "before, on a small mesh)")
    print("  method     seconds  flipped  |log area ratio| p95  dilatation mean (1 = conformal)")
    for method, s in summary.items():
        print(f"  {method:<9} {s['seconds']:>8.2f}  {s.get('n_flipped', '?'):>7}  "
              f"{s.get('area_abs_p95', float('nan')):>20.3f}  {s.get('dilatation_mean', float('nan')):>15.3f}")
    print(f"wrote {len(files)} files to {out}/:")
    for path in files:
        print(f"  {path.name}")
    return 0


def _warm_up() -> float:
    """Seconds to compile surfmap's Numba kernels (first run) or load them from Numba's cache.

    Both methods and the rasterizer run once on a small curved grid, so that the demo's per-method seconds
    measure the methods, not the compiler: on a fresh install compilation takes many times longer than the
    fsaverage5 maps themselves (benchmarks/README.md, "Start-up").
    """
    import numpy as np

    from .pipeline import flatten
    from .mesh import Mesh
    from .raster import Rasterizer

    t0 = time.perf_counter()
    n = 8
    x, y = (a.ravel() for a in np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij"))
    ij = np.arange(n * n).reshape(n, n)[:-1, :-1].ravel()
    faces = np.concatenate([np.column_stack([ij, ij + n, ij + n + 1]), np.column_stack([ij, ij + n + 1, ij + 1])])
    mesh = Mesh(np.column_stack([x, y, 0.3 * (x * x + y * y)]), faces)
    fm = flatten(mesh, np.ones(n * n, bool), method="area")
    Rasterizer(fm, size=8)(x)
    return time.perf_counter() - t0


def _short_distortion(d: dict) -> dict:
    """The headline numbers of a distortion dict (``Distortion.to_dict()``)."""
    return {k: d[k] for k in ("n_flipped", "area_abs_p95", "dilatation_mean") if k in d}


if __name__ == "__main__":
    sys.exit(main())
