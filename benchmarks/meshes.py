"""The meshes the benchmarks run on: template cortices, their midpoint refinements, FreeSurfer's flat patch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from surfmap.mesh import Mesh, cut

HEMIS = ("left", "right")
TEMPLATES = ("fsaverage5", "fslr32k")


@dataclass(frozen=True, eq=False)
class Case:
    """One mesh to flatten: the whole hemisphere, its cortex mask and the cortex disk.

    Attributes
    ----------
    name : str
        e.g. ``"fslr32k-left"`` or ``"fslr32k-left-x4"``.
    mesh : Mesh
        The whole surface (for ``flatten``, which cuts it itself).
    keep : (n,) bool
        Cortex mask of ``mesh``.
    disk : Mesh
        The cortex cut to a disk (vertices a subsequence of ``mesh``'s).
    vertex_map : (k,) int64
        ``disk.vertices[i] == mesh.vertices[vertex_map[i]]``.
    """

    name: str
    mesh: Mesh
    keep: np.ndarray
    disk: Mesh
    vertex_map: np.ndarray

    @property
    def n(self) -> int:
        return self.disk.n_vertices

    def save(self, path: Path) -> Path:
        np.savez(
            path, name=np.array(self.name), V=self.mesh.vertices, F=self.mesh.faces, keep=self.keep,
            dV=self.disk.vertices, dF=self.disk.faces, vmap=self.vertex_map,
        )
        return path

    @classmethod
    def load(cls, path) -> "Case":
        with np.load(path) as z:
            name = str(z["name"])
            return cls(name, Mesh(z["V"], z["F"], name=name), z["keep"].astype(bool),
                       Mesh(z["dV"], z["dF"], name=name + " cortex"), z["vmap"].astype(np.int64))


def _nilearn_fsaverage5_dir() -> Path:
    import nilearn.datasets

    return Path(nilearn.datasets.__file__).parent / "data" / "fsaverage5"


def _gifti(path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    g = nib.load(str(path))
    return g.darrays[0].data.astype(np.float64), g.darrays[1].data.astype(np.int64)


def load_hemisphere(template: str, hemi: str) -> tuple[Mesh, np.ndarray]:
    """Surface and cortex mask of a template hemisphere (:func:`surfmap.load_template`'s defaults:
    fsaverage5 white, fs_LR 32k midthickness)."""
    from surfmap import load_template

    h = load_template(template, hemi)
    return h.mesh, np.asarray(h.cortex, dtype=bool)


def template_case(template: str, hemi: str) -> Case:
    mesh, keep = load_hemisphere(template, hemi)
    c = cut(mesh, keep)
    return Case(f"{template}-{hemi}", mesh, keep, c.mesh, np.asarray(c.vertex_map, dtype=np.int64))


def midpoint_subdivide(V: np.ndarray, F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One 1-to-4 midpoint subdivision (flat: new vertices at edge midpoints).

    Parameters
    ----------
    V : (n, 3) float64
    F : (m, 3) int64

    Returns
    -------
    V2 : (n + n_edges, 3) float64
        The original vertices first, in their order, then one midpoint per edge (edges sorted
        by (min index, max index)).
    F2 : (4 m, 3) int64
        Each face (a, b, c) becomes (a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca): orientation kept.
    """
    V = np.asarray(V, dtype=np.float64)
    F = np.asarray(F, dtype=np.int64)
    n = len(V)
    he = np.stack([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]], axis=1).reshape(-1, 2)
    key = np.sort(he, axis=1)
    uniq, inv = np.unique(key[:, 0] * n + key[:, 1], return_inverse=True)
    e0, e1 = uniq // n, uniq % n
    V2 = np.concatenate([V, 0.5 * (V[e0] + V[e1])])
    mid = (n + inv).reshape(-1, 3)  # midpoint of edge (0,1), (1,2), (2,0) of each face
    a, b, c = F[:, 0], F[:, 1], F[:, 2]
    ab, bc, ca = mid[:, 0], mid[:, 1], mid[:, 2]
    F2 = np.concatenate([
        np.stack([a, ab, ca], axis=1),
        np.stack([b, bc, ab], axis=1),
        np.stack([c, ca, bc], axis=1),
        np.stack([ab, bc, ca], axis=1),
    ])
    return V2, F2


def refined_case(base: Case, levels: int) -> Case:
    """``base``'s cortex disk subdivided ``levels`` times (the whole mesh is the disk, all kept)."""
    V, F = base.disk.vertices, base.disk.faces
    for _ in range(levels):
        V, F = midpoint_subdivide(V, F)
    name = f"{base.name}-x{4 ** levels}"
    disk = Mesh(V, F, name=name)
    return Case(name, disk, np.ones(len(V), dtype=bool), disk, np.arange(len(V), dtype=np.int64))


def freesurfer_flat_patch(hemi: str) -> dict:
    """FreeSurfer's own fsaverage5 flat patch (nilearn) with the pial and white surfaces.

    Returns
    -------
    dict with ``uv`` (10242, 2) flat coordinates, ``faces`` (m, 3) int64 the patch's faces,
    ``pial`` and ``white`` (10242, 3) float64.
    """
    d = _nilearn_fsaverage5_dir()
    flat, Fp = _gifti(d / f"flat_{hemi}.gii.gz")
    pial, _ = _gifti(d / f"pial_{hemi}.gii.gz")
    white, _ = _gifti(d / f"white_{hemi}.gii.gz")
    return dict(uv=flat[:, :2].copy(), faces=Fp, pial=pial, white=white)
