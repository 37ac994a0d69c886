"""Model building, transfer, config errors and split checks of ``learn.volumetric.train`` (the end-to-end runs
through the commands are in test_volumetric_workflow.py)."""

import numpy as np
import pandas as pd
import pytest
import torch

from learn import ConfigError
from learn.checkpoint import save_checkpoint
from learn.cli import main as learn_main
from learn.volumetric.config import ModelConfig, VolumetricConfig
from learn.volumetric.train import build_model, load_volumetric_config, run_experiment


def test_build_model_transfers_stem_from_checkpoint(tmp_path):
    torch.manual_seed(0)
    base_cfg = VolumetricConfig(model=ModelConfig(kind="sex", width_mult=1 / 16, blocks=(1, 1, 1)))
    sex = build_model(base_cfg.model)
    save_checkpoint(tmp_path / "sex.pt", model=sex, epoch=9, args=base_cfg)
    ad = build_model(ModelConfig(kind="ad", base_checkpoint=str(tmp_path / "sex.pt"), ad_head_prepool=False,
                                 width_mult=1 / 16, blocks=(1, 1, 1)))
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
