"""Triangle meshes: geometry, topology, and the cut of a cortical hemisphere to a disk.

Vertices are never reordered. Every function takes plain arrays (``V`` ``(n, 3)`` float64,
``F`` ``(m, 3)`` int64) or a :class:`Mesh`, and returns plain arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components as _cc

from ._kernels import mesh as _km
from .exceptions import MaskError, MeshError

__all__ = [
    "Mesh",
    "CutMesh",
    "face_areas",
    "face_normals",
    "vertex_areas",
    "corner_angles",
    "cotangent_laplacian",
    "edges",
    "boundary_loops",
    "boundary_loop",
    "euler_characteristic",
    "connected_components",
    "non_manifold_edges",
    "chords",
    "split_chords",
    "unsplit_faces",
    "cut",
]

log = logging.getLogger(__name__)


def _as_arrays(V, F, name="mesh"):
    """Convert and validate ``V``, ``F`` once at the public boundary."""
    try:
        V = np.ascontiguousarray(V, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise MeshError(f"{name}: vertices must be numeric; could not convert ({err})") from None
    F_in = np.asarray(F)
    if V.ndim != 2 or V.shape[1] not in (2, 3):
        raise MeshError(f"{name}: vertices must have shape (n, 3); found {V.shape}")
    if V.shape[1] == 2:
        V = np.ascontiguousarray(np.column_stack([V, np.zeros(len(V))]))
    if F_in.ndim != 2 or F_in.shape[1] != 3:
        found = F_in.shape if F_in.ndim == 2 else f"array of {F_in.ndim} dimensions"
        raise MeshError(
            f"{name}: faces must be triangles, shape (m, 3); found {found}. "
            "Triangulate the mesh first (e.g. split each quad into two triangles)."
        )
    if F_in.size and not np.issubdtype(F_in.dtype, np.integer):
        if not np.all(np.equal(np.mod(F_in, 1), 0)):
            raise MeshError(f"{name}: face indices must be integers; found dtype {F_in.dtype}")
    F = np.ascontiguousarray(F_in, dtype=np.int64)
    if len(V) == 0 or len(F) == 0:
        raise MeshError(f"{name}: expected at least one vertex and one face; found {len(V)} and {len(F)}")
    bad = ~np.isfinite(V).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise MeshError(
            f"{name}: {int(bad.sum())} vertices have NaN or infinite coordinates "
            f"(first: vertex {first}); fix or remove them before use"
        )
    lo, hi = int(F.min()), int(F.max())
    if lo < 0 or hi >= len(V):
        raise MeshError(
            f"{name}: faces index vertices that do not exist: indices must lie in [0, {len(V) - 1}], "
            f"found min {lo} and max {hi}"
        )
    degenerate = (F[:, 0] == F[:, 1]) | (F[:, 1] == F[:, 2]) | (F[:, 0] == F[:, 2])
    if degenerate.any():
        first = int(np.flatnonzero(degenerate)[0])
        raise MeshError(
            f"{name}: {int(degenerate.sum())} faces repeat a vertex (first: face {first} = {F[first].tolist()}); "
            "remove these collapsed faces"
        )
    return V, F


@dataclass(frozen=True, eq=False)
class Mesh:
    """A triangle mesh with float64 ``(n, 3)`` vertices and int64 ``(m, 3)`` faces.

    Parameters
    ----------
    vertices : (n, 3) float64
        Coordinates. ``(n, 2)`` input is padded with z = 0.
    faces : (m, 3) int64
        Vertex indices of each triangle, consistently oriented.
    name : str
        Where the mesh came from (a file name); used in error messages.

    Raises
    ------
    MeshError
        Wrong shapes, non-triangular faces, NaN/inf coordinates, indices out of range.

    Examples
    --------
    >>> m = Mesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]])
    >>> float(m.face_areas[0])
    0.5
    """

    vertices: np.ndarray
    faces: np.ndarray
    name: str = field(default="mesh", compare=False)

    def __post_init__(self):
        V, F = _as_arrays(self.vertices, self.faces, self.name)
        V.flags.writeable = False
        F.flags.writeable = False
        object.__setattr__(self, "vertices", V)
        object.__setattr__(self, "faces", F)

    @property
    def n_vertices(self) -> int:
        return len(self.vertices)

    @property
    def n_faces(self) -> int:
        return len(self.faces)

    @cached_property
    def face_areas(self) -> np.ndarray:
        return face_areas(self.vertices, self.faces)

    @cached_property
    def vertex_areas(self) -> np.ndarray:
        return vertex_areas(self.vertices, self.faces)

    @cached_property
    def edges(self) -> np.ndarray:
        return edges(self.faces)

    @cached_property
    def boundary_loops(self) -> list[np.ndarray]:
        return boundary_loops(self.faces)

    @property
    def euler_characteristic(self) -> int:
        return euler_characteristic(self.faces)

    def __repr__(self) -> str:
        return f"Mesh({self.n_vertices} vertices, {self.n_faces} faces, name={self.name!r})"


@dataclass(frozen=True, eq=False)
class CutMesh:
    """The disk left after cutting a mesh to a vertex mask.

    Attributes
    ----------
    mesh : Mesh
        The disk: the kept original vertices in their original order (a subsequence), then the
        vertices inserted by the cut (``len(vertex_map) + len(inserted)`` in all).
    vertex_map : (k,) int64
        ``mesh.vertices[i] == original.vertices[vertex_map[i]]`` for ``i < k``; strictly increasing.
    repairs : tuple of str
        Human-readable record of each repair applied to the mask.
    inserted : (j, 2) int64
        Original vertices whose edge each inserted vertex splits: disk vertex ``k + i`` lies at
        ``inserted_weights[i] @ original.vertices[inserted[i]]`` (a chord's midpoint).
    inserted_weights : (j, 2) float64
        Interpolation weights of the inserted vertices (each row sums to 1).
    """

    mesh: Mesh
    vertex_map: np.ndarray
    repairs: tuple = ()
    inserted: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    inserted_weights: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.float64))

    def __post_init__(self):
        ins = np.ascontiguousarray(np.reshape(self.inserted, (-1, 2)), dtype=np.int64)
        w = np.ascontiguousarray(np.reshape(self.inserted_weights, (-1, 2)), dtype=np.float64)
        if w.shape != ins.shape or self.mesh.n_vertices != len(self.vertex_map) + len(ins):
            raise MeshError(f"CutMesh: the disk has {self.mesh.n_vertices} vertices; expected len(vertex_map) "
                            f"({len(self.vertex_map)}) + inserted ({len(ins)}), with one weight pair per inserted "
                            f"vertex (found {len(w)})")
        object.__setattr__(self, "inserted", ins)
        object.__setattr__(self, "inserted_weights", w)

    @property
    def n_inserted(self) -> int:
        """Vertices inserted by the cut (appended after the original ones)."""
        return len(self.inserted)

    def kept_mask(self, n_vertices: int) -> np.ndarray:
        """(n_vertices,) bool mask of the original vertices in the disk."""
        out = np.zeros(n_vertices, dtype=bool)
        out[self.vertex_map] = True
        return out


# ---------------------------------------------------------------------------------------------
# geometry


def face_areas(V, F) -> np.ndarray:
    """Unsigned area of each face, (m,) float64 (Kahan-stable from edge lengths)."""
    V = np.asarray(V, dtype=np.float64)
    F = np.asarray(F, dtype=np.int64)
    if V.shape[1] == 2:
        e1 = V[F[:, 1]] - V[F[:, 0]]
        e2 = V[F[:, 2]] - V[F[:, 0]]
        return 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    l = edge_lengths(V, F)
    return _heron(l)


def _heron(l: np.ndarray) -> np.ndarray:
    """Kahan's numerically stable Heron formula; ``l`` (m, 3) edge lengths."""
    s = -np.sort(-l, axis=1)  # descending a >= b >= c
    a, b, c = s[:, 0], s[:, 1], s[:, 2]
    prod = (a + (b + c)) * (c - (a - b)) * (c + (a - b)) * (a + (b - c))
    return 0.25 * np.sqrt(np.maximum(prod, 0.0))


def edge_lengths(V, F) -> np.ndarray:
    """(m, 3) lengths; column k is the edge opposite corner k."""
    V = np.asarray(V, dtype=np.float64)
    F = np.asarray(F, dtype=np.int64)
    a, b, c = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
    return np.column_stack(
        [np.linalg.norm(c - b, axis=1), np.linalg.norm(a - c, axis=1), np.linalg.norm(b - a, axis=1)]
    )


def face_normals(V, F) -> np.ndarray:
    """Unit normals (m, 3) float64 following the face orientation (zero for degenerate faces)."""
    V = np.asarray(V, dtype=np.float64)
    F = np.asarray(F, dtype=np.int64)
    n = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)


def vertex_areas(V, F) -> np.ndarray:
    """Barycentric vertex areas (n,) float64: a third of the incident face areas."""
    A = face_areas(V, F)
    return np.bincount(np.asarray(F).ravel(), weights=np.repeat(A / 3.0, 3), minlength=len(V))


def _cos_numerators(l: np.ndarray) -> np.ndarray:
    """``b^2 + c^2 - a^2`` (m, 3) for the corner opposite each edge ``a``, without cancellation.

    Written as ``(b - a)(b + a) + c^2`` with ``b >= c`` the adjacent edges: when ``a`` and ``b``
    are close (a needle's base angles) ``b - a`` is exact, where ``b^2 + c^2 - a^2`` would lose
    the small ``c^2`` to rounding.
    """
    out = np.empty_like(l)
    for k in range(3):
        i, j = (k + 1) % 3, (k + 2) % 3
        b = np.maximum(l[:, i], l[:, j])
        c = np.minimum(l[:, i], l[:, j])
        out[:, k] = (b - l[:, k]) * (b + l[:, k]) + c * c
    return out


def angles_from_lengths(l: np.ndarray) -> np.ndarray:
    """Corner angles (m, 3) from edge lengths (m, 3), column k opposite corner k.

    Uses ``atan2(4A, b^2 + c^2 - a^2)`` with Kahan's area and a cancellation-free numerator,
    which stays accurate for needles.
    """
    return np.arctan2((4.0 * _heron(l))[:, None], _cos_numerators(l))


def corner_angles(V, F) -> np.ndarray:
    """Interior angle at each corner of each face, (m, 3) float64 in radians."""
    return angles_from_lengths(edge_lengths(V, F))


def cotangent_laplacian(V, F) -> sp.csr_matrix:
    """Cotangent Laplacian ``L`` (n, n), positive semi-definite, ``L_ij = -1/2 (cot a + cot b)``.

    The kernel is the constants; rows sum to zero.
    """
    V = np.asarray(V, dtype=np.float64)
    F = np.asarray(F, dtype=np.int64)
    l = edge_lengths(V, F)
    A4 = 4.0 * _heron(l)
    num = _cos_numerators(l)
    rows, cols, vals = [], [], []
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(3):
            i, j = (k + 1) % 3, (k + 2) % 3
            cot = num[:, k] / A4
            w = 0.5 * np.where(A4 > 0, cot, 0.0)
            rows.append(F[:, i]), cols.append(F[:, j]), vals.append(-w)
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    v = np.concatenate(vals)
    n = len(V)
    W = sp.coo_matrix((v, (r, c)), shape=(n, n)).tocsr()
    W = W + W.T
    return (W - sp.diags(np.asarray(W.sum(axis=1)).ravel())).tocsr()


# ---------------------------------------------------------------------------------------------
# topology


def _half_edges(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    F = np.asarray(F, dtype=np.int64)
    return F.ravel(), F[:, [1, 2, 0]].ravel()


def _group(key: np.ndarray):
    """``np.unique(key, return_inverse=True, return_counts=True)`` by one stable argsort.

    numpy's hash-based unique is ~30x slower than a sort on the int64 edge keys used here.
    """
    order = np.argsort(key, kind="stable")
    sk = key[order]
    first = np.empty(len(sk), dtype=bool)
    first[:1] = True
    np.not_equal(sk[1:], sk[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    inv = np.empty(len(key), dtype=np.int64)
    inv[order] = np.cumsum(first) - 1
    counts = np.diff(np.append(starts, len(sk)))
    return sk[starts], inv, counts


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    s = np.sort(x)
    keep = np.empty(len(s), dtype=bool)
    keep[:1] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def edges(F) -> np.ndarray:
    """Unique undirected edges (e, 2) int64, each row sorted, rows in lexicographic order."""
    F = np.asarray(F, dtype=np.int64)
    n = int(F.max()) + 1
    a, b = _half_edges(F)
    key = _sorted_unique(np.minimum(a, b) * n + np.maximum(a, b))
    return np.column_stack([key // n, key % n])


def _group_pairs(x: np.ndarray, y: np.ndarray, n: int):
    """``_group(x * n + y)`` for vertex pairs, by a linear-time bucket sort (``_kernels.mesh``)."""
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order, inv, g = _km.group_pairs(x, y, n)
    counts = np.bincount(inv, minlength=g)
    first = order[np.concatenate([[0], np.cumsum(counts)[:-1]])]
    return x[first] * n + y[first], inv, counts


def _edge_face_counts(F: np.ndarray, n: int):
    """(sorted undirected edge keys ``lo * n + hi``, edge of each half-edge, faces per edge)."""
    a, b = _half_edges(F)
    return _group_pairs(np.minimum(a, b), np.maximum(a, b), n)


def non_manifold_edges(F, n_vertices: int | None = None) -> np.ndarray:
    """Edges (k, 2) shared by more than two faces."""
    F = np.asarray(F, dtype=np.int64)
    n = int(F.max()) + 1 if n_vertices is None else n_vertices
    uniq, _, counts = _edge_face_counts(F, n)
    bad = uniq[counts > 2]
    return np.column_stack([bad // n, bad % n])


def euler_characteristic(F) -> int:
    """V - E + F counted on the vertices the faces use."""
    F = np.asarray(F, dtype=np.int64)
    n = int(F.max()) + 1
    a, b = _half_edges(F)
    n_edges = _km.group_pairs(np.minimum(a, b), np.maximum(a, b), n)[2]
    return int(np.count_nonzero(np.bincount(F.ravel())) - n_edges + len(F))


def boundary_half_edge_mask(F: np.ndarray) -> np.ndarray:
    """(3m,) bool: half-edge ``h`` (``F.ravel()[h] -> F[:, [1, 2, 0]].ravel()[h]``, of face ``h // 3``) has
    no twin (the reverse half-edge is in no face), i.e. it lies on the boundary."""
    a, b = _half_edges(F)
    return _km.reverse_missing(a, b, int(np.max(F, initial=-1)) + 1)


def _boundary_half_edges(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half-edges (a -> b) whose twin (b -> a) is absent."""
    a, b = _half_edges(F)
    is_bnd = boundary_half_edge_mask(F)
    return a[is_bnd], b[is_bnd]


def boundary_loops(F) -> list[np.ndarray]:
    """Boundary loops as ordered vertex arrays, longest first.

    Each loop follows the face orientation (interior on the left), so for a disk laid out with
    positively oriented faces the loop runs counter-clockwise. Loops through a non-manifold
    vertex (two boundary arcs meeting) are split at that vertex in the order found.
    """
    F = np.asarray(F, dtype=np.int64)
    a, b = _boundary_half_edges(F)
    if len(a) == 0:
        return []
    order = np.argsort(a, kind="stable")
    a, b = a[order], b[order]
    starts = np.searchsorted(a, np.arange(int(F.max()) + 2))
    used = np.zeros(len(a), dtype=bool)
    loops = []
    for e0 in range(len(a)):
        if used[e0]:
            continue
        loop = []
        e = e0
        while not used[e]:
            used[e] = True
            loop.append(a[e])
            v = b[e]
            cand = np.arange(starts[v], starts[v + 1])
            cand = cand[~used[cand]]
            if len(cand) == 0:
                break
            e = cand[0]
        loops.append(np.asarray(loop, dtype=np.int64))
    loops.sort(key=len, reverse=True)
    return loops


def boundary_loop(F) -> np.ndarray:
    """The single boundary loop of a disk, (b,) int64.

    Raises
    ------
    MeshError
        If the mesh has no boundary or more than one boundary loop.
    """
    loops = boundary_loops(F)
    if len(loops) != 1:
        raise MeshError(
            f"expected exactly one boundary loop (a topological disk); found {len(loops)}. "
            "Cut the mesh with surfmap.cut(mesh, keep) first."
        )
    return loops[0]


def _face_adjacency(F: np.ndarray, n: int, symmetric: bool = True) -> sp.csr_matrix:
    """Faces sharing an edge, as a sparse (m, m) adjacency matrix (one direction only unless ``symmetric``)."""
    m = len(F)
    a, b = _half_edges(F)
    # pair consecutive half-edges of the sorted keys that share an undirected edge
    order, inv, _ = _km.group_pairs(np.minimum(a, b), np.maximum(a, b), n)
    k_s, f_s = inv[order], order // 3
    same = k_s[1:] == k_s[:-1]
    r, c = f_s[:-1][same], f_s[1:][same]
    adj = sp.csr_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(m, m))
    return (adj + adj.T).tocsr() if symmetric else adj


def connected_components(F, n_vertices: int | None = None) -> tuple[int, np.ndarray]:
    """Edge-connected components of the faces: ``(count, label per face)``."""
    F = np.asarray(F, dtype=np.int64)
    n = int(F.max()) + 1 if n_vertices is None else n_vertices
    if len(F) == 0:
        return 0, np.zeros(0, dtype=np.int64)
    # weak components of the one-directional adjacency are the undirected ones
    k, lab = _cc(_face_adjacency(F, n, symmetric=False), directed=True, connection="weak")
    return int(k), lab.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# cut to a disk


def _ears(F: np.ndarray, n: int) -> np.ndarray:
    """Faces to remove: a corner used by no other face (an ear), or two boundary edges at a corner
    that other faces also use (a dangling face hanging on a single vertex)."""
    valence = np.bincount(F.ravel(), minlength=n)
    ear = (valence[F] == 1).any(axis=1)
    _, inv, counts = _edge_face_counts(F, n)
    n_bnd = (counts[inv] == 1).reshape(-1, 3).sum(axis=1)
    return ear | (n_bnd >= 2)


def _non_manifold_vertex_faces(F: np.ndarray, n: int) -> np.ndarray:
    """Faces in the smaller fans of vertices where the boundary touches itself."""
    a, _ = _boundary_half_edges(F)
    out_deg = np.bincount(a, minlength=n)
    pinch = np.flatnonzero(out_deg > 1)
    drop = np.zeros(len(F), dtype=bool)
    if len(pinch) == 0:
        return drop
    for v in pinch:
        fv = np.flatnonzero((F == v).any(axis=1))
        sub = F[fv]
        # fans = components of the faces around v connected through edges incident to v
        k, lab = connected_components(sub, n)
        # components computed on all edges of these faces; edges not at v cannot join two
        # faces of the same star unless they share an edge, which implies a shared edge at v.
        if k > 1:
            sizes = np.bincount(lab)
            drop[fv[lab != np.argmax(sizes)]] = True
    return drop


# a piece of the region that is dropped as a repair (a crumb) holds at most this fraction of its
# vertices, or this many vertices on small meshes
_CRUMB_FRACTION = 0.01
_CRUMB_VERTICES = 10
# an edge longer than this many times the median edge comes from a corrupt coordinate
_OUTLIER_EDGE_RATIO = 1e6
# boundary vertices a disk needs for the square: 4 corners with at least 2 boundary edges between them
_MIN_BOUNDARY = 8


def _piece_sizes(F: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Edge-connected pieces of ``F``: (label per face, vertex count per piece)."""
    k, lab = connected_components(F, n)
    piece_of = np.full(n, -1, dtype=np.int64)
    piece_of[F.ravel()] = np.repeat(lab, 3)  # a vertex where two pieces touch counts in one of them
    return lab, np.bincount(piece_of[piece_of >= 0], minlength=k)


def _check_separate_meshes(mesh: Mesh, keep: np.ndarray) -> None:
    """MeshError when the mesh holds several large separate pieces with masked vertices (e.g. two
    hemispheres in one file): hole filling would otherwise close one of them and hide it."""
    F, n = mesh.faces, mesh.n_vertices
    edges = sp.coo_matrix((np.ones(F.size, dtype=np.int8), (F.ravel(), F[:, [1, 2, 0]].ravel())), shape=(n, n))
    k, piece_of = _cc(edges, directed=False)  # vertex-connected: separate meshes share no vertex
    if k < 2:
        return
    sizes = np.bincount(piece_of, minlength=k)
    masked = np.bincount(piece_of[keep], minlength=k)
    big = np.flatnonzero(masked > max(_CRUMB_FRACTION * keep.sum(), _CRUMB_VERTICES))
    if len(big) > 1:
        desc = ", ".join(f"{int(sizes[c])} vertices ({int(masked[c])} masked)" for c in big[np.argsort(-sizes[big])])
        raise MeshError(f"{mesh.name}: the mesh holds {len(big)} separate pieces with masked vertices ({desc}); "
                        "expected one hemisphere. Is the file both hemispheres? Flatten each hemisphere on its own")


def _largest_piece(F: np.ndarray, n: int, name: str) -> np.ndarray:
    """Faces of the largest edge-connected piece; MeshError when another piece is more than a crumb."""
    lab, sizes = _piece_sizes(F, n)
    if len(sizes) < 2:
        return np.ones(len(F), dtype=bool)
    order = np.argsort(-sizes)
    total = int(sizes.sum())
    dropped = sizes[order[1:]]
    limit = max(_CRUMB_FRACTION * total, _CRUMB_VERTICES)
    if dropped.max() > limit:
        shown = ", ".join(str(int(x)) for x in sizes[order[:6]]) + (", ..." if len(sizes) > 6 else "")
        raise MeshError(
            f"{name}: the mask splits the region into {len(sizes)} separate pieces of {shown} vertices; only "
            f"crumbs (at most {int(limit)} of the {total} vertices) are dropped as a repair, and keeping "
            f"the largest would lose {int(dropped.sum())} masked vertices. Expected one connected cortex region: "
            "check the mask (a label of one hemisphere, the medial wall left out)")
    return lab == order[0]


def _check_coordinates(mesh: Mesh, F: np.ndarray) -> None:
    """MeshError naming a vertex whose edges are absurdly long (a corrupt coordinate such as 1e30)."""
    if len(F) == 0:
        return
    a = np.concatenate([F[:, 0], F[:, 1], F[:, 2]])
    b = np.concatenate([F[:, 1], F[:, 2], F[:, 0]])
    with np.errstate(over="ignore", invalid="ignore"):
        length = np.linalg.norm(mesh.vertices[a] - mesh.vertices[b], axis=1)
    typical = float(np.median(length))
    bad = ~(length <= _OUTLIER_EDGE_RATIO * max(typical, np.finfo(float).tiny))
    if bad.any():
        count = np.bincount(np.concatenate([a[bad], b[bad]]), minlength=mesh.n_vertices)
        v = int(np.argmax(count))
        raise MeshError(
            f"{mesh.name}: vertex {v} at {np.round(mesh.vertices[v], 3).tolist()} is far from its neighbours (edges "
            f"up to {np.nanmax(np.where(bad, length, np.nan)):.3g}, median edge {typical:.3g}): a corrupt "
            "coordinate. Fix or re-export the surface")


def _check_flattenable(F: np.ndarray, n: int, name: str, repairs) -> None:
    """MaskError when what is left after the repairs is too small or thin to flatten (all ears)."""
    if len(F) and _ears(F, n).any():
        k = int(len(np.unique(F)))
        raise MaskError(
            f"keep: after the repairs ({'; '.join(repairs) or 'none'}) the region of {name} is {len(F)} face(s) "
            f"on {k} vertices, each face on the boundary; too small or thin to flatten. Expected a cortex region "
            "(thousands of vertices): check the mask")


def chords(F, n_vertices: int | None = None) -> np.ndarray:
    """Interior edges whose two ends are boundary vertices, (c, 2) int64 (rows sorted, in order).

    Such an edge (a chord) cuts a disk in two; when its ends land on one side of a convex
    polygon the two faces beside it are flat, so no convex-combination map is bijective
    (Floater 2003 needs no such "dividing edge").
    """
    F = np.asarray(F, dtype=np.int64)
    n = int(F.max()) + 1 if n_vertices is None else int(n_vertices)
    uniq, _, counts = _edge_face_counts(F, n)
    on_bnd = np.zeros(n, dtype=bool)
    bnd = uniq[counts == 1]
    on_bnd[bnd // n] = True
    on_bnd[bnd % n] = True
    inner = uniq[counts == 2]
    c = inner[on_bnd[inner // n] & on_bnd[inner % n]]
    return np.column_stack([c // n, c % n])


def split_chords(V, F) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split every chord of a disk at its midpoint: its two faces become four.

    The midpoint lies on the straight edge, so the surface (its metric and its conformal
    structure) is unchanged, and functions linear on the faces take the mean of the two ends
    there. Original vertices keep their indices; the midpoints are appended.

    Parameters
    ----------
    V : (n, 3) float64
    F : (m, 3) int64
        A manifold, consistently oriented disk.

    Returns
    -------
    V : (n + c, 3) float64
        ``V`` then the midpoints.
    F : (m + 2c, 3) int64
        Each split face is replaced in place by its half at the chord's first end; the other
        halves are appended.
    ends : (c, 2) int64
        The chord split by each new vertex ``n + i`` (vertices of the input).

    Examples
    --------
    >>> V = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]
    >>> V2, F2, ends = split_chords(V, [[0, 1, 2], [0, 2, 3]])
    >>> ends.tolist(), len(F2)
    ([[0, 2]], 4)
    """
    V = np.asarray(V, dtype=np.float64)
    F = np.array(F, dtype=np.int64)
    n = len(V)
    ends = chords(F, n)
    if len(ends) == 0:
        return V, F, ends
    # the faces touching a chord, by directed edge; a face may hold two chords (split in turn)
    a, b = F.ravel(), F[:, [1, 2, 0]].ravel()
    hit = np.flatnonzero(np.isin(np.minimum(a, b) * n + np.maximum(a, b), ends[:, 0] * n + ends[:, 1])) // 3
    slot_of = {}  # directed half-edge (x, y) -> face slot holding it
    faces = {int(f): F[f].tolist() for f in np.unique(hit)}
    extra = []

    def register(slot, face):
        for k in range(3):
            slot_of[(face[k], face[(k + 1) % 3])] = slot

    for f, face in faces.items():
        register(f, face)
    for i, (x, y) in enumerate(ends.tolist()):
        mid = n + i
        for p, q in ((x, y), (y, x)):
            slot = slot_of.pop((p, q))
            face = faces[slot] if slot >= 0 else extra[-slot - 1]
            k = face.index(p)
            r = face[(k + 2) % 3]  # face is (p, q, r) up to rotation
            first, second = [p, mid, r], [mid, q, r]
            if slot >= 0:
                faces[slot] = first
            else:
                extra[-slot - 1] = first
            extra.append(second)
            register(slot, first)
            register(-len(extra), second)
    for slot, face in faces.items():
        F[slot] = face
    F = np.concatenate([F, np.asarray(extra, dtype=np.int64).reshape(-1, 3)])
    V = np.concatenate([V, 0.5 * (V[ends[:, 0]] + V[ends[:, 1]])])
    return V, F, ends


def unsplit_faces(F, ends) -> np.ndarray:
    """Undo :func:`split_chords`: the faces before the split (in no particular order).

    Parameters
    ----------
    F : (m, 3) int64
        Faces after the split; vertex ``n + i`` (``n`` the vertex count before) is the ``i``-th inserted one.
    ends : (c, 2) int64
        The edge each inserted vertex splits, as returned by :func:`split_chords`.
    """
    F = np.asarray(F, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64).reshape(-1, 2)
    if len(ends) == 0:
        return F.copy()
    n = int(F.max()) + 1 - len(ends)  # the last inserted vertex is in a face
    has = (F >= n).any(axis=1)
    # the split face (p, q, r) became (p, mid, r) and (mid, q, r): keep the half where mid is
    # followed by an end of its edge, with mid replaced by the other end. A face split twice is
    # restored one insertion at a time, the latest first.
    work = [list(f) for f in F[has].tolist()]
    for i in range(len(ends) - 1, -1, -1):
        mid, (p, q) = n + i, ends[i].tolist()
        kept = []
        for f in work:
            if mid not in f:
                kept.append(f)
                continue
            k = f.index(mid)
            x, r = f[(k + 1) % 3], f[(k + 2) % 3]
            if x == q:
                kept.append([p, q, r])
            elif x == p:
                kept.append([q, p, r])
        work = kept
    return np.concatenate([F[~has], np.asarray(work, dtype=np.int64).reshape(-1, 3)])


def cut(mesh: Mesh, keep, *, max_hole_fraction: float = 0.05, rel_area_eps: float = 1e-12) -> CutMesh:
    """Restrict a mesh to the vertices in ``keep`` and check the result is a topological disk.

    Real cortex masks are imperfect. Repairs, each recorded in ``CutMesh.repairs``:

    - holes: regions left out of the mask that are enclosed by kept cortex (every removed region
      but the largest) are put back with their original faces when each holds at most
      ``max_hole_fraction`` of the faces;
    - components: crumbs (pieces of at most 1% of the region's vertices) are dropped; a region
      that splits into larger pieces is an error naming them and their sizes;
    - ears (a boundary vertex with a single face), dangling faces (two boundary edges) and
      pinched vertices (the boundary touching itself) are removed, repeatedly, until none is left;
    - zero-area faces on the boundary are removed;
    - chords (interior edges joining two boundary vertices, which make a bijective map onto a
      convex polygon impossible when both ends land on one side) are split at their midpoints;
      the new vertices are appended after the kept original ones and recorded in
      ``CutMesh.inserted`` (see :func:`split_chords`).

    Parameters
    ----------
    mesh : Mesh
        A closed or open triangle mesh.
    keep : (n_vertices,) bool
        True for vertices to keep (the cortex). A face is kept when its three vertices are.
    max_hole_fraction : float
        Largest hole (as a fraction of the mesh's faces) that is filled.
    rel_area_eps : float
        A face is degenerate when its area is below ``rel_area_eps`` times the mean face area.

    Returns
    -------
    CutMesh
        ``mesh`` (kept vertices in original order, then inserted ones), ``vertex_map`` into the
        input vertices, ``inserted`` / ``inserted_weights`` for the inserted vertices.

    Raises
    ------
    MaskError
        ``keep`` has the wrong length or selects no vertex or every vertex of a closed mesh.
    MeshError
        Non-manifold edges, inconsistently oriented or repeated faces, unrepairable zero-area
        faces, a disk with fewer than 8 boundary vertices, or a result that is not a disk
        (the message gives the number of components, boundary loops and the Euler characteristic).
    """
    n = mesh.n_vertices
    keep = np.asarray(keep)
    if keep.shape != (n,):
        raise MaskError(
            f"keep: expected a mask of {n} values (one per vertex of {mesh.name}); found shape {keep.shape}"
        )
    if keep.dtype != bool:
        if not np.isin(keep, (0, 1)).all():
            raise MaskError("keep: expected a boolean mask (or 0/1 values); found other values")
        keep = keep.astype(bool)
    n_keep = int(keep.sum())
    if n_keep == 0:
        raise MaskError(f"keep: the mask selects no vertex of {mesh.name}; expected the cortex vertices")
    F = mesh.faces
    nm = non_manifold_edges(F, n)
    if len(nm):
        raise MeshError(
            f"{mesh.name}: {len(nm)} non-manifold edges (shared by more than two faces), first {nm[0].tolist()}; "
            "such a mesh cannot be flattened: repair it (e.g. remove duplicate faces) first"
        )
    a, b = _half_edges(F)
    directed, _, counts = _group_pairs(a, b, n)
    twice = directed[counts > 1]
    if len(twice):
        first = [int(twice[0] // n), int(twice[0] % n)]
        raise MeshError(
            f"{mesh.name}: {len(twice)} edges are used twice in the same direction (first {first}): the faces "
            "are not consistently oriented, or a face is repeated; reorient the faces (e.g. "
            "trimesh.repair.fix_winding) and remove duplicates first"
        )
    if n_keep == n and not boundary_loops(F):
        raise MaskError(
            f"keep: the mask selects every vertex of the closed mesh {mesh.name}, which leaves no boundary "
            "to open it along; pass the cortex mask (medial wall False)"
        )

    _check_separate_meshes(mesh, keep)
    repairs: list[str] = []
    face_keep = keep[F].all(axis=1)

    # 1. fill small holes with their original faces
    dropped = np.flatnonzero(~face_keep)
    if len(dropped):
        k, lab = connected_components(F[dropped], n)
        if k > 1:
            sizes = np.bincount(lab, minlength=k)
            biggest = np.argmax(sizes)
            small = [c for c in range(k) if c != biggest and sizes[c] <= max_hole_fraction * len(F)]
            if small:
                refill = dropped[np.isin(lab, small)]
                face_keep[refill] = True
                repairs.append(
                    f"filled {len(small)} hole(s) in the mask with their {len(refill)} original faces "
                    f"({len(np.setdiff1d(np.unique(F[refill]), np.flatnonzero(keep)))} vertices added)"
                )

    Fk = F[face_keep]
    if len(Fk) == 0:
        raise MaskError(f"keep: no face of {mesh.name} has all three vertices in the mask; expected a cortex region")

    # 2. degenerate faces (relative to the median face: one corrupt vertex must not make every face "tiny")
    _check_coordinates(mesh, Fk)
    A = face_areas(mesh.vertices, Fk)
    tiny = A <= rel_area_eps * float(np.median(face_areas(mesh.vertices, F)))
    if tiny.any():
        _, inv, counts = _edge_face_counts(Fk, n)
        on_bnd = (counts[inv] == 1).reshape(-1, 3).any(axis=1)
        interior_tiny = tiny & ~on_bnd
        if interior_tiny.any():
            first = int(np.flatnonzero(face_keep)[np.flatnonzero(interior_tiny)[0]])
            raise MeshError(
                f"{mesh.name}: {int(interior_tiny.sum())} zero-area faces inside the region to flatten "
                f"(first: face {first}); they cannot be removed without making a hole. Remesh or smooth "
                "the surface (e.g. use the white or midthickness surface) first"
            )
        Fk = Fk[~tiny]
        repairs.append(f"removed {int(tiny.sum())} zero-area face(s) on the boundary")

    # 3. components, ears, dangling faces, pinched vertices: repeat until stable. Removing ears and
    # dangling faces (faces with at most one interior edge: leaves of the face graph) never splits
    # the region, so the pieces are looked at first and after pinches are removed only.
    pieces_may_split = True
    for _ in range(1000):
        changed = False
        big = _largest_piece(Fk, n, mesh.name) if pieces_may_split else np.ones(len(Fk), dtype=bool)
        pieces_may_split = False
        if not big.all():
            k, _lab = connected_components(Fk, n)
            repairs.append(f"kept the largest of {k} pieces; dropped {int((~big).sum())} faces in the others")
            Fk = Fk[big]
            changed = True
        ear = _ears(Fk, n)
        if ear.any() and ear.sum() < len(Fk):
            repairs.append(f"removed {int(ear.sum())} ear/dangling face(s) on the boundary")
            Fk = Fk[~ear]
            changed = True
        pinch = _non_manifold_vertex_faces(Fk, n)
        if pinch.any():
            repairs.append(f"removed {int(pinch.sum())} face(s) at vertices where the boundary touches itself")
            Fk = Fk[~pinch]
            changed = pieces_may_split = True
        if not changed:
            break

    _check_flattenable(Fk, n, mesh.name, repairs)
    used = np.bincount(Fk.ravel(), minlength=n) > 0
    vertex_map = np.flatnonzero(used)
    n_unref = n_keep - int(np.count_nonzero(used & keep))
    if n_unref:
        repairs.append(f"dropped {n_unref} masked vertices left without a face")

    k, _ = connected_components(Fk, n)
    loops = boundary_loops(Fk)
    chi = euler_characteristic(Fk)
    if k != 1 or len(loops) != 1 or chi != 1:
        shape = "an annulus" if (k == 1 and len(loops) == 2) else f"{k} piece(s)"
        raise MeshError(
            f"{mesh.name}: the cut is not a topological disk: found {k} connected component(s), "
            f"{len(loops)} boundary loop(s), Euler characteristic {chi} (a disk has 1, 1, 1); the mask "
            f"leaves {shape}. Check that the mask selects one cortex region with no large holes "
            f"(holes larger than max_hole_fraction={max_hole_fraction} of the faces are not filled)"
        )
    if len(loops[0]) < _MIN_BOUNDARY:
        raise MeshError(
            f"{mesh.name}: the cut disk has {len(loops[0])} boundary vertices; a map onto the square needs at "
            f"least {_MIN_BOUNDARY} (4 corners, 2 boundary edges apart). The region ({len(vertex_map)} vertices, "
            "after the repairs) is too small: check the mask")
    remap = np.full(n, -1, dtype=np.int64)
    remap[vertex_map] = np.arange(len(vertex_map))
    V, F, ends = split_chords(mesh.vertices[vertex_map], remap[Fk])
    if len(ends):
        repairs.append(
            f"split {len(ends)} chord(s) (interior edges joining two boundary vertices, first between original "
            f"vertices {vertex_map[ends[0]].tolist()}) at their midpoints: {len(ends)} vertices inserted "
            "after the original ones, their faces split in two")
    disk = Mesh(V, F, name=f"{mesh.name} (cut)")
    for r in repairs:
        log.info("cut %s: %s", mesh.name, r)
    return CutMesh(disk, vertex_map.astype(np.int64), tuple(repairs), inserted=vertex_map[ends],
                   inserted_weights=np.full((len(ends), 2), 0.5))
