"""Distortion of a flat map: area, angle and dilatation statistics, flipped faces.

Per face, with 3D area ``A_f`` and flat signed area ``a_f`` normalised by their totals
(``A^_f = A_f / sum A``, ``a^_f = |a_f| / sum |a|``):

- log area ratio ``d_f = ln(a^_f / A^_f)`` (natural logarithm; 0 means the face keeps its share of area);
- dilatation ``K_f = sigma1 / sigma2`` of the Jacobian of the affine map from the 3D triangle (in a
  local orthonormal frame) to the flat triangle (1 = conformal), and ``|mu_f| = (K - 1)/(K + 1)``;
- corner angle differences ``theta_2D - theta_3D`` in degrees.

A face is flipped when its flat signed area is <= 0 and near-degenerate when
``|a_f| < 1e-14 * sum |a|``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._validation import check_instance
from .exceptions import MeshError
from .flatmap import FlatMap
from .mesh import Mesh, angles_from_lengths, edge_lengths, face_areas

__all__ = ["Distortion", "distortion"]

_LOG_1_1 = float(np.log(1.1))


@dataclass(frozen=True, eq=False)
class Distortion:
    """Distortion statistics of a flat map (see the module docstring for the definitions).

    Attributes
    ----------
    log_area_ratio : (m,) float64
        ``d_f``, natural log of the normalised flat / 3D area ratio per face.
    dilatation : (m,) float64
        ``sigma1 / sigma2`` per face (inf for degenerate faces).
    angle_difference : (m, 3) float64
        Flat minus 3D corner angle, degrees.
    signed_area : (m,) float64
        Flat signed area per face (positive = correctly oriented).
    area_mean_abs, area_median_abs, area_sd, area_weighted_mean_abs : float
        Mean, median of ``|d|``, standard deviation of ``d``, and ``sum A^_f |d_f|``.
    area_abs_p5, area_abs_p95 : float
        5th and 95th percentiles of ``|d|`` (of the absolute log ratio, not of ``d``).
    area_fraction_within_10pct : float
        Fraction of faces with ``|d| < ln 1.1``.
    dilatation_mean, dilatation_median, dilatation_p95, beltrami_mean : float
        Over non-degenerate faces; ``beltrami_mean`` is the mean ``|mu|``.
    angle_mean_abs, angle_sd, angle_max_abs : float
        Of the corner angle differences, degrees.
    n_flipped, n_degenerate : int
        Faces with flat signed area <= 0, and with ``|a_f| < 1e-14 sum |a|``.
    """

    log_area_ratio: np.ndarray = field(repr=False)
    dilatation: np.ndarray = field(repr=False)
    angle_difference: np.ndarray = field(repr=False)
    signed_area: np.ndarray = field(repr=False)
    area_mean_abs: float
    area_median_abs: float
    area_sd: float
    area_weighted_mean_abs: float
    area_abs_p5: float
    area_abs_p95: float
    area_fraction_within_10pct: float
    dilatation_mean: float
    dilatation_median: float
    dilatation_p95: float
    beltrami_mean: float
    angle_mean_abs: float
    angle_sd: float
    angle_max_abs: float
    n_flipped: int
    n_degenerate: int
    n_faces: int

    _ARRAYS = ("log_area_ratio", "dilatation", "angle_difference", "signed_area")

    def to_dict(self, arrays: bool = False) -> dict:
        """Statistics as plain Python numbers (JSON-ready); per-face arrays as lists if ``arrays``."""
        out = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name in self._ARRAYS:
                if arrays:
                    out[name] = np.asarray(value).tolist()
                continue
            out[name] = value.item() if isinstance(value, np.generic) else value
        return out

    def summary(self) -> str:
        """A few lines for a log or a report."""
        return "\n".join(
            [
                f"faces: {self.n_faces}, flipped: {self.n_flipped}, near-degenerate: {self.n_degenerate}",
                (
                    f"area |ln ratio|: mean {self.area_mean_abs:.4f}, median {self.area_median_abs:.4f}, "
                    f"95th pct {self.area_abs_p95:.4f}, area-weighted mean {self.area_weighted_mean_abs:.4f}, "
                    f"SD(ln ratio) {self.area_sd:.4f}, within 10%: {100 * self.area_fraction_within_10pct:.1f}%"
                ),
                (
                    f"dilatation sigma1/sigma2: mean {self.dilatation_mean:.4f}, median {self.dilatation_median:.4f}, "
                    f"95th pct {self.dilatation_p95:.4f}; mean |mu| {self.beltrami_mean:.4f}"
                ),
                (
                    f"corner angle difference (deg): mean |.| {self.angle_mean_abs:.3f}, SD {self.angle_sd:.3f}, "
                    f"max |.| {self.angle_max_abs:.3f}"
                ),
            ]
        )


def _singular_values_2x2(a, b, c, d):
    """Singular values (s1 >= s2 >= 0) of [[a, b], [c, d]], elementwise; s2 signed by det."""
    E = 0.5 * (a + d)
    Fv = 0.5 * (a - d)
    G = 0.5 * (c + b)
    H = 0.5 * (c - b)
    Q = np.hypot(E, H)
    R = np.hypot(Fv, G)
    return Q + R, Q - R


def distortion(fm: FlatMap, mesh: Mesh | None = None) -> Distortion:
    """Area and angle distortion of a flat map against its 3D surface.

    Parameters
    ----------
    fm : FlatMap
        The flat map; ``fm.uv`` (k, 2), ``fm.faces`` (m, 3).
    mesh : Mesh, optional
        The mesh ``fm.vertex_map`` indexes (the one given to ``flatten`` / ``conformal_map``).
        Defaults to ``fm.vertices``.

    Returns
    -------
    Distortion

    Raises
    ------
    ArgumentTypeError
        ``fm`` is not a FlatMap, or ``mesh`` is neither a Mesh nor None (also a TypeError).
    MeshError
        No 3D positions (``mesh`` is None and ``fm.vertices`` is None), or ``fm.vertex_map``
        indexes vertices that ``mesh`` does not have.

    Examples
    --------
    >>> d = distortion(fm)                  # doctest: +SKIP
    >>> d.n_flipped, d.dilatation_mean      # doctest: +SKIP
    (0, 1.04)
    """
    check_instance("fm", fm, FlatMap, expected="a surfmap.FlatMap")
    if mesh is not None:
        check_instance("mesh", mesh, Mesh, expected="a surfmap.Mesh or None")
        top = int(max(fm.vertex_map.max(initial=-1), fm.inserted.max(initial=-1)))
        if top >= mesh.n_vertices:
            raise MeshError(
                f"mesh: fm.vertex_map indexes vertex {top} but {mesh.name} has "
                f"{mesh.n_vertices} vertices; pass the mesh the map was computed from"
            )
        V = fm.to_flat(mesh.vertices)  # inserted vertices (chord midpoints) interpolated
    elif fm.vertices is not None:
        V = fm.vertices
    else:
        raise MeshError("distortion: expected 3D vertices for fm; found fm.vertices is None. Pass mesh= (the "
                        "surface that fm.vertex_map indexes)")
    F = fm.faces
    uv = fm.uv
    m = len(F)

    A3 = face_areas(V, F)
    a2 = fm.signed_areas()
    tot2 = float(np.abs(a2).sum())
    degenerate = np.abs(a2) < 1e-14 * tot2
    flipped = a2 <= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.log((np.abs(a2) / tot2) / (A3 / A3.sum()))

    # Jacobian of the affine map: 3D triangle in a local frame -> flat triangle
    p0, p1, p2 = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
    e1, e2 = p1 - p0, p2 - p0
    n1 = np.linalg.norm(e1, axis=1)
    x = e1 / n1[:, None]
    e2x = (e2 * x).sum(1)
    e2y = np.linalg.norm(e2 - e2x[:, None] * x, axis=1)
    q0, q1, q2 = uv[F[:, 0]], uv[F[:, 1]], uv[F[:, 2]]
    f1, f2 = q1 - q0, q2 - q0
    # X = [[n1, e2x], [0, e2y]], X^-1 = [[1/n1, -e2x/(n1 e2y)], [0, 1/e2y]]
    with np.errstate(divide="ignore", invalid="ignore"):
        i11, i12, i22 = 1.0 / n1, -e2x / (n1 * e2y), 1.0 / e2y
        a = f1[:, 0] * i11
        b = f1[:, 0] * i12 + f2[:, 0] * i22
        c = f1[:, 1] * i11
        dd = f1[:, 1] * i12 + f2[:, 1] * i22
        s1, s2 = _singular_values_2x2(a, b, c, dd)
        K = s1 / np.abs(s2)
    K = np.where(degenerate, np.inf, K)

    ang3 = angles_from_lengths(edge_lengths(V, F))
    ang2 = angles_from_lengths(edge_lengths(np.column_stack([uv, np.zeros(len(uv))]), F))
    dtheta = np.degrees(ang2 - ang3)

    ok = ~degenerate
    absd = np.abs(d[ok])
    Kok = K[ok]
    w3 = A3[ok] / A3[ok].sum()
    nan = float("nan")
    return Distortion(
        log_area_ratio=d,
        dilatation=K,
        angle_difference=dtheta,
        signed_area=a2,
        area_mean_abs=float(absd.mean()) if len(absd) else nan,
        area_median_abs=float(np.median(absd)) if len(absd) else nan,
        area_sd=float(d[ok].std()) if len(absd) else nan,
        area_weighted_mean_abs=float((w3 * absd).sum()) if len(absd) else nan,
        area_abs_p5=float(np.percentile(absd, 5)) if len(absd) else nan,
        area_abs_p95=float(np.percentile(absd, 95)) if len(absd) else nan,
        area_fraction_within_10pct=float((absd < _LOG_1_1).mean()) if len(absd) else nan,
        dilatation_mean=float(Kok.mean()) if len(Kok) else nan,
        dilatation_median=float(np.median(Kok)) if len(Kok) else nan,
        dilatation_p95=float(np.percentile(Kok, 95)) if len(Kok) else nan,
        beltrami_mean=float(((Kok - 1) / (Kok + 1)).mean()) if len(Kok) else nan,
        angle_mean_abs=float(np.abs(dtheta).mean()),
        angle_sd=float(dtheta.std()),
        angle_max_abs=float(np.abs(dtheta).max()),
        n_flipped=int(flipped.sum()),
        n_degenerate=int(degenerate.sum()),
        n_faces=int(m),
    )
