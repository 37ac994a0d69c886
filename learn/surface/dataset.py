"""Flat-map images plus a cohort table, as a torch Dataset, with normalisation fitted on training folds only.

Sources
-------
- ``surfmap batch`` outputs: a ``manifest.tsv`` (columns ``subject``, ``hemi``, ``status`` and the path of each
  subject-hemisphere folder or of its ``images.npz``) whose ``images.npz`` hold the channels by name
  (:meth:`SurfaceImageDataset.from_manifest`);
- arrays already in memory, e.g. :meth:`learn.surface.synthetic.SyntheticCohort.images` in template mode
  (:meth:`SurfaceImageDataset.from_arrays`).

Channels are named ``"{hemi}_{metric}"`` (``left_thickness``, ``right_sulc``...). Seed 001 trains one network per
metric and hemisphere, so a dataset usually holds one channel; :meth:`SurfaceImageDataset.select` picks them.

Feeding a grey image to an ImageNet network
-------------------------------------------
Seed 001 normalises each input with "the mean value and standard deviation of the input images" and fine-tunes
torchvision's 3-channel ResNet-50 / DenseNet-121; it does not say how the single metric channel becomes RGB. We
z-score each channel with the mean and SD of the *training* images (:class:`Normalizer`, fitted per fold; not
ImageNet's RGB statistics, which describe photographs) and feed the grey channel as if replicated to R, G and B.
:func:`learn.surface.models.build_model` implements the replication exactly and cheaply: its first convolution
takes 1 channel and its kernel is the sum of the pretrained R, G and B kernels, which gives the same output as the
3-channel network on the replicated image.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from learn import DataError
from surfmap.exceptions import InputFileNotFoundError

__all__ = ["FoldDataset", "Normalizer", "SurfaceImageDataset", "load_images_npz", "read_manifest"]

log = logging.getLogger(__name__)

_OK_STATUS = {"ok", "done", "success", "skipped", "exists", "cached"}


class Normalizer:
    """Per-channel (or per-pixel) z-scoring whose statistics come from training images only.

    Parameters
    ----------
    mode : {"channel", "pixel", "none"}
        ``"channel"``: one mean and SD per channel over every training image and pixel (the seed's "mean and
        standard deviation of the input images"). ``"pixel"``: a mean and SD per channel and pixel.
    eps : float
        Floor of the SD (constant pixels, e.g. outside the cortex in ``"pixel"`` mode).

    Attributes
    ----------
    mean_, std_ : (C, 1, 1) or (C, H, W) float32
        Set by :meth:`fit`.
    n_fit_ : int
        Number of images the statistics come from.

    Examples
    --------
    >>> norm = Normalizer("channel").fit(images, train_idx)   # doctest: +SKIP
    >>> x = norm.transform(images[test_idx])                  # doctest: +SKIP
    """

    def __init__(self, mode: str = "channel", eps: float = 1e-6):
        if mode not in ("channel", "pixel", "none"):
            raise DataError(f"normalisation 'mode' should be 'channel', 'pixel' or 'none'; {mode!r} was provided")
        self.mode = mode
        self.eps = float(eps)

    def fit(self, images, train_idx) -> Normalizer:
        """Compute the statistics from ``images[train_idx]`` only (never pass test indices here).

        Parameters
        ----------
        images : (N, C, H, W) array
        train_idx : (n,) int
            Training-fold indices.
        """
        images = np.asarray(images) if not isinstance(images, np.ndarray) else images
        if images.ndim != 4:
            raise DataError(f"'images' should have shape (N, C, H, W); found {images.shape}")
        idx = np.asarray(train_idx, dtype=np.int64)
        if idx.ndim != 1 or idx.size == 0:
            raise DataError(f"'train_idx' should be a non-empty 1-D index array; found shape {idx.shape}")
        if idx.min() < 0 or idx.max() >= images.shape[0]:
            raise DataError(f"'train_idx' indexes outside [0, {images.shape[0] - 1}]")
        C = images.shape[1]
        if self.mode == "none":
            self.mean_ = np.zeros((C, 1, 1), np.float32)
            self.std_ = np.ones((C, 1, 1), np.float32)
        else:
            # accumulate in float64, one chunk of training images at a time (never the test images)
            s = np.zeros(images.shape[1:], np.float64)
            ss = np.zeros(images.shape[1:], np.float64)
            for start in range(0, idx.size, 256):
                x = images[idx[start : start + 256]].astype(np.float64)
                s += x.sum(axis=0)
                ss += (x * x).sum(axis=0)
            n = float(idx.size)
            if self.mode == "channel":
                npx = n * images.shape[2] * images.shape[3]
                mean = s.sum(axis=(1, 2)) / npx
                var = ss.sum(axis=(1, 2)) / npx - mean**2
                mean, var = mean[:, None, None], var[:, None, None]
            else:
                mean = s / n
                var = ss / n - mean**2
            self.mean_ = mean.astype(np.float32)
            self.std_ = np.sqrt(np.maximum(var, 0.0)).clip(min=self.eps).astype(np.float32)
        self.n_fit_ = int(idx.size)
        return self

    def transform(self, x) -> np.ndarray:
        """``(x - mean_) / std_`` for ``x`` of shape (C, H, W) or (N, C, H, W); float32."""
        if not hasattr(self, "mean_"):
            raise DataError("this Normalizer is not fitted; call fit(images, train_idx) with the training fold")
        return ((np.asarray(x, np.float32) - self.mean_) / self.std_).astype(np.float32, copy=False)

    def state_dict(self) -> dict:
        return {"mode": self.mode, "eps": self.eps, "mean": self.mean_, "std": self.std_, "n_fit": self.n_fit_}

    @classmethod
    def from_state_dict(cls, state: dict) -> Normalizer:
        obj = cls(str(np.asarray(state["mode"])), float(np.asarray(state["eps"])))
        obj.mean_, obj.std_, obj.n_fit_ = np.asarray(state["mean"]), np.asarray(state["std"]), int(state["n_fit"])
        return obj


def read_manifest(path) -> pd.DataFrame:
    """Read a ``surfmap batch`` ``manifest.tsv`` and resolve each row's ``images.npz``.

    The manifest needs ``subject`` and ``hemi``; the images are found from (in order) a column ``images``
    (path to the npz), or a folder column (``folder``, ``output``, ``out_dir``, ``path``, ``dir``) holding
    ``images.npz``, or ``<manifest dir>/<subject>/<hemi>/images.npz``. Relative paths are relative to the
    manifest's folder. Adds a column ``images_path`` (absolute).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileNotFoundError(
            f"manifest {str(path)!r} does not exist; run `surfmap batch` first, or point to its manifest.tsv"
        )
    try:
        df = pd.read_csv(path, sep="\t", dtype={"subject": str})
    except Exception as exc:
        raise DataError(f"manifest {str(path)!r} could not be read as TSV ({exc})") from exc
    missing = [c for c in ("subject", "hemi") if c not in df.columns]
    if missing:
        raise DataError(
            f"manifest {str(path)!r} lacks column(s) {missing}; found {list(df.columns)}. "
            "Expected the manifest.tsv written by `surfmap batch`."
        )
    base = path.parent

    def resolve(row) -> str:
        if "images" in df.columns and isinstance(row["images"], str) and row["images"]:
            p = Path(row["images"])
        else:
            p = None
            for c in ("folder", "output", "out_dir", "outdir", "path", "dir"):
                if c in df.columns and isinstance(row[c], str) and row[c]:
                    p = Path(row[c]) / "images.npz"
                    break
            if p is None:
                p = Path(str(row["subject"])) / str(row["hemi"]) / "images.npz"
        return str(p if p.is_absolute() else (base / p))

    df["images_path"] = [resolve(r) for _, r in df.iterrows()]
    df["hemi"] = df["hemi"].map(lambda h: {"lh": "left", "rh": "right", "L": "left", "R": "right"}.get(h, h))
    return df


def load_images_npz(path) -> tuple[np.ndarray, list]:
    """Read one ``images.npz``: ``images`` (C, H, W) with names in ``channels`` / ``channel_names`` / ``names``,
    or one (H, W) array per channel name. Returns ``(images float32, names)``."""
    path = Path(path)
    if not path.is_file():
        raise InputFileNotFoundError(f"image file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            if "images" in keys:
                img = np.asarray(z["images"], np.float32)
                name_key = next((k for k in ("channels", "channel_names", "names", "metrics") if k in keys), None)
                if name_key is None:
                    raise DataError(f"{str(path)!r} holds 'images' but no channel names ('channels'); found {keys}")
                names = [str(n) for n in z[name_key]]
                if img.ndim == 2:
                    img = img[None]
            else:
                names = [k for k in keys if z[k].ndim == 2]
                img = np.stack([np.asarray(z[k], np.float32) for k in names])
    except (OSError, ValueError) as exc:
        raise DataError(f"image file {str(path)!r} could not be read ({exc})") from exc
    if img.ndim != 3 or img.shape[0] != len(names):
        raise DataError(f"{str(path)!r}: expected (C, H, W) images with C names; found {img.shape}, {len(names)} names")
    return img, names


GEOMETRY_FIX = ("re-run `surfmap batch` so that every image comes from one map: FreeSurfer cohorts with --resample "
                "fslr32k (add --template <the other cohort's out>/_template/{hemi}/flatmap.npz to share its map), "
                "HCP cohorts in template mode")


def _check_geometry(seen: dict, hemi: str, path, subject) -> None:
    """Every subject's images of a hemisphere come from one map (``images.npz``'s ``geometry``), else DataError."""
    with np.load(path) as z:
        g = str(z["geometry"]) if "geometry" in z.files else None
    first = seen.setdefault(hemi, (g, subject))
    if g != first[0]:
        raise DataError(f"{str(path)!r} (subject {subject!r}, {hemi}): images made with geometry {g!r}, but subject "
                        f"{first[1]!r}'s with {first[0]!r}; pixels of different maps are different places of the "
                        f"cortex, so they cannot share a network. Fix: " + GEOMETRY_FIX)


def _check_binary(labels, column: str) -> np.ndarray:
    y = pd.Series(labels)
    if y.isna().any():
        bad = int(y.isna().sum())
        raise DataError(f"label column {column!r} has {bad} missing value(s); every subject needs a 0/1 label")
    vals = sorted(pd.unique(y).tolist(), key=str)
    try:
        num = y.astype(np.float64).to_numpy()
    except (TypeError, ValueError):
        raise DataError(
            f"label column {column!r} should hold binary labels 0/1; found values {vals[:10]}; recode it "
            "(e.g. 1 = male / ASD, 0 = female / control)"
        ) from None
    if not np.all(np.isin(num, (0.0, 1.0))):
        raise DataError(
            f"label column {column!r} should hold binary labels 0/1; found values {vals[:10]}; recode it "
            "(e.g. 1 = male / ASD, 0 = female / control)"
        )
    return num.astype(np.int64)


class SurfaceImageDataset(Dataset):
    """Images ``(N, C, H, W)`` with a binary label, subject, site and group per image.

    Indexing gives raw (unnormalised) ``(x float32 tensor (C, H, W), y float32)``; training uses
    :meth:`fold` views that apply a :class:`Normalizer` fitted on the training fold.

    Attributes
    ----------
    images : (N, C, H, W) float32 ndarray
    labels : (N,) int64
    subjects, sites, groups : (N,) object arrays
    channels : list of str
    table : pandas.DataFrame
        The cohort rows, in image order.
    geometry : dict of str to str, or None
        Per hemisphere, what the pixels mean (``images.npz``'s ``geometry``, written by ``surfmap
        batch``): ``"template:<map hash>"`` when every subject shares one map, ``"native"`` for
        per-subject maps; None when unknown (arrays, older files).
    """

    def __init__(self, images, labels, subjects, channels, *, sites=None, groups=None, table=None, geometry=None):
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4:
            raise DataError(f"'images' should have shape (N, C, H, W); found {images.shape}")
        n = images.shape[0]
        if len(channels) != images.shape[1]:
            raise DataError(f"{images.shape[1]} image channels but {len(channels)} channel names were given")
        labels = _check_binary(labels, "label")
        subjects = np.asarray(subjects, dtype=object)
        for name, arr in (("labels", labels), ("subjects", subjects)):
            if len(arr) != n:
                raise DataError(f"'{name}' has {len(arr)} entries for {n} images")
        if len(set(subjects.tolist())) != n:
            dup = pd.Series(subjects).value_counts()
            raise DataError(f"subjects should be unique; repeated: {dup[dup > 1].index[:5].tolist()}")
        if not np.all(np.isfinite(images)):
            bad = np.flatnonzero(~np.isfinite(images).reshape(n, -1).all(axis=1))
            raise DataError(
                f"{bad.size} image(s) hold NaN/inf (subjects {subjects[bad[:5]].tolist()}); rasterize with a NaN "
                "policy or drop these subjects"
            )
        self.images = images
        self.labels = labels
        self.subjects = subjects
        self.sites = np.asarray(sites if sites is not None else ["site"] * n, dtype=object)
        self.groups = np.asarray(groups if groups is not None else subjects, dtype=object)
        self.channels = list(channels)
        self.geometry = dict(geometry) if geometry else None
        self.table = table.reset_index(drop=True) if table is not None else pd.DataFrame(
            {"subject": subjects, "label": labels, "site": self.sites}
        )

    @classmethod
    def from_arrays(cls, images, table: pd.DataFrame, channels, *, label_column: str = "label",
                    subject_column: str = "subject", site_column: str = "site",
                    group_column: str | None = None) -> SurfaceImageDataset:
        """Images in the row order of ``table`` (e.g. from ``SyntheticCohort.images``)."""
        table = _check_table(table, [label_column, subject_column], "table")
        if len(table) != len(images):
            raise DataError(f"'table' has {len(table)} rows for {len(images)} images")
        return cls(
            images, table[label_column].to_numpy(), table[subject_column].astype(str).to_numpy(), channels,
            sites=table[site_column].to_numpy() if site_column in table else None,
            groups=table[group_column].to_numpy() if group_column else None, table=table,
        )

    @classmethod
    def from_manifest(cls, manifest, table, *, metrics=None, hemis=("left", "right"),
                      label_column: str = "label", subject_column: str = "subject", site_column: str = "site",
                      group_column: str | None = None, subjects=None, on_missing: str = "error"
                      ) -> SurfaceImageDataset:
        """Load the images of ``surfmap batch`` for the subjects of a cohort table.

        Parameters
        ----------
        manifest : path to ``manifest.tsv``, or a DataFrame from :func:`read_manifest`
        table : path to a CSV / TSV, or a DataFrame
            One row per subject: subject, label (0/1), site, ...
        metrics : sequence of str or None
            Metric names as in ``images.npz`` (``thickness``, ``sulc``...); None: every channel of the first file.
        hemis : sequence of {"left", "right"}
        subjects : sequence of str or None
            Restrict to these subjects (default: every subject of the table).
        on_missing : {"error", "drop"}
            A table subject without ``ok`` images for every hemisphere raises :class:`DataError` naming it
            (default), or is dropped with a warning.

        Raises
        ------
        DataError
            Unknown subjects, subjects without images, labels not binary, image sizes that differ.
        InputFileNotFoundError
            The manifest, the table or an ``images.npz`` named in the manifest does not exist.
        """
        if on_missing not in ("error", "drop"):
            raise DataError(f"'on_missing' should be 'error' or 'drop'; {on_missing!r} was provided")
        man = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
        table = _read_table(table)
        table = _check_table(table, [subject_column, label_column], "cohort table")
        table = table.assign(**{subject_column: table[subject_column].astype(str)})
        if subjects is not None:
            unknown = sorted(set(map(str, subjects)) - set(table[subject_column]))
            if unknown:
                raise DataError(f"{len(unknown)} requested subject(s) are not in the cohort table: {unknown[:10]}")
            table = table[table[subject_column].isin(set(map(str, subjects)))]
        man = man.assign(subject=man["subject"].astype(str))
        ok = man["status"].astype(str).str.lower().isin(_OK_STATUS) if "status" in man.columns else True
        good = man[ok]
        unknown = sorted(set(man["subject"]) - set(table[subject_column]))
        if unknown:
            log.info("%d manifest subject(s) are not in the cohort table and are ignored: %s", len(unknown), unknown[:5])
        rows, paths, missing = [], [], []
        for _, row in table.iterrows():
            s = row[subject_column]
            per = []
            for h in hemis:
                hit = good[(good["subject"] == s) & (good["hemi"] == h)]
                if hit.empty:
                    why = man[(man["subject"] == s) & (man["hemi"] == h)]
                    status = why["status"].iloc[0] if (not why.empty and "status" in why) else "not in manifest"
                    missing.append(f"{s} {h} ({status})")
                    break
                per.append(hit["images_path"].iloc[-1])
            else:
                rows.append(row)
                paths.append(per)
        if missing:
            msg = (f"{len(missing)} subject-hemisphere(s) of the cohort table have no images in the manifest: "
                   f"{missing[:10]}{' ...' if len(missing) > 10 else ''}")
            if on_missing == "error":
                raise DataError(msg + "; rerun `surfmap batch` for them or pass on_missing='drop'")
            log.warning(msg + "; dropped")
        if not rows:
            raise DataError("no subject of the cohort table has images; check the subject IDs against the manifest")
        table = pd.DataFrame(rows).reset_index(drop=True)
        images, channels = None, None
        geometry: dict = {}
        for i, per in enumerate(paths):
            chans, names = [], []
            for h, p in zip(hemis, per):
                img, nm = load_images_npz(p)
                _check_geometry(geometry, h, p, table[subject_column][i])
                want = nm if metrics is None else list(metrics)
                absent = [m for m in want if m not in nm]
                if absent:
                    raise DataError(f"{p!r} has channels {nm}; metric(s) {absent} are missing")
                chans.append(img[[nm.index(m) for m in want]])
                names += [f"{h}_{m}" for m in want]
            x = np.concatenate(chans)
            if images is None:
                images = np.empty((len(paths),) + x.shape, np.float32)
                channels = names
            if x.shape != images.shape[1:] or names != channels:
                raise DataError(
                    f"subject {table[subject_column][i]!r}: images {x.shape} / channels {names} differ from the "
                    f"first subject's {images.shape[1:]} / {channels}; rasterize every subject at the same size"
                )
            images[i] = x
        ds = cls.from_arrays(images, table, channels, label_column=label_column, subject_column=subject_column,
                             site_column=site_column, group_column=group_column)
        ds.geometry = {h: g for h, (g, _) in geometry.items() if g is not None} or None
        return ds

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i):
        return torch.from_numpy(self.images[i]), torch.tensor(float(self.labels[i]))

    def select(self, channels) -> SurfaceImageDataset:
        """A dataset with only the named channels (e.g. ``["left_thickness"]``), sharing no memory."""
        channels = [channels] if isinstance(channels, str) else list(channels)
        absent = [c for c in channels if c not in self.channels]
        if absent:
            raise DataError(f"channel(s) {absent} are not in this dataset; it has {self.channels}")
        idx = [self.channels.index(c) for c in channels]
        return SurfaceImageDataset(self.images[:, idx].copy(), self.labels, self.subjects, channels,
                                   sites=self.sites, groups=self.groups, table=self.table, geometry=self.geometry)

    def with_labels(self, labels) -> SurfaceImageDataset:
        """The same images with other labels (e.g. shuffled for a null run)."""
        return SurfaceImageDataset(self.images, labels, self.subjects, self.channels, sites=self.sites,
                                   groups=self.groups, table=self.table.assign(label=np.asarray(labels)),
                                   geometry=self.geometry)

    def fold(self, indices, normalizer: Normalizer) -> FoldDataset:
        """A view of ``indices`` normalised by ``normalizer`` (fitted on the training fold)."""
        return FoldDataset(self, indices, normalizer)


class FoldDataset(Dataset):
    """Items ``(normalised x, y)`` of a subset of a :class:`SurfaceImageDataset`."""

    def __init__(self, base: SurfaceImageDataset, indices, normalizer: Normalizer):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.normalizer = normalizer

    def __len__(self) -> int:
        return self.indices.size

    def __getitem__(self, i):
        j = int(self.indices[i])
        x = self.normalizer.transform(self.base.images[j])
        return torch.from_numpy(x), torch.tensor(float(self.base.labels[j]))


def _read_table(table) -> pd.DataFrame:
    if isinstance(table, pd.DataFrame):
        return table.reset_index(drop=True)
    path = Path(table)
    if not path.is_file():
        raise InputFileNotFoundError(f"cohort table {str(path)!r} does not exist")
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    return pd.read_csv(path, sep=sep, dtype={"subject": str})


def _check_table(table: pd.DataFrame, columns, what: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{what} lacks column(s) {missing}; found {list(table.columns)}")
    return table.reset_index(drop=True)
