"""End-to-end: a tiny AD classifier on the SYNTHETIC cohort, real vs shuffled labels, via the config command."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from learn import ConfigError
from learn.checkpoint import load_checkpoint, save_checkpoint
from learn.cli import main as learn_main
from learn.volumetric.config import ModelConfig, VolumetricConfig
from learn.volumetric.synthetic import make_synthetic_cohort
from learn.volumetric.train import (
    build_model,
    load_fold_models,
    load_volumetric_config,
    predict_cohort,
    run_experiment,
)

# Test-scale settings (documented deviations from the paper, which uses the full model at 1.5 mm, lr 3e-4,
# decay 2e-3, 10 epochs, batch 24 and trains every layer): width 1/16, AD head without its first max-pool
# (3 mm grid), a 40x40x37 crop around the hippocampi, the randomly initialised stem kept frozen so that a CPU
# run takes seconds, BN momentum 0.1 (0.01 barely moves the running statistics in 40 steps), lr 0.02 without
# decay, the last epoch kept.
TOML = """
name = "SYNTHETIC_ad_test"
output_dir = "{out}"

[data]
cohort = "{cohort}"
mask = "{mask}"
crop = [[4, 44], [8, 48], [0, 37]]
test_cohort = "{test_cohort}"

[model]
kind = "ad"
width_mult = 0.0625
blocks = [1, 1, 1]
ad_head_prepool = false
bn_momentum = 0.1

[train]
epochs = 8
batch_size = 8
lr = 0.02
decay = 0.0
val_size = 8
keep = "last"
device = "cpu"
progress = false
freeze = ["stem."]

[cv]
scheme = "leave-one-site-out"
folds = [1]  # held-out site SYNTHETIC_S01 (45% AD)
"""


@pytest.fixture(scope="module")
def independent_cohort(tmp_path_factory, template_cache):
    d = tmp_path_factory.mktemp("SYNTHETIC_independent")
    return make_synthetic_cohort(d, n_sites=2, n_per_site=24, n_mci_per_site=8, seed=11, qc_fraction=0.0,
                                 effect=3.0, cache_dir=template_cache)


@pytest.mark.slow
def test_train_synthetic_real_vs_shuffled_labels(synthetic_cohort, independent_cohort, tmp_path, capsys):
    cfg_path = tmp_path / "ad.toml"
    cfg_path.write_text(TOML.format(out=tmp_path / "run", cohort=synthetic_cohort,
                                    mask=synthetic_cohort.parent / "SYNTHETIC_mask.nii.gz",
                                    test_cohort=independent_cohort))
    assert learn_main(["volumetric", "train", "--config", str(cfg_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["synthetic"] is True
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    fold = res["folds"][0]
    print("SYNTHETIC AUC held-out site %.3f, independent %.3f" % (fold["auc"], res["test"]["auc"]))
    assert fold["test_groups"] == ["SYNTHETIC_S01"]
    assert fold["auc"] >= 0.9  # held-out site
    # independent SYNTHETIC sites with new site effects, pooled: reported, not a criterion (0.67 measured)
    assert 0.0 <= res["test"]["auc"] <= 1.0
    lo, hi = res["test"]["ci"]["auc"]
    assert lo <= res["test"]["auc"] <= hi
    # the resolved config is saved with the run and beside every checkpoint
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert resolved["train"]["lr"] == 0.02 and resolved["model"]["width_mult"] == 0.0625
    assert json.loads((tmp_path / "run" / "fold1" / "last.config.json").read_text()) == resolved
    assert load_checkpoint(tmp_path / "run" / "fold1" / "model.pt")["args"] == resolved
    preds = pd.read_csv(tmp_path / "run" / "cv_predictions.csv")
    assert set(preds["site"]) == {"SYNTHETIC_S01"}
    assert len(load_fold_models(tmp_path / "run")) == 1
    # the fold models score any cohort (here the independent SYNTHETIC sites, MCI included)
    pred = predict_cohort(tmp_path / "run", independent_cohort)
    assert len(pred) == 64 and pred["score"].between(0, 1).all()

    shuffled = load_volumetric_config(cfg_path, ["train.shuffle_labels=true", f"output_dir='{tmp_path / 'shuf'}'"])
    res_s = run_experiment(shuffled)
    print("shuffled: held-out site AUC %.3f, independent %.3f" % (res_s["folds"][0]["auc"], res_s["test"]["auc"]))
    # the same held-out site with label-shuffled training stays near chance (measured 0.457). On the pooled
    # independent sites the shuffled run scores 0.69 against 0.67 for the real one: across unseen sites the tiny
    # model's scores follow site / global-GM cues, so only within-site AUC measures what it learned.
    assert abs(res_s["folds"][0]["auc"] - 0.5) < 0.2


def test_build_model_transfers_stem_from_checkpoint(tmp_path):
    torch.manual_seed(0)
    base_cfg = VolumetricConfig(model=ModelConfig(kind="sex", width_mult=1 / 16, blocks=(1, 1, 1)))
    sex = build_model(base_cfg.model)
    save_checkpoint(tmp_path / "sex.pt", model=sex, epoch=9, args=base_cfg)
    ad = build_model(ModelConfig(kind="ad", base_checkpoint=str(tmp_path / "sex.pt"), ad_head_prepool=False))
    for k, v in sex.stem.state_dict().items():
        torch.testing.assert_close(ad.stem.state_dict()[k], v, rtol=0, atol=0)
    assert ad.stem.conv1.bn.momentum == 0.01
    save_checkpoint(tmp_path / "ad.pt", model=ad, epoch=0, args=VolumetricConfig())
    with pytest.raises(ConfigError, match="holds a 'ad' model; a sex or age model"):
        build_model(ModelConfig(kind="ad", base_checkpoint=str(tmp_path / "ad.pt")))


def test_config_unknown_key_and_missing_cohort(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[train]\nepoch = 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['train.epoch'\]"):
        load_volumetric_config(p)
    p.write_text("[train]\nepochs = 3\n")
    with pytest.raises(ConfigError, match="data.cohort is required"):
        run_experiment(load_volumetric_config(p))


def test_cli_train_reports_bad_input(tmp_path, capsys):
    p = tmp_path / "c.toml"
    p.write_text(f'[data]\ncohort = "{tmp_path / "none.csv"}"\n')
    assert learn_main(["volumetric", "train", "--config", str(p)]) == 1
    assert "none.csv' does not exist" in capsys.readouterr().err


def test_run_experiment_rejects_site_leak(synthetic_cohort, tmp_path):
    # a 'site' grouping that splits one site across folds must be caught by the leak check
    df = pd.read_csv(synthetic_cohort)
    df["fake_site"] = np.arange(len(df)) % 5
    df["gmd_path"] = [str(synthetic_cohort.parent / p) for p in df["gmd_path"]]
    df["gmv_path"] = [str(synthetic_cohort.parent / p) for p in df["gmv_path"]]
    csv = tmp_path / "SYNTHETIC_leaky.csv"
    df.to_csv(csv, index=False)
    cfg = load_volumetric_config(None, [f"data.cohort='{csv}'", "cv.group_column='fake_site'",
                                        f"output_dir='{tmp_path / 'out'}'", "train.device='cpu'"])
    with pytest.raises(ValueError, match=r"site\(s\)|in both the training and the test set"):
        run_experiment(cfg)
