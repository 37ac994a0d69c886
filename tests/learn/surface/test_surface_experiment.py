"""`surfmap-learn surface run` as a whole experiment (learn.surface.experiment), on SYNTHETIC grid cohorts.

The claim tests plant an effect so that the claim is true by construction, state the margin they need, and were
checked to fail when the construction is broken on purpose (see each docstring). Every number here is SYNTHETIC.
"""

import copy
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from learn import ConfigError
from learn.config import config_from_dict
from learn.metrics import roc_auc
from learn.surface.cli import main
from learn.surface.config import ExperimentConfig, describe
from learn.surface.experiment import run_experiment, synthetic_cohort

GRID = {"template": "grid", "grid_size": 16, "image_size": 16, "hemis": ["left"], "radius_mm": 10.0,
        "n_regions": 2}
TINY = {"name": "tiny", "weights": "none", "tiny_width": 8, "tiny_depth": 2}


def _config(out, **sections) -> dict:
    """A two-stage experiment: SYNTHETIC HCP-like source (sex) and ABIDE-like target whose label effect sits in
    the source's sex regions (``label_regions_seed`` = the source seed)."""
    cfg = {
        "out_dir": str(out), "device": "cpu", "progress": False, "seed": 0,
        "model": dict(TINY),
        "schedule": {"epochs": 8, "mixup_epochs": 4, "lr": 0.05, "lr_step_epochs": 2, "final_lr": 0.005,
                     "batch_size": 16},
        "cv": {"n_splits": 3, "bootstrap_rounds": 100, "normalization": "pixel"},
        "source": {"kind": "synthetic",
                   "synthetic": {"cohort": "hcp_like", "n_subjects": 60, "metrics": ["thickness", "sulc"],
                                 "effect_size": 2.5, "fwhm_mm": 8.0, "seed": 1, **GRID},
                   "schedule": {"epochs": 6, "mixup_epochs": 3, "lr": 0.05, "lr_step_epochs": 2, "final_lr": 0.005,
                                "batch_size": 16}},
        "target": {"kind": "synthetic", "group_column": "family",
                   "synthetic": {"cohort": "abide_like", "n_sites": 3, "subjects_per_site": [22, 24],
                                 "metrics": ["thickness", "sulc"], "effect_size": 2.5, "sex_effect_size": 0.0,
                                 "seed": 2, "label_regions_seed": 1, "site_fwhm_range": [8.0, 8.0],
                                 "site_gain_sd": 0.0, "site_offset_sd": 0.0, "family_size": 2, **GRID}},
        "transfer": {"strategies": ["two_stage"]},
        "stacking": {"inner_splits": 2, "param_grid": {"max_depth": [1, 2], "n_estimators": [25]}},
        "occlusion": {"strategies": ["two_stage"], "patch": 4, "stride": 2},
        "baselines": {"methods": ["pca_svm", "cnn3d"], "grid": 6, "cnn3d_width": 4, "cnn3d_depth": 2,
                      "schedule": {"epochs": 2, "mixup_epochs": 1, "batch_size": 16}},
    }
    for key, value in sections.items():
        cfg[key] = value
    return cfg


def _write(tmp_path, cfg, name="exp.json"):
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One uninterrupted run through the command (the reference of the resume test)."""
    root = tmp_path_factory.mktemp("synthetic-experiment")
    cfg = _config(root / "run")
    path = _write(root, cfg)
    assert main(["run", "--config", str(path)]) == 0
    return root / "run", cfg


def test_run_writes_every_output(full_run, capsys):
    run, cfg = full_run
    for name in ("config.resolved.json", "results.json", "table.csv", "table.md", "report.md", "roc_two_stage.png",
                 "roc_methods.png", "confusion_matrices.png", "occlusion_two_stage.png"):
        assert (run / name).is_file(), name
    table = pd.read_csv(run / "table.csv")
    assert (table["data"] == "SYNTHETIC").all()
    t1 = table[table["table"] == "Table 1"]
    assert set(t1["input"]) == {"left_thickness", "left_sulc", "mean of channels", "stacked (XGBoost)"}
    assert set(table[table["table"] == "Table 2"]["method"]) == {"tiny 2 stage", "PCA + SVM", "3D CNN (3D mesh)"}
    assert table["AUC 95% CI"].str.match(r"0\.\d{3}-[01]\.\d{3}").all()
    assert "SYNTHETIC" in (run / "report.md").read_text().splitlines()[0]
    # occlusion of the test subjects only, per class, back on the cortex
    occ = run / "occlusion" / "two_stage" / "left_thickness"
    for k in range(3):
        with np.load(occ / f"fold{k:02d}.npz") as z:
            pred = pd.read_csv(run / "strategies" / "two_stage" / "folds" / "left_thickness" / f"fold{k:02d}"
                               / "predictions.csv", dtype={"subject": str})
            assert set(z["test_subjects"]) == set(pred[pred["role"] == "test"]["subject"])
    for score in ("probability", "accuracy"):
        for c in (0, 1):
            assert nib.load(occ / f"{score}_class{c}.func.gii").darrays[0].data.shape == (256,)
    # families (pairs of subjects) never split across outer folds
    pred = pd.read_csv(run / "strategies" / "two_stage" / "predictions.csv", dtype={"subject": str})
    test = pred[(pred["role"] == "test") & (pred["channel"] == "left_thickness")]
    family = dict(zip(*synthetic_cohort(config_from_dict(ExperimentConfig, cfg).target.synthetic)
                      .table[["subject", "family"]].T.to_numpy()))
    assert test.assign(family=test["subject"].map(family)).groupby("family")["fold"].nunique().max() == 1


def test_occlusion_peaks_in_planted_regions_through_command(full_run):
    """Planted: an ASD effect of d = 2.5 at the centre of two regions (54 of 256 vertices) of left thickness.
    Claim: the per-class occlusion maps the command writes (GIFTI, test subjects only) are, on average, more than
    twice as high inside the regions as outside, for both classes (measured: 0.0069 vs 0.0011 for cases, 0.0020
    vs 0.0000 for controls). Checked to fail when the labels are shuffled, so that no model learns the regions
    (0.0021 vs 0.0035 and -0.0027 vs -0.0026)."""
    run, cfg = full_run
    truth = synthetic_cohort(config_from_dict(ExperimentConfig, cfg).target.synthetic).effect_map(
        "label", "left", "thickness")
    inside = truth > 0
    occ = run / "occlusion" / "two_stage" / "left_thickness"
    for c in (0, 1):
        values = nib.load(occ / f"probability_class{c}.func.gii").darrays[0].data
        ratio = values[inside].mean() / max(values[~inside].mean(), 1e-12)
        print(f"SYNTHETIC occlusion class {c}: inside {values[inside].mean():.4g}, outside "
              f"{values[~inside].mean():.4g}, ratio {ratio:.2f}")
        assert values[inside].mean() > 2 * max(values[~inside].mean(), 0.0)


def test_predict_scores_new_subjects_with_the_fold_ensemble(full_run, tmp_path, capsys):
    run, _ = full_run
    out = tmp_path / "pred.csv"
    assert main(["predict", str(run), "--synthetic-seed", "11", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("SYNTHETIC") and "AUC against the generator's labels" in printed
    df = pd.read_csv(out)
    assert {"left_thickness", "left_sulc", "mean", "stacked", "synthetic"} <= set(df.columns)
    assert df["synthetic"].all() and df["strategy"].eq("two_stage").all()
    assert roc_auc(df["label"], df["stacked"]) > 0.7  # new subjects, same planted effect
    # the same subjects from `surfmap batch`-style files, without labels
    rows = []
    for i, s in enumerate(df["subject"][:6]):
        folder = tmp_path / "flat" / s / "left"
        folder.mkdir(parents=True)
        data = synthetic_new_subjects(run)
        np.savez(folder / "images.npz", images=data.images[i],
                 channels=np.array([c.split("_", 1)[1] for c in data.channels]))  # metric names, as surfmap batch
        rows.append({"subject": s, "hemi": "left", "status": "ok"})
    pd.DataFrame(rows).to_csv(tmp_path / "flat" / "manifest.tsv", sep="\t", index=False)
    pd.DataFrame({"subject": df["subject"][:6], "site": "new"}).to_csv(tmp_path / "new.csv", index=False)
    assert main(["predict", str(run), "--manifest", str(tmp_path / "flat" / "manifest.tsv"), "--table",
                 str(tmp_path / "new.csv"), "-o", str(tmp_path / "pred2.csv")]) == 0
    df2 = pd.read_csv(tmp_path / "pred2.csv")
    assert "label" not in df2.columns
    np.testing.assert_allclose(df2["stacked"], df["stacked"][:6], rtol=1e-6)


def synthetic_new_subjects(run):
    from learn.surface.experiment import load_cohort

    cfg = config_from_dict(ExperimentConfig, json.loads((run / "config.resolved.json").read_text()))
    return load_cohort(cfg.target, seed_override=11, name_suffix="-predict-seed11").dataset


def test_interrupted_run_resumes_to_identical_numbers(full_run, tmp_path, monkeypatch):
    """Killed in stage one, then in an inner fold, then in stacking: the resumed run's predictions, stacked
    predictions and table are byte-identical to the uninterrupted run's."""
    import learn.surface.stacking as stacking
    import learn.training as training

    ref, cfg = full_run
    cfg = copy.deepcopy(cfg)
    cfg["out_dir"] = str(tmp_path / "run")
    path = _write(tmp_path, cfg)
    real_epoch, real_stacker = training.train_one_epoch, stacking.fit_stacker
    calls = {"epochs": 0, "stackers": 0}

    def stop_after(n):
        def epoch(*a, **k):
            calls["epochs"] += 1
            if calls["epochs"] > n:
                raise KeyboardInterrupt("test: killed")
            return real_epoch(*a, **k)
        return epoch

    monkeypatch.setattr(training, "train_one_epoch", stop_after(6 + 3))  # second source channel, epoch 4
    with pytest.raises(KeyboardInterrupt):
        main(["run", "--config", str(path)])
    assert (tmp_path / "run" / "source" / "random" / "left_thickness" / "model.pt").is_file()
    assert (tmp_path / "run" / "source" / "random" / "left_sulc" / "last.pt").is_file()
    calls["epochs"] = 0
    monkeypatch.setattr(training, "train_one_epoch", stop_after(3 + 8 + 8 + 2))  # outer fold 1, second inner fold
    with pytest.raises(KeyboardInterrupt):
        main(["run", "--config", str(path)])
    inner = tmp_path / "run" / "strategies" / "two_stage" / "folds" / "left_thickness" / "fold00"
    assert (inner / "inner0" / "predictions.csv").is_file() and (inner / "inner1" / "last.pt").is_file()
    monkeypatch.setattr(training, "train_one_epoch", real_epoch)

    def stacker(*a, **k):
        calls["stackers"] += 1
        if calls["stackers"] == 2:
            raise KeyboardInterrupt("test: killed in stacking")
        return real_stacker(*a, **k)

    monkeypatch.setattr(stacking, "fit_stacker", stacker)
    with pytest.raises(KeyboardInterrupt):
        main(["run", "--config", str(path)])
    assert (tmp_path / "run" / "stacking" / "two_stage" / "fold00.csv").is_file()
    assert not (tmp_path / "run" / "stacking" / "two_stage" / "fold01.csv").exists()
    monkeypatch.setattr(stacking, "fit_stacker", real_stacker)
    assert main(["run", "--config", str(path)]) == 0
    for name in ("strategies/two_stage/predictions.csv", "stacking/two_stage/predictions.csv", "table.csv",
                 "baselines/cnn3d/predictions.csv", "occlusion/two_stage/left_thickness/probability_class1.npy"):
        assert (tmp_path / "run" / name).read_bytes() == (ref / name).read_bytes(), name


def test_two_stage_beats_scratch_on_small_target(tmp_path):
    """Planted: sex (source, 160 subjects, d = 2.5) and ASD (target, 2 sites x ~21 subjects, d = 2.0) in the same
    two regions of thickness. Same seeds and folds for both strategies. Claim: two-stage AUC >= scratch AUC + 0.08
    and >= 0.8 (measured: 0.893 vs 0.770). Checked to fail when the source carries no effect (source
    effect_size = 0: 0.796 vs 0.770)."""
    cfg = _config(tmp_path / "run", stacking={"enabled": False}, occlusion={"enabled": False},
                  baselines={"methods": []})
    cfg["cv"] = {"n_splits": 3, "bootstrap_rounds": 0}
    cfg["schedule"] = {"epochs": 20, "mixup_epochs": 10, "lr": 0.05, "lr_step_epochs": 5, "final_lr": 0.005,
                       "batch_size": 8}
    cfg["source"]["synthetic"].update(n_subjects=160, metrics=["thickness"], effect_size=2.5)
    cfg["source"]["schedule"].update(epochs=15, mixup_epochs=8, lr_step_epochs=4, final_lr=0.002)
    cfg["target"] = {"kind": "synthetic", "synthetic": {
        "cohort": "abide_like", "n_sites": 2, "subjects_per_site": [20, 22], "metrics": ["thickness"],
        "effect_size": 2.0, "sex_effect_size": 0.0, "seed": 2, "label_regions_seed": 1,
        "site_fwhm_range": [8.0, 8.0], "site_gain_sd": 0.0, "site_offset_sd": 0.0, **GRID}}
    cfg["transfer"] = {"strategies": ["two_stage", "scratch"]}
    table = run_experiment(config_from_dict(ExperimentConfig, cfg))["table"]
    t2 = table[table["table"] == "Table 2"]
    auc = dict(zip(t2["method"], t2["AUC"]))
    print(f"SYNTHETIC two-stage AUC {auc['tiny 2 stage']:.3f}, scratch AUC {auc['tiny scratch']:.3f}")
    assert auc["tiny 2 stage"] >= auc["tiny scratch"] + 0.08
    assert auc["tiny 2 stage"] >= 0.8


def test_stacking_at_least_as_good_as_channel_mean(tmp_path):
    """Planted: a sex effect of d = 2.5 in thickness only; curvature and sulcal depth carry none. Claim: the
    XGBoost stack's pooled AUC >= the channel mean's (measured: 0.750 vs 0.687). Checked to fail when the
    stacker is trained on permuted labels (stacked AUC 0.505)."""
    cfg = _config(tmp_path / "run", source={"kind": "none"}, transfer={"strategies": ["scratch"]},
                  occlusion={"enabled": False}, baselines={"methods": []},
                  stacking={"inner_splits": 2, "param_grid": {"max_depth": [1, 2], "n_estimators": [25, 50]}})
    cfg["cv"] = {"n_splits": 3, "bootstrap_rounds": 0}
    cfg["target"] = {"kind": "synthetic", "synthetic": {
        "cohort": "hcp_like", "n_subjects": 72, "metrics": ["thickness", "curvature", "sulc"],
        "effect_metrics": ["thickness"], "effect_size": 2.5, "fwhm_mm": 8.0, "seed": 3, **GRID}}
    table = run_experiment(config_from_dict(ExperimentConfig, cfg))["table"]
    auc = dict(zip(table[table["table"] == "Table 1"]["input"], table[table["table"] == "Table 1"]["AUC"]))
    print(f"SYNTHETIC stacked AUC {auc['stacked (XGBoost)']:.3f}, channel mean AUC {auc['mean of channels']:.3f}, "
          f"thickness alone {auc['left_thickness']:.3f}")
    assert auc["stacked (XGBoost)"] >= auc["mean of channels"]


def test_shuffled_labels_score_at_chance_through_command(tmp_path, capsys):
    """Planted: a strong effect (d = 2.5, which the unshuffled run learns, AUC > 0.8); labels shuffled with
    ``cv.shuffle_labels``. Claim: every final model and baseline has |AUC - 0.5| < 0.2 and the command says the
    main result is within noise of chance. Checked to fail with shuffle_labels = false."""
    cfg = _config(tmp_path / "null", transfer={"strategies": ["scratch"]}, source={"kind": "none"},
                  occlusion={"enabled": False}, baselines={"methods": ["pca_svm"]})
    cfg["cv"]["shuffle_labels"] = True
    assert main(["run", "--config", str(_write(tmp_path, cfg))]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "null" / "table.csv")
    t2 = table[table["table"] == "Table 2"]
    print(t2[["method", "AUC", "AUC 95% CI", "vs chance"]].to_string())
    assert (abs(t2["AUC"] - 0.5) < 0.2).all()
    assert "within noise of chance" in printed and "SHUFFLED" in printed
    assert all("SYNTHETIC" in line for line in printed.splitlines() if "AUC 0." in line)


def test_run_help_lists_sections_and_keys(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for key in ("[source]", "[target.synthetic]", "[transfer]", "[stacking]", "[occlusion]", "[baselines]",
                "strategies = [\"two_stage\", \"imagenet\", \"scratch\"]", "group_column", "scores ="):
        assert key in text, key
    assert describe().count("[") > 10


def test_config_errors(tmp_path, capsys, full_run):
    bad = _config(tmp_path / "x")
    bad["stacking"]["inner_split"] = 2
    assert main(["run", "--config", str(_write(tmp_path, bad))]) == 1
    assert "unknown config key(s) ['stacking.inner_split']" in capsys.readouterr().err
    both = _config(tmp_path / "x", data={"source": "synthetic"})
    assert main(["run", "--config", str(_write(tmp_path, both))]) == 1
    assert "not both" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="need a \\[source\\] cohort"):
        config_from_dict(ExperimentConfig, _config("x", source={"kind": "none"}))
    with pytest.raises(ConfigError, match="'strategies' should be a non-empty list"):
        config_from_dict(ExperimentConfig, _config("x", transfer={"strategies": ["hcp"]}))
    run, cfg = full_run
    other = dict(cfg, seed=5)
    assert main(["run", "--config", str(_write(tmp_path, other))]) == 1
    assert "holds a run made with other settings (sections ['seed']" in capsys.readouterr().err
