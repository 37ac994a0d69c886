"""Mesh builders shared by the tests (``from _meshes import make_grid``; also the ``meshes`` fixture of
conftest.py): small synthetic meshes with known geometry, consistently oriented with outward / +z normals,
float64 vertices, int64 faces.

- ``make_grid(nx, ny, width, height, alternate=False)``: the rectangle [0, width] x [0, height] (z = 0) with
  ``nx x ny`` vertices; vertex ``j * nx + i`` sits at ``(i * width / (nx - 1), j * height / (ny - 1))``. Each
  grid square is split along its (0,0)-(1,1) diagonal, or with ``alternate=True`` along diagonals that
  alternate like a checkerboard ((0,0)-(1,1) where ``i + j`` is even, else (1,0)-(0,1); faces listed square by
  square), so that each corner of the rectangle has two faces when the squares per side are even. Area
  ``width * height``; chi 1.
- ``make_disk(n_rings, n_sectors, radius)``: a planar disk, vertex 0 at the centre, rings of
  ``n_sectors`` vertices at radii ``radius * k / n_rings``; the outer ring lies on the circle.
- ``make_hemisphere(n_rings, n_sectors)``: the northern unit hemisphere (z >= 0), vertex 0 at
  the pole, the last ring on the equator (the boundary). chi 1.
- ``make_icosphere(subdivisions)``: a closed unit sphere, 10 * 4**s + 2 vertices. chi 2.
"""

from __future__ import annotations

import numpy as np

from surfmap.mesh import Mesh

__all__ = ["make_disk", "make_grid", "make_hemisphere", "make_icosphere"]


def make_grid(nx: int = 6, ny: int | None = None, width: float = 1.0, height: float | None = None, *,
              alternate: bool = False) -> Mesh:
    ny = nx if ny is None else ny
    height = width if height is None else height
    x, y = np.meshgrid(np.linspace(0.0, width, nx), np.linspace(0.0, height, ny))
    V = np.column_stack([x.ravel(), y.ravel(), np.zeros(nx * ny)])
    i, j = np.meshgrid(np.arange(nx - 1), np.arange(ny - 1))
    a = (j * nx + i).ravel()
    b, c, d = a + 1, a + nx + 1, a + nx  # counter-clockwise square a b c d
    if not alternate:
        F = np.concatenate([np.column_stack([a, b, c]), np.column_stack([a, c, d])])
        return Mesh(V, F, name=f"grid{nx}x{ny}")
    even = ((i + j) % 2 == 0).ravel()[:, None]
    first = np.where(even, np.column_stack([a, b, c]), np.column_stack([a, b, d]))
    second = np.where(even, np.column_stack([a, c, d]), np.column_stack([b, c, d]))
    F = np.stack([first, second], axis=1).reshape(-1, 3)  # cell by cell, row by row
    return Mesh(V, F, name=f"grid{nx}x{ny}")


def _rings(n_rings: int, n_sectors: int) -> np.ndarray:
    """Faces of a centre vertex 0 plus ``n_rings`` rings of ``n_sectors`` vertices (counter-clockwise)."""
    s = np.arange(n_sectors)
    t = (s + 1) % n_sectors
    faces = [np.column_stack([np.zeros(n_sectors, dtype=np.int64), 1 + s, 1 + t])]
    for k in range(1, n_rings):
        inner, outer = 1 + (k - 1) * n_sectors, 1 + k * n_sectors
        faces.append(np.column_stack([inner + s, outer + s, outer + t]))
        faces.append(np.column_stack([inner + s, outer + t, inner + t]))
    return np.concatenate(faces).astype(np.int64)


def make_disk(n_rings: int = 4, n_sectors: int = 16, radius: float = 1.0) -> Mesh:
    phi = 2 * np.pi * np.arange(n_sectors) / n_sectors
    pts = [np.zeros((1, 3))]
    for k in range(1, n_rings + 1):
        r = radius * k / n_rings
        pts.append(np.column_stack([r * np.cos(phi), r * np.sin(phi), np.zeros(n_sectors)]))
    return Mesh(np.concatenate(pts), _rings(n_rings, n_sectors), name="disk")


def make_hemisphere(n_rings: int = 6, n_sectors: int = 24) -> Mesh:
    phi = 2 * np.pi * np.arange(n_sectors) / n_sectors
    pts = [np.array([[0.0, 0.0, 1.0]])]
    for k in range(1, n_rings + 1):
        theta = 0.5 * np.pi * k / n_rings
        pts.append(
            np.column_stack(
                [np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.full(n_sectors, np.cos(theta))]
            )
        )
    V = np.concatenate(pts)
    V[-n_sectors:, 2] = 0.0  # exactly on the equator
    return Mesh(V, _rings(n_rings, n_sectors), name="hemisphere")


def make_icosphere(subdivisions: int = 2) -> Mesh:
    t = (1.0 + 5.0**0.5) / 2.0
    V = np.array(
        [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
         [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]],
        dtype=np.float64,
    )  # fmt: skip
    F = np.array(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
         [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
         [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]],
        dtype=np.int64,
    )  # fmt: skip
    V = V / np.linalg.norm(V, axis=1, keepdims=True)
    for _ in range(subdivisions):
        V, F = _subdivide(V, F)
    return Mesh(V, F, name=f"icosphere{subdivisions}")


def _subdivide(V: np.ndarray, F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split each face in four, new vertices on the unit sphere."""
    verts = list(V)
    cache: dict[tuple[int, int], int] = {}

    def mid(a: int, b: int) -> int:
        key = (min(a, b), max(a, b))
        if key not in cache:
            p = verts[a] + verts[b]
            verts.append(p / np.linalg.norm(p))
            cache[key] = len(verts) - 1
        return cache[key]

    new = []
    for a, b, c in F:
        ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
        new += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
    return np.array(verts), np.array(new, dtype=np.int64)
