"""Cohort runs: flat maps and images for every subject and hemisphere of a study.

Sources
-------
- FreeSurfer ``SUBJECTS_DIR`` (:func:`freesurfer_jobs`): ``<subj>/surf/?h.<surface>`` (``white``
  by default), ``<subj>/surf/?h.<metric>`` (``thickness``, ``sulc``, ``curv``) and
  ``<subj>/label/?h.cortex.label``. Each subject has its own mesh: native mode (one map each),
  whose pixels are a different place of the cortex in every subject. With ``resample="fslr32k"``
  (or ``"fsaverage5"``) each subject is first put on that mesh through ``surf/?h.sphere.reg``
  (:func:`surfmap.resample.resample_subject`, as HCP's PostFreeSurfer pipeline does; its
  surfaces and metrics are written as GIFTI in the HCP layout, ``<out>/<subj>/MNINonLinear/
  fsaverage_LR32k/``), then rasterized in template mode: one map, and every pixel is the same
  cortex in every subject.
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
``failures.tsv`` (subject, hemi, error type and message). Flat maps are also written as Workbench
flat surfaces of the original mesh (``lh.flat.surf.gii`` / ``rh.flat.surf.gii``, beside each
``flatmap.npz``), on which any metric of that mesh opens in Workbench. A failed subject does not stop the
batch. Every file is written under a temporary name and renamed, so a crash leaves no partial
output (stale temporary files of a killed run are removed by the next one).

Re-runs: ``status.json`` records the job's settings (:func:`job_settings`: method, size,
sampling, NaN policy, channels, each input file's size and modification time, the template
map's content hash, and any ``Job.extra`` keys) and the size of each output. A job is skipped
only when all of these match and its outputs are there; otherwise it is done again (the manifest
says why). The shared template map of ``_template/<hemi>/`` is flattened once per settings and
never replaced: a run asking for another one is refused (use another output folder).

Concurrency and interruption: :func:`run_batch` holds a lock on ``out`` (a second batch on the
same folder is refused). SIGINT (Ctrl-C) stops handing out jobs and lets running ones finish
(a second SIGINT stops them); SIGTERM stops at once, ending the workers. Either way
``manifest.tsv`` is written with the true state of every job (``done``, ``skipped``,
``failed``, ``interrupted``, ``cancelled``) and :class:`BatchInterrupted` is raised. A worker
process that dies (killed, out of memory) fails its own job, naming the subject; a new worker
takes the remaining jobs.

Execution: in this process (``n_jobs=1``), local processes (``n_jobs > 1``, spawn start method,
one numba thread each), or a Dask cluster (``scheduler="tcp://host:8786"``, needs
``dask.distributed``; the workers must see the input and output folders at the same paths, e.g.
a shared file system). Jobs are independent and write only their own folder; the manifest is
written by the process that called :func:`run_batch`. Subject and hemisphere names become folder
names: they are checked first (no path separator, no ``..``, no absolute path).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ._atomic import atomic_write, atomic_write_bytes, is_tmp_name
from ._json import json_default
from .exceptions import BatchError, InputFileNotFoundError, MeshError, SurfmapError

__all__ = [
    "BatchError",  # re-exported from surfmap.exceptions
    "BatchInterrupted",
    "BatchResult",
    "Job",
    "batch_lock",
    "check_name",
    "job_settings",
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
    resample : str or None
        Put the subject on this standard mesh first (``"fslr32k"``, ``"fsaverage5"``), with
        ``resample_method`` for the metrics, from ``resample_surfaces``: ``(("sphere.reg", path),
        ("white", path), ("pial", path))``. Template mode (``template_map``) then applies.
    extra : dict
        More settings (JSON values) recorded in ``status.json`` and compared on re-run, for
        steps added to the job (e.g. resampling).

    Raises
    ------
    BatchError
        A subject or hemisphere name that cannot be a folder name (:func:`check_name`).
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
    resample: str | None = None
    resample_method: str = "adaptive"
    resample_surfaces: tuple = ()
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        check_name(self.subject, "subject")
        if self.hemi not in HEMIS:
            raise BatchError(f"hemi: expected one of {list(HEMIS)}; found {self.hemi!r}")


class BatchInterrupted(KeyboardInterrupt):
    """A batch stopped by SIGINT or SIGTERM, after writing its manifest (``result``)."""

    def __init__(self, signum: int, result: BatchResult | None = None):
        super().__init__(f"the batch was stopped by {signal.Signals(signum).name}")
        self.signum = int(signum)
        self.result = result


def check_name(name, what: str = "subject", where: str = "") -> str:
    """``name`` when it can be one folder name under the output folder, else a :class:`BatchError`.

    Refused: empty names, path separators (``/``, ``\\``), ``.`` and ``..``, absolute paths,
    NUL and other control characters, names starting with ``.`` (hidden and temporary files)
    and ``_template`` (the template mode's folder).
    """
    where = f"{where}: " if where else ""
    if not isinstance(name, str) or not name.strip():
        raise BatchError(f"{where}{what}: expected a non-empty name; found {name!r}")
    bad = [c for c in ("/", "\\", os.sep, os.altsep or "/") if c in name]
    problem = None
    if bad:
        problem = f"contains the path separator {bad[0]!r}"
    elif name in (".", "..") or name.startswith("."):
        problem = "starts with '.' (a relative path or a hidden file)"
    elif os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        problem = "is an absolute path"
    elif any(ord(c) < 32 for c in name):
        problem = "contains a control character"
    elif name == "_template":
        problem = "is the template mode's folder name"
    if problem:
        raise BatchError(f"{where}{what} {name!r} {problem}; it would become a folder outside "
                         f"<out>/<{what}>/. Use plain subject IDs (letters, digits, '-', '_')")
    return name


@dataclass
class BatchResult:
    """What :func:`run_batch` did: one record per job, and the files it wrote."""

    records: list = field(default_factory=list)
    manifest: Path | None = None
    failures: Path | None = None

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.records)

    def summary(self) -> str:
        text = (f"{len(self.records)} jobs: {self.count('done')} done, {self.count('skipped')} skipped "
                f"(already finished), {self.count('failed')} failed")
        for extra in ("interrupted", "cancelled"):
            if self.count(extra):
                text += f", {self.count(extra)} {extra}"
        return text


# ---------------------------------------------------------------------------------------------
# atomic writes


def write_json_atomic(obj, path) -> Path:
    text = json.dumps(obj, indent=2, default=json_default) + "\n"
    return atomic_write_bytes(path, text.encode())


def write_npz_atomic(path, **arrays) -> Path:
    return atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))


def write_tsv_atomic(rows, columns, path) -> Path:
    lines = ["\t".join(columns)] + ["\t".join(_cell(r.get(c, "")) for c in columns) for r in rows]
    text = "\n".join(lines) + "\n"
    return atomic_write_bytes(path, text.encode())


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
        return [root / check_name(s, "subject", "subjects") for s in subjects]
    found = sorted(p for p in root.iterdir() if p.is_dir() and (p / marker).is_dir()
                   and not p.name.startswith(("fsaverage", ".", "_")))
    if not found:
        raise BatchError(f"{root}: no subject folder with '{marker}/' inside; expected a {what}")
    return found


RESAMPLE_TARGETS = ("fslr32k", "fsaverage5")


def freesurfer_jobs(subjects_dir, out, *, hemis=HEMIS, surface: str = "white", metrics=FREESURFER_METRICS,
                    metric_suffix: str = "", mask: str = "cortex", subjects=None, method: str = "area",
                    size: int = 224, sampling: str = "barycentric", nan_policy: str = "raise",
                    resample: str | None = None, resample_method: str = "adaptive",
                    template: str | None = None) -> list[Job]:
    """Jobs for a FreeSurfer ``SUBJECTS_DIR``: native mode, or a standard mesh with ``resample``.

    Subjects are the folders holding ``surf/`` (``fsaverage*`` left out unless named in
    ``subjects``). ``metric_suffix`` is appended to metric file names (e.g.
    ``".fwhm10.fsaverage5.mgh"`` for ``-qcache`` outputs). A missing file makes that job fail
    with its name, not the listing.

    Parameters
    ----------
    resample : {"fslr32k", "fsaverage5"}, optional
        Put each subject on this mesh first through ``surf/?h.sphere.reg`` (and ``?h.white``,
        ``?h.pial`` for the midthickness areas), then rasterize with the template's map
        (flattened once in ``out/_template/<hemi>/``) and its cortex mask: pixels correspond
        across subjects. ``surface`` and ``mask`` are not used; ``metric_suffix`` should name
        native-mesh files.
    resample_method : {"adaptive", "barycentric"}
        How metrics are resampled (surfaces always barycentric).
    template : str, optional
        With ``resample``: a flat map file of that mesh to use instead of flattening the template
        (``{hemi}`` is replaced), e.g. another cohort's ``_template/{hemi}/flatmap.npz``, so
        that both cohorts' images share one map (needed to transfer a network between them).

    Returns
    -------
    list of Job
        One per subject and hemisphere, sorted.
    """
    if resample is not None and resample not in RESAMPLE_TARGETS:
        raise BatchError(f"resample: expected one of {list(RESAMPLE_TARGETS)}; found {resample!r}")
    if resample_method not in ("adaptive", "barycentric"):
        raise BatchError(f"resample_method: expected 'adaptive' or 'barycentric'; found {resample_method!r}")
    root = Path(subjects_dir)
    hemis = _hemis(hemis)
    maps = {}
    jobs = []
    for sdir in _subject_dirs(root, "surf", subjects, "FreeSurfer SUBJECTS_DIR"):
        for hemi in hemis:
            h = _FS_PREFIX[hemi]
            mets = tuple((m, str(sdir / "surf" / f"{h}.{m}{metric_suffix}")) for m in metrics)
            common = {"subject": sdir.name, "hemi": hemi, "out_dir": str(Path(out) / sdir.name / hemi),
                      "metrics": mets, "method": method, "size": size, "sampling": sampling,
                      "nan_policy": nan_policy}
            if resample is not None:
                if hemi not in maps:
                    maps[hemi] = prepare_template(out, hemi, template or resample, method=method)
                    _check_resample_map(maps[hemi], resample, template)
                surfs = tuple((n, str(sdir / "surf" / f"{h}.{n}")) for n in ("sphere.reg", "white", "pial"))
                missing = [p for p in [*(p for _, p in surfs), *(p for _, p in mets)] if not Path(p).exists()]
                jobs.append(Job(**common, template_map=str(maps[hemi][0]), n_vertices=maps[hemi][1],
                                resample=resample, resample_method=resample_method, resample_surfaces=surfs,
                                problem=_missing(missing)))
                continue
            surf = sdir / "surf" / f"{h}.{surface}"
            lab = sdir / "label" / f"{h}.{mask}.label"
            missing = [str(p) for p in [surf, lab, *(Path(p) for _, p in mets)] if not Path(p).exists()]
            jobs.append(Job(**common, surface=str(surf), mask=str(lab), problem=_missing(missing)))
    return jobs


def _check_resample_map(found: tuple, resample: str, template: str | None) -> None:
    from .resample import TARGET_VERTICES

    n = TARGET_VERTICES[resample]
    if found[1] is not None and found[1] != n:
        raise BatchError(f"{template}: a flat map of a {found[1]}-vertex mesh; --resample {resample} needs a map of "
                         f"the {resample} mesh ({n} vertices). Pass that cohort's _template/{{hemi}}/flatmap.npz, "
                         "or drop --template")


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
                if p is None:  # one hemisphere's GIFTI (PostFreeSurfer's, or surfmap.to_template's)
                    letter = _HCP_LETTER[hemi]
                    p = _hcp_file(folder, s, tuple(f"{letter}.{stem}" for stem in stems), "shape.gii", prefer_msmall)
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
    rows, cols = _read_table(table)
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
    seen = {}
    from .io import normalize_hemi

    for i, r in enumerate(rows, start=2):
        subject = (r.get("subject") or "").strip()
        try:
            hemi = normalize_hemi((r.get("hemi") or "").strip(), "hemi", BatchError)
        except BatchError as err:
            raise BatchError(f"{table}, line {i}: {err}") from None
        if not subject:
            raise BatchError(f"{table}, line {i}: empty 'subject'")
        check_name(subject, "subject", f"{table}, line {i}")
        if (subject, hemi) in seen:
            raise BatchError(f"{table}, lines {seen[subject, hemi]} and {i}: subject {subject!r} hemi {hemi!r} "
                             "is listed twice; expected one row per subject and hemisphere (both would write "
                             f"{subject}/{hemi}/). Remove or rename one of them")
        seen[subject, hemi] = i
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


def _read_table(table: Path) -> tuple[list[dict], list[str]]:
    """Rows and column names of a CSV/TSV table (UTF-8, with or without a byte-order mark)."""
    delim = "\t" if table.suffix.lower() in (".tsv", ".tab") else ","
    raw = table.read_bytes()
    if b"\x00" in raw[:4096]:
        raise BatchError(f"{table}: a binary file (NUL bytes); expected a CSV/TSV text table with columns "
                         "subject, hemi, surface, mask and one per metric")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise BatchError(f"{table}, line {line}: not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start}); "
                         "save the table as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    try:
        reader = csv.DictReader(text.splitlines(), delimiter=delim)
        rows = list(reader)
        cols = [c.strip() for c in (reader.fieldnames or [])]
    except csv.Error as err:
        raise BatchError(f"{table}: not a valid CSV/TSV table ({err})") from None
    if not cols:
        raise BatchError(f"{table}: the table is empty; expected a header row (subject, hemi, ...) and one row "
                         "per subject and hemisphere")
    rows = [{(k or "").strip(): v for k, v in r.items()} for r in rows]
    if not rows:
        raise BatchError(f"{table}: the table has a header ({', '.join(cols)}) but no rows; expected one row "
                         "per subject and hemisphere")
    return rows, cols


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

    Written once per output folder (with ``distortion.json``, then ``template.json`` recording
    its settings) and re-used by later runs with the same settings; never replaced, since
    finished images depend on it.

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
    (path to flatmap.npz, vertex count of the template mesh, or for a given map file the count
    it records (None for maps of older surfmap versions))

    Raises
    ------
    BatchError
        ``out`` already holds a template map made with other settings, or another batch holds
        the folder's lock.
    """
    from .flatmap import FlatMap

    if template.endswith(".npz") or os.path.sep in template:
        given = Path(template.replace("{hemi}", hemi))
        if not given.is_file():
            raise InputFileNotFoundError(f"{given}: no such flat-map file (template for hemi {hemi!r})")
        n = FlatMap.load(given).info.get("n_original")  # validates the file; None for maps of older surfmap
        return given.resolve(), (int(n) if n is not None else None)
    with batch_lock(out):
        return _prepare_template(Path(out), hemi, template, method, surface)


def _prepare_template(out: Path, hemi: str, template: str, method: str, surface) -> tuple[Path, int]:
    from .pipeline import flatten
    from .io import read_surface
    from .templates import load_template

    folder = out / "_template" / hemi
    fm_path = folder / "flatmap.npz"
    settings = {"template": template, "hemi": hemi, "method": method, "surface": surface}
    done = folder / "template.json"
    if done.exists():
        try:
            info = json.loads(done.read_text())
            old = info["settings"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise BatchError(f"{done}: unreadable ({err}); the template map of this folder cannot be checked. "
                             f"Remove {folder} and the subject folders, or use another output folder") from None
        if old == settings and fm_path.exists():
            return fm_path, int(info["n_vertices"])
        if old != settings:
            diff = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v)
            raise BatchError(
                f"{folder}: this output folder's template map was made with other settings ({diff}); the images "
                "already there use it, and one folder holds images of one map. Use another output folder (-o) "
                f"for these settings, or remove {folder} and the subject folders to start over")
        raise BatchError(f"{fm_path}: missing, though {done.name} records it; remove {folder} and the subject "
                         "folders, or use another output folder")
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
    fm.to_gifti(folder / f"{_FS_PREFIX[hemi]}.flat.surf.gii", hemi=hemi, n_vertices=mesh.n_vertices)
    write_json_atomic(distortion_dict(fm, mesh), folder / "distortion.json")
    write_json_atomic({"settings": settings, "n_vertices": tpl.n_vertices,
                       "seconds": round(time.perf_counter() - t0, 3)}, done)  # last: the map is final
    logger.info("template %s %s flattened (%s) -> %s", template, hemi, method, fm_path)
    return fm_path, tpl.n_vertices


_MAP_CACHE: OrderedDict = OrderedDict()  # (path, mtime, size) -> FlatMap; the last few maps only
_MAP_CACHE_SIZE = 4
_HASH_CACHE: OrderedDict = OrderedDict()  # (path, mtime, size) -> sha1 of the file
_HASH_CACHE_SIZE = 64


def _remember(cache: OrderedDict, limit: int, key, make):
    value = cache.get(key)
    if value is None:
        value = cache[key] = make()
        while len(cache) > limit:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return value


def _stat_key(path) -> tuple:
    st = os.stat(path)
    return (str(path), st.st_mtime_ns, st.st_size)


def _template_rasterizer(job: Job):
    from .flatmap import FlatMap
    from .raster import cached_rasterizer

    fm = _remember(_MAP_CACHE, _MAP_CACHE_SIZE, _stat_key(job.template_map), lambda: FlatMap.load(job.template_map))
    return fm, cached_rasterizer(fm, size=job.size, mode=job.sampling, nan_policy=job.nan_policy)


def _file_sha1(path) -> str:
    def digest():
        h = hashlib.sha1()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    return _remember(_HASH_CACHE, _HASH_CACHE_SIZE, _stat_key(path), digest)


def _file_identity(path) -> dict | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return {"path": str(path), "missing": True}
    return {"path": str(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def job_settings(job: Job) -> dict:
    """What a job's outputs depend on, as recorded in its ``status.json`` and compared on re-run.

    Method, image size, sampling, NaN policy, channel names, each input file's path, size and
    modification time, the template map's content hash (template mode), and ``job.extra``.
    """
    inputs = {f"metric:{name}": _file_identity(path) for name, path in job.metrics}
    inputs.update(surface=_file_identity(job.surface), mask=_file_identity(job.mask))
    inputs.update({f"resample:{name}": _file_identity(path) for name, path in job.resample_surfaces})
    settings = {
        "mode": "template" if job.template_map else "native",
        "method": job.method, "size": int(job.size), "sampling": job.sampling, "nan_policy": job.nan_policy,
        "channels": [name for name, _ in job.metrics],
        "mask_template": job.mask_template,
        "inputs": {k: v for k, v in inputs.items() if v is not None},
    }
    if job.resample:
        settings["resample"] = {"target": job.resample, "method": job.resample_method}
    if job.template_map:
        try:
            settings["template_map"] = {"path": str(job.template_map), "sha1": _file_sha1(job.template_map)}
        except OSError:
            settings["template_map"] = {"path": str(job.template_map), "missing": True}
    settings.update(job.extra)
    return json.loads(json.dumps(settings, default=json_default))  # the form read back from status.json


def _describe_change(old: dict, new: dict) -> str:
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "inputs" and isinstance(a, dict) and isinstance(b, dict):
            names = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            changed.append("input file(s) changed: " + ", ".join(names))
        elif key == "template_map":
            changed.append("the template map changed")
        else:
            changed.append(f"{key} {a!r} -> {b!r}")
    return "; ".join(changed)


def _output_sizes(out: Path, rec: dict) -> dict:
    root = out.parent.parent
    files = [rec["images"]] + ([rec["flatmap"], rec["distortion"]] if rec.get("mode") == "native" else [])
    files += list(rec.get("resampled", ()))
    return {f: (root / f).stat().st_size for f in files if f}


def _why_redo(prev: dict, settings: dict, out: Path) -> str | None:
    """None when a finished job matches ``settings`` and has its outputs; else the reason to redo it."""
    old = prev.get("settings")
    if not isinstance(old, dict):
        return "its status.json records no settings (written by an older surfmap)"
    if old != settings:
        return f"settings changed: {_describe_change(old, settings)}"
    outputs = prev.get("outputs")
    if not isinstance(outputs, dict) or not outputs:
        return "its status.json records no outputs"
    root = out.parent.parent
    for name, size in outputs.items():
        path = root / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} when written (truncated or replaced)"
    return None


def _remove_stale_tmp(folder: Path) -> None:
    """Temporary files that a killed process left (``.<name>.<pid>.tmp[.npz]``); the folder's lock is ours."""
    if folder.is_dir():
        for p in folder.iterdir():
            if is_tmp_name(p.name):
                p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# one job


def run_job(job: Job) -> dict:
    """Process one subject and hemisphere; never raises an ``Exception`` (a failure is a record).

    A job whose ``status.json`` records the same :func:`job_settings` and whose outputs are
    there is skipped; any difference makes it run again (``message`` says why).

    Returns
    -------
    dict
        The manifest record: ``status`` is ``"done"``, ``"skipped"`` or ``"failed"`` (with
        ``error`` and ``message``).
    """
    t0 = time.perf_counter()
    try:
        return _run_job(job, t0)
    except Exception as err:  # noqa: BLE001 - a batch records every failure and goes on
        logger.debug("job %s %s failed:\n%s", job.subject, job.hemi, traceback.format_exc())
        return {**_crash(job, err), "seconds": round(time.perf_counter() - t0, 3)}


def _read_status(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: the job is done again
    return rec if isinstance(rec, dict) else {}


def _run_job(job: Job, t0: float) -> dict:
    out = Path(job.out_dir)
    status_path = out / "status.json"
    _remove_stale_tmp(out)
    settings = job_settings(job)
    prev = _read_status(status_path)
    redo = None
    if prev is not None:
        redo = _why_redo(prev, settings, out)
        if redo is None:
            return {**prev, "status": "skipped", "message": ""}
        logger.info("%s %s: doing it again: %s", job.subject, job.hemi, redo)
        status_path.unlink(missing_ok=True)  # from here on the old outputs are not "finished"
    rec = _process(job, out)
    rec.update(subject=job.subject, hemi=job.hemi, status="done", seconds=round(time.perf_counter() - t0, 3),
               settings=settings, outputs=_output_sizes(out, rec), message=f"redone: {redo}" if redo else "")
    write_json_atomic(rec, status_path)
    return rec


def _process(job: Job, out: Path) -> dict:
    from .io import read_mask, read_metric, read_surface

    if job.problem:
        raise InputFileNotFoundError(job.problem)
    rec = {"method": job.method, "size": job.size, "sampling": job.sampling}
    values = None
    if job.template_map:
        fm, R = _template_rasterizer(job)
        n = job.n_vertices if job.n_vertices is not None else fm.info.get("n_original")
        dist = Path(job.template_map).with_name("distortion.json")
        rec.update(flatmap=os.path.relpath(job.template_map, out.parent.parent),
                   distortion=os.path.relpath(dist, out.parent.parent) if dist.exists() else "",
                   mode="template")
        if job.resample:
            values, files = _resample_job(job, out)
            rec["resampled"] = [os.path.relpath(p, out.parent.parent) for p in files.values()]
    else:
        from .pipeline import flatten
        from .raster import Rasterizer

        from .io import file_hemi

        side = file_hemi(job.surface)
        if side is not None and side != job.hemi:
            raise MeshError(f"{job.surface}: the surface is of the {side} hemisphere (GIFTI structure or file name), "
                            f"but this job is {job.subject} {job.hemi}; check the table's 'hemi' column")
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
        fm.to_gifti(out / f"{_FS_PREFIX[job.hemi]}.flat.surf.gii", hemi=job.hemi, n_vertices=n)
        write_json_atomic(distortion_dict(fm, mesh), out / "distortion.json")
        rel = out.relative_to(out.parent.parent)
        rec.update(flatmap=str(rel / "flatmap.npz"), distortion=str(rel / "distortion.json"), mode="native")
    if values is None:
        values = {name: read_metric(path, hemi=job.hemi, n_vertices=n) for name, path in job.metrics}
    try:
        images = R(values)
    except SurfmapError as err:
        raise type(err)(f"{job.subject} {job.hemi}: {err}") from None
    channels = list(values)
    write_npz_atomic(out / "images.npz", images=images, channels=np.array(channels),
                     subject=np.array(job.subject), hemi=np.array(job.hemi), geometry=np.array(image_geometry(fm, job)))
    rec.update(images=str(out.relative_to(out.parent.parent) / "images.npz"), channels=channels,
               n_vertices=int(fm.n_vertices))
    return rec


def image_geometry(fm, job: Job) -> str:
    """What the pixels of a job's images mean, stored as ``geometry`` in ``images.npz``.

    ``"template:<sha1 of the map>"`` when every subject shares the map (template mode, with or
    without resampling): images with equal strings have pixels that are the same cortex.
    ``"native"`` for per-subject maps, whose pixels correspond across no two subjects.
    """
    if not job.template_map:
        return "native"
    from .raster import flatmap_key

    return f"template:{flatmap_key(fm)}"


def _resample_job(job: Job, out: Path) -> tuple[dict, dict]:
    """The job's subject on its standard mesh: (metrics on that mesh, GIFTI files written in the HCP layout
    under ``<out>/<subject>/``)."""
    from .io import read_metric
    from .resample import resample_subject, write_template_subject

    surfs = dict(job.resample_surfaces)
    try:
        values = {name: read_metric(path, hemi=job.hemi) for name, path in job.metrics}
        sub = resample_subject(surfs["sphere.reg"], surfs["white"], surfs["pial"], values, job.hemi, job.resample,
                               method=job.resample_method, subject=job.subject)
    except SurfmapError as err:
        raise type(err)(f"{job.subject} {job.hemi}: resampling to {job.resample}: {err}") from None
    return sub.metrics, write_template_subject(out.parent, sub)


# ---------------------------------------------------------------------------------------------
# the output folder's lock

_LOCKS: dict = {}  # resolved folder -> [open lock file, depth]; re-entrant within this process
_LOCKS_GUARD = threading.Lock()
LOCK_NAME = ".surfmap-batch.lock"


@contextlib.contextmanager
def batch_lock(out):
    """Hold an exclusive lock on the output folder ``out`` (``out/.surfmap-batch.lock``).

    The lock is an ``flock`` on a file: the system releases it when the process ends, even when
    killed, so a stale lock never blocks a later run. Re-entrant within one process.

    Raises
    ------
    BatchError
        Another process holds the lock (a batch writing to the same folder).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key = str(out.resolve())
    with _LOCKS_GUARD:
        held = _LOCKS.get(key)
        if held is None:
            fh = open(out / LOCK_NAME, "a+")
            try:
                import fcntl

                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except ImportError:  # pragma: no cover - no flock (Windows): no lock
                logger.warning("%s: file locks are not available here; do not run two batches on it", out)
            except OSError:
                fh.seek(0)
                owner = fh.read().strip() or "another process"
                fh.close()
                raise BatchError(f"{out}: another surfmap batch ({owner}) is writing to this output folder; wait "
                                 "for it to finish, or use another output folder (-o)") from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}\n")
            fh.flush()
            held = _LOCKS[key] = [fh, 0]
        held[1] += 1
    try:
        yield out
    finally:
        with _LOCKS_GUARD:
            held[1] -= 1
            if held[1] == 0:
                del _LOCKS[key]
                held[0].close()  # releases the flock


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


class _Stop:
    """Signal handlers of a running batch: the first SIGINT stops handing out jobs (running ones
    finish), a second SIGINT or a SIGTERM stops at once. ``raise_now``: in-process jobs, where
    stopping means interrupting the job (raise :class:`BatchInterrupted`)."""

    def __init__(self, raise_now: bool):
        self.raise_now = raise_now
        self.signum = None  # the first stop signal
        self.now = False  # stop running jobs too
        self._old = {}

    def __call__(self, signum, frame):
        first = self.signum is None
        if first:
            self.signum = signum
        if signum == signal.SIGTERM or not first:
            self.now = True
        if self.raise_now:
            raise BatchInterrupted(signum)
        if first and not self.now:
            logger.warning("stopping: no new jobs; waiting for the running ones (interrupt again to stop them)")

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self)
        return self

    def restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def run_batch(jobs, out, *, n_jobs: int = 1, scheduler=None, progress=None) -> BatchResult:
    """Run jobs, record them, write ``manifest.tsv`` and ``failures.tsv`` in ``out``.

    Parameters
    ----------
    jobs : list of Job
    out : path
        The batch's output folder (the jobs' folders are inside it). Locked for the run.
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

    Raises
    ------
    BatchError
        ``n_jobs`` below 1, two jobs writing the same folder, or another batch holding the lock.
    BatchInterrupted
        SIGINT or SIGTERM stopped the batch; the manifest was written first (``err.result``).
    """
    out = Path(out)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise BatchError(f"n_jobs (--jobs): expected a positive number of processes; found {n_jobs!r}")
    seen = {}
    for job in jobs:
        key = os.path.normpath(job.out_dir)
        if key in seen:
            raise BatchError(f"jobs {seen[key]} and {job.subject} {job.hemi}: both write {job.out_dir}; expected "
                             "one job per subject and hemisphere. Remove the duplicate")
        seen[key] = f"{job.subject} {job.hemi}"
    with batch_lock(out):
        _remove_stale_tmp(out)
        return _run_locked(list(jobs), out, n_jobs, scheduler, progress)


def _run_locked(jobs, out: Path, n_jobs, scheduler, progress) -> BatchResult:
    records: list = [None] * len(jobs)
    pending = list(range(len(jobs)))
    bar = _progress(len(jobs), progress)

    def done(i, rec):
        records[i] = rec
        bar.update(1)
        if rec["status"] == "failed":
            logger.warning("%s %s failed: %s", rec["subject"], rec["hemi"], rec["message"])

    pool = scheduler is None and n_jobs > 1 and len(pending) > 1
    stop = _Stop(raise_now=scheduler is None and not pool).install()
    running: set = set()
    try:
        if scheduler is not None:
            _run_dask(jobs, pending, scheduler, done, stop)
        elif pool:
            _run_pool(jobs, pending, n_jobs, done, stop, running)
        else:
            for i in pending:
                if stop.signum is not None:
                    break
                running.add(i)
                done(i, run_job(jobs[i]))
                running.discard(i)
    except KeyboardInterrupt as err:
        if stop.signum is None:
            stop.signum = getattr(err, "signum", signal.SIGINT)
    finally:
        stop.restore()
        bar.close()
        name = signal.Signals(stop.signum).name if stop.signum is not None else None
        for i, job in enumerate(jobs):
            if records[i] is None and i in running:
                records[i] = _finished_record(job)  # it may have ended as it was stopped
            if records[i] is None:
                if i in running:
                    _remove_stale_tmp(Path(job.out_dir))
                    msg = (f"the batch was stopped ({name}) while this job ran; it did not finish (no status.json). "
                           "Run the batch again to do it") if name else "the batch stopped while this job ran"
                    records[i] = {**_record(job), "status": "interrupted", "error": "Interrupted", "message": msg}
                else:
                    msg = (f"the batch was stopped ({name}) before this job started. Run the batch again to do "
                           "it") if name else "the batch stopped before this job started"
                    records[i] = {**_record(job), "status": "cancelled", "error": "Cancelled", "message": msg}
        result = BatchResult(records=records)
        result.manifest = write_tsv_atomic(records, MANIFEST_COLUMNS, out / "manifest.tsv")
        result.failures = write_tsv_atomic([r for r in records if r["status"] in ("failed", "interrupted")],
                                           FAILURE_COLUMNS, out / "failures.tsv")
    if stop.signum is not None:
        raise BatchInterrupted(stop.signum, result)
    return result


def _finished_record(job: Job) -> dict | None:
    """The record in a job's status.json when the job wrote it (finished) but its result was lost."""
    prev = _read_status(Path(job.out_dir) / "status.json")
    try:
        if prev and prev.get("status") == "done" and _why_redo(prev, job_settings(job), Path(job.out_dir)) is None:
            return prev  # written by this run: the settings match and the outputs are there
    except (OSError, ValueError, TypeError):
        pass
    return None


def _record(job: Job) -> dict:
    return {"subject": job.subject, "hemi": job.hemi}


def _crash(job: Job, err: BaseException) -> dict:
    return {**_record(job), "status": "failed", "error": type(err).__name__,
            "message": (str(err).strip().splitlines() or [repr(err)])[0]}


# ---------------------------------------------------------------------------------------------
# local worker processes

_START_FAILURES = 3  # workers dying before taking a job, per worker slot, before the batch gives up


def _worker_main(conn):
    """A worker: run the jobs sent on ``conn`` until ``None`` or the batch process goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the batch process decides when to stop
    _init_worker()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        rec = run_job(job)
        try:
            conn.send(rec)
        except OSError:
            return


class _Worker:
    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True, name="surfmap-batch-worker")
        self.proc.start()
        child.close()
        self.job = None  # index of the job it runs

    def stop(self, now: bool):
        if self.proc.is_alive() and not now and self.job is None:
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def _death(proc) -> str:
    code = proc.exitcode
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _run_pool(jobs, pending, n_jobs, done, stop: _Stop, running: set):
    import multiprocessing as mp
    from collections import deque
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")
    queue = deque(pending)
    workers: list[_Worker] = []
    slots = min(n_jobs, len(pending))
    start_failures = 0
    try:
        while True:
            if stop.signum is None:
                while queue and (len(workers) < slots or any(w.job is None for w in workers)):
                    w = next((w for w in workers if w.job is None), None)
                    if w is None:
                        w = _Worker(ctx)
                        workers.append(w)
                    i = queue.popleft()
                    try:
                        w.conn.send(jobs[i])
                    except OSError:  # the worker died while idle: give the job to another one
                        queue.appendleft(i)
                        workers.remove(w)
                        w.stop(now=True)
                        start_failures += 1
                        if start_failures > _START_FAILURES * slots:
                            raise BatchError("worker processes keep dying before taking a job; run with --jobs 1 "
                                             "to see the error") from None
                        continue
                    w.job = i
                    running.add(i)
            busy = [w for w in workers if w.job is not None]
            if not busy or stop.now:
                break
            ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=0.2)
            if not ready:
                continue
            for w in busy:
                rec = None
                if w.conn.poll():
                    with contextlib.suppress(EOFError, OSError):
                        rec = w.conn.recv()
                if rec is not None:
                    running.discard(w.job)
                    done(w.job, rec)
                    w.job = None
                elif not w.proc.is_alive() and w.proc.exitcode == -signal.SIGTERM:
                    # a scheduler ending the allocation signals every process: stop the batch as for our own
                    # SIGTERM, and leave this job to the interrupted ones
                    stop.signum = stop.signum or signal.SIGTERM
                    stop.now = True
                    workers.remove(w)
                    w.stop(now=True)
                elif not w.proc.is_alive() and _finished_record(jobs[w.job]) is not None:
                    running.discard(w.job)  # died after finishing its job (status.json written)
                    done(w.job, _finished_record(jobs[w.job]))
                    workers.remove(w)
                    w.stop(now=True)
                elif not w.proc.is_alive():
                    i, job = w.job, jobs[w.job]
                    _remove_stale_tmp(Path(job.out_dir))
                    running.discard(i)
                    done(i, {**_record(job), "status": "failed", "error": "WorkerDied",
                             "message": f"the worker process running {job.subject} {job.hemi} died "
                                        f"({_death(w.proc)}); it did not finish, the other jobs went "
                                        "on. Run the batch again to retry it (out of memory? try fewer --jobs)"})
                    workers.remove(w)
                    w.stop(now=True)
            for w in [w for w in workers if w.job is None and not w.proc.is_alive()]:
                workers.remove(w)  # died between jobs (e.g. at start): replaced when needed
                w.stop(now=True)
                start_failures += 1
                if start_failures > _START_FAILURES * slots:
                    raise BatchError(f"worker processes keep dying before taking a job ({_death(w.proc)}); "
                                     "run with --jobs 1 to see the error")
    finally:
        for w in workers:
            w.stop(now=stop.now)


def _run_dask(jobs, pending, scheduler, done, stop: _Stop):
    try:
        from dask.distributed import Client, as_completed
    except ImportError as err:
        raise BatchError("scheduler: Dask is not installed; pip install 'surfmap[distributed]' "
                         f"(or dask[distributed]) ({err})") from None
    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    futures = []
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
            if stop.signum is not None:
                break
    finally:
        if stop.signum is not None and futures:
            client.cancel([f for f in futures if not f.done()])
        if own:
            client.close()


def job_to_dict(job: Job) -> dict:
    return asdict(job)
