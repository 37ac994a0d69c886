"""The :class:`FlatMap` result type: a disk mesh laid out in the unit square."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .exceptions import FormatError, InputFileNotFoundError, MeshError

__all__ = ["FlatMap"]

_CORNER_POSITIONS = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


@dataclass(frozen=True, eq=False)
class FlatMap:
    """A flattened disk: vertex positions in [0, 1]^2 and the disk's faces.

    Attributes
    ----------
    uv : (k, 2) float64
        Flat position of each vertex of the disk, inside the unit square.
    faces : (m, 3) int64
        Triangles indexing ``uv`` (the input connectivity, positively oriented in the plane).
    vertex_map : (k,) int64
        Index of each flat vertex in the mesh given to ``flatten`` / ``conformal_map``.
    corners : (4,) int64
        Indices into ``uv`` of the vertices at (0, 0), (1, 0), (1, 1), (0, 1).
    info : dict
        Method, iterations, residuals, repairs and stage timings (JSON-serialisable).
    vertices : (k, 3) float64 or None
        3D positions of the flat vertices, used by :func:`surfmap.distortion`.
    """

    uv: np.ndarray
    faces: np.ndarray
    vertex_map: np.ndarray
    corners: np.ndarray
    info: dict = field(default_factory=dict)
    vertices: np.ndarray | None = None

    def __post_init__(self):
        uv = np.ascontiguousarray(self.uv, dtype=np.float64)
        faces = np.ascontiguousarray(self.faces, dtype=np.int64)
        vmap = np.ascontiguousarray(self.vertex_map, dtype=np.int64)
        corners = np.ascontiguousarray(self.corners, dtype=np.int64)
        if uv.ndim != 2 or uv.shape[1] != 2:
            raise MeshError(f"FlatMap.uv: expected shape (k, 2); found {uv.shape}")
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise MeshError(f"FlatMap.faces: expected shape (m, 3); found {faces.shape}")
        if vmap.shape != (len(uv),):
            raise MeshError(f"FlatMap.vertex_map: expected {len(uv)} entries (one per uv row); found {vmap.shape}")
        if corners.shape != (4,):
            raise MeshError(f"FlatMap.corners: expected 4 vertex indices; found shape {corners.shape}")
        if len(faces) and (faces.min() < 0 or faces.max() >= len(uv)):
            raise MeshError(f"FlatMap.faces: indices must lie in [0, {len(uv) - 1}]")
        object.__setattr__(self, "uv", uv)
        object.__setattr__(self, "faces", faces)
        object.__setattr__(self, "vertex_map", vmap)
        object.__setattr__(self, "corners", corners)
        if self.vertices is not None:
            V = np.ascontiguousarray(self.vertices, dtype=np.float64)
            if V.shape != (len(uv), 3):
                raise MeshError(f"FlatMap.vertices: expected shape ({len(uv)}, 3); found {V.shape}")
            object.__setattr__(self, "vertices", V)

    @property
    def n_vertices(self) -> int:
        return len(self.uv)

    def signed_areas(self) -> np.ndarray:
        """Signed area (m,) of each face in the plane; positive when not flipped."""
        a, b, c = self.uv[self.faces[:, 0]], self.uv[self.faces[:, 1]], self.uv[self.faces[:, 2]]
        e1, e2 = b - a, c - a
        return 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])

    def save(self, path) -> Path:
        """Write the map to ``path`` (.npz), atomically (write, then rename)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        arrays = dict(
            uv=self.uv,
            faces=self.faces,
            vertex_map=self.vertex_map,
            corners=self.corners,
            info=np.array(json.dumps(_jsonable(self.info))),
            format=np.array("surfmap.FlatMap/1"),
        )
        if self.vertices is not None:
            arrays["vertices"] = self.vertices
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path) -> "FlatMap":
        """Read a map written by :meth:`save`.

        Raises
        ------
        InputFileNotFoundError
            The file does not exist.
        FormatError
            The file is not a surfmap flat map or is corrupt.
        """
        path = Path(path)
        if not path.exists():
            raise InputFileNotFoundError(f"{path}: no such flat-map file")
        try:
            with np.load(path, allow_pickle=False) as z:
                if "format" not in z or not str(z["format"]).startswith("surfmap.FlatMap"):
                    raise FormatError(
                        f"{path}: not a surfmap flat map (expected an .npz written by FlatMap.save)"
                    )
                return cls(
                    uv=z["uv"],
                    faces=z["faces"],
                    vertex_map=z["vertex_map"],
                    corners=z["corners"],
                    info=json.loads(str(z["info"])),
                    vertices=z["vertices"] if "vertices" in z else None,
                )
        except FormatError:
            raise
        except (OSError, ValueError, KeyError, EOFError) as err:
            raise FormatError(f"{path}: could not read the flat map: truncated or corrupt ({err})") from None

    def __repr__(self) -> str:
        return f"FlatMap({self.n_vertices} vertices, {len(self.faces)} faces, method={self.info.get('method')!r})"
