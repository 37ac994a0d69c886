"""Cohort runs: flat maps and images for every subject and hemisphere of a study.

Sources
-------
- FreeSurfer ``SUBJECTS_DIR`` (:func:`freesurfer_jobs`): ``<subj>/surf/?h.<surface>`` (``white``
  by default), ``<subj>/surf/?h.<metric>`` (``thickness``, ``sulc``, ``curv``) and
  ``<subj>/label/?h.cortex.label``. Each subject has its own mesh: native mode (one map each).
- HCP (:func:`hcp_jobs`): ``<subj>/MNINonLinear/fsaverage_LR32k/<subj>.?.<surface>.32k_fs_LR.surf.gii``
  and the CIFTI files ``<subj>.<metric>[_MSMAll].32k_fs_LR.dscalar.nii`` (``thickness``, ``sulc``,
  ``curvature``, ``MyelinMap_BC``). Every subject shares the fs_LR 32k mesh, so the default is
  template mode: one map of the template cortex (or of a surface you choose), one operator, and
  only each subject's metrics are read; the medial wall is the template's mask.
- A table (:func:`table_jobs`): CSV/TSV with columns ``subject``, ``hemi``, ``surface``,
  ``mask`` and one column per metric (paths, relative to the table's folder or absolute).

Outputs, under ``out``: ``<subject>/<hemi>/images.npz`` (``images`` (C, size, size) float32,
``channels``), ``flatmap.npz`` and ``distortion.json`` (native mode; template mode writes them
once in ``_template/<hemi>/``), ``status.json`` (written last: the job is finished); then
``manifest.tsv`` (one row per subject and hemisphere: status, paths, channels) and
``failures.tsv`` (subject, hemi, error type and message). A failed subject does not stop the
batch. Every file is written under a temporary name and renamed, so a crash leaves no partial
output; re-running skips jobs whose ``status.json`` exists and retries the failed ones.

Execution: in this process (``n_jobs=1``), local processes (``n_jobs > 1``, spawn start method,
one numba thread each), or a Dask cluster (``scheduler="tcp://host:8786"``, needs
``dask.distributed``; the workers must see the input and output folders at the same paths, e.g.
a shared file system). Jobs are independent and write only their own folder; the manifest is
written by the process that called :func:`run_batch`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ._json import json_default
from .exceptions import BatchError, InputFileNotFoundError, MeshError, SurfmapError

__all__ = [
    "BatchError",  # re-exported from surfmap.exceptions
    "BatchResult",
    "Job",
    "detect_layout",
    "freesurfer_jobs",
    "hcp_jobs",
    "prepare_template",
    "run_batch",
    "run_job",
    "table_jobs",
]

logger = logging.getLogger(__name__)

HEMIS = ("left", "right")
_FS_PREFIX = {"left": "lh", "right": "rh"}
_HCP_LETTER = {"left": "L", "right": "R"}
FREESURFER_METRICS = ("thickness", "sulc", "curv")
HCP_METRICS = ("thickness", "sulc", "curvature", "myelin")
# HCP file stems tried in order for each metric name (MSMAll first when prefer_msmall)
_HCP_STEMS = {"myelin": ("MyelinMap_BC", "MyelinMap"), "MyelinMap": ("MyelinMap",),
              "MyelinMap_BC": ("MyelinMap_BC",)}
MANIFEST_COLUMNS = ("subject", "hemi", "status", "images", "flatmap", "distortion", "channels",
                    "n_vertices", "method", "size", "seconds", "message")
FAILURE_COLUMNS = ("subject", "hemi", "error", "message")


@dataclass(frozen=True)
class Job:
    """One subject and hemisphere to process (picklable: sent to worker processes).

    Attributes
    ----------
    subject, hemi : str
        ``hemi`` is ``"left"`` or ``"right"``.
    out_dir : str
        The job's output folder.
    metrics : tuple of (name, path)
        Metric files, in channel order.
    surface : str or None
        Native mode: the subject's surface file.
    mask : str or None
        Native mode: the cortex mask file.
    mask_template : str or None
        Native mode: take the cortex mask of this bundled template (same mesh, e.g. fs_LR 32k).
    template_map : str or None
        Template mode: the shared flatmap.npz; the subject's surface is not read.
    n_vertices : int or None
        Template mode: vertex count the metrics must have.
    method, size, sampling, nan_policy :
        Flattening method, image size, :class:`~surfmap.Rasterizer` mode and NaN policy.
    problem : str or None
        A problem found while listing the cohort (a missing file): the job fails with it.
    """

    subject: str
    hemi: str
    out_dir: str
    metrics: tuple = ()
    surface: str | None = None
    mask: str | None = None
    mask_template: str | None = None
    template_map: str | None = None
    n_vertices: int | None = None
    method: str = "area"
    size: int = 224
    sampling: str = "barycentric"
    nan_policy: str = "raise"
    problem: str | None = None


@dataclass
class BatchResult:
    """What :func:`run_batch` did: one record per job, and the files it wrote."""

    records: list = field(default_factory=list)
    manifest: Path | None = None
    failures: Path | None = None

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.records)

    def summary(self) -> str:
        return (f"{len(self.records)} jobs: {self.count('done')} done, {self.count('skipped')} skipped "
                f"(already finished), {self.count('failed')} failed")


# ---------------------------------------------------------------------------------------------
# atomic writes


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _atomic(path: Path, write) -> Path:
    """Write through ``write(file)`` to a temporary name beside ``path``, then rename over it.

    A crash or error while writing leaves ``path`` as it was (absent or the old file) and no
    temporary file behind.
    """
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(obj, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, default=json_default) + "\n"
    return _atomic(path, lambda fh: fh.write(text.encode()))


def write_npz_atomic(path, **arrays) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _atomic(path, lambda fh: np.savez_compressed(fh, **arrays))


def write_tsv_atomic(rows, columns, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(columns)] + ["\t".join(_cell(r.get(c, "")) for c in columns) for r in rows]
    text = "\n".join(lines) + "\n"
    return _atomic(path, lambda fh: fh.write(text.encode()))


def _cell(x) -> str:
    if x is None:
        return ""
    if isinstance(x, (list, tuple)):
        x = ",".join(map(str, x))
    return " ".join(str(x).split())  # no tab or newline inside a cell


def distortion_dict(fm, mesh=None) -> dict:
    """The distortion summary written to distortion.json (:func:`surfmap.distortion`).

    ``mesh``: the mesh ``fm.vertex_map`` indexes, when ``fm`` has no 3D ``vertices``.
    """
    from .distortion import distortion

    return distortion(fm, mesh).to_dict()


# ---------------------------------------------------------------------------------------------
# listing a cohort


def _hemis(hemis) -> tuple:
    from .io import normalize_hemi

    if isinstance(hemis, str):
        hemis = (hemis,)
    return tuple(dict.fromkeys(normalize_hemi(h, "hemi", BatchError) for h in hemis))


def _subject_dirs(root: Path, marker: str, subjects, what: str) -> list[Path]:
    if not root.is_dir():
        raise InputFileNotFoundError(f"{root}: no such folder ({what})")
    if subjects:
        return [root / s for s in subjects]
    found = sorted(p for p in root.iterdir() if p.is_dir() and (p / marker).is_dir()
                   and not p.name.startswith(("fsaverage", ".", "_")))
    if not found:
        raise BatchError(f"{root}: no subject folder with '{marker}/' inside; expected a {what}")
    return found


def freesurfer_jobs(subjects_dir, out, *, hemis=HEMIS, surface: str = "white", metrics=FREESURFER_METRICS,
                    metric_suffix: str = "", mask: str = "cortex", subjects=None, method: str = "area",
                    size: int = 224, sampling: str = "barycentric", nan_policy: str = "raise") -> list[Job]:
    """Jobs for a FreeSurfer ``SUBJECTS_DIR`` (native mode: each subject's own mesh and map).

    Subjects are the folders holding ``surf/`` (``fsaverage*`` left out unless named in
    ``subjects``). ``metric_suffix`` is appended to metric file names (e.g.
    ``".fwhm10.fsaverage5.mgh"`` for ``-qcache`` outputs). A missing file makes that job fail
    with its name, not the listing.

    Returns
    -------
    list of Job
        One per subject and hemisphere, sorted.
    """
    root = Path(subjects_dir)
    jobs = []
    for sdir in _subject_dirs(root, "surf", subjects, "FreeSurfer SUBJECTS_DIR"):
        for hemi in _hemis(hemis):
            h = _FS_PREFIX[hemi]
            surf = sdir / "surf" / f"{h}.{surface}"
            lab = sdir / "label" / f"{h}.{mask}.label"
            mets = tuple((m, str(sdir / "surf" / f"{h}.{m}{metric_suffix}")) for m in metrics)
            missing = [str(p) for p in [surf, lab, *(Path(p) for _, p in mets)] if not Path(p).exists()]
            jobs.append(Job(
                subject=sdir.name, hemi=hemi, out_dir=str(Path(out) / sdir.name / hemi), metrics=mets,
                surface=str(surf), mask=str(lab), method=method, size=size, sampling=sampling,
                nan_policy=nan_policy, problem=_missing(missing),
            ))
    return jobs


def _missing(paths) -> str | None:
    if not paths:
        return None
    more = f" (and {len(paths) - 1} more)" if len(paths) > 1 else ""
    return f"{paths[0]}: no such file{more}"


def _hcp_file(folder: Path, subject: str, stems, kind: str, prefer_msmall: bool) -> Path | None:
    order = ("_MSMAll", "") if prefer_msmall else ("", "_MSMAll")
    for stem in stems:
        for suffix in order:
            p = folder / f"{subject}.{stem}{suffix}.32k_fs_LR.{kind}"
            if p.exists():
                return p
    return None


def hcp_jobs(root, out, *, hemis=HEMIS, metrics=HCP_METRICS, mode: str = "template",
             template: str = "fslr32k", template_surface: str | None = None, surface: str = "midthickness", prefer_msmall: bool = True,
             subjects=None, method: str = "area", size: int = 224, sampling: str = "barycentric",
             nan_policy: str = "raise") -> list[Job]:
    """Jobs for an HCP layout (``<subj>/MNINonLinear/fsaverage_LR32k``).

    Parameters
    ----------
    mode : {"template", "native"}
        ``"template"`` (default): one map of fs_LR 32k for all subjects (see
        :func:`prepare_template`; ``template_surface`` picks the surface flattened: a template
        surface name or a surface file of 32,492 vertices); only metrics are read per subject.
        ``template`` may also name a flat map file (``flatmap.npz`` from ``surfmap flatten``;
        ``{hemi}`` in the path is replaced by ``left`` / ``right``).
        ``"native"``: each subject's ``<surface>`` is flattened with the template's cortex mask.
    metrics : sequence of str
        ``thickness``, ``sulc``, ``curvature``, ``myelin`` (``MyelinMap_BC``, else ``MyelinMap``)
        or any other file stem; ``<stem>_MSMAll`` is preferred when ``prefer_msmall``.

    Returns
    -------
    list of Job
    """
    if mode not in ("template", "native"):
        raise BatchError(f"mode: expected 'template' or 'native'; found {mode!r}")
    root = Path(root)
    hemis = _hemis(hemis)
    maps = {}
    if mode == "template":
        for hemi in hemis:
            maps[hemi] = prepare_template(out, hemi, template, method=method, surface=template_surface)
    jobs = []
    for sdir in _subject_dirs(root, "MNINonLinear", subjects, "HCP folder"):
        s = sdir.name
        folder = sdir / "MNINonLinear" / "fsaverage_LR32k"
        for hemi in hemis:
            mets, missing = [], []
            for m in metrics:
                stems = _HCP_STEMS.get(m, (m,))
                p = _hcp_file(folder, s, stems, "dscalar.nii", prefer_msmall)
                if p is None:
                    tried = " or ".join(f"{s}.{stem}[_MSMAll].32k_fs_LR.dscalar.nii" for stem in stems)
                    missing.append(f"{folder}/{tried} ({m})")
                mets.append((m, str(p) if p else ""))
            common = {"subject": s, "hemi": hemi, "out_dir": str(Path(out) / s / hemi), "metrics": tuple(mets),
                      "method": method, "size": size, "sampling": sampling, "nan_policy": nan_policy}
            if mode == "template":
                jobs.append(Job(**common, template_map=str(maps[hemi][0]), n_vertices=maps[hemi][1],
                                problem=_missing(missing)))
            else:
                letter = _HCP_LETTER[hemi]
                surf = _hcp_file(folder, s, (f"{letter}.{surface}",), "surf.gii", prefer_msmall)
                if surf is None:
                    missing.insert(0, str(folder / f"{s}.{letter}.{surface}.32k_fs_LR.surf.gii"))
                jobs.append(Job(**common, surface=str(surf) if surf else None, mask_template="fslr32k",
                                problem=_missing(missing)))
    return jobs


def table_jobs(table, out, *, template: str | None = None, template_surface: str | None = None,
               method: str = "area", size: int = 224, sampling: str = "barycentric",
               nan_policy: str = "raise") -> list[Job]:
    """Jobs from a CSV (or ``.tsv``) table of paths.

    Columns: ``subject``, ``hemi`` (left/right/lh/rh), ``surface`` and ``mask`` (native mode;
    ``mask`` may be empty for a surface that is already a disk), and one column per metric, in
    channel order. Relative paths are taken from the table's folder. With ``template``
    (``"fslr32k"`` or ``"fsaverage5"``), template mode: ``surface``/``mask`` are not needed.

    Raises
    ------
    BatchError
        No ``subject``/``hemi`` column, no metric column, an empty table.
    """
    table = Path(table)
    if not table.is_file():
        raise InputFileNotFoundError(f"{table}: no such table file")
    delim = "\t" if table.suffix.lower() in (".tsv", ".tab") else ","
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter=delim))
    cols = list(rows[0].keys()) if rows else []
    for need in ("subject", "hemi"):
        if need not in cols:
            raise BatchError(f"{table}: expected a '{need}' column; found columns {cols}")
    metric_cols = [c for c in cols if c not in ("subject", "hemi", "surface", "mask")]
    if not metric_cols:
        raise BatchError(f"{table}: no metric column (any column besides subject, hemi, surface, mask)")
    if template is None and "surface" not in cols:
        raise BatchError(f"{table}: expected a 'surface' column (native mode), or pass a template")

    def resolve(p):
        p = (p or "").strip()
        return "" if not p else str(p if os.path.isabs(p) else table.parent / p)

    maps = {}
    jobs = []
    from .io import normalize_hemi

    for i, r in enumerate(rows, start=2):
        subject = (r.get("subject") or "").strip()
        try:
            hemi = normalize_hemi((r.get("hemi") or "").strip(), "hemi", BatchError)
        except BatchError as err:
            raise BatchError(f"{table}, line {i}: {err}") from None
        if not subject:
            raise BatchError(f"{table}, line {i}: empty 'subject'")
        mets = tuple((m, resolve(r.get(m))) for m in metric_cols)
        missing = [p or f"(column '{m}' empty)" for m, p in mets if not p or not Path(p).exists()]
        common = {"subject": subject, "hemi": hemi, "out_dir": str(Path(out) / subject / hemi), "metrics": mets,
                  "method": method, "size": size, "sampling": sampling, "nan_policy": nan_policy}
        if template is not None:
            if hemi not in maps:
                maps[hemi] = prepare_template(out, hemi, template, method=method, surface=template_surface)
            jobs.append(Job(**common, template_map=str(maps[hemi][0]), n_vertices=maps[hemi][1],
                            problem=_missing(missing)))
        else:
            surf, mask = resolve(r.get("surface")), resolve(r.get("mask"))
            for p in (mask, surf):
                if p and not Path(p).exists():
                    missing.insert(0, p)
            if not surf:
                missing.insert(0, "(column 'surface' empty)")
            jobs.append(Job(**common, surface=surf or None, mask=mask or None, problem=_missing(missing)))
    if not jobs:
        raise BatchError(f"{table}: the table has no rows")
    return jobs


def detect_layout(source) -> str:
    """``"table"`` for a .csv/.tsv file, ``"hcp"`` or ``"freesurfer"`` for a folder of subjects."""
    source = Path(source)
    if source.is_file():
        return "table"
    if not source.is_dir():
        raise InputFileNotFoundError(f"{source}: no such file or folder (expected a SUBJECTS_DIR, an HCP "
                                     "folder or a CSV table)")
    for p in sorted(source.iterdir()):
        if (p / "MNINonLinear" / "fsaverage_LR32k").is_dir():
            return "hcp"
        if (p / "surf").is_dir():
            return "freesurfer"
    raise BatchError(f"{source}: found no subject folder with 'surf/' (FreeSurfer) or "
                     "'MNINonLinear/fsaverage_LR32k/' (HCP); pass --layout or a CSV table")


# ---------------------------------------------------------------------------------------------
# template mode


def prepare_template(out, hemi: str, template: str = "fslr32k", *, method: str = "area",
                     surface: str | None = None) -> tuple[Path, int | None]:
    """Flatten a template hemisphere once for a cohort: ``out/_template/<hemi>/flatmap.npz``.

    Re-used when it exists with the same settings. Also writes ``distortion.json``.

    Parameters
    ----------
    template : str
        ``"fslr32k"``, ``"fsaverage5"``, or the path of a flat map file (``.npz``, e.g. from
        ``surfmap flatten`` on a cohort-average surface; ``{hemi}`` in it is replaced by the
        hemisphere), used as it is.
    surface : str, optional
        A surface name of the template (``Hemisphere.surfaces``) or a surface file with the
        template's vertex count (e.g. a cohort-average midthickness); default: the template's.

    Returns
    -------
    (path to flatmap.npz, vertex count of the template mesh or None for a given map file)
    """
    from .flatmap import flatten
    from .io import read_surface
    from .templates import load_template

    if template.endswith(".npz") or os.path.sep in template:
        given = Path(template.replace("{hemi}", hemi))
        if not given.is_file():
            raise InputFileNotFoundError(f"{given}: no such flat-map file (template for hemi {hemi!r})")
        return given.resolve(), None
    folder = Path(out) / "_template" / hemi
    fm_path = folder / "flatmap.npz"
    settings = {"template": template, "hemi": hemi, "method": method, "surface": surface}
    done = folder / "template.json"
    if fm_path.exists() and done.exists():
        info = json.loads(done.read_text())
        if info.get("settings") == settings:
            return fm_path, int(info["n_vertices"])
    if surface is not None and os.path.sep not in surface and not Path(surface).exists():
        tpl = load_template(template, hemi, surface=surface)
        mesh = tpl.mesh
    else:
        tpl = load_template(template, hemi)
        mesh = tpl.mesh if surface is None else read_surface(surface)
        if mesh.n_vertices != tpl.n_vertices:
            raise BatchError(f"{surface}: expected a surface of the {template} mesh ({tpl.n_vertices} "
                             f"vertices); found {mesh.n_vertices}")
    t0 = time.perf_counter()
    fm = flatten(mesh, tpl.cortex, method=method)
    fm.save(fm_path)
    write_json_atomic(distortion_dict(fm, mesh), folder / "distortion.json")
    write_json_atomic({"settings": settings, "n_vertices": tpl.n_vertices,
                       "seconds": round(time.perf_counter() - t0, 3)}, done)
    logger.info("template %s %s flattened (%s) -> %s", template, hemi, method, fm_path)
    return fm_path, tpl.n_vertices


_MAP_CACHE: dict = {}


def _template_rasterizer(job: Job):
    from .flatmap import FlatMap
    from .raster import cached_rasterizer

    key = (job.template_map, os.stat(job.template_map).st_mtime_ns)
    fm = _MAP_CACHE.get(key)
    if fm is None:
        fm = _MAP_CACHE[key] = FlatMap.load(job.template_map)
    return fm, cached_rasterizer(fm, size=job.size, mode=job.sampling, nan_policy=job.nan_policy)


# ---------------------------------------------------------------------------------------------
# one job


def run_job(job: Job) -> dict:
    """Process one subject and hemisphere; never raises (a failure is returned as a record).

    Returns
    -------
    dict
        The manifest record: ``status`` is ``"done"``, ``"skipped"`` (``status.json`` already
        there) or ``"failed"`` (with ``error`` and ``message``).
    """
    out = Path(job.out_dir)
    status_path = out / "status.json"
    base = {"subject": job.subject, "hemi": job.hemi}
    if status_path.exists():
        try:
            rec = json.loads(status_path.read_text())
            rec["status"] = "skipped"
            return rec
        except (OSError, ValueError):
            pass  # unreadable: do the job again
    t0 = time.perf_counter()
    try:
        rec = _process(job, out)
    except Exception as err:  # noqa: BLE001 - a batch records every failure and goes on
        logger.debug("job %s %s failed:\n%s", job.subject, job.hemi, traceback.format_exc())
        msg = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        return {**base, "status": "failed", "error": type(err).__name__, "message": msg,
                "seconds": round(time.perf_counter() - t0, 3)}
    rec.update(base, status="done", seconds=round(time.perf_counter() - t0, 3))
    write_json_atomic(rec, status_path)
    return rec


def _process(job: Job, out: Path) -> dict:
    from .io import read_mask, read_metric, read_surface

    if job.problem:
        raise InputFileNotFoundError(job.problem)
    rec = {"method": job.method, "size": job.size, "sampling": job.sampling}
    if job.template_map:
        fm, R = _template_rasterizer(job)
        n = job.n_vertices
        dist = Path(job.template_map).with_name("distortion.json")
        rec.update(flatmap=os.path.relpath(job.template_map, out.parent.parent),
                   distortion=os.path.relpath(dist, out.parent.parent) if dist.exists() else "",
                   mode="template")
    else:
        from .flatmap import flatten
        from .raster import Rasterizer

        mesh = read_surface(job.surface)
        n = mesh.n_vertices
        if job.mask:
            keep = read_mask(job.mask, n, hemi=job.hemi)
        elif job.mask_template:
            from .templates import load_template

            tpl = load_template(job.mask_template, job.hemi)
            if tpl.n_vertices != n:
                raise MeshError(f"{job.surface}: expected {tpl.n_vertices} vertices (the {job.mask_template} "
                                f"mesh, whose cortex mask is used); found {n}. Use the subject's "
                                f"{job.mask_template} surface, or list it in a table with a 'mask' column")
            keep = tpl.cortex
        else:
            keep = np.ones(n, dtype=bool)
        fm = flatten(mesh, keep, method=job.method)
        R = Rasterizer(fm, size=job.size, mode=job.sampling, nan_policy=job.nan_policy)
        fm.save(out / "flatmap.npz")
        write_json_atomic(distortion_dict(fm, mesh), out / "distortion.json")
        rel = out.relative_to(out.parent.parent)
        rec.update(flatmap=str(rel / "flatmap.npz"), distortion=str(rel / "distortion.json"), mode="native")
    values = {}
    for name, path in job.metrics:
        values[name] = read_metric(path, hemi=job.hemi, n_vertices=n)
    try:
        images = R(values)
    except SurfmapError as err:
        raise type(err)(f"{job.subject} {job.hemi}: {err}") from None
    channels = list(values)
    write_npz_atomic(out / "images.npz", images=images, channels=np.array(channels),
                     subject=np.array(job.subject), hemi=np.array(job.hemi))
    rec.update(images=str(out.relative_to(out.parent.parent) / "images.npz"), channels=channels,
               n_vertices=int(fm.n_vertices))
    return rec


# ---------------------------------------------------------------------------------------------
# a whole batch


def _init_worker():
    try:
        import numba

        numba.set_num_threads(1)  # one process per core: no oversubscription
    except Exception as err:  # noqa: BLE001 - only a performance setting
        logger.debug("could not limit numba threads in a worker: %s", err)


def _progress(total: int, enabled):
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, unit="job", desc="subjects", disable=not enabled)


def run_batch(jobs, out, *, n_jobs: int = 1, scheduler=None, progress=None) -> BatchResult:
    """Run jobs, record them, write ``manifest.tsv`` and ``failures.tsv`` in ``out``.

    Parameters
    ----------
    jobs : list of Job
    out : path
        The batch's output folder (the jobs' folders are inside it).
    n_jobs : int
        Local worker processes (spawn start method); 1 runs in this process.
    scheduler : str or dask.distributed.Client, optional
        A Dask scheduler address (``tcp://host:8786``) or a client: run the jobs on that cluster.
    progress : bool, optional
        Progress bar of jobs done; default: when stderr is a terminal.

    Returns
    -------
    BatchResult
        Records in the order of ``jobs``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if n_jobs < 1:
        raise BatchError(f"n_jobs: expected a positive number of processes; found {n_jobs}")
    records: list = [None] * len(jobs)
    pending = []
    for i, job in enumerate(jobs):
        if (Path(job.out_dir) / "status.json").exists():
            records[i] = run_job(job)  # reads the record back: skipped
        else:
            pending.append(i)
    bar = _progress(len(jobs), progress)
    bar.update(len(jobs) - len(pending))

    def done(i, rec):
        records[i] = rec
        bar.update(1)
        if rec["status"] == "failed":
            logger.warning("%s %s failed: %s", rec["subject"], rec["hemi"], rec["message"])

    try:
        if scheduler is not None:
            _run_dask(jobs, pending, scheduler, done)
        elif n_jobs > 1 and len(pending) > 1:
            _run_pool(jobs, pending, n_jobs, done)
        else:
            for i in pending:
                done(i, run_job(jobs[i]))
    finally:
        bar.close()
        for i, job in enumerate(jobs):
            if records[i] is None:
                records[i] = {"subject": job.subject, "hemi": job.hemi, "status": "failed",
                              "error": "Interrupted", "message": "the batch stopped before this job ran"}
        result = BatchResult(records=records)
        result.manifest = write_tsv_atomic(records, MANIFEST_COLUMNS, out / "manifest.tsv")
        result.failures = write_tsv_atomic([r for r in records if r["status"] == "failed"], FAILURE_COLUMNS,
                                           out / "failures.tsv")
    return result


def _crash(job: Job, err: BaseException) -> dict:
    return {"subject": job.subject, "hemi": job.hemi, "status": "failed", "error": type(err).__name__,
            "message": (str(err).strip().splitlines() or [repr(err)])[0]}


def _run_pool(jobs, pending, n_jobs, done):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=min(n_jobs, len(pending)), mp_context=mp.get_context("spawn"),
                             initializer=_init_worker) as pool:
        futures = {pool.submit(run_job, jobs[i]): i for i in pending}
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                rec = fut.result()
            except Exception as err:  # noqa: BLE001 - a worker died: record it, go on
                rec = _crash(jobs[i], err)
            done(i, rec)


def _run_dask(jobs, pending, scheduler, done):
    try:
        from dask.distributed import Client, as_completed
    except ImportError as err:
        raise BatchError("scheduler: Dask is not installed; pip install 'surfmap[distributed]' "
                         f"(or dask[distributed]) ({err})") from None
    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    try:
        futures = client.map(run_job, [jobs[i] for i in pending], pure=False)
        index = {f.key: i for f, i in zip(futures, pending)}
        for fut in as_completed(futures):
            i = index[fut.key]
            try:
                rec = fut.result()
            except Exception as err:  # noqa: BLE001 - a worker died: record it, go on
                rec = _crash(jobs[i], err)
            done(i, rec)
    finally:
        if own:
            client.close()


def job_to_dict(job: Job) -> dict:
    return asdict(job)
