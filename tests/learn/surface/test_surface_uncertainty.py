"""`surfmap-learn surface run` with cv.repeats and cv.permutations on a tiny SYNTHETIC cohort (4 sites x 6)."""

import json

import pandas as pd
import pytest

from learn.surface.cli import main
from learn.surface.uncertainty import unit_predictions

CONFIG = """
out_dir = "{out}"
device = "cpu"
progress = false
[data]
source = "synthetic"
[synthetic]
cohort = "abide_like"
template = "grid"
grid_size = 12
image_size = 12
n_sites = 4
subjects_per_site = [6, 6]
hemis = ["left"]
metrics = ["thickness", "sulc"]
radius_mm = 6.0
n_regions = 1
[model]
name = "tiny"
weights = "none"
tiny_width = 4
tiny_depth = 2
[schedule]
epochs = 2
mixup_epochs = 1
batch_size = 8
[cv]
n_splits = 2
bootstrap_rounds = 20
repeats = 2
permutations = 2
"""


@pytest.fixture(scope="module")
def uncertainty_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("SYNTHETIC_uncertainty")
    cfg = tmp / "exp.toml"
    cfg.write_text(CONFIG.format(out=tmp / "run"))
    return cfg, tmp / "run"


def test_surface_run_repeats_and_permutations(uncertainty_run, capsys, caplog):
    cfg, out = uncertainty_run
    with caplog.at_level("INFO", logger="learn.surface.uncertainty"):
        assert main(["run", "--config", str(cfg)]) == 0
    # 2 folds x 2 channels per cross-validation, 2 repeats + 2 permutations: stated before training
    assert "this run trains 16 models: 2 repeat(s) + 2 permutation(s) of a cross-validation that trains 4" \
        in caplog.text
    assert "permutation 2 of 2 (labels permuted within site)" in caplog.text
    printed = capsys.readouterr().out
    assert "mean: AUC over 2 repeat(s)" in printed and "permutation p = " in printed
    assert "2 permutations cannot give p <= 0.05" in printed
    res = json.loads((out / "results.json").read_text())
    unc = res["uncertainty"]
    assert set(unc) == {"left_thickness", "left_sulc", "mean"}
    for ch, e in unc.items():
        assert e["repeats"]["n"] == 2 and e["corrected_ci"]["auc"]["n_estimates"] == 4
        assert e["repeats"]["auc"][0] == pytest.approx(res["results"][ch]["pooled"]["auc"])  # repeat 0 = the run
        assert e["naive_bootstrap_ci"]["auc"] == res["results"][ch]["ci95"]["auc"]
        assert e["permutation"]["n"] == 2 and e["permutation"]["p_value"] in (1 / 3, 2 / 3, 1.0)
    assert "percentile bootstrap" in res["meta"]["ci95_method"]
    table = pd.read_csv(out / "results.csv")
    assert {"auc_ci_lo", "auc_corrected_ci_lo", "auc_repeat_sd", "permutation_p", "beats_chance"} <= set(table)
    null = pd.read_csv(out / "permutation_null.csv")
    assert len(null) == 6 and (out / "null_distribution.png").stat().st_size > 5000
    # repeat 1 used another fold assignment; permutations keep each site's labels
    r0 = pd.read_csv(out / "predictions.csv")
    r1 = pd.read_csv(out / "repeats" / "r001" / "predictions.csv")
    p1 = pd.read_csv(out / "permutations" / "p0001" / "predictions.csv")
    key = ["subject", "channel"]
    assert (r0.sort_values(key)["fold"].to_numpy() != r1.sort_values(key)["fold"].to_numpy()).any()
    assert not (out / "permutations" / "p0001" / "folds" / "left_sulc" / "fold00" / "model.pt").exists()
    assert (p1.groupby("site")["label"].sum() == r0.groupby("site")["label"].sum()).all()
    assert (p1.sort_values(key)["label"].to_numpy() != r0.sort_values(key)["label"].to_numpy()).any()


def test_surface_run_uncertainty_resumes_without_training(uncertainty_run, monkeypatch, capsys):
    cfg, out = uncertainty_run
    if not (out / "results.json").is_file():
        pytest.skip("needs the run of test_surface_run_repeats_and_permutations")
    before = json.loads((out / "results.json").read_text())["uncertainty"]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished fold or unit was trained again")

    monkeypatch.setattr("learn.surface.train.train_model", no_training)
    assert main(["run", "--config", str(cfg)]) == 0
    assert json.loads((out / "results.json").read_text())["uncertainty"] == before


def test_unit_predictions_adds_mean_channel():
    pred = pd.DataFrame({"subject": ["a", "b", "a", "b"], "label": [1, 0, 1, 0], "fold": [0, 1, 0, 1],
                         "channel": ["x", "x", "y", "y"], "score": [0.2, 0.4, 0.6, 0.0], "role": "test"})
    out = unit_predictions(pd.concat([pred, pred.assign(role="inner")]))
    mean = out[out["channel"] == "mean"].set_index("subject")["score"]
    assert len(out) == 6 and mean["a"] == pytest.approx(0.4) and mean["b"] == pytest.approx(0.2)
