"""`surfmap-learn surface run --config FILE` and `synth`."""

import json

import pandas as pd

from learn.cli import main as learn_main
from learn.surface.cli import main

CONFIG = """
out_dir = "{out}"
device = "cpu"
progress = false
[data]
source = "synthetic"
[synthetic]
cohort = "hcp_like"
template = "grid"
grid_size = 12
image_size = 12
n_subjects = 24
hemis = ["left"]
metrics = ["thickness"]
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
"""


def test_main_run_weight_errors_are_one_line(tmp_path, capsys):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(CONFIG.format(out=tmp_path / "run").replace('weights = "none"', 'weights = "missing.pth"'))
    assert main(["run", "--config", str(cfg)]) == 1
    assert "weights file 'missing.pth' does not exist" in capsys.readouterr().err
    cfg.write_text(CONFIG.format(out=tmp_path / "run").replace('weights = "none"', 'weights = "imagenet"'))
    assert main(["run", "--config", str(cfg)]) == 1
    assert "the 'tiny' model has no ImageNet weights" in capsys.readouterr().err


def test_learn_cli_dispatches_surface_run_toml(tmp_path, capsys):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(CONFIG.format(out=tmp_path / "run"))  # weights = "none": from scratch
    assert learn_main(["surface", "run", "--config", str(cfg)]) == 0
    assert "results in" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "config.resolved.json").read_text())["model"]["weights"] is None


def test_main_run_synthetic_grid(tmp_path, capsys):
    cfg = tmp_path / "exp.json"
    cfg.write_text(json.dumps({
        "out_dir": str(tmp_path / "ignored"), "device": "cpu", "progress": False,
        "data": {"source": "synthetic"},
        "synthetic": {"template": "grid", "grid_size": 12, "image_size": 12, "n_subjects": 24, "hemis": ["left"],
                      "metrics": ["thickness", "sulc"], "radius_mm": 6.0, "n_regions": 1},
        "model": {"name": "tiny", "weights": None, "tiny_width": 4, "tiny_depth": 2},
        "schedule": {"epochs": 2, "mixup_epochs": 1, "batch_size": 8},
        "cv": {"n_splits": 2, "bootstrap_rounds": 20},
    }))
    out = tmp_path / "synthetic-run"
    assert main(["run", "--config", str(cfg), "--out", str(out), "--set", "schedule.lr=0.02"]) == 0
    printed = capsys.readouterr().out
    assert "left_thickness: accuracy" in printed and "mean: accuracy" in printed
    resolved = json.loads((out / "config.resolved.json").read_text())
    assert resolved["schedule"]["lr"] == 0.02 and resolved["schedule"]["momentum"] == 0.9
    assert resolved["out_dir"] == str(out)
    pred = pd.read_csv(out / "predictions.csv")
    assert set(pred["channel"]) == {"left_thickness", "left_sulc"} and len(pred) == 48
    assert pred["synthetic"].all()
    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]) == {"left_thickness", "left_sulc", "mean"}
    assert (out / "folds" / "left_sulc" / "fold01" / "model.pt").is_file()


def test_main_run_unknown_key(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[schedule]\nepoch = 3\n")
    assert main(["run", "--config", str(cfg)]) == 1
    assert "unknown config key(s) ['schedule.epoch']" in capsys.readouterr().err


def test_main_synth_writes_freesurfer_layout(tmp_path, capsys, monkeypatch):
    from learn.surface import synthetic as S

    real = S.hcp_like_cohort
    monkeypatch.setattr(S, "hcp_like_cohort", lambda *a, **k: real(*a, **{**k, "n_modes": 8, "hemis": ("left",)}))
    out = tmp_path / "synthetic_subjects"
    assert main(["synth", "--n-subjects", "2", "-o", str(out)]) == 0
    assert "SYNTHETIC synthetic-hcp-like cohort (2 subjects)" in capsys.readouterr().out
    table = pd.read_csv(out / "cohort.csv")
    assert (out / table["subject"][0] / "surf" / "lh.thickness").is_file()
