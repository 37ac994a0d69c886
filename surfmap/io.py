"""Read and write cortical surfaces, per-vertex metrics and vertex masks.

Formats (all through nibabel, except OBJ/PLY/OFF through trimesh with ``process=False``):

=========================  ==============================================  =====================
kind                       files                                           read by
=========================  ==============================================  =====================
FreeSurfer geometry        ``lh.white``, ``lh.pial``, ``rh.sphere.reg``    :func:`read_surface`
FreeSurfer morph ("curv")  ``lh.thickness``, ``lh.sulc``, ``lh.curv``      :func:`read_metric`
FreeSurfer label / annot   ``lh.cortex.label``, ``lh.aparc.annot``         :func:`read_mask`
FreeSurfer patch           ``lh.cortex.patch.flat``, ``lh.full.patch.3d``  :func:`read_patch`
MGH                        ``.mgh``, ``.mgz`` (one value per vertex)       :func:`read_metric`
GIFTI                      ``.surf.gii``, ``.shape.gii``, ``.func.gii``,   all readers; writers
                           ``.label.gii`` (also gzipped ``.gii.gz``)
CIFTI-2                    ``.dscalar.nii``, ``.dtseries.nii``, ...        :func:`read_metric` (``hemi=``)
generic meshes             ``.obj``, ``.ply``, ``.off``                    :func:`read_surface`
plain numbers              ``.txt``, ``.csv``, ``.1D``, ``.npy``           :func:`read_metric`
=========================  ==============================================  =====================

The format is found from the file name's suffix; FreeSurfer files have none that can be trusted
(``lh.white``, ``lh.thickness``), so files without a known suffix are recognised by their magic
bytes (geometry ``0xFFFFFE``, morph ``0xFFFFFF``, quad geometry ``0xFFFFFD``).

Vertices are never reordered. Every problem with a file raises a
:class:`~surfmap.exceptions.SurfmapError` subclass whose message names the file:
:class:`~surfmap.exceptions.InputFileNotFoundError` (missing),
:class:`~surfmap.exceptions.FormatError` (unknown format, truncated or corrupt),
:class:`~surfmap.exceptions.MeshError` (bad faces or coordinates),
:class:`~surfmap.exceptions.MetricError` and :class:`~surfmap.exceptions.MaskError`.
Writers produce GIFTI and replace the target atomically, so a failed write never leaves a
half-written file.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._atomic import atomic_write_bytes
from .exceptions import (
    FormatError,
    InputFileNotFoundError,
    MaskError,
    MeshError,
    MetricError,
    ParameterError,
    SurfmapError,
)
from .mesh import Mesh

__all__ = [
    "read_surface",
    "read_metric",
    "read_mask",
    "read_patch",
    "write_surface",
    "write_metric",
    "write_label",
    "write_flat_surface",
    "flat_surface",
    "check_metric",
    "file_hemi",
    "normalize_hemi",
    "detect_format",
]

log = logging.getLogger(__name__)

_FS_TRIANGLE_MAGIC = b"\xff\xff\xfe"
_FS_CURV_MAGIC = b"\xff\xff\xff"  # new morph format; also the rare old quad-geometry magic
_FS_NEW_QUAD_MAGIC = b"\xff\xff\xfd"

# longest suffixes first
_SUFFIXES = (
    (".label.gii.gz", "gifti"),
    (".gii.gz", "gifti"),
    (".gii", "gifti"),
    (".nii.gz", "nifti"),
    (".nii", "nifti"),
    (".mgh", "mgh"),
    (".mgz", "mgh"),
    (".obj", "obj"),
    (".ply", "ply"),
    (".off", "off"),
    (".label", "fs_label"),
    (".annot", "fs_annot"),
    (".txt", "text"),
    (".csv", "text"),
    (".1d", "text"),
    (".npy", "npy"),
)

_SUPPORTED = (
    "FreeSurfer geometry/morph/label/annot/patch files, GIFTI (.gii, .gii.gz), CIFTI-2 (.dscalar.nii, ...), "
    ".mgh/.mgz, OBJ/PLY/OFF, plain numbers (.txt/.csv/.1D/.npy)"
)

_HEMIS = {"left": "left", "lh": "left", "l": "left", "right": "right", "rh": "right", "r": "right"}
_GIFTI_STRUCTURE = {"left": "CortexLeft", "right": "CortexRight"}
_CIFTI_STRUCTURE = {"left": "CIFTI_STRUCTURE_CORTEX_LEFT", "right": "CIFTI_STRUCTURE_CORTEX_RIGHT"}


# ---------------------------------------------------------------------------------------------
# small helpers


def normalize_hemi(hemi, arg: str = "hemi", error: type = MetricError) -> str:
    """``"left"`` or ``"right"`` from ``"left"/"lh"/"L"`` or ``"right"/"rh"/"R"`` (any case).

    Raises
    ------
    MetricError
        (or ``error``) naming ``arg``, for any other value.
    """
    key = hemi.lower() if isinstance(hemi, str) else None
    if key not in _HEMIS:
        raise error(f"'{arg}' should be one of ['left', 'right'] (or 'lh', 'rh'); {hemi!r} was provided")
    return _HEMIS[key]


def _existing_file(path) -> Path:
    try:
        path = Path(os.fspath(path))
    except TypeError:
        raise FormatError(f"expected a file path (str or os.PathLike); found {type(path).__name__}") from None
    if not path.exists():
        hint = ""
        if not path.parent.exists():
            hint = f" (the folder {str(path.parent)!r} does not exist either)"
        raise InputFileNotFoundError(f"'{path}': no such file{hint}; check the path")
    if path.is_dir():
        raise FormatError(f"'{path}' is a folder; expected a file ({_SUPPORTED})")
    return path


def _head(path: Path, n: int = 64) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def detect_format(path) -> str:
    """The format of an existing file, from its suffix or, failing that, its magic bytes.

    Returns
    -------
    str
        One of ``"fs_geometry"``, ``"fs_quad"``, ``"fs_morph"``, ``"fs_morph_old"``, ``"fs_label"``,
        ``"fs_annot"``, ``"fs_patch"``, ``"gifti"``, ``"nifti"`` (NIfTI or CIFTI), ``"mgh"``,
        ``"obj"``, ``"ply"``, ``"off"``, ``"text"``, ``"npy"``.

    Raises
    ------
    InputFileNotFoundError
        The file does not exist.
    FormatError
        The file is empty or of no supported format.
    """
    path = _existing_file(path)
    name = path.name.lower()
    for suffix, kind in _SUFFIXES:
        if name.endswith(suffix):
            return kind
    head = _head(path)
    size = path.stat().st_size
    if size == 0:
        raise FormatError(f"'{path}' is empty (0 bytes); expected one of: {_SUPPORTED}")
    if head[:3] == _FS_TRIANGLE_MAGIC:
        return "fs_geometry"
    if head[:3] == _FS_NEW_QUAD_MAGIC:
        return "fs_quad"
    if head[:4] == b"\xff\xff\xff\xff":
        # new patch format starts with int32 -1 (a morph file's vertex count cannot start with 0xff)
        return "fs_patch"
    if head[:3] == _FS_CURV_MAGIC:
        # new morph layout: magic, vnum, fnum, values per vertex (1), then vnum big-endian floats;
        # the old quad geometry shares this magic but never has this layout
        if len(head) >= 15 and int.from_bytes(head[11:15], "big") == 1:
            return "fs_morph"
        return "fs_quad"
    stripped = head.lstrip()
    if stripped.startswith(b"<?xml") or stripped.startswith(b"<GIFTI"):
        return "gifti"
    if head.startswith(b"ply"):
        return "ply"
    if stripped.startswith(b"OFF"):
        return "off"
    if stripped[:2] in (b"v ", b"vn", b"vt", b"o ", b"g ", b"mt") or stripped.startswith(b"#"):
        return "obj"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if len(head) >= 6:
        vnum = int.from_bytes(head[:3], "big")
        if vnum > 0 and size == 6 + 2 * vnum:
            return "fs_morph_old"
    raise FormatError(
        f"'{path}': unknown or unsupported format (suffix {path.suffix!r}, first bytes {head[:4].hex()}); "
        f"expected one of: {_SUPPORTED}"
    )


def _corrupt(path: Path, what: str, err: BaseException) -> FormatError:
    return FormatError(
        f"'{path}': could not read it as {what}: the file is truncated or corrupt "
        f"({type(err).__name__}: {err}); re-export or re-copy it"
    )


def _nib_load(path: Path, what: str):
    import nibabel as nib

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = nib.load(str(path))
            if hasattr(img, "darrays"):
                [d.data for d in img.darrays]  # GIFTI decodes lazily: force it here
        return img
    except SurfmapError:
        raise
    except PermissionError:
        raise
    except Exception as err:  # nibabel raises many types for corrupt files
        raise _corrupt(path, what, err) from err


def _image_data(img, path: Path, what: str) -> np.ndarray:
    """The data of a nibabel image, read now (nibabel reads lazily): a short file is a FormatError."""
    try:
        return np.asarray(img.dataobj)
    except Exception as err:  # nibabel raises OSError, EOFError, ValueError for truncated data
        raise _corrupt(path, what, err) from err


def file_hemi(path, img=None) -> str | None:
    """The hemisphere a file says it holds: GIFTI ``AnatomicalStructurePrimary`` (``img``), else a
    FreeSurfer (``lh.``/``rh.``), HCP (``.L.``/``.R.``) or BIDS (``hemi-L``/``hemi-R``) file name; None
    when neither tells."""
    structure = None
    if img is not None and hasattr(img, "darrays"):
        structure = _gifti_structure(img)
    elif ".gii" in Path(path).name.lower() and not Path(path).name.lower().endswith(".gz"):
        with contextlib.suppress(OSError):  # the metadata sits in the XML before the (long) data
            found = re.search(rb"AnatomicalStructurePrimary\s*(?:</Name>)?\s*<Value>\s*(?:<!\[CDATA\[)?\s*(\w+)",
                              _head(Path(path), 1 << 16))
            structure = found.group(1).decode() if found else None
    for side, name in _GIFTI_STRUCTURE.items():
        if structure == name:
            return side
    return _name_hemi(Path(path).name)


def _name_hemi(name: str) -> str | None:
    """The hemisphere a FreeSurfer (``lh.``), HCP (``.L.``) or BIDS (``hemi-L``) file name says."""
    low = name.lower()
    if low.startswith("lh.") or ".L." in name or "hemi-L_" in name or "hemi-L." in name:
        return "left"
    if low.startswith("rh.") or ".R." in name or "hemi-R_" in name or "hemi-R." in name:
        return "right"
    return None


def _check_file_hemi(path: Path, hemi, error: type, img=None) -> None:
    """``error`` when ``hemi`` is given and the file says it holds the other hemisphere."""
    if hemi is None:
        return
    want = normalize_hemi(hemi, "hemi", error)
    found = file_hemi(path, img)
    if found is not None and found != want:
        how = ("AnatomicalStructurePrimary " + _GIFTI_STRUCTURE[found]) if img is not None and \
            _gifti_structure(img) in _GIFTI_STRUCTURE.values() else "its name"
        raise error(f"'{path}': the file is for the {found} hemisphere ({how}), but hemi={hemi!r} was requested; "
                    f"pass the {want} hemisphere's file")


def _make_mesh(V, F, path: Path) -> Mesh:
    """Construct the Mesh so that every MeshError names the file."""
    return Mesh(V, F, name=str(path))


def check_metric(values, n_vertices: int, name: str = "values", *, allow_nan: bool = True) -> np.ndarray:
    """Validate a per-vertex metric and return it as a C-contiguous (n_vertices,) float64 array.

    Parameters
    ----------
    values : (n_vertices,) array_like
        One number per vertex; a ``(n_vertices, 1)`` column is accepted.
    n_vertices : int
        Vertex count of the mesh the metric belongs to.
    name : str
        File or argument name, used in messages.
    allow_nan : bool
        NaN marks vertices without a value (e.g. the medial wall in CIFTI); set False to refuse them.

    Returns
    -------
    (n_vertices,) float64

    Raises
    ------
    MetricError
        Not numeric, not one value per vertex, a length other than ``n_vertices``, infinite
        values, or NaN when ``allow_nan`` is False.
    """
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise MetricError(f"{name}: expected numbers, one per vertex; could not convert ({err})") from None
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise MetricError(
            f"{name}: expected one value per vertex, shape ({n_vertices},); found shape {x.shape}. "
            "Select one map (column) first"
        )
    if len(x) != n_vertices:
        raise MetricError(
            f"{name}: expected {n_vertices} values (one per vertex of the mesh); found {len(x)}. "
            "Check that the metric and the surface come from the same subject, hemisphere and mesh "
            "resolution"
        )
    inf = np.isinf(x)
    if inf.any():
        raise MetricError(
            f"{name}: {int(inf.sum())} values are infinite (first: vertex {int(np.flatnonzero(inf)[0])}); "
            "replace them (e.g. with NaN) first"
        )
    if not allow_nan:
        nan = np.isnan(x)
        if nan.any():
            raise MetricError(
                f"{name}: {int(nan.sum())} values are NaN (first: vertex {int(np.flatnonzero(nan)[0])}); "
                "expected a value at every vertex"
            )
    return np.ascontiguousarray(x)


# ---------------------------------------------------------------------------------------------
# surfaces


def read_surface(path, *, add_cras: bool = False) -> Mesh:
    """Read a triangle mesh: FreeSurfer geometry, GIFTI ``.surf.gii`` (``.gii.gz``), OBJ, PLY or OFF.

    Vertices keep the file's order, so per-vertex metric files stay aligned. FreeSurfer quad
    files (old format) are split into triangles as FreeSurfer does; polygons with more than three
    vertices in OBJ/PLY/OFF files are refused (triangulating them silently would change the faces).

    **FreeSurfer coordinates and ``cras``.** FreeSurfer stores surface vertices in "tkregister"
    RAS (surface RAS), centred on the conformed volume; the file's footer holds ``cras``, the
    offset from surface RAS to scanner RAS. By default the coordinates are returned exactly as
    stored (surface RAS, as FreeSurfer's own tools and nilearn's fsaverage files use them). Every
    quantity surfmap computes (lengths, areas, angles, flat maps) is invariant under this
    translation, so it does not change any result. Pass ``add_cras=True`` to get scanner RAS
    (``vertices + cras``), e.g. to overlay the surface on the subject's native-space volume or to
    match GIFTI files written by ``mris_convert --to-scanner``. Files without a footer have no
    ``cras``; ``add_cras=True`` then leaves them unchanged (and logs it).

    Parameters
    ----------
    path : str or os.PathLike
        The surface file.
    add_cras : bool
        FreeSurfer geometry only: add the footer's ``cras`` to the coordinates.

    Returns
    -------
    Mesh
        float64 ``(n, 3)`` vertices, int64 ``(m, 3)`` faces, ``name`` = the path.

    Raises
    ------
    InputFileNotFoundError
        The file does not exist.
    FormatError
        Unknown format, a file holding something else than a surface (e.g. a metric), or a
        truncated or corrupt file.
    MeshError
        Faces index vertices that do not exist, NaN or infinite coordinates, non-triangular faces.

    Examples
    --------
    >>> mesh = read_surface("lh.white")                        # doctest: +SKIP
    >>> mesh = read_surface("sub-01_hemi-L_midthickness.surf.gii")  # doctest: +SKIP
    """
    path = _existing_file(path)
    kind = detect_format(path)
    if kind in ("fs_geometry", "fs_quad"):
        V, F = _read_fs_geometry(path, kind, add_cras)
    elif kind == "gifti":
        V, F = _read_gifti_surface(path)
    elif kind in ("obj", "ply", "off"):
        V, F = _read_trimesh(path, kind)
    elif kind in ("fs_morph", "fs_morph_old", "mgh", "text", "npy"):
        raise FormatError(
            f"'{path}' holds per-vertex values ({kind}), not a surface; read it with read_metric"
        )
    elif kind == "fs_patch":
        raise FormatError(
            f"'{path}' is a FreeSurfer patch (vertex positions without faces); read it with read_patch "
            "together with the full surface"
        )
    else:
        raise FormatError(
            f"'{path}' ({kind}) is not a surface format read_surface supports; expected FreeSurfer "
            "geometry, GIFTI .surf.gii, OBJ, PLY or OFF"
        )
    return _make_mesh(V, F, path)


def _read_fs_geometry(path: Path, kind: str, add_cras: bool):
    from nibabel.freesurfer import read_geometry

    if kind == "fs_geometry":
        _check_fs_geometry_size(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            V, F, info = read_geometry(str(path), read_metadata=True)
    except SurfmapError:
        raise
    except Exception as err:
        raise _corrupt(path, "FreeSurfer geometry", err) from err
    if add_cras:
        cras = info.get("cras") if info else None
        if cras is None:
            log.info("%s: no volume-info footer, so no cras to add; coordinates left as stored", path)
        else:
            V = np.asarray(V, dtype=np.float64) + np.asarray(cras, dtype=np.float64)
    return V, F


def _check_fs_geometry_size(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.read(3)
        f.readline()  # "created by ..." stamp
        f.readline()
        counts = f.read(8)
        offset = f.tell()
    if len(counts) < 8:
        raise FormatError(
            f"'{path}': FreeSurfer geometry file is truncated: it ends inside the header "
            f"({size} bytes); re-copy or re-export it"
        )
    vnum = int.from_bytes(counts[:4], "big", signed=True)
    fnum = int.from_bytes(counts[4:], "big", signed=True)
    need = offset + 12 * vnum + 12 * fnum
    if vnum <= 0 or fnum <= 0 or size < need:
        raise FormatError(
            f"'{path}': FreeSurfer geometry file is truncated or corrupt: its header announces "
            f"{vnum} vertices and {fnum} faces ({need} bytes), the file has {size} bytes; "
            "re-copy or re-export it"
        )


def _read_gifti_surface(path: Path):
    from nibabel.nifti1 import intent_codes

    img = _nib_load(path, "GIFTI")
    if not hasattr(img, "darrays"):
        raise FormatError(f"'{path}': expected a GIFTI file; nibabel read it as {type(img).__name__}")
    pointset = intent_codes.code["NIFTI_INTENT_POINTSET"]
    triangle = intent_codes.code["NIFTI_INTENT_TRIANGLE"]
    P = [d for d in img.darrays if d.intent == pointset]
    T = [d for d in img.darrays if d.intent == triangle]
    if len(P) != 1 or len(T) != 1:
        found = [intent_codes.label[d.intent] for d in img.darrays]
        raise FormatError(
            f"'{path}': expected a GIFTI surface with one POINTSET and one TRIANGLE array; found {found}. "
            "A .shape/.func/.label.gii file holds per-vertex values: read it with read_metric or read_mask"
        )
    return P[0].data, T[0].data


def _read_trimesh(path: Path, kind: str):
    import trimesh

    declared_v, declared_f, obj_vertices = _declared_counts(path, kind)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tm = trimesh.load(str(path), file_type=kind, process=False, maintain_order=True, force="mesh")
    except SurfmapError:
        raise
    except Exception as err:
        if "outside the range of its vertices" in str(err):  # trimesh's OFF reader
            raise MeshError(f"'{path}': faces index vertices that do not exist ({err})") from err
        raise _corrupt(path, kind.upper(), err) from err
    V = np.asarray(getattr(tm, "vertices", np.zeros((0, 3))), dtype=np.float64)
    F = np.asarray(getattr(tm, "faces", np.zeros((0, 3))), dtype=np.int64)
    if declared_v is not None and len(V) != declared_v:
        raise FormatError(
            f"'{path}': the file declares {declared_v} vertices but {len(V)} were read; the file is "
            "corrupt or uses features (per-corner attributes) that would reorder vertices"
        )
    if declared_f is not None and len(F) != declared_f:
        raise MeshError(
            f"'{path}': faces must be triangles: the file has {declared_f} faces, which make {len(F)} "
            "triangles (some faces have more than 3 vertices); triangulate the mesh first"
        )
    if obj_vertices is not None and (
        obj_vertices.shape != V.shape or not np.array_equal(obj_vertices, V, equal_nan=True)
    ):
        raise FormatError(
            f"'{path}': the vertices read do not match the file's 'v' lines in order; the vertex "
            "order would change, which breaks per-vertex metric files"
        )
    return V, F


def _declared_counts(path: Path, kind: str):
    """Vertex/face counts the file itself declares (and the OBJ 'v' lines), to check trimesh."""
    try:
        if kind == "obj":
            verts, n_faces, top = [], 0, 0
            with open(path, "rb") as f:
                for line in f:
                    if line.startswith(b"v "):
                        verts.append([float(x) for x in line.split()[1:4]])
                    elif line.startswith(b"f "):
                        n_faces += 1
                        top = max(top, max(abs(int(t.split(b"/")[0])) for t in line.split()[1:]))
            V = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
            if top > len(V):
                raise MeshError(
                    f"'{path}': faces index vertices that do not exist: the file has {len(V)} vertices "
                    f"and a face uses vertex {top} (1-based); the file is corrupt"
                )
            return len(V), n_faces, V
        if kind == "off":
            with open(path, "rb") as f:
                tokens = []
                for line in f:
                    line = line.split(b"#")[0].strip()
                    if not line:
                        continue
                    tokens.extend(line.split())
                    if len(tokens) >= 3 and tokens[0].upper().endswith(b"OFF"):
                        if len(tokens) >= 4:
                            break
                    elif len(tokens) >= 3:
                        break
            if tokens and tokens[0].upper().endswith(b"OFF"):
                tokens = tokens[1:]
            return int(tokens[0]), int(tokens[1]), None
        if kind == "ply":
            nv = nf = None
            with open(path, "rb") as f:
                for _ in range(200):
                    line = f.readline()
                    if not line or line.strip() == b"end_header":
                        break
                    parts = line.split()
                    if parts[:2] == [b"element", b"vertex"]:
                        nv = int(parts[2])
                    elif parts[:2] == [b"element", b"face"]:
                        nf = int(parts[2])
            return nv, nf, None
    except SurfmapError:
        raise
    except (ValueError, IndexError, OSError) as err:
        raise _corrupt(path, kind.upper(), err) from err
    return None, None, None


def read_patch(path, n_vertices: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a FreeSurfer patch (``lh.cortex.patch.flat``, ``lh.full.patch.3d``).

    A patch stores positions for a subset of the surface's vertices and no faces; its faces are
    those of the full surface whose three vertices are in the patch.

    Parameters
    ----------
    path : str or os.PathLike
        The patch file (big-endian: int32 -1, int32 count, then per vertex int32 signed
        1-based index and 3 float32 coordinates; a negative index marks a border vertex).
    n_vertices : int, optional
        Vertex count of the full surface, to check the indices.

    Returns
    -------
    vertices : (k,) int64
        0-based indices into the full surface, in the file's order.
    coords : (k, 3) float64
        Patch coordinates (z = 0 for a flat patch).

    Raises
    ------
    InputFileNotFoundError, FormatError, MaskError
        Missing, not a patch or truncated; indices beyond ``n_vertices``.
    """
    path = _existing_file(path)
    raw = path.read_bytes()
    if len(raw) < 8 or int.from_bytes(raw[:4], "big", signed=True) != -1:
        raise FormatError(
            f"'{path}': expected a FreeSurfer patch file (new format, starting with int32 -1); "
            f"found first bytes {raw[:4].hex()}"
        )
    k = int.from_bytes(raw[4:8], "big", signed=True)
    rec = np.dtype([("vno", ">i4"), ("xyz", ">f4", 3)])
    if k <= 0 or len(raw) < 8 + k * rec.itemsize:
        raise FormatError(
            f"'{path}': FreeSurfer patch is truncated or corrupt: it announces {k} vertices "
            f"({8 + max(k, 0) * rec.itemsize} bytes), the file has {len(raw)} bytes"
        )
    data = np.frombuffer(raw, dtype=rec, count=k, offset=8)
    vno = np.abs(data["vno"].astype(np.int64)) - 1
    if (vno < 0).any():
        raise FormatError(f"'{path}': FreeSurfer patch holds a vertex number 0 (numbers are 1-based)")
    if n_vertices is not None and vno.max() >= n_vertices:
        raise MaskError(
            f"'{path}': the patch uses vertex {int(vno.max())}, but the surface has {n_vertices} vertices; "
            "check the hemisphere and subject"
        )
    return vno, np.ascontiguousarray(data["xyz"], dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# metrics


def read_metric(path, hemi: str | None = None, *, map_index: int | str = 0, n_vertices: int | None = None):
    """Read one value per vertex.

    Supported: FreeSurfer morph files (``lh.thickness``, ``lh.sulc``, ``lh.curv``, ``lh.area``;
    new and old format), ``.mgh``/``.mgz`` and NIfTI files holding one value per vertex,
    GIFTI ``.shape.gii``/``.func.gii``/``.label.gii`` (and ``.gii.gz``), CIFTI-2 (``.dscalar.nii``,
    ``.dtseries.nii``, ``.dlabel.nii``; ``hemi`` required), and plain numbers
    (``.txt``/``.csv``/``.1D``, one value per line, ``.npy``).

    CIFTI files hold the cortex of one or both hemispheres without the medial wall. The chosen
    hemisphere is expanded to the full surface using the vertex count in the file's header; the
    vertices the file leaves out become NaN.

    Parameters
    ----------
    path : str or os.PathLike
        The metric file.
    hemi : {"left", "right", "lh", "rh"}, optional
        CIFTI: which cortex structure to read (required). GIFTI: checked against the file's
        ``AnatomicalStructurePrimary`` when it has one. FreeSurfer, MGH, text and NumPy files:
        checked against an ``lh.``/``rh.`` (or HCP ``.L.``/``.R.``) file name.
    map_index : int or str
        Which map to read from a file with several: the GIFTI data array, the CIFTI map (row; a
        str selects a dscalar map by name), the column of an MGH/NIfTI/text file with several
        frames. Default: the first.
    n_vertices : int, optional
        When given, the length is checked against it (:func:`check_metric`).

    Returns
    -------
    (n,) float64

    Raises
    ------
    InputFileNotFoundError
        The file does not exist.
    FormatError
        Unknown format, a surface file, a truncated or corrupt file, a map that does not exist.
    MetricError
        CIFTI without ``hemi`` or without the requested hemisphere; a GIFTI file of the other
        hemisphere; a length other than ``n_vertices``; infinite values.

    Examples
    --------
    >>> thickness = read_metric("lh.thickness")                               # doctest: +SKIP
    >>> myelin = read_metric("sub.MyelinMap.32k_fs_LR.dscalar.nii", hemi="left")  # doctest: +SKIP
    """
    path = _existing_file(path)
    if hemi is not None:
        normalize_hemi(hemi)
    kind = detect_format(path)
    if kind in ("fs_morph", "fs_morph_old", "mgh", "text", "npy"):
        _check_file_hemi(path, hemi, MetricError)
    if kind == "fs_morph":
        x = _read_fs_morph(path)
    elif kind == "fs_morph_old":
        x = _read_fs_morph_old(path)
    elif kind == "gifti":
        x = _read_gifti_values(path, hemi, map_index)
    elif kind == "nifti":
        x = _read_nifti_values(path, hemi, map_index)
    elif kind == "mgh":
        x = _select_column(_squeeze_values(_image_data(_nib_load(path, "MGH"), path, "MGH"), path), map_index, path)
    elif kind == "text":
        x = _read_text(path, map_index)
    elif kind == "npy":
        try:
            x = np.load(path, allow_pickle=False)
        except Exception as err:
            raise _corrupt(path, "a NumPy .npy array", err) from err
        x = _select_column(_squeeze_values(x, path), map_index, path)
    elif kind in ("fs_geometry", "fs_quad", "obj", "ply", "off", "fs_patch"):
        raise FormatError(f"'{path}' is a surface ({kind}), not per-vertex values; read it with read_surface")
    else:
        raise FormatError(
            f"'{path}' ({kind}) is not a metric format read_metric supports; for FreeSurfer .label/.annot "
            "files use read_mask"
        )
    return check_metric(x, len(x) if n_vertices is None else n_vertices, str(path))


def _read_fs_morph(path: Path) -> np.ndarray:
    from nibabel.freesurfer import read_morph_data

    size = path.stat().st_size
    head = _head(path, 15)
    if len(head) < 15:
        raise FormatError(f"'{path}': FreeSurfer morph file is truncated: {size} bytes, less than its header")
    vnum = int.from_bytes(head[3:7], "big", signed=True)
    if vnum <= 0 or size < 15 + 4 * vnum:
        raise FormatError(
            f"'{path}': FreeSurfer morph file is truncated or corrupt: its header announces {vnum} values "
            f"({15 + 4 * max(vnum, 0)} bytes), the file has {size} bytes; re-copy it"
        )
    try:
        return read_morph_data(str(path)).astype(np.float64)
    except Exception as err:
        raise _corrupt(path, "a FreeSurfer morph file", err) from err


def _read_fs_morph_old(path: Path) -> np.ndarray:
    from nibabel.freesurfer import read_morph_data

    try:
        return read_morph_data(str(path)).astype(np.float64)
    except Exception as err:
        raise _corrupt(path, "an old-format FreeSurfer morph file", err) from err


def _squeeze_values(x, path: Path) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 0:
        raise FormatError(f"'{path}': expected one value per vertex; found a single number")
    # drop singleton axes but keep the first (vertex) axis
    shape = [x.shape[0]] + [s for s in x.shape[1:] if s != 1]
    if len(shape) > 2:
        raise FormatError(
            f"'{path}': expected one value per vertex (n,) or several maps (n, k); found shape {x.shape}. "
            "Is this a volume rather than surface data?"
        )
    return x.reshape(shape)


def _select_column(x: np.ndarray, map_index, path: Path) -> np.ndarray:
    if x.ndim == 1:
        if map_index not in (0, None):
            raise FormatError(f"'{path}': holds a single map; map_index={map_index!r} does not exist")
        return x
    if not isinstance(map_index, (int, np.integer)) or not -x.shape[1] <= map_index < x.shape[1]:
        raise FormatError(
            f"'{path}': holds {x.shape[1]} maps (columns); map_index should be an int in "
            f"[0, {x.shape[1] - 1}]; {map_index!r} was provided"
        )
    return x[:, map_index]


def _read_text(path: Path, map_index) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = np.loadtxt(path, delimiter="," if path.name.lower().endswith(".csv") else None, ndmin=1)
    except Exception as err:
        raise _corrupt(path, "plain numbers (one value per line)", err) from err
    if x.size == 0:
        raise FormatError(f"'{path}': holds no numbers; expected one value per vertex")
    return _select_column(_squeeze_values(x, path), map_index, path)


def _gifti_structure(img) -> str | None:
    meta = {}
    for d in [img] + list(img.darrays):
        try:
            meta.update(dict(d.meta))
        except Exception:  # pragma: no cover - very old nibabel
            pass
    return meta.get("AnatomicalStructurePrimary")


def _read_gifti_values(path: Path, hemi, map_index) -> np.ndarray:
    from nibabel.nifti1 import intent_codes

    img = _nib_load(path, "GIFTI")
    geometry = {intent_codes.code["NIFTI_INTENT_POINTSET"], intent_codes.code["NIFTI_INTENT_TRIANGLE"]}
    arrays = [d for d in img.darrays if d.intent not in geometry]
    if not img.darrays:
        raise FormatError(f"'{path}': the GIFTI file holds no data array; expected per-vertex values")
    if not arrays:
        raise FormatError(
            f"'{path}': holds a surface (POINTSET/TRIANGLE arrays), not per-vertex values; "
            "read it with read_surface"
        )
    if hemi is not None:
        structure = _gifti_structure(img)
        want = _GIFTI_STRUCTURE[normalize_hemi(hemi)]
        if structure in _GIFTI_STRUCTURE.values() and structure != want:
            raise MetricError(
                f"'{path}': the file is for {structure} (AnatomicalStructurePrimary), but hemi={hemi!r} "
                "was requested; pass the other hemisphere's file"
            )
    if not isinstance(map_index, (int, np.integer)) or not -len(arrays) <= map_index < len(arrays):
        raise FormatError(
            f"'{path}': holds {len(arrays)} data array(s); map_index should be an int in "
            f"[0, {len(arrays) - 1}]; {map_index!r} was provided"
        )
    x = np.asarray(arrays[map_index].data)
    return _select_column(_squeeze_values(x, path), 0, path)


def _read_nifti_values(path: Path, hemi, map_index) -> np.ndarray:
    img = _nib_load(path, "NIfTI/CIFTI")
    try:
        from nibabel.cifti2 import Cifti2Image
    except ImportError:  # pragma: no cover
        Cifti2Image = ()
    if isinstance(img, Cifti2Image):
        return _read_cifti(img, path, hemi, map_index)
    # FreeSurfer tools write surface data as (n, 1, 1[, k]) NIfTI volumes
    return _select_column(_squeeze_values(_image_data(img, path, "NIfTI"), path), map_index, path)


def _read_cifti(img, path: Path, hemi, map_index) -> np.ndarray:
    from nibabel import cifti2

    if hemi is None:
        raise MetricError(
            f"'{path}': a CIFTI file can hold both hemispheres; pass hemi='left' or hemi='right'"
        )
    side = normalize_hemi(hemi)
    try:
        row_axis = img.header.get_axis(0)
        bm = img.header.get_axis(1)
        data = np.asarray(img.dataobj)
    except Exception as err:
        raise _corrupt(path, "CIFTI-2", err) from err
    if not isinstance(bm, cifti2.BrainModelAxis):
        raise FormatError(
            f"'{path}': expected a CIFTI file with brain models along its columns (dscalar, dtseries, "
            f"dlabel); found {type(bm).__name__}"
        )
    structure = _CIFTI_STRUCTURE[side]
    found = [name for name, _, _ in bm.iter_structures()]
    if structure not in found:
        raise MetricError(
            f"'{path}': no {structure} in the file (hemi={hemi!r}); it holds {found}. "
            "Pass the other hemisphere or a file that holds this one"
        )
    names = list(getattr(row_axis, "name", []))
    if isinstance(map_index, str):
        if map_index not in names:
            raise FormatError(f"'{path}': no map named {map_index!r}; the maps are {names}")
        row = names.index(map_index)
    elif isinstance(map_index, (int, np.integer)) and -data.shape[0] <= map_index < data.shape[0]:
        row = int(map_index)
    else:
        raise FormatError(
            f"'{path}': holds {data.shape[0]} map(s); map_index should be an int in "
            f"[0, {data.shape[0] - 1}] or a map name; {map_index!r} was provided"
        )
    for name, slc, sub in bm.iter_structures():
        if name != structure:
            continue
        n = int(bm.nvertices[structure])
        vertex = np.asarray(sub.vertex, dtype=np.int64)
        if len(vertex) and (vertex.min() < 0 or vertex.max() >= n):
            raise FormatError(
                f"'{path}': {structure} uses vertex {int(vertex.max())} but its surface has {n} vertices; "
                "the file is corrupt"
            )
        out = np.full(n, np.nan)
        out[vertex] = data[row, slc]
        return out
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# masks


def read_mask(path, n_vertices: int, *, label: str | Sequence[str] = "cortex", hemi: str | None = None):
    """Read a vertex mask (True = keep, e.g. the cortex without the medial wall).

    - FreeSurfer ``.label`` (``lh.cortex.label``): the listed vertices.
    - GIFTI label files (``.label.gii``) and FreeSurfer ``.annot``: the vertices whose label name
      matches ``label``: case-insensitive substring match, so ``"cortex"`` selects
      ``"CORTEX_LEFT"`` and ``"Cortex"``; a sequence selects the union of its names. The
      ``"???"``/``"Unknown"`` label never matches unless named exactly.
    - Anything :func:`read_metric` reads (``.shape.gii`` such as HCP's ``atlasroi``, CIFTI with
      ``hemi``, text/NumPy files): values must be 0/1 (or boolean); NaN (a vertex absent from a
      CIFTI file) counts as 0.

    Parameters
    ----------
    path : str or os.PathLike
        The mask file.
    n_vertices : int
        Vertex count of the surface the mask applies to.
    label : str or sequence of str
        Label names to select (GIFTI label and annot files only).
    hemi : str, optional
        The hemisphere of the surface: selects it in CIFTI files, and a file that says it holds
        the other one (GIFTI ``AnatomicalStructurePrimary``, an ``lh.``/``rh.`` name) is refused.

    Returns
    -------
    (n_vertices,) bool

    Raises
    ------
    InputFileNotFoundError, FormatError
        Missing, unknown or corrupt file.
    MaskError
        Wrong length, vertex indices beyond ``n_vertices``, no label matching ``label``, values
        other than 0/1, or a mask that selects no vertex. (A mask selecting every vertex of a
        closed surface is refused later, by :func:`surfmap.cut`.)
    """
    path = _existing_file(path)
    n_vertices = _check_n_vertices(n_vertices)
    if hemi is not None:
        normalize_hemi(hemi, "hemi", MaskError)
    kind = detect_format(path)
    if kind in ("fs_label", "fs_annot"):
        _check_file_hemi(path, hemi, MaskError)
    if kind == "fs_label":
        keep = _read_fs_label(path, n_vertices)
    elif kind == "fs_annot":
        keep = _read_annot(path, n_vertices, label)
    elif kind == "gifti" and _is_gifti_label(img := _nib_load(path, "GIFTI")):
        keep = _read_gifti_label(img, path, n_vertices, label, hemi)
    else:
        try:
            x = read_metric(path, hemi=hemi, n_vertices=n_vertices)
        except MetricError as err:
            raise MaskError(str(err)) from err
        finite = np.nan_to_num(x, nan=0.0)
        if not np.isin(finite, (0.0, 1.0)).all():
            bad = np.unique(finite[~np.isin(finite, (0.0, 1.0))])
            raise MaskError(
                f"'{path}': expected a 0/1 mask; found other values (e.g. {bad[:5].tolist()}). "
                "Threshold the metric yourself, or pass a label file"
            )
        keep = finite == 1.0
    if not keep.any():
        raise MaskError(
            f"'{path}': the mask selects no vertex of the {n_vertices}; expected the vertices to keep "
            "(the cortex). Check the label name or the file"
        )
    return keep


def _check_n_vertices(n_vertices) -> int:
    if isinstance(n_vertices, bool) or not isinstance(n_vertices, (int, np.integer)) or n_vertices <= 0:
        raise MaskError(
            f"'n_vertices' should be a positive int (the surface's vertex count); {n_vertices!r} was provided"
        )
    return int(n_vertices)


def _read_fs_label(path: Path, n_vertices: int) -> np.ndarray:
    from nibabel.freesurfer import read_label

    try:
        with open(path, "rb") as f:
            f.readline()  # "#!ascii label ..." comment
            declared = int(f.readline().split()[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            idx = np.asarray(read_label(str(path)), dtype=np.int64).reshape(-1)
    except Exception as err:
        raise _corrupt(path, "a FreeSurfer label", err) from err
    if len(idx) != declared:
        raise FormatError(
            f"'{path}': FreeSurfer label is truncated or corrupt: its header announces {declared} vertices, "
            f"{len(idx)} were read; re-copy or re-export it"
        )
    if len(idx) and (idx.min() < 0 or idx.max() >= n_vertices):
        raise MaskError(
            f"'{path}': the label lists vertex {int(idx.max() if idx.max() >= n_vertices else idx.min())}, "
            f"but the surface has {n_vertices} vertices; check the hemisphere, subject and mesh resolution"
        )
    keep = np.zeros(n_vertices, dtype=bool)
    keep[idx] = True
    return keep


def _label_keys(names: dict, label, path: Path) -> list:
    wanted = [label] if isinstance(label, str) else list(label)
    if not wanted or not all(isinstance(w, str) and w for w in wanted):
        raise MaskError(f"'label' should be a label name or a list of names; {label!r} was provided")
    keys = []
    for key, name in names.items():
        name_l = (name or "").lower()
        for w in wanted:
            w_l = w.lower()
            if name_l == w_l or (w_l in name_l and name_l not in ("???", "unknown")):
                keys.append(key)
                break
    if not keys:
        raise MaskError(
            f"'{path}': no label matches {wanted} (case-insensitive substring); the labels are "
            f"{sorted(str(v) for v in names.values())}. Pass label= one of them"
        )
    return keys


def _is_gifti_label(img) -> bool:
    from nibabel.nifti1 import intent_codes

    code = intent_codes.code["NIFTI_INTENT_LABEL"]
    return any(d.intent == code for d in img.darrays)


def _read_gifti_label(img, path: Path, n_vertices: int, label, hemi) -> np.ndarray:
    from nibabel.nifti1 import intent_codes

    if hemi is not None:
        structure = _gifti_structure(img)
        want = _GIFTI_STRUCTURE[normalize_hemi(hemi)]
        if structure in _GIFTI_STRUCTURE.values() and structure != want:
            raise MaskError(f"'{path}': the file is for {structure}, but hemi={hemi!r} was requested")
    code = intent_codes.code["NIFTI_INTENT_LABEL"]
    d = next(d for d in img.darrays if d.intent == code)
    values = _squeeze_values(np.asarray(d.data), path)
    if values.ndim != 1 or len(values) != n_vertices:
        raise MaskError(
            f"'{path}': expected {n_vertices} labels (one per vertex); found shape {values.shape}. "
            "Check the hemisphere and mesh resolution"
        )
    names = img.labeltable.get_labels_as_dict()
    return np.isin(values, _label_keys(names, label, path))


def _read_annot(path: Path, n_vertices: int, label) -> np.ndarray:
    from nibabel.freesurfer import read_annot

    try:
        labels, _ctab, names = read_annot(str(path))
    except Exception as err:
        raise _corrupt(path, "a FreeSurfer annotation", err) from err
    if len(labels) != n_vertices:
        raise MaskError(
            f"'{path}': expected {n_vertices} labels (one per vertex); found {len(labels)}. "
            "Check the hemisphere and mesh resolution"
        )
    table = {i: (n.decode() if isinstance(n, bytes) else str(n)) for i, n in enumerate(names)}
    return np.isin(labels, _label_keys(table, label, path))


# ---------------------------------------------------------------------------------------------
# writers (GIFTI, atomic)


def _target(path, kinds: tuple[str, ...], what: str) -> Path:
    try:
        path = Path(os.fspath(path))
    except TypeError:
        raise FormatError(f"expected a file path (str or os.PathLike); found {type(path).__name__}") from None
    name = path.name.lower()
    if not (name.endswith(".gii") or name.endswith(".gii.gz")):
        raise FormatError(
            f"'{path}': {what} writes GIFTI; name the file with one of {list(kinds)} (optionally + '.gz')"
        )
    if not path.parent.exists():
        raise InputFileNotFoundError(
            f"'{path}': the folder {str(path.parent)!r} does not exist; create it first"
        )
    if path.is_dir():
        raise FormatError(f"'{path}' is a folder; expected a file name")
    return path


def _gifti_bytes(img, path: Path) -> bytes:
    data = img.to_bytes()
    if path.name.lower().endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    return data


def _meta(hemi, extra: dict | None = None):
    from nibabel.gifti import GiftiMetaData

    meta = dict(extra or {})
    if hemi is not None:
        meta["AnatomicalStructurePrimary"] = _GIFTI_STRUCTURE[normalize_hemi(hemi)]
    return GiftiMetaData(meta)


def _writer_hemi(hemi, path: Path) -> str | None:
    """The hemisphere a written file records: ``hemi``, else the one its name says (``lh.``, ``.L.``);
    Workbench shows a file without one as ``Structure: Invalid`` and cannot attach it to a surface."""
    if hemi is not None:
        return normalize_hemi(hemi, "hemi", FormatError)
    side = _name_hemi(path.name)
    if side is None:
        log.warning("%s: no hemisphere given and none in the file name (lh., .L., hemi-L); Workbench will show "
                    "'Structure: Invalid'. Pass hemi='left' or hemi='right'", path)
    return side


_GEOMETRIC_TYPES = ("Anatomical", "Reconstruction", "Inflated", "VeryInflated", "Spherical", "SemiSpherical",
                    "Ellipsoid", "Flat", "Hull")
_SECONDARY = {"white": "GrayWhite", "pial": "Pial", "midthickness": "MidThickness"}


def write_surface(mesh: Mesh, path, *, hemi: str | None = None, geometric_type: str = "Anatomical",
                  secondary: str | None = None) -> Path:
    """Write a mesh as a GIFTI surface (``.surf.gii``), readable by Connectome Workbench and FreeSurfer.

    Coordinates are stored as float32 (``NIFTI_TYPE_FLOAT32``, ``NIFTI_INTENT_POINTSET``) and
    faces as int32 (``NIFTI_INTENT_TRIANGLE``), the types these viewers expect; float64
    coordinates are therefore rounded to float32. The file is written to a temporary name in the
    same folder and renamed, so an interrupted write leaves no partial file.

    Parameters
    ----------
    mesh : Mesh
        The surface.
    path : str or os.PathLike
        Target, ending in ``.gii`` (``.surf.gii`` recommended) or ``.gii.gz``.
    hemi : {"left", "right"}, optional
        Recorded as ``AnatomicalStructurePrimary`` (CortexLeft/CortexRight) for Workbench; default:
        the hemisphere the file name says (``lh.``, ``.L.``), else none (a warning is logged).
    geometric_type : str
        ``GeometricType`` of the coordinates: ``"Anatomical"`` (default), ``"Spherical"``,
        ``"Flat"``, ``"Inflated"``, ... (Workbench picks its views from it).
    secondary : str, optional
        ``AnatomicalStructureSecondary``: ``"GrayWhite"``, ``"Pial"``, ``"MidThickness"`` (or the
        surface names ``white``, ``pial``, ``midthickness``).

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    FormatError
        A name that is not GIFTI.
    ParameterError
        An unknown ``geometric_type``.
    MeshError
        ``mesh`` is not a :class:`Mesh` and cannot be made one, or has more than 2**31 vertices.
    InputFileNotFoundError
        The target folder does not exist.
    """
    from nibabel.gifti import GiftiDataArray, GiftiImage

    path = _target(path, (".surf.gii",), "write_surface")
    if not isinstance(mesh, Mesh):
        raise MeshError(f"'mesh' should be a surfmap.Mesh; {type(mesh).__name__} was provided")
    if mesh.n_vertices >= 2**31:
        raise MeshError(f"{mesh.name}: too many vertices ({mesh.n_vertices}) for GIFTI int32 faces")
    if geometric_type not in _GEOMETRIC_TYPES:
        raise ParameterError(f"geometric_type: expected one of {list(_GEOMETRIC_TYPES)}; found {geometric_type!r}")
    hemi = _writer_hemi(hemi, path)
    secondary = {"GeometricType": geometric_type,
                 **({"AnatomicalStructureSecondary": _SECONDARY.get(secondary, secondary)} if secondary else {})}
    img = GiftiImage(meta=_meta(hemi))
    img.add_gifti_data_array(
        GiftiDataArray(
            np.ascontiguousarray(mesh.vertices, dtype=np.float32),
            intent="NIFTI_INTENT_POINTSET",
            datatype="NIFTI_TYPE_FLOAT32",
            meta=_meta(hemi, secondary),
        )
    )
    img.add_gifti_data_array(
        GiftiDataArray(
            np.ascontiguousarray(mesh.faces, dtype=np.int32),
            intent="NIFTI_INTENT_TRIANGLE",
            datatype="NIFTI_TYPE_INT32",
        )
    )
    atomic_write_bytes(path, _gifti_bytes(img, path), fsync=True)
    return path


_INTENTS = {
    "shape": "NIFTI_INTENT_SHAPE",
    "none": "NIFTI_INTENT_NONE",
    "func": "NIFTI_INTENT_NONE",
    "normal": "NIFTI_INTENT_NORMAL",
    "zscore": "NIFTI_INTENT_ZSCORE",
    "tstat": "NIFTI_INTENT_TTEST",
    "estimate": "NIFTI_INTENT_ESTIMATE",
}


def write_metric(values, path, *, intent: str = "shape", hemi: str | None = None, names=None) -> Path:
    """Write per-vertex values as a GIFTI metric file (``.shape.gii`` / ``.func.gii``).

    Values are stored as float32 (``NIFTI_TYPE_FLOAT32``, what Workbench expects); NaN is kept.
    ``(n, k)`` input writes ``k`` data arrays (maps). The write is atomic (temporary name in the
    same folder, then rename).

    Parameters
    ----------
    values : (n,) or (n, k) array_like
        One value (or ``k`` values) per vertex.
    path : str or os.PathLike
        Target ending in ``.gii`` (``.shape.gii`` or ``.func.gii`` recommended) or ``.gii.gz``.
    intent : str
        ``"shape"`` (NIFTI_INTENT_SHAPE, for thickness, curvature, ...), ``"none"``/``"func"``
        (NIFTI_INTENT_NONE), ``"normal"``, ``"zscore"``, ``"tstat"``, ``"estimate"``, or a
        ``NIFTI_INTENT_*`` name.
    hemi : {"left", "right"}, optional
        Recorded as ``AnatomicalStructurePrimary``; default: the hemisphere the file name says
        (``lh.``, ``.L.``), else none (a warning is logged: Workbench then shows ``Invalid``).
    names : sequence of str, optional
        One name per map, stored as each array's ``Name`` metadata.

    Returns
    -------
    Path

    Raises
    ------
    FormatError
        A name that is not GIFTI, or an unknown ``intent``.
    MetricError
        Values that are not numeric, not 1-D/2-D, empty or infinite.
    """
    from nibabel.gifti import GiftiDataArray, GiftiImage
    from nibabel.nifti1 import intent_codes

    path = _target(path, (".shape.gii", ".func.gii"), "write_metric")
    code = _INTENTS.get(intent.lower(), intent) if isinstance(intent, str) else intent
    if code not in intent_codes.code:
        raise FormatError(
            f"'intent' should be one of {sorted(_INTENTS)} or a NIFTI_INTENT_* name; {intent!r} was provided"
        )
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise MetricError(f"'values' should be numbers, one per vertex; could not convert ({err})") from None
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise MetricError(f"'values' should have shape (n,) or (n, k); found {np.shape(values)}")
    for j in range(x.shape[1]):
        check_metric(x[:, j], x.shape[0], "values")
    if names is not None and len(names) != x.shape[1]:
        raise MetricError(f"'names' should hold {x.shape[1]} names (one per map); found {len(names)}")
    hemi = _writer_hemi(hemi, path)
    img = GiftiImage(meta=_meta(hemi))
    for j in range(x.shape[1]):
        meta = {"Name": str(names[j])} if names is not None else None
        img.add_gifti_data_array(
            GiftiDataArray(
                np.ascontiguousarray(x[:, j], dtype=np.float32),
                intent=code,
                datatype="NIFTI_TYPE_FLOAT32",
                meta=_meta(None, meta),
            )
        )
    atomic_write_bytes(path, _gifti_bytes(img, path), fsync=True)
    return path


def write_label(labels, path, *, names: dict | None = None, hemi: str | None = None,
                map_name: str | None = None) -> Path:
    """Write integer labels per vertex as a GIFTI label file (``.label.gii``), with its label table.

    Parameters
    ----------
    labels : (n,) array_like of int
        One label key per vertex (e.g. from a ``method="nearest"`` :class:`~surfmap.Resampler`, or a
        0/1 cortex mask).
    path : str or os.PathLike
        Target ending in ``.label.gii``.
    names : dict of int to str, optional
        Name of each key; default ``"???"`` for 0 and ``"label_<key>"`` for the others. Colours
        are spread over a colour map (key 0 transparent).
    hemi : {"left", "right"}, optional
        ``AnatomicalStructurePrimary``; default: from the file name.
    map_name : str, optional
        The map's ``Name``.

    Returns
    -------
    Path

    Raises
    ------
    FormatError
        A name that does not end in ``.label.gii``.
    MetricError
        Values that are not integers (or bool), or not 1-D.
    """
    from nibabel.gifti import GiftiDataArray, GiftiImage, GiftiLabel, GiftiLabelTable

    path = _target(path, (".label.gii",), "write_label")
    if not path.name.lower().endswith((".label.gii", ".label.gii.gz")):
        raise FormatError(f"'{path}': write_label writes GIFTI label files; name it *.label.gii")
    x = np.asarray(labels)
    if x.dtype == bool:
        x = x.astype(np.int32)
    if x.ndim != 1 or x.size == 0:
        raise MetricError(f"'labels' should be one integer per vertex, shape (n,); found shape {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        if not (np.issubdtype(x.dtype, np.floating) and np.all(np.isfinite(x)) and np.all(x == np.round(x))):
            raise MetricError("'labels' should be integers (label keys); found non-integer values. Resample "
                              "labels with method='nearest'")
    x = x.astype(np.int32)
    keys = np.unique(x)
    names = dict(names or {})
    table = GiftiLabelTable()
    for i, key in enumerate(keys):
        lab = GiftiLabel(key=int(key))
        lab.label = str(names.get(int(key), "???" if key == 0 else f"label_{int(key)}"))
        hue = (i + 1) / (len(keys) + 1)
        lab.red, lab.green, lab.blue = (float(0.5 + 0.5 * np.cos(2 * np.pi * (hue + k / 3))) for k in range(3))
        lab.alpha = 0.0 if key == 0 else 1.0
        table.labels.append(lab)
    img = GiftiImage(meta=_meta(_writer_hemi(hemi, path)), labeltable=table)
    img.add_gifti_data_array(GiftiDataArray(x, intent="NIFTI_INTENT_LABEL", datatype="NIFTI_TYPE_INT32",
                                            meta=_meta(None, {"Name": map_name} if map_name else None)))
    atomic_write_bytes(path, _gifti_bytes(img, path), fsync=True)
    return path


def flat_surface(fm, n_vertices: int | None = None) -> Mesh:
    """A flat map as a surface of the original mesh: ``(x, y, 0)`` per vertex, the cut's faces only.

    Vertices keep the original mesh's count and order (``fm.vertex_map``), as Workbench needs to
    show any metric of that mesh on it, like HCP's own ``*.flat.32k_fs_LR.surf.gii``; vertices
    left out of the cut (the medial wall) sit at the origin and belong to no face. Vertices that
    ``cut`` inserted (chord midpoints) are left out and their faces restored
    (:meth:`FlatMap.original_faces`). ``x, y`` are ``uv`` centred on the origin and scaled so that
    the flat area equals the 3D area of the cut (mm when the surface is in mm; 100 mm a side when
    the map does not carry its 3D vertices).

    Parameters
    ----------
    fm : FlatMap
    n_vertices : int, optional
        The original mesh's vertex count; default ``fm.info["n_original"]``.

    Returns
    -------
    Mesh

    Raises
    ------
    MeshError
        The count is unknown (a map of an older surfmap: pass it) or smaller than the map needs.
    """
    from .mesh import face_areas

    n = n_vertices if n_vertices is not None else (fm.info or {}).get("n_original")
    vmap = np.asarray(fm.vertex_map, dtype=np.int64)
    if n is None:
        raise MeshError("flat_surface: the flat map does not record its mesh's vertex count (made by an older "
                        "surfmap); pass n_vertices= (the vertex count of the surface given to flatten)")
    n = int(n)
    top = int(vmap.max())
    if n <= top:
        raise MeshError(f"n_vertices: the map indexes original vertex {top}; found n_vertices={n}. Pass the "
                        "vertex count of the surface given to flatten")
    scale = 100.0
    if fm.vertices is not None:
        area3 = float(face_areas(fm.vertices, fm.faces).sum())
        area2 = float(np.abs(fm.signed_areas()).sum())
        if area3 > 0 and area2 > 0:
            scale = float(np.sqrt(area3 / area2))
    V = np.zeros((n, 3))
    k = len(vmap)
    first = np.unique(vmap, return_index=True)[1]  # an original vertex copied by the cut keeps its first copy
    V[vmap[first], :2] = (fm.uv[:k][first] - 0.5) * scale
    F = fm.original_faces()
    F = F[(F[:, 0] != F[:, 1]) & (F[:, 1] != F[:, 2]) & (F[:, 0] != F[:, 2])]
    return Mesh(V, F, name="flat")


def write_flat_surface(fm, path, *, hemi: str | None = None, n_vertices: int | None = None) -> Path:
    """Write a flat map as a Workbench flat surface (``*.flat.surf.gii``, ``GeometricType`` Flat).

    See :func:`flat_surface` for its vertices and faces; ``hemi`` is recorded as
    ``AnatomicalStructurePrimary`` (default: from the file name).
    """
    return write_surface(flat_surface(fm, n_vertices), path, hemi=hemi, geometric_type="Flat")
