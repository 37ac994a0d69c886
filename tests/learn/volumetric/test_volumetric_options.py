"""Defaults that run on every grid, the check that names the setting to change, and the seed's ablation switches."""

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from learn import ConfigError, DataError, MetricUndefinedError
from learn.checkpoint import save_checkpoint
from learn.volumetric.analysis import accuracy_difference_test
from learn.volumetric.cli import main as vol_main
from learn.volumetric.config import DataConfig, ModelConfig, VolumetricConfig, resolve
from learn.volumetric.data import VolumeDataset, read_cohort
from learn.volumetric.model import ADClassifier, InceptionResNetV2
from learn.volumetric.train import apply_qc_report, build_model, check_model_input, safe_metrics

SMALL = dict(width_mult=1 / 16, blocks=(1, 1, 1))


@pytest.mark.parametrize("shape, expected", [((48, 60, 43), False), ((96, 120, 86), True), ((69, 69, 69), True),
                                             ((68, 120, 86), False), ((37, 37, 37), False)])
def test_check_model_input_resolves_auto_prepool(shape, expected, caplog):
    with caplog.at_level(logging.WARNING, logger="learn.volumetric.train"):
        m = check_model_input(ModelConfig(kind="ad", **SMALL), shape)
    assert m.ad_head_prepool is expected
    assert ("skips its first max-pool" in caplog.text) is (not expected)
    model = build_model(m).eval()
    with torch.no_grad():  # the resolved model runs on that input (real tensors, smallest cases only)
        if max(shape) <= 48:
            assert model(torch.zeros((2, 2) + shape)).shape == (2, 1)


def test_default_ad_model_runs_on_the_synthetic_grid(synthetic_cohort):
    # the defaults of a new user's config: kind "ad", ad_head_prepool "auto", 3 mm synthetic grid 48x60x43
    m = check_model_input(ModelConfig(**SMALL), (48, 60, 43))
    x = torch.zeros(2, 2, 48, 60, 43)
    assert build_model(m).eval()(x).shape == (2, 1)


@pytest.mark.parametrize("model, shape, match", [
    (ModelConfig(kind="ad", ad_head_prepool=True), (48, 60, 43), r"model.ad_head_prepool = true needs at least 69"),
    (ModelConfig(kind="ad"), (36, 60, 43), r"the AD head needs at least 37 per axis: enlarge or remove data.crop"),
    (ModelConfig(kind="sex"), (48, 30, 43), r"the sex network needs at least 37 per axis"),
    (ModelConfig(kind="ad", transfer="intact"), (48, 60, 20), r"the intact network needs at least 37"),
])
def test_check_model_input_names_the_setting(model, shape, match):
    with pytest.raises(ConfigError, match=match):
        check_model_input(model, shape)


@pytest.mark.parametrize("section, key, value, match", [
    ("model", "transfer", "head", "model.transfer should be 'stem' or 'intact'"),
    ("model", "ad_head_prepool", "yes", "model.ad_head_prepool should be true, false or 'auto'"),
    ("data", "channels", ["gmd", "t1"], "data.channels should be a non-empty list"),
    ("train", "amp_dtype", "float8", "train.amp_dtype should be"),
    ("train", "screening_threshold", 1.5, r"train.screening_threshold should be in \(0, 1\)"),
])
def test_resolve_rejects_bad_switches(section, key, value, match):
    cfg = VolumetricConfig(data=DataConfig(cohort="c.csv"))
    setattr(getattr(cfg, section), key, value)
    with pytest.raises(ConfigError, match=match):
        resolve(cfg)


def test_one_channel_ablation(synthetic_cohort):
    co = read_cohort(synthetic_cohort)
    both = VolumeDataset(co, [0, 1], cache=None)
    gmv = VolumeDataset(co, [0, 1], cache=None, channels=[1])
    x2, x1 = both[1][0], gmv[1][0]
    assert x1.shape == (1,) + tuple(x2.shape[1:])
    torch.testing.assert_close(x1[0], x2[1], rtol=0, atol=0)
    model = build_model(check_model_input(ModelConfig(kind="ad", **SMALL), x1.shape[1:], 1), in_channels=1)
    assert model.stem.conv1.conv.in_channels == 1
    assert model.eval()(torch.stack([x1, x1])).shape == (2, 1)


def test_intact_transfer_keeps_the_whole_base_network(tmp_path):
    torch.manual_seed(0)
    base_cfg = VolumetricConfig(model=ModelConfig(kind="sex", **SMALL))
    sex = build_model(base_cfg.model)
    save_checkpoint(tmp_path / "sex.pt", model=sex, epoch=0, args=base_cfg)
    ad = build_model(ModelConfig(kind="ad", transfer="intact", base_checkpoint=str(tmp_path / "sex.pt"), **SMALL))
    stem_ad = build_model(ModelConfig(kind="ad", base_checkpoint=str(tmp_path / "sex.pt"), **SMALL))
    assert isinstance(ad, InceptionResNetV2) and isinstance(stem_ad, ADClassifier)
    sd, sa = sex.state_dict(), ad.state_dict()
    assert sd.keys() == sa.keys()
    for k in sd:
        if not k.startswith("fc."):
            torch.testing.assert_close(sa[k], sd[k], rtol=0, atol=0)
    assert not torch.equal(sa["fc.weight"], sd["fc.weight"])  # a new Dense(1)
    assert all(p.requires_grad for n, p in ad.named_parameters() if not n.endswith("bn.weight"))
    with pytest.raises(ConfigError, match="differ from those of model.base_checkpoint"):
        build_model(ModelConfig(kind="ad", base_checkpoint=str(tmp_path / "sex.pt"), width_mult=1 / 8,
                                blocks=(1, 1, 1)))
    with pytest.raises(ConfigError, match="trained on 2 input channel"):
        build_model(ModelConfig(kind="ad", base_checkpoint=str(tmp_path / "sex.pt"), **SMALL), in_channels=1)


def test_accuracy_difference_permutation_test():
    group = np.array(["1.5T"] * 60 + ["3T"] * 40)
    same = np.ones(100, bool)
    same[[0, 10, 20, 30, 40, 50, 60, 70, 80, 90]] = False  # 90% correct in both groups
    res = accuracy_difference_test(same, group, n_permutations=2000)
    assert res["groups"] == ["1.5T", "3T"] and res["n"] == [60, 40] and res["accuracy"] == [0.9, 0.9]
    assert res["difference"] == 0.0 and res["p"] == 1.0
    # 54/60 vs 29/40 correct: p as a plain loop of label permutations gives (0.0143 with 3,000 permutations)
    rng = np.random.default_rng(0)
    c = rng.random(100) < 0.9
    res = accuracy_difference_test(c, group, n_permutations=5000, seed=1)
    assert res["difference"] == pytest.approx(55 / 60 - 29 / 40)
    assert 0.008 < res["p"] < 0.025
    differ = np.r_[np.ones(60, bool), np.zeros(40, bool)]
    assert accuracy_difference_test(differ, group, n_permutations=2000)["p"] == pytest.approx(1 / 2001)
    with pytest.raises(MetricUndefinedError, match="compares two groups; found 1"):
        accuracy_difference_test(same, np.array(["3T"] * 100))


def test_safe_metrics_records_constant_scores():
    from learn.metrics import binary_metrics

    m = safe_metrics(binary_metrics, np.array([0, 1, 1, 0]), np.full(4, 0.5))
    assert np.isnan(m["auc"]) and np.isnan(m["accuracy"]) and "constant scores" in m["undefined"]


def test_apply_qc_report_drops_excluded_scans(synthetic_cohort, tmp_path):
    co = read_cohort(synthetic_cohort)
    rep = co[["subject", "session"]].copy()
    rep["qc_excluded"] = False
    rep.loc[[3, 10], "qc_excluded"] = True
    rep.iloc[:-1].to_csv(tmp_path / "qc_report.csv", index=False)  # the last scan is not in the report: kept
    kept, n = apply_qc_report(co, tmp_path / "qc_report.csv")
    assert n == 2 and len(kept) == len(co) - 2
    assert not set(co["subject"].iloc[[3, 10]]) & set(kept["subject"])
    np.testing.assert_array_equal(kept["row"], np.arange(len(kept)))
    pd.DataFrame({"subject": ["a"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="lacks 'subject' / 'qc_excluded'"):
        apply_qc_report(co, tmp_path / "bad.csv")


def test_clinical_refuses_predictions_of_unknown_provenance(tmp_path, capsys):
    pd.DataFrame({"subject": ["a", "b"], "score": [0.2, 0.8], "diagnosis": ["NC", "AD"]}).to_csv(
        tmp_path / "p.csv", index=False)
    assert vol_main(["clinical", "--predictions", str(tmp_path / "p.csv"), "--out", str(tmp_path / "o")]) == 1
    assert "whether its scores are out of sample is unknown" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["volumetric_cpu_sex_allin", "volumetric_cpu_ad", "volumetric_seed000_sex_allin",
                                  "volumetric_seed000_sex_cv", "volumetric_seed000_ad"])
def test_example_configs_load_and_resolve(name):
    from pathlib import Path

    from learn.volumetric.train import load_volumetric_config

    path = Path(__file__).parents[3] / "examples" / "configs" / f"{name}.toml"
    cfg = resolve(load_volumetric_config(path))
    assert cfg.cv.scheme == ("none" if name.endswith("allin") else cfg.cv.scheme)
    if name.startswith("volumetric_seed000"):  # the paper's network and recipe, not a test-scale one
        assert cfg.model.width_mult == 1.0 and tuple(cfg.model.blocks) == (5, 10, 5) and cfg.train.epochs == 10
        assert cfg.train.batch_size == 24 and cfg.data.crop == "auto" and cfg.model.ad_head_prepool == "auto"
