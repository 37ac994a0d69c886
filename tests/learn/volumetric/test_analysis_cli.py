"""The analysis commands on tiny inputs (an untrained tiny fold model: plumbing, not performance)."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from learn.checkpoint import save_checkpoint
from learn.config import save_resolved
from learn.volumetric.cli import main as vol_main
from learn.volumetric.config import CVConfig, DataConfig, ModelConfig, TrainConfig, VolumetricConfig
from learn.volumetric.train import build_model


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory, synthetic_cohort):
    run = tmp_path_factory.mktemp("run")
    cfg = VolumetricConfig(
        output_dir=str(run),
        data=DataConfig(cohort=str(synthetic_cohort), mask=str(synthetic_cohort.parent / "SYNTHETIC_mask.nii.gz"),
                        crop=[[4, 44], [8, 48], [0, 37]]),
        model=ModelConfig(kind="ad", width_mult=1 / 16, blocks=(1, 1, 1), ad_head_prepool=False),
        train=TrainConfig(lr=0.01, decay=0.0, val_size=8), cv=CVConfig(scheme="leave-one-site-out",
                                                                       group_column="site"))
    save_resolved(cfg, run / "config.json")
    torch.manual_seed(0)
    model = build_model(cfg.model)
    save_checkpoint(run / "fold0" / "model.pt", model=model, epoch=0, args=cfg)
    (run / "results.json").write_text(json.dumps({"folds": [{"fold": 0, "accuracy": 0.5}]}))
    co = pd.read_csv(synthetic_cohort)
    co = co[co["label"].notna()]
    test = co["site"] == "SYNTHETIC_S01"
    (run / "fold0" / "split.json").write_text(json.dumps({"fit": sorted(co.loc[~test, "subject"]), "val": [],
                                                          "test": sorted(co.loc[test, "subject"])}))
    return run


def test_cli_predict_and_clinical(fake_run, synthetic_cohort, tmp_path, capsys):
    pred = tmp_path / "pred.csv"
    assert vol_main(["predict", "--run", str(fake_run), "--cohort", str(synthetic_cohort), "--out", str(pred),
                     "--device", "cpu"]) == 0
    df = pd.read_csv(pred)
    assert len(df) == 84 and df["score"].between(0, 1).all() and "score_fold0" in df
    # the run trained on the labelled scans of this cohort: their scores are in-sample, and clinical refuses them
    assert df["in_sample"].sum() == 60 and not df.loc[df["label"].isna(), "in_sample"].any()
    assert vol_main(["clinical", "--predictions", str(pred), "--out", str(tmp_path / "clin")]) == 1
    assert "60 of 84 scans" in capsys.readouterr().err
    # clinical analyses on planted scores (the untrained model's scores are not informative), given as
    # out-of-fold predictions
    df["score"] = 1 / (1 + np.exp(-(df["severity"] - 0.4) * 8))
    df.assign(fold=0, y_true=df["label"]).drop(columns="in_sample").to_csv(pred, index=False)
    assert vol_main(["clinical", "--predictions", str(pred), "--out", str(tmp_path / "clin")]) == 0
    res = json.loads((tmp_path / "clin" / "clinical_summary.json").read_text())
    assert res["spearman_mmse_all"]["rho"] < -0.5
    assert res["mci_conversion"]["rate_pmci"] > res["mci_conversion"]["rate_smci"]
    assert res["glm_score_pmci_vs_smci"]["t"] > 0
    assert (tmp_path / "clin" / "clinical_summary.csv").is_file()
    assert (tmp_path / "clin" / "scores_vs_mmse.png").is_file()


def test_cli_occlusion_and_gradcam_write_nifti(fake_run, synthetic_cohort, tmp_path):
    sub = pd.read_csv(synthetic_cohort)
    sub = sub[(sub["site"] == "SYNTHETIC_S01") & sub["label"].notna()]
    sub = pd.concat([sub[sub["label"] == 1].iloc[:3], sub[sub["label"] == 0].iloc[:3]])
    for c in ("gmd_path", "gmv_path"):
        sub[c] = [str(synthetic_cohort.parent / p) for p in sub[c]]
    csv = tmp_path / "SYNTHETIC_test.csv"
    sub.to_csv(csv, index=False)
    assert vol_main(["occlusion", "--run", str(fake_run), "--cohort", str(csv), "--out", str(tmp_path / "occ"),
                     "--cube", "20", "--step", "20", "--device", "cpu"]) == 0
    img = nib.load(tmp_path / "occ" / "occlusion.nii.gz")
    assert img.shape == (48, 60, 43)
    np.testing.assert_allclose(img.affine, nib.load(synthetic_cohort.parent / "SYNTHETIC_mask.nii.gz").affine)
    assert np.all(np.asarray(img.dataobj)[44:] == 0)  # outside the crop
    assert (tmp_path / "occ" / "occlusion.png").is_file()
    assert json.loads((tmp_path / "occ" / "occlusion.json").read_text())["scored"].startswith("6 scans that no fold model trained on")
    assert vol_main(["gradcam", "--run", str(fake_run), "--cohort", str(csv), "--out", str(tmp_path / "cam"),
                     "--device", "cpu"]) == 0
    cam = np.asarray(nib.load(tmp_path / "cam" / "gradcam.nii.gz").dataobj)
    assert cam.shape == (48, 60, 43) and cam.max() <= 1.0 + 1e-6


def test_cli_qc_report(synthetic_cohort, tmp_path):
    assert vol_main(["qc", "--cohort", str(synthetic_cohort), "--mask",
                     str(synthetic_cohort.parent / "SYNTHETIC_mask.nii.gz"), "--out", str(tmp_path / "qc"),
                     "--n-per-group", "4"]) == 0
    rep = pd.read_csv(tmp_path / "qc" / "qc_report.csv")
    assert len(rep) == 84 and {"qc_corr", "qc_threshold", "qc_excluded", "qc_reason"} <= set(rep.columns)
    assert rep["qc_corr"].min() > 0.5  # no planted outlier in this cohort


def test_cli_qc_mask_grid_mismatch(synthetic_cohort, tmp_path, capsys):
    bad = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((10, 10, 10), np.uint8), np.eye(4)), bad)
    assert vol_main(["qc", "--cohort", str(synthetic_cohort), "--mask", str(bad), "--out", str(tmp_path)]) == 1
    assert "expected (10, 10, 10)" in capsys.readouterr().err
