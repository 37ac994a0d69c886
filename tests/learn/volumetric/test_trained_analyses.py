"""Occlusion and clinical analyses of a TRAINED small model on a SYNTHETIC cohort (issue 7's "done when").

One module-scoped fixture builds a SYNTHETIC cohort (2 sites with scanner effects turned off, strong planted atrophy,
AD/NC plus progressive and stable MCI), trains one small model on AD/NC subjects and scores everybody; every check
reuses it. The model is a test-scale stand-in, not the paper's network: AvgPool3d(3) -> 1x1x1 Conv3d(2, 4) -> ReLU ->
1x1x1 Conv3d(4, 1) -> Linear over the 13x13x12 grid of local scores. Its receptive field is one 9 mm patch per local
score and the last layer knows where each patch is, so what it learns can be located; the tiny Inception model of
test_volumetric_train.py sees the whole volume and learns global cues (see that file), and its occlusion on the CPU
would take minutes. Input: the 40x40x37 crop of test_volumetric_train.py (3 mm grid).
"""

import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.affines import apply_affine
from torch import nn

from learn.metrics import binary_metrics
from learn.volumetric.analysis import mci_conversion, mmse_spearman
from learn.volumetric.data import VolumeDataset, read_cohort
from learn.volumetric.occlusion import occlusion_map
from learn.volumetric.synthetic import HIPPOCAMPUS_MNI, _site_params, make_synthetic_cohort

CROP = (slice(4, 44), slice(8, 48), slice(0, 37))
# 18 mm cube as the paper's 12 voxels at 1.5 mm, stepped by 12 mm (the paper: 9 mm) to keep the test short
CUBE, STEP = 6, 4
FAR = 12  # voxels (36 mm) from both hippocampal centres
N_TEST = 32


def _small_model() -> nn.Module:
    return nn.Sequential(nn.AvgPool3d(3), nn.Conv3d(2, 4, 1), nn.ReLU(), nn.Conv3d(4, 1, 1), nn.Flatten(),
                         nn.Linear(13 * 13 * 12, 1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, template_cache):
    torch.set_num_threads(2)
    d = tmp_path_factory.mktemp("SYNTHETIC_trained")
    csv = make_synthetic_cohort(d, n_sites=2, n_per_site=48, n_mci_per_site=16, seed=3, qc_fraction=0.0,
                                effect=3.0, site_effects=0.0, cache_dir=template_cache)
    co = read_cohort(csv)
    img = nib.load(csv.parent / "SYNTHETIC_mask.nii.gz")
    ds = VolumeDataset(co, label_column=None, mask=np.asarray(img.dataobj) > 0, crop=CROP)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    labelled = co["label"].notna().to_numpy()
    y = co["label"].fillna(-1).to_numpy(dtype=np.float64)
    rows = np.flatnonzero(labelled)
    np.random.default_rng(0).shuffle(rows)
    train, test = rows[:-N_TEST], rows[-N_TEST:]  # held-out subjects of the same two sites

    torch.manual_seed(0)
    model = _small_model()
    xt, yt = x[train], torch.as_tensor(y[train], dtype=torch.float32)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=(yt == 0).sum() / (yt == 1).sum())  # balanced classes
    opt = torch.optim.Adam(model.parameters(), lr=0.02, weight_decay=1e-3)
    for _ in range(60):  # full batch (64 scans)
        opt.zero_grad()
        loss_fn(model(xt)[:, 0], yt).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        scores = torch.sigmoid(model(x)[:, 0]).numpy().astype(np.float64)
    # hippocampal centres in crop voxels
    centres = [apply_affine(np.linalg.inv(img.affine), c) - np.array([s.start for s in CROP])
               for c in HIPPOCAMPUS_MNI]
    return {"co": co, "x": x, "y": y, "train": train, "test": test, "model": model, "scores": scores,
            "centres": centres, "labelled": labelled}


@pytest.fixture(scope="module")
def occlusion(trained):
    t = trained
    return occlusion_map(t["model"], t["x"][t["test"]], t["y"][t["test"]], cube=CUBE, step=STEP, batch_size=64)


def test_trained_model_classifies_held_out_subjects(trained):
    t = trained
    m = binary_metrics(t["y"][t["test"]].astype(int), t["scores"][t["test"]])
    print("SYNTHETIC held-out subjects (same sites): accuracy %.3f, AUC %.3f" % (m["accuracy"], m["auc"]))
    assert m["auc"] >= 0.9 and m["accuracy"] >= 0.85


def test_occlusion_trained_model_peaks_at_hippocampus(trained, occlusion):
    vmap, grid, base = occlusion
    centres = trained["centres"]
    peak = np.array(np.unravel_index(np.argmax(vmap), vmap.shape))
    dist_peak = min(np.abs(peak - c).max() for c in centres)
    ijk = np.indices(vmap.shape).transpose(1, 2, 3, 0)
    dist = np.min([np.abs(ijk - c).max(axis=-1) for c in centres], axis=0)  # Chebyshev, voxels
    far = dist > FAR  # more than 36 mm from both hippocampal centres
    print("SYNTHETIC trained-model occlusion: baseline %.3f, peak %s (%.2f voxels from a centre), map max %.3f, "
          "cube max %.3f, max |map| far away %.4f over %d voxels"
          % (base, peak.tolist(), dist_peak, vmap.max(), grid.max(), np.abs(vmap[far]).max(), far.sum()))
    at_centres = [float(vmap[tuple(np.round(c).astype(int))]) for c in centres]
    print("map at the two hippocampal centres: %.3f, %.3f" % tuple(at_centres))
    # measured with 12 mm steps: peak 1.67 voxels from a centre, map max 0.562, 0.281 / 0.359 at the centres
    # (9 mm steps: 0.262 / 0.203; 18 mm steps: 0.000 / 0.062, too coarse)
    assert dist_peak <= STEP  # within one step of a hippocampal centre
    assert vmap.max() > 0.2
    assert far.sum() > 0.5 * far.size
    # "near zero": no test subject's prediction changes far away (seed 3). Other cohort seeds, measured once with
    # 9 mm steps: seed 4 -> 0.0, seed 5 -> 0.031 (one subject of 32 corrected by a far cube; baseline 0.969).
    assert np.abs(vmap[far]).max() < 0.02
    assert min(at_centres) > 0.15  # both planted regions, not just one


def test_trained_scores_correlate_with_mmse(trained):
    t = trained
    rows = np.r_[t["test"], np.flatnonzero(~t["labelled"])]  # held-out AD/NC and every MCI scan
    res = mmse_spearman(t["scores"][rows], t["co"]["mmse"].to_numpy(dtype=np.float64)[rows],
                        t["co"]["diagnosis"].to_numpy()[rows])
    print("SYNTHETIC Spearman(score, MMSE): " + ", ".join("%s %.3f (n=%d)" % (k, v["rho"], v["n"])
                                                          for k, v in res.items()))
    assert res["all"]["rho"] < -0.5 and res["all"]["n"] == N_TEST + 32


def test_trained_model_predicts_pmci_as_ad_more_often_than_smci(trained):
    t = trained
    mci = np.flatnonzero(~t["labelled"])
    res = mci_conversion(t["scores"][mci], t["co"]["diagnosis"].to_numpy()[mci] == "pMCI")
    print("SYNTHETIC MCI predicted AD: pMCI %.3f, sMCI %.3f, AUC %.3f" % (res["rate_pmci"], res["rate_smci"],
                                                                       res["auc"]))
    assert res["n_pmci"] == res["n_smci"] == 16
    assert res["rate_pmci"] > res["rate_smci"]
    assert res["auc"] > 0.8


def test_site_effects_scale_and_bad_value(tmp_path):
    full, none, half = (_site_params(0, 1, k) for k in (1.0, 0.0, 0.5))
    assert (none["gain"], none["offset"], none["smooth"], none["bias"]) == (1.0, 0.0, 0.0, 0.0)
    assert half["gain"] - 1 == pytest.approx(0.5 * (full["gain"] - 1))
    assert half["bias"] == pytest.approx(0.5 * full["bias"])
    assert none["prevalence"] == full["prevalence"]
    with pytest.raises(ValueError, match="'site_effects' should be >= 0"):
        make_synthetic_cohort(tmp_path, n_sites=1, n_per_site=2, site_effects=-1.0)
