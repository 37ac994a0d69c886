import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from nibabel.affines import apply_affine

from learn import DataError, MetricUndefinedError
from learn.metrics import binary_metrics, subsample_ci
from learn.volumetric.analysis import glm_group_effect, mci_conversion, mmse_spearman, summary_table
from learn.volumetric.data import VolumeDataset, load_mask, read_cohort
from learn.volumetric.gradcam import grad_cam
from learn.volumetric.model import build_sex_model
from learn.volumetric.occlusion import OracleAD, cube_starts, occlusion_map, to_input_space
from learn.volumetric.qc import qc_exclusions, run_qc
from learn.volumetric.synthetic import HIPPOCAMPUS_MNI, hippocampus_map, make_synthetic_cohort


@pytest.fixture(scope="module")
def qc_cohort(tmp_path_factory, template_cache):
    d = tmp_path_factory.mktemp("SYNTHETIC_qc")
    return make_synthetic_cohort(d, n_sites=4, n_per_site=20, seed=5, qc_fraction=0.12, cache_dir=template_cache)


def test_qc_flags_planted_outliers(qc_cohort):
    co = read_cohort(qc_cohort)
    mask = load_mask(qc_cohort.parent / "SYNTHETIC_mask.nii.gz")
    report, template = run_qc(co, mask, group="dataset", n_per_group=10, seed=0)
    planted = co["qc_outlier"].fillna("").astype(str).ne("").to_numpy()
    flagged = report["qc_excluded"].to_numpy()
    assert planted.sum() >= 4
    assert flagged[planted].mean() >= 0.8
    assert flagged[~planted].mean() <= 0.05
    assert report.loc[flagged, "qc_reason"].str.contains("mean - 2 SD").all()


def test_qc_exclusions_small_group():
    co = pd.DataFrame({"subject": ["a", "b", "c", "d"], "dataset": ["D1", "D1", "D1", "D2"]})
    with pytest.raises(DataError, match="D2' holds 1 scan"):
        qc_exclusions(co, [0.9, 0.8, 0.7, 0.9])


def test_mmse_spearman_and_errors():
    rng = np.random.default_rng(0)
    mmse = rng.integers(15, 30, 60).astype(float)
    scores = 1 / (1 + np.exp(mmse - 23 + rng.normal(0, 1, 60)))
    groups = np.where(np.arange(60) < 30, "AD", "NC")
    res = mmse_spearman(scores, mmse, groups)
    assert res["all"]["rho"] < -0.5 and res["all"]["n"] == 60 and set(res) == {"all", "AD", "NC"}
    with pytest.raises(MetricUndefinedError, match="group 'MCI' has 1 scans"):
        mmse_spearman(scores[:31], mmse[:31], np.r_[groups[:30], ["MCI"]])
    with pytest.raises(MetricUndefinedError, match="scores' are constant|scores are constant"):
        mmse_spearman(np.ones(10), mmse[:10])


def test_mci_conversion_rates_auc_and_empty_group():
    s = np.array([0.9, 0.7, 0.4, 0.2, 0.1, 0.6])
    p = np.array([1, 1, 1, 0, 0, 0], bool)
    r = mci_conversion(s, p)
    assert r["rate_pmci"] == pytest.approx(2 / 3) and r["rate_smci"] == pytest.approx(1 / 3)
    assert r["auc"] == pytest.approx(8 / 9)  # 8 of 9 (pMCI, sMCI) pairs ordered
    with pytest.raises(MetricUndefinedError, match="0 sMCI"):
        mci_conversion(s[:3], p[:3])


def test_glm_group_effect_recovers_planted_difference():
    rng = np.random.default_rng(1)
    n = 200
    g = rng.integers(0, 2, n)
    age = rng.normal(73, 6, n)
    sex = rng.integers(0, 2, n)
    y = 0.5 * g + 0.02 * (age - 73) + 0.1 * sex + rng.normal(0, 0.5, n)
    res = glm_group_effect(y, g, age, sex)
    assert res["beta_group"] == pytest.approx(0.5, abs=0.2)
    assert res["p"] < 1e-5 and res["df"] == n - 4
    # reference: statsmodels-free check of t via the normal equations
    X = np.column_stack([np.ones(n), g, age, sex])
    beta = np.linalg.solve(X.T @ X, X.T @ y)
    assert res["beta_group"] == pytest.approx(beta[1], rel=1e-10)
    with pytest.raises(MetricUndefinedError, match="at least 2 scans per group"):
        glm_group_effect(y[:5], np.zeros(5), age[:5], sex[:5])
    table = summary_table({"glm": res, "ci": {"auc": (0.8, 0.9)}})
    assert list(table["analysis"]) == ["glm", "ci"] and table.loc[1, "auc_lo"] == 0.8


def test_subsample_ci_contains_point_estimates_on_scores():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 120)
    s = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, 120), 0, 1)
    point = binary_metrics(y, s)
    for thr in (0.5, 0.3):
        ci = subsample_ci(y, s, threshold=thr, n_rounds=1000)
        pt = binary_metrics(y, s, threshold=thr)
        for k, (lo, hi) in ci.items():
            assert lo <= pt[k] <= hi
    assert point["auc"] > 0.8


def _oracle_setup(cohort_csv, n=16):
    co = read_cohort(cohort_csv)
    co = co[co["label"].notna()].reset_index(drop=True).iloc[:n]
    img = nib.load(cohort_csv.parent / "SYNTHETIC_mask.nii.gz")
    mask = np.asarray(img.dataobj) > 0
    ds = VolumeDataset(co, label_column="label", mask=mask)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = ds.labels
    H = hippocampus_map(mask.shape, img.affine)
    oracle = OracleAD(H, threshold=0.0)
    hm = oracle.hippocampal_mean(x).numpy()
    oracle.threshold = float((hm[y == 1].mean() + hm[y == 0].mean()) / 2)
    return x, y, oracle, img.affine


def test_occlusion_oracle_peaks_at_hippocampus(synthetic_cohort):
    x, y, oracle, affine = _oracle_setup(synthetic_cohort)
    assert binary_metrics(y, torch.sigmoid(oracle(x))[:, 0].numpy())["accuracy"] >= 0.9
    cube, step = 6, 3
    vmap, grid, base = occlusion_map(oracle, x, y, cube=cube, step=step, batch_size=64)
    assert grid.shape == tuple(len(cube_starts(d, cube, step)) for d in x.shape[2:]) == (15, 19, 14)
    peak = np.array(np.unravel_index(np.argmax(vmap), vmap.shape))
    centres = [apply_affine(np.linalg.inv(affine), c) for c in HIPPOCAMPUS_MNI]
    assert min(np.abs(peak - c).max() for c in centres) <= step + cube / 2  # within one step of a cube on it
    assert vmap.max() > 0.2
    far = np.round(apply_affine(np.linalg.inv(affine), (0, -95, 20))).astype(int)  # occipital
    assert abs(vmap[tuple(far)]) < 0.02
    nii = to_input_space(vmap, None, vmap.shape)
    assert nii.shape == (48, 60, 43)


def test_occlusion_bad_input():
    with pytest.raises(DataError, match="should be \\(N, C, X, Y, Z\\)"):
        occlusion_map(torch.nn.Identity(), torch.zeros(2, 2, 4, 4), [0, 1])
    with pytest.raises(DataError, match="differs from the oracle"):
        OracleAD(np.ones((4, 4, 4)), 0.5)(torch.zeros(1, 2, 5, 4, 4))


def test_grad_cam_shape_and_bad_layer():
    torch.manual_seed(0)
    m = build_sex_model(width_mult=1 / 16, blocks=(1, 1, 1))
    x = torch.rand(2, 2, 40, 40, 40)
    cam = grad_cam(m, x, "conv_7b")
    assert cam.shape == (2, 40, 40, 40) and cam.min() >= 0 and cam.max() <= 1 + 1e-6
    cam0 = grad_cam(m, x, "stem", target=0)
    assert cam0.shape == (2, 40, 40, 40)
    with pytest.raises(ValueError, match="'layer' 'conv_9' is not a module"):
        grad_cam(m, x, "conv_9")
