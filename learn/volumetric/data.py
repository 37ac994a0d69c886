"""Cohort tables and GMD/GMV volumes for the volumetric path.

A cohort table is a CSV with one row per scan. Columns: ``subject`` and ``gmd_path`` / ``gmv_path`` (required;
relative paths are relative to the CSV's folder), and as needed ``session``, ``dataset``, ``site``, ``label`` (or
another label column: 0/1), ``sex``, ``age``, ``mmse``, ``diagnosis``. GMD is SPM's ``wc1``, GMV ``mwc1``.

Each scan becomes a (2, X, Y, Z) float32 tensor: both maps read with nibabel, NaN -> 0, multiplied by the brain
mask, cropped (``vol[12:108, 13:133, 16:102]`` on the 121x145x121 1.5 mm DARTEL grid -> 96x120x86; no reordering
of axes, as in the released code). No intensity normalisation. Decoded volumes are cached in memory (float16,
as the released arrays) or as .npy files, so an epoch does not re-read NIfTI.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import Dataset

from learn import DataError
from learn.cv import check_disjoint
from surfmap._atomic import atomic_write
from surfmap.exceptions import FormatError, InputFileNotFoundError

__all__ = [
    "DARTEL_SHAPE",
    "DEFAULT_CROP",
    "VolumeDataset",
    "check_grid",
    "load_mask",
    "read_cohort",
    "read_volume_pair",
    "resolve_crop",
    "validate_split",
]

log = logging.getLogger(__name__)

DARTEL_SHAPE = (121, 145, 121)
DEFAULT_CROP = ((12, 108), (13, 133), (16, 102))


def read_cohort(path, *, label_column: str | None = "label", check_files: bool = True):
    """Read and validate a cohort CSV.

    Parameters
    ----------
    path : path
        The CSV.
    label_column : str or None
        Column holding binary labels (0/1; empty cells allowed, e.g. MCI rows, and excluded from training).
        None skips the label check.
    check_files : bool
        Check that every GMD / GMV file exists.

    Returns
    -------
    pandas.DataFrame
        With absolute ``gmd_path`` / ``gmv_path`` and a ``row`` column (0..n-1).

    Raises
    ------
    InputFileNotFoundError
        The CSV or an image file is missing (the message lists the first missing files).
    DataError
        A required column is missing, a (subject, session) appears twice, or labels are not binary.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputFileNotFoundError(f"cohort table {str(path)!r} does not exist")
    df = pd.read_csv(path)
    required = ["subject", "gmd_path", "gmv_path"] + ([label_column] if label_column else [])
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"cohort table {str(path)!r} lacks column(s) {missing}; found {list(df.columns)}. Required: "
            "subject, gmd_path, gmv_path and the label column"
        )
    if len(df) == 0:
        raise DataError(f"cohort table {str(path)!r} has no rows")
    df["subject"] = df["subject"].astype(str)
    key = ["subject", "session"] if "session" in df.columns else ["subject"]
    dup = df.duplicated(key, keep=False)
    if dup.any():
        raise DataError(
            f"cohort table {str(path)!r}: {int(dup.sum())} rows repeat a {'/'.join(key)}, e.g. "
            f"{df.loc[dup, 'subject'].iloc[0]!r}; each scan should appear once"
        )
    for col in ("gmd_path", "gmv_path"):
        df[col] = [str(p if Path(p).is_absolute() else (path.parent / p)) for p in df[col].astype(str)]
    if check_files:
        absent = [p for col in ("gmd_path", "gmv_path") for p in df[col] if not Path(p).is_file()]
        if absent:
            raise InputFileNotFoundError(
                f"cohort table {str(path)!r}: {len(absent)} image file(s) do not exist, e.g. {absent[:3]}; "
                "fix the paths (relative paths are relative to the table's folder)"
            )
    if label_column:
        lab = pd.to_numeric(df[label_column], errors="coerce")
        bad = df[label_column].notna() & (lab.isna() | ~lab.isin([0, 1]))
        if bad.any():
            vals = sorted(map(str, df.loc[bad, label_column].unique()))[:10]
            raise DataError(
                f"cohort table {str(path)!r}: column {label_column!r} should hold binary labels 0/1 (or be empty); "
                f"found {vals}; recode it (e.g. AD=1, NC=0)"
            )
        df[label_column] = lab.astype("Int64")
    df["row"] = np.arange(len(df))
    return df.reset_index(drop=True)


def _grid_of(path) -> tuple[tuple[int, ...], np.ndarray]:
    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise InputFileNotFoundError(f"image {str(path)!r} does not exist") from None
    except Exception as exc:
        raise FormatError(f"image {str(path)!r} could not be read as NIfTI ({exc})") from exc
    return tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=np.float64)


def check_grid(cohort, reference=None, *, atol: float = 1e-3) -> tuple[tuple[int, int, int], np.ndarray]:
    """Check that every GMD/GMV image (headers only) shares one 3D grid: shape and affine.

    Parameters
    ----------
    cohort : DataFrame from :func:`read_cohort`
    reference : path or (shape, affine), optional
        Expected grid (e.g. the mask); default: the first GMD image.
    atol : float
        Tolerance on affine entries (mm).

    Returns
    -------
    shape, affine

    Raises
    ------
    DataError
        An image with another shape or affine, or not 3D (the message names the file, expected and found).
    """
    if reference is None:
        ref_shape, ref_aff = _grid_of(cohort["gmd_path"].iloc[0])
        ref_name = cohort["gmd_path"].iloc[0]
    elif isinstance(reference, (str, Path)):
        ref_shape, ref_aff = _grid_of(reference)
        ref_name = str(reference)
    else:
        ref_shape, ref_aff = tuple(reference[0]), np.asarray(reference[1], dtype=np.float64)
        ref_name = "the expected grid"
    if len(ref_shape) != 3:
        raise DataError(f"{ref_name!r} has shape {ref_shape}; a 3D volume was expected")
    for col in ("gmd_path", "gmv_path"):
        for p in cohort[col]:
            shape, aff = _grid_of(p)
            if shape != ref_shape:
                raise DataError(
                    f"image {p!r} has shape {shape}; expected {ref_shape} as {ref_name!r}. All GMD/GMV maps and the "
                    "mask must be on one grid (SPM DARTEL 'Normalise to MNI' output, 121x145x121 at 1.5 mm)"
                )
            if not np.allclose(aff, ref_aff, atol=atol):
                raise DataError(
                    f"image {p!r} has affine\n{np.round(aff, 3)}\nexpected\n{np.round(ref_aff, 3)} (as {ref_name!r}); "
                    "resample it to the common grid"
                )
    return ref_shape, ref_aff


def load_mask(mask, shape=None, affine=None, *, threshold: float = 0.0) -> np.ndarray:
    """Brain / grey-matter mask as a bool array, checked against the data grid.

    Parameters
    ----------
    mask : path or array
        NIfTI file (values > ``threshold`` are inside) or a bool/float array.
    shape, affine : optional
        The data grid; a mismatch raises :class:`DataError`.
    """
    if isinstance(mask, (str, Path)):
        mshape, maff = _grid_of(mask)
        arr = np.asarray(nib.load(str(mask)).get_fdata(), dtype=np.float64)
        if affine is not None and not np.allclose(maff, affine, atol=1e-3):
            raise DataError(f"mask {str(mask)!r} has affine\n{np.round(maff, 3)}\nbut the data have\n"
                            f"{np.round(np.asarray(affine), 3)}; reslice the mask to the data grid")
        name = str(mask)
    else:
        arr = np.asarray(mask, dtype=np.float64)
        name = "mask"
    arr = np.squeeze(arr)
    if shape is not None and arr.shape != tuple(shape):
        raise DataError(f"{name!r} has shape {arr.shape}; the data grid is {tuple(shape)}; reslice the mask")
    out = np.nan_to_num(arr) > threshold
    if not out.any():
        raise DataError(f"{name!r} is empty (no voxel above {threshold})")
    return out


def resolve_crop(crop, shape) -> tuple[slice, slice, slice] | None:
    """Crop slices: ``"auto"`` -> the released crop on the 121x145x121 grid, none otherwise; None -> none;
    ((x0, x1), (y0, y1), (z0, z1)) -> as given (checked against ``shape``)."""
    if crop is None:
        return None
    if isinstance(crop, str):
        if crop != "auto":
            raise DataError(f"'crop' should be 'auto', None or three (start, stop) pairs; {crop!r} was provided")
        return resolve_crop(DEFAULT_CROP, shape) if tuple(shape) == DARTEL_SHAPE else None
    pairs = [tuple(int(v) for v in p) for p in crop]
    if len(pairs) != 3 or any(len(p) != 2 for p in pairs):
        raise DataError(f"'crop' should be three (start, stop) pairs; {crop!r} was provided")
    for ax, ((a, b), n) in enumerate(zip(pairs, shape)):
        if not 0 <= a < b <= n:
            raise DataError(f"crop {pairs} does not fit the grid {tuple(shape)} on axis {ax} ({a}:{b} of {n})")
    return tuple(slice(a, b) for a, b in pairs)


def read_volume_pair(gmd_path, gmv_path, mask=None, crop=None) -> np.ndarray:
    """One scan as a (2, X, Y, Z) float32 array: [GMD, GMV], NaN -> 0, masked, cropped."""
    vols = []
    for p in (gmd_path, gmv_path):
        try:
            img = nib.load(str(p))
        except FileNotFoundError:
            raise InputFileNotFoundError(f"image {str(p)!r} does not exist") from None
        v = np.asarray(img.dataobj, dtype=np.float32)
        if v.ndim == 4 and v.shape[3] == 1:
            v = v[..., 0]
        if v.ndim != 3:
            raise DataError(f"image {str(p)!r} has shape {v.shape}; a 3D volume was expected")
        vols.append(v)
    if vols[0].shape != vols[1].shape:
        raise DataError(f"GMD {str(gmd_path)!r} {vols[0].shape} and GMV {str(gmv_path)!r} {vols[1].shape} differ")
    x = np.nan_to_num(np.stack(vols), nan=0.0, posinf=0.0, neginf=0.0)
    if mask is not None:
        if mask.shape != x.shape[1:]:
            raise DataError(f"mask shape {mask.shape} differs from the image grid {x.shape[1:]} of {str(gmd_path)!r}")
        x *= mask[None]
    if crop is not None:
        x = x[(slice(None),) + tuple(crop)]
    return np.ascontiguousarray(x, dtype=np.float32)


class VolumeDataset(Dataset):
    """Torch dataset of (x (2, X, Y, Z) float32, label, row id) for the rows of a cohort table.

    Parameters
    ----------
    cohort : DataFrame from :func:`read_cohort`
    rows : index array, optional
        Positions in ``cohort`` (default: all rows).
    label_column : str or None
        Target column (binary 0/1, or a number for regression with ``task="regression"``); None yields label 0.
    mask : bool array, optional
        On the image grid (before the crop).
    crop : tuple of slices, optional
    cache : {"memory", "disk", None}
        "memory" keeps decoded float16 arrays (shared by datasets built with the same ``cache_store``);
        "disk" writes ``cache_dir/<row>.npy`` once.
    cache_store : dict, optional
        A dict shared between datasets (e.g. train / validation / test of one fold) for the memory cache.
    task : {"binary", "regression"}
    labels : (n_rows,) array, optional
        Labels overriding the column.
    channels : sequence of int, optional
        Channels kept, in order (0 = GMD, 1 = GMV; default both): ``[0]`` / ``[1]`` for the one-map ablations.
    """

    def __init__(self, cohort, rows=None, *, label_column: str | None = "label", mask=None, crop=None,
                 cache: str | None = "memory", cache_dir=None, cache_store: dict | None = None,
                 task: str = "binary", labels=None, channels=None):
        if cache not in ("memory", "disk", None):
            raise ValueError(f"'cache' should be 'memory', 'disk' or None; {cache!r} was provided")
        if cache == "disk" and cache_dir is None:
            raise ValueError("cache='disk' needs 'cache_dir'")
        self.cohort = cohort
        self.rows = np.arange(len(cohort)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.mask, self.crop = mask, crop
        self.channels = None if channels is None or list(channels) == [0, 1] else [int(c) for c in channels]
        self.cache, self.cache_dir = cache, (Path(cache_dir) if cache_dir is not None else None)
        self._store = cache_store if cache_store is not None else {}
        self.label_column = label_column
        if labels is not None:
            self.labels = np.asarray(labels, dtype=np.float32)
            if self.labels.shape != self.rows.shape:
                raise DataError(f"'labels' has {self.labels.shape[0]} values for {self.rows.shape[0]} rows")
        elif label_column is not None:
            vals = cohort[label_column].iloc[self.rows]
            if vals.isna().any():
                bad = cohort["subject"].iloc[self.rows][vals.isna().to_numpy()].tolist()[:5]
                raise DataError(f"{int(vals.isna().sum())} selected scans have no {label_column!r} value, e.g. {bad}; "
                                "drop them from this set")
            y = vals.to_numpy(dtype=np.float64)
            if task == "binary" and not np.isin(y, [0, 1]).all():
                raise DataError(f"column {label_column!r} should be binary 0/1 for a classifier; "
                                f"found {sorted(set(y.tolist()))[:10]}")
            self.labels = y.astype(np.float32)
        else:
            self.labels = np.zeros(self.rows.shape[0], dtype=np.float32)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def volume(self, i: int) -> np.ndarray:
        """Decoded (2, X, Y, Z) float32 array of the i-th selected scan (from the cache when present)."""
        r = int(self.rows[i])
        rid = int(self.cohort["row"].iloc[r]) if "row" in self.cohort.columns else r
        if self.cache == "memory" and rid in self._store:
            return self._store[rid].astype(np.float32)
        if self.cache == "disk":
            f = self.cache_dir / f"{rid}.npy"
            if f.is_file():
                return np.load(f).astype(np.float32)
        row = self.cohort.iloc[r]
        x = read_volume_pair(row["gmd_path"], row["gmv_path"], self.mask, self.crop)
        if self.cache == "memory":
            self._store[rid] = x.astype(np.float16)
        elif self.cache == "disk":
            atomic_write(self.cache_dir / f"{rid}.npy", lambda fh: np.save(fh, x.astype(np.float16)))
        return x

    def __getitem__(self, i):
        r = int(self.rows[i])
        rid = int(self.cohort["row"].iloc[r]) if "row" in self.cohort.columns else r
        x = self.volume(i)
        if self.channels is not None:
            x = np.ascontiguousarray(x[self.channels])
        return torch.from_numpy(x), torch.tensor(self.labels[i]), rid


def validate_split(cohort, train_rows, test_rows, by=("subject", "site")) -> None:
    """Raise :class:`learn.SplitError` when a subject (or site / dataset) is in both train and test."""
    for col in by:
        if col not in cohort.columns:
            raise DataError(f"cannot check the split by {col!r}: the cohort table has no such column")
        check_disjoint(train_rows, test_rows, cohort[col].astype(str).to_numpy(), what=col)
