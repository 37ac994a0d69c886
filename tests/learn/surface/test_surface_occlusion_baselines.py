"""Occlusion maps back on the cortex, and the seed's baselines (SYNTHETIC cohorts)."""

import nibabel as nib
import numpy as np
import pytest
import torch

import surfmap
from learn import ConfigError
from learn.metrics import roc_auc
from learn.surface import synthetic as S
from learn.surface.baselines import (
    cnn3d_predictions,
    pca_svm_predictions,
    results_table,
    slice_dataset,
    voxelize,
)
from learn.surface.dataset import Normalizer, SurfaceImageDataset
from learn.surface.occlusion import occlusion_map, occlusion_to_cortex, plot_occlusion, scaled_patch
from learn.surface.train import ModelConfig, ScheduleConfig, train_model

TINY = ModelConfig("tiny", None, tiny_width=8, tiny_depth=2)


def test_scaled_patch_matches_seed_at_224():
    assert scaled_patch(224) == (30, 4)
    assert scaled_patch(32) == (4, 1)
    assert scaled_patch(112) == (15, 2)


def test_occlusion_highest_in_planted_regions(tmp_path):
    c = S.hcp_like_cohort(80, template="grid", hemis=("left",), metrics=("thickness",), effect_size=2.5,
                          n_regions=2, radius_mm=12.0, grid_size=24, fwhm_mm=8.0)
    R = surfmap.Rasterizer(S.grid_flatmap(c.templates["left"]), size=24)
    images, channels = c.images({"left": R})
    ds = SurfaceImageDataset.from_arrays(images, c.table, channels)
    train, test = np.arange(60), np.arange(60, 80)
    norm = Normalizer("pixel").fit(ds.images, train)
    schedule = ScheduleConfig(epochs=15, mixup_epochs=10, lr=0.05, lr_step_epochs=3, final_lr=1e-3, batch_size=16)
    model, _ = train_model(ds.fold(train, norm), model_cfg=TINY, schedule=schedule, in_channels=1, device="cpu",
                           progress=False)
    occ = occlusion_map(model, norm.transform(ds.images[test]), ds.labels[test])
    assert occ.shape == (24, 24)
    n = c.templates["left"].n_vertices
    values = occlusion_to_cortex(occ, R, n_vertices=n, path=tmp_path / "occlusion.func.gii")
    np.testing.assert_allclose(nib.load(tmp_path / "occlusion.func.gii").darrays[0].data, values, rtol=1e-6)
    truth = c.effect_map("label", "left", "thickness")
    inside, outside = values[truth > 0].mean(), values[truth == 0].mean()
    top = values >= np.quantile(values, 0.95)
    print(f"occlusion: mean inside {inside:.4g}, outside {outside:.4g}; top 5% in regions "
          f"{(truth[top] > 0).mean():.2f} (regions cover {(truth > 0).mean():.2f})")
    assert inside > 3 * outside
    assert (truth[top] > 0).mean() > 3 * (truth > 0).mean()
    import matplotlib.pyplot as plt

    fig = plot_occlusion(occ, c.templates["left"].mesh, values)
    assert "SYNTHETIC" in fig._suptitle.get_text()
    plt.close(fig)


def test_occlusion_map_errors():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 1))
    with pytest.raises(ConfigError, match="'score' should be"):
        occlusion_map(model, np.zeros((1, 1, 4, 4)), [0], score="loss")
    with pytest.raises(ConfigError, match="'patch' should be in"):
        occlusion_map(model, np.zeros((1, 1, 4, 4)), [0], patch=9)


def test_voxelize_averages_vertices_per_voxel():
    V = np.array([[0, 0, 0], [0.1, 0, 0], [1, 1, 1], [0.99, 0.99, 0.99], [0.5, 0.5, 0.5]], float)
    x = np.array([1.0, 3.0, 10.0, np.nan, 5.0])
    vol = voxelize(V, x, grid=2)
    assert vol.shape == (1, 2, 2, 2)
    assert vol[0, 0, 0, 0] == pytest.approx(2.0)  # mean of the two vertices near the origin
    assert vol[0, 1, 1, 1] == pytest.approx(7.5)  # 10 and 5 (0.5 falls in the upper voxel), NaN left out
    assert vol.sum() == pytest.approx(9.5)


def _vertex_cohort(n=60):
    c = S.hcp_like_cohort(n, template="grid", hemis=("left",), metrics=("thickness", "sulc"), effect_size=2.5,
                          n_regions=2, radius_mm=10.0, grid_size=16, fwhm_mm=8.0)
    X = np.concatenate([c.metric_matrix("left", m) for m in c.metrics], axis=1)
    y = c.table["label"].to_numpy()
    splits = [(np.setdiff1d(np.arange(n), np.arange(k, n, 3)), np.arange(k, n, 3)) for k in range(3)]
    return c, X, y, splits


def test_baselines_pca_svm_3d_cnn_slices_and_table():
    c, X, y, splits = _vertex_cohort()
    svm = pca_svm_predictions(X, y, splits, n_components=10, subjects=c.subjects)
    assert sorted(svm["subject"]) == sorted(c.subjects)
    auc_svm = roc_auc(svm["label"], svm["score"])
    shuffled = pca_svm_predictions(X, np.random.default_rng(0).permutation(y), splits, n_components=10)
    auc_null = roc_auc(shuffled["label"], shuffled["score"])
    # voxelise the (planar) grid surface with a little height so the grid is 3D
    t = c.templates["left"]
    V = t.mesh.vertices + np.column_stack([np.zeros((t.n_vertices, 2)), 5 * np.sin(t.mesh.vertices[:, 0] / 9)])
    vols = np.stack([voxelize(V, np.stack([c.metric_matrix("left", m, [i])[0] for m in c.metrics], 1), grid=8)
                     for i in range(len(y))])
    schedule = ScheduleConfig(epochs=3, mixup_epochs=2, lr=0.05, lr_step_epochs=1, final_lr=1e-3, batch_size=16)
    cnn = cnn3d_predictions(vols, y, splits, schedule=schedule, width=4, depth=2, subjects=c.subjects)
    assert len(cnn) == len(y) and cnn["score"].between(0, 1).all()
    sl = slice_dataset(vols, c.table, c.metrics)
    assert sl.channels == ["axis0_thickness", "axis0_sulc", "axis1_thickness", "axis1_sulc", "axis2_thickness",
                           "axis2_sulc"] and sl.images.shape == (len(y), 6, 8, 8)
    table = results_table({"PCA + SVM": svm, "3D CNN (3D mesh)": cnn})
    print(table.to_string())
    print("PCA+SVM AUC", auc_svm, "shuffled", auc_null)
    assert list(table.columns[:5]) == ["method", "Acc (%)", "Sen (%)", "Spc (%)", "AUC"]
    assert table["data"].eq("SYNTHETIC").all()
    assert table.loc[0, "AUC"] == pytest.approx(auc_svm, abs=1e-4)
    assert auc_svm > 0.8 and abs(auc_null - 0.5) < 0.25
