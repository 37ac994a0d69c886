"""`surfmap-learn volumetric train` with cv.repeats and cv.permutations on the SYNTHETIC cohort (tiny AD model)."""

import json

import pandas as pd
import pytest

from learn import ConfigError
from learn.cli import main as learn_main
from learn.volumetric.config import VolumetricConfig, resolve

# the test-scale model of test_volumetric_train.py, 1 epoch, fold 0 of 2 leave-sites-out folds
TOML = """
name = "SYNTHETIC_ad_uncertainty"
output_dir = "{out}"

[data]
cohort = "{cohort}"
mask = "{mask}"
crop = [[4, 44], [8, 48], [0, 37]]

[model]
kind = "ad"
width_mult = 0.0625
blocks = [1, 1, 1]
ad_head_prepool = false
bn_momentum = 0.1

[train]
epochs = 1
batch_size = 8
lr = 0.02
decay = 0.0
val_size = 8
keep = "last"
device = "cpu"
progress = false
freeze = ["stem."]

[cv]
scheme = "leave-sites-out"
n_splits = 2
folds = [0]
repeats = 2
permutations = 1
"""


@pytest.mark.slow
def test_volumetric_train_repeats_and_permutations(synthetic_cohort, tmp_path, capsys):
    cfg = tmp_path / "ad.toml"
    cfg.write_text(TOML.format(out=tmp_path / "run", cohort=synthetic_cohort,
                               mask=synthetic_cohort.parent / "SYNTHETIC_mask.nii.gz"))
    assert learn_main(["volumetric", "train", "--config", str(cfg)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["uncertainty"][0].startswith("cv: AUC over 2 repeat(s)")
    assert "1 permutations cannot give p <= 0.05" in printed["uncertainty"][0]
    out = tmp_path / "run"
    res = json.loads((out / "results.json").read_text())
    assert "models held fixed" in res["cv"]["ci_method"]  # seed 000's intervals kept, labelled
    unc = res["uncertainty"]["cv"]
    assert unc["naive_subsample_ci"]["auc"] == res["cv"]["ci"]["auc"]
    assert unc["repeats"]["auc"][0] == pytest.approx(res["cv"]["auc"])
    assert unc["corrected_ci"]["auc"]["n_estimates"] == 2 and unc["permutation"]["n"] == 1
    table = pd.read_csv(out / "results.csv")
    assert table.loc[0, "channel"] == "cv" and table.loc[0, "permutations"] == 1
    assert (out / "null_distribution.png").is_file() and len(pd.read_csv(out / "permutation_null.csv")) == 1
    # repeat 1 reallocated the sites to folds; the permuted cohort keeps every site's label count
    r1 = json.loads((out / "repeats" / "r001" / "results.json").read_text())
    assert r1["folds"][0]["test_groups"] != res["folds"][0]["test_groups"]
    cohort = pd.read_csv(synthetic_cohort)
    perm = pd.read_csv(out / "permutations" / "p0001" / "permuted_cohort.csv")
    assert (perm.groupby("site")["label"].sum() == cohort.groupby("site")["label"].sum()).all()
    assert (perm["label"].fillna(-1).to_numpy() != cohort["label"].fillna(-1).to_numpy()).any()
    assert not list((out / "permutations" / "p0001").glob("fold*/*.pt"))


def test_volumetric_config_rejects_bad_repeats():
    cfg = VolumetricConfig()
    cfg.data.cohort = "cohort.csv"
    cfg.cv.repeats = 0
    with pytest.raises(ConfigError, match="cv.repeats should be >= 1 and cv.permutations >= 0; 0 and 0"):
        resolve(cfg)
