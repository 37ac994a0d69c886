"""The seed's comparison methods on the same subjects, and a results table laid out like its Table 2.

- :func:`pca_svm_predictions`: PCA + SVM on the vertex metrics (standardisation, PCA and SVM fitted on the
  training fold only).
- :func:`voxelize`: surface metrics resampled into a voxel grid (the input of the seed's "3D mesh" DenseNet);
  :class:`TinyCNN3D` and :func:`cnn3d_predictions` train a 3D CNN on it with the same schedule (mix-up phase, then
  plain phase) and fold-wise normalisation.
- :func:`slice_dataset`: 2D slices of that grid in the three directions, as a :class:`SurfaceImageDataset` whose
  channels (one per direction and metric) go through the 2D pipeline and stacking ("slice" in the seed).
- :func:`results_table`: accuracy, sensitivity, specificity (%) and AUC per method.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import TensorDataset

from learn import ConfigError, DataError
from learn.metrics import binary_metrics

from .dataset import SurfaceImageDataset
from .train import ScheduleConfig, predict, train_model

__all__ = ["TinyCNN3D", "cnn3d_predictions", "pca_svm_predictions", "results_table", "slice_dataset", "voxelize"]

log = logging.getLogger(__name__)


def pca_svm_predictions(X, labels, splits, *, n_components: float = 0.9, C: float = 1.0,
                        subjects=None, seed: int = 0) -> pd.DataFrame:
    """PCA + linear SVM, cross-validated on the given splits.

    Parameters
    ----------
    X : (n_subjects, n_features) float
        Vertex metrics (cortex vertices of every metric and hemisphere, concatenated).
    labels : (n_subjects,) 0/1
    splits : list of (train_idx, test_idx)
    n_components : int or float
        PCA components (a float in (0, 1): the fraction of variance kept), capped by the training size.

    Returns
    -------
    DataFrame with subject, label, fold, score (SVM decision value; ROC AUC uses its order, accuracy its sign
    through ``score >= 0.5`` after a logistic squashing).
    """
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    if X.ndim != 2 or len(X) != len(y):
        raise DataError(f"'X' should be (n_subjects, n_features) with one row per label; found {X.shape}, {len(y)}")
    subjects = np.arange(len(y)) if subjects is None else np.asarray(subjects)
    out = []
    for k, (tr, te) in enumerate(splits):
        nc = n_components if isinstance(n_components, float) else min(int(n_components), len(tr) - 1)
        pipe = make_pipeline(StandardScaler(), PCA(n_components=nc, random_state=seed),
                             SVC(kernel="linear", C=C, random_state=seed))
        pipe.fit(X[tr], y[tr])
        d = pipe.decision_function(X[te])
        out.append(pd.DataFrame({"subject": subjects[te], "label": y[te], "fold": k,
                                 "score": 1.0 / (1.0 + np.exp(-d))}))
    return pd.concat(out, ignore_index=True)


def voxelize(vertices, values, grid: int = 32, bounds=None) -> np.ndarray:
    """Average per-vertex values into a ``grid^3`` voxel grid over the mesh's bounding box.

    Parameters
    ----------
    vertices : (n, 3) float
    values : (n,) or (n, C) float
        NaN values (e.g. the medial wall) are left out.
    grid : int
    bounds : ((3,), (3,)), optional
        Box corners; default: the vertices' bounding box (use the same box for every subject).

    Returns
    -------
    (C, grid, grid, grid) float32, 0 in voxels holding no vertex
    """
    V = np.asarray(vertices, dtype=np.float64)
    x = np.asarray(values, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if len(x) != len(V):
        raise DataError(f"'values' has {len(x)} rows for {len(V)} vertices")
    lo, hi = (V.min(axis=0), V.max(axis=0)) if bounds is None else map(np.asarray, bounds)
    ijk = np.clip(((V - lo) / np.maximum(hi - lo, 1e-12) * grid).astype(np.int64), 0, grid - 1)
    flat = (ijk[:, 0] * grid + ijk[:, 1]) * grid + ijk[:, 2]
    out = np.zeros((x.shape[1], grid**3))
    for c in range(x.shape[1]):
        ok = np.isfinite(x[:, c])
        s = np.bincount(flat[ok], weights=x[ok, c], minlength=grid**3)
        n = np.bincount(flat[ok], minlength=grid**3)
        out[c] = np.where(n > 0, s / np.maximum(n, 1), 0.0)
    return out.reshape(x.shape[1], grid, grid, grid).astype(np.float32)


class TinyCNN3D(nn.Module):
    """A small 3D CNN (conv3x3x3-BN-ReLU-maxpool blocks, global pooling, one logit) for the "3D mesh" baseline."""

    def __init__(self, in_channels: int = 1, width: int = 8, depth: int = 3):
        super().__init__()
        layers, c = [], in_channels
        for i in range(depth):
            w = width * 2**i
            layers += [nn.Conv3d(c, w, 3, padding=1, bias=False), nn.BatchNorm3d(w), nn.ReLU(inplace=True),
                       nn.MaxPool3d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, 1)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool3d(self.features(x), 1), 1))


def cnn3d_predictions(volumes, labels, splits, *, schedule: ScheduleConfig, width: int = 8, depth: int = 3,
                      subjects=None, device="cpu", seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """Cross-validated 3D CNN on voxelised metrics ``(N, C, D, H, W)`` with the 2D pipeline's schedule.

    Each channel is z-scored with the mean and SD of the training volumes of the fold (never the test ones).

    Returns
    -------
    DataFrame with subject, label, fold, score (probability of class 1)
    """
    from .train import ModelConfig

    vol = np.asarray(volumes, dtype=np.float32)
    y = np.asarray(labels).astype(int)
    if vol.ndim != 5 or len(vol) != len(y):
        raise DataError(f"'volumes' should be (N, C, D, H, W) with one per label; found {vol.shape}, {len(y)}")
    subjects = np.arange(len(y)) if subjects is None else np.asarray(subjects)
    out = []
    for k, (tr, te) in enumerate(splits):
        mean = vol[tr].mean(axis=(0, 2, 3, 4), keepdims=True)[0]
        std = vol[tr].std(axis=(0, 2, 3, 4), keepdims=True)[0].clip(min=1e-6)

        def z(idx, mean=mean, std=std):
            return torch.from_numpy((vol[idx] - mean) / std)

        torch.manual_seed(seed + k)
        model = TinyCNN3D(vol.shape[1], width, depth)
        train_ds = TensorDataset(z(tr), torch.from_numpy(y[tr].astype(np.float32)))
        model, _ = train_model(train_ds, model_cfg=ModelConfig("tiny", None), schedule=schedule,
                               in_channels=vol.shape[1], device=device, seed=seed + k, progress=progress,
                               model=model)
        test_ds = TensorDataset(z(te), torch.from_numpy(y[te].astype(np.float32)))
        out.append(pd.DataFrame({"subject": subjects[te], "label": y[te], "fold": k,
                                 "score": predict(model, test_ds, device=device, batch_size=schedule.batch_size)}))
    return pd.concat(out, ignore_index=True)


def slice_dataset(volumes, table: pd.DataFrame, metrics, *, slices=None) -> SurfaceImageDataset:
    """2D slices of voxel grids in the three directions, as channels ``axis{a}_{metric}`` (the seed's "slice"
    baseline; each channel then gets its own 2D network and the outputs are stacked).

    Parameters
    ----------
    volumes : (N, C, G, G, G)
    table : DataFrame (subject, label, site, ...) in volume order
    metrics : sequence of C names
    slices : (3,) int, optional
        Slice index per axis (default: the middle).
    """
    vol = np.asarray(volumes, dtype=np.float32)
    if vol.ndim != 5 or len(set(vol.shape[2:])) != 1:
        raise DataError(f"'volumes' should be (N, C, G, G, G) cubes; found {vol.shape}")
    G = vol.shape[2]
    idx = [G // 2] * 3 if slices is None else list(slices)
    chans, names = [], []
    for a in range(3):
        sl = np.take(vol, idx[a], axis=2 + a)  # (N, C, G, G)
        for c, m in enumerate(metrics):
            chans.append(sl[:, c])
            names.append(f"axis{a}_{m}")
    return SurfaceImageDataset.from_arrays(np.stack(chans, axis=1), table, names)


def results_table(methods: dict, *, threshold: float = 0.5, synthetic: bool = True) -> pd.DataFrame:
    """Table 2 of the seed: one row per method with Acc (%), Sen (%), Spc (%) and AUC.

    Parameters
    ----------
    methods : dict of name -> DataFrame with ``label`` and ``score`` (one row per subject)
    synthetic : bool
        Adds a ``data`` column saying SYNTHETIC.
    """
    rows = []
    for name, df in methods.items():
        if not {"label", "score"} <= set(df.columns):
            raise ConfigError(f"method {name!r}: expected columns 'label' and 'score'; found {list(df.columns)}")
        m = binary_metrics(df["label"].to_numpy().astype(int), df["score"].to_numpy(), threshold)
        rows.append({"method": name, "Acc (%)": round(100 * m["accuracy"], 2),
                     "Sen (%)": round(100 * m["sensitivity"], 2), "Spc (%)": round(100 * m["specificity"], 2),
                     "AUC": round(m["auc"], 4), "n": m["n"]})
    out = pd.DataFrame(rows)
    if synthetic:
        out["data"] = "SYNTHETIC"
    return out
