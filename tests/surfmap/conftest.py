"""Tiny cohorts written as real FreeSurfer, GIFTI and CIFTI files (shared by test_batch and test_cli).

Every subject is an icosphere of 162 vertices (radius about 50 mm, jittered per ``seed``) with a cap
at the top left out as the "medial wall", so flattening one subject with the real ``surfmap.flatten``
takes milliseconds. Reach the builders through the ``cohort`` fixture::

    def test_x(tmp_path, cohort):
        src = cohort.freesurfer_dir(tmp_path / "subjects", n_subjects=2)
        V, F = cohort.sphere(seed=0)
"""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from nibabel import cifti2

from surfmap import batch, flatten
from surfmap.mesh import Mesh

ICO = 2  # 162 vertices


def sphere(icosphere, seed=0):
    """(V, F) of a jittered icosphere of radius ~50 (float64, int64)."""
    m = icosphere(ICO)
    rng = np.random.default_rng(seed)
    V = m.vertices * (1.0 + 0.02 * rng.standard_normal((len(m.vertices), 1)))
    return V * 50.0, m.faces


def cortex_of(V):
    """Boolean cortex mask: everything below a cap at the top (the "medial wall")."""
    return V[:, 2] < 0.6 * np.abs(V[:, 2]).max()


def write_label(path, idx, V):
    """A FreeSurfer ASCII ``.label`` file of the vertices ``idx``."""
    lines = ["#!ascii label  , from subject  vox2ras=TkReg", str(len(idx))]
    lines += [f"{i} {V[i, 0]:.3f} {V[i, 1]:.3f} {V[i, 2]:.3f} 0.000000" for i in idx]
    Path(path).write_text("\n".join(lines) + "\n")


def metric_values(V, name):
    """A smooth per-vertex metric named ``name`` (thickness, sulc, curv, curvature or myelin)."""
    x, y, z = (V / 50.0).T
    return {"thickness": 2.5 + 0.5 * x, "sulc": y, "curv": 0.1 * z, "curvature": 0.1 * z,
            "myelin": 1.5 + 0.2 * x * y}[name]


def make_freesurfer_dir(icosphere, root, n_subjects=3, broken="sub-03"):
    """A SUBJECTS_DIR: ``sub-NN/surf/{lh,rh}.{white,thickness,sulc,curv}``, ``label/?h.cortex.label``.

    Subject ``broken`` has a left ``sulc`` 7 values short (that job must fail, the batch go on); an
    ``fsaverage`` folder is left out of the cohort.
    """
    root = Path(root)
    for s in range(n_subjects):
        subj = f"sub-{s + 1:02d}"
        (root / subj / "surf").mkdir(parents=True)
        (root / subj / "label").mkdir()
        V, F = sphere(icosphere, seed=s)
        for h in ("lh", "rh"):
            nib.freesurfer.write_geometry(str(root / subj / "surf" / f"{h}.white"), V, F)
            for m in batch.FREESURFER_METRICS:
                vals = metric_values(V, m)
                if subj == broken and h == "lh" and m == "sulc":
                    vals = vals[:-7]  # wrong length: this subject must fail, the batch go on
                nib.freesurfer.write_morph_data(str(root / subj / "surf" / f"{h}.{m}"), vals)
            write_label(root / subj / "label" / f"{h}.cortex.label", np.flatnonzero(cortex_of(V)), V)
    (root / "fsaverage" / "surf").mkdir(parents=True)  # left out of the cohort
    return root


def write_cifti(path, values, keep, name):
    """A one-map dscalar CIFTI of ``values[keep]`` on the left cortex."""
    bm = cifti2.BrainModelAxis.from_surface(np.flatnonzero(keep), len(keep), name="CortexLeft")
    header = cifti2.Cifti2Header.from_axes((cifti2.ScalarAxis([name]), bm))
    cifti2.Cifti2Image(values[keep][None].astype(np.float32), header).to_filename(str(path))


def make_hcp_dir(icosphere, root, subjects=("100307", "100408", "101915"), broken="100408"):
    """An HCP layout (``MNINonLinear/fsaverage_LR32k``, left hemisphere); ``broken``'s myelin is not CIFTI."""
    root = Path(root)
    for i, s in enumerate(subjects):
        folder = root / s / "MNINonLinear" / "fsaverage_LR32k"
        folder.mkdir(parents=True)
        V, F = sphere(icosphere, seed=10 + i)
        keep = cortex_of(sphere(icosphere, seed=0)[0])  # every subject: the same mesh's medial wall
        gii = nib.gifti.GiftiImage(darrays=[
            nib.gifti.GiftiDataArray(V.astype(np.float32), intent="NIFTI_INTENT_POINTSET"),
            nib.gifti.GiftiDataArray(F.astype(np.int32), intent="NIFTI_INTENT_TRIANGLE"),
        ])
        nib.save(gii, str(folder / f"{s}.L.midthickness_MSMAll.32k_fs_LR.surf.gii"))
        for m, stem in (("thickness", "thickness_MSMAll"), ("sulc", "sulc"), ("curvature", "curvature_MSMAll"),
                        ("myelin", "MyelinMap_BC_MSMAll")):
            if s == broken and m == "myelin":
                (folder / f"{s}.{stem}.32k_fs_LR.dscalar.nii").write_bytes(b"not a cifti file")
                continue
            write_cifti(folder / f"{s}.{stem}.32k_fs_LR.dscalar.nii", metric_values(V, m), keep, m)
    return root


def template_map(icosphere, root, method="area"):
    """Flat map of the seed-0 sphere saved to ``root/maps/left/flatmap.npz``; returns (FlatMap, pattern)."""
    V, F = sphere(icosphere, seed=0)
    fm = flatten(Mesh(V, F), cortex_of(V), method=method)
    fm.save(Path(root) / "maps" / "left" / "flatmap.npz")
    return fm, str(Path(root) / "maps" / "{hemi}" / "flatmap.npz")


def read_tsv(path):
    """Rows of a tab-separated file as dicts."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture
def cohort(meshes):
    """The cohort builders, bound to the icosphere builder of ``meshes``."""
    ico = meshes.icosphere
    return SimpleNamespace(
        sphere=partial(sphere, ico), cortex_of=cortex_of, write_label=write_label, metric_values=metric_values,
        freesurfer_dir=partial(make_freesurfer_dir, ico), hcp_dir=partial(make_hcp_dir, ico),
        template_map=partial(template_map, ico), read_tsv=read_tsv,
    )
