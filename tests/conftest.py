"""Shared fixtures: small synthetic meshes with known geometry.

The builders live in ``tests/_meshes.py`` (``from _meshes import make_grid`` in a test module, where a
fixture does not fit); the ``meshes`` fixture hands them over so that tests can vary the size:
``make_grid(nx, ny, width, height, alternate=False)``, ``make_disk(n_rings, n_sectors, radius)``,
``make_hemisphere(n_rings, n_sectors)``, ``make_icosphere(subdivisions)``.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from _meshes import make_disk, make_grid, make_hemisphere, make_icosphere  # noqa: F401 (also conftest.make_*)
from surfmap.mesh import Mesh


@pytest.fixture
def meshes():
    """The mesh builders, to make meshes of other sizes: ``meshes.grid(10)``, ``meshes.icosphere(1)``."""
    return SimpleNamespace(
        grid=make_grid, disk=make_disk, hemisphere=make_hemisphere, icosphere=make_icosphere
    )


@pytest.fixture
def grid_mesh() -> Mesh:
    """6 x 6 vertex triangulated unit square (50 faces)."""
    return make_grid(6)


@pytest.fixture
def disk_mesh() -> Mesh:
    """Planar unit disk, 4 rings x 16 sectors (65 vertices)."""
    return make_disk(4, 16)


@pytest.fixture
def hemisphere_mesh() -> Mesh:
    """Northern unit hemisphere, 6 rings x 24 sectors (145 vertices), boundary on the equator."""
    return make_hemisphere(6, 24)


@pytest.fixture
def icosphere_mesh() -> Mesh:
    """Closed unit icosphere, 2 subdivisions (162 vertices, 320 faces)."""
    return make_icosphere(2)
