"""Seed-001 schedule, cross-validation on a SYNTHETIC cohort with a planted effect, splits, resume."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from learn import ConfigError
from learn.surface.dataset import Normalizer, SurfaceImageDataset
from learn.surface.train import (
    CVConfig,
    ModelConfig,
    ScheduleConfig,
    SeedSchedule,
    cross_validate,
    make_splits,
    train_model,
)

TINY = ModelConfig("tiny", None, tiny_width=8, tiny_depth=2)
FAST = ScheduleConfig(epochs=15, mixup_epochs=10, lr=0.05, lr_step_epochs=3, final_lr=1e-3, batch_size=16)


def test_seed_schedule_defaults():
    cfg = ScheduleConfig()
    assert (cfg.epochs, cfg.mixup_epochs, cfg.batch_size, cfg.momentum) == (125, 75, 64, 0.9)
    s = SeedSchedule(cfg)
    lrs = {e: s.lr_at(e) for e in (0, 24, 25, 49, 50, 74, 75, 124)}
    expected = {0: 1e-2, 24: 1e-2, 25: 1e-3, 49: 1e-3, 50: 1e-4, 74: 1e-4, 75: 1e-4, 124: 1e-4}
    for e, lr in expected.items():
        assert lrs[e] == pytest.approx(lr, rel=1e-12), e
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s(30, opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_schedule_config_errors():
    with pytest.raises(ConfigError, match="mixup_epochs <= epochs"):
        ScheduleConfig(epochs=10, mixup_epochs=20)
    with pytest.raises(ConfigError, match="'batch_size' should be at least 2"):
        ScheduleConfig(batch_size=1)
    with pytest.raises(ConfigError, match="'scheme' should be 'kfold' or 'loso'"):
        CVConfig(scheme="random")


def test_cross_validate_planted_effect_auc(strong_grid):
    _, ds = strong_grid
    cv = CVConfig(n_splits=4, normalization="pixel", bootstrap_rounds=200)
    r = cross_validate(ds, model_cfg=TINY, schedule=FAST, cv=cv, device="cpu", progress=False)
    res = r["results"]["left_thickness"]
    print("planted effect: pooled AUC", res["pooled"]["auc"], "fold mean AUC", res["fold_mean"]["auc"],
          "CI", res["ci95"]["auc"])
    assert res["pooled"]["auc"] >= 0.9
    pred = r["predictions"]
    assert sorted(pred["subject"]) == sorted(ds.subjects)  # every subject predicted once, out of fold
    assert len(res["folds"]) == 4 and res["ci95"]["auc"][0] <= res["pooled"]["auc"] <= res["ci95"]["auc"][1]


def test_cross_validate_shuffled_labels_near_chance(strong_grid):
    _, ds = strong_grid
    cv = CVConfig(n_splits=4, normalization="pixel", bootstrap_rounds=200, shuffle_labels=True)
    r = cross_validate(ds, model_cfg=TINY, schedule=FAST, cv=cv, device="cpu", progress=False)
    auc = r["results"]["left_thickness"]["pooled"]["auc"]
    print("shuffled labels: pooled AUC", auc)
    assert abs(auc - 0.5) < 0.2  # null SD of the AUC with 80 subjects ~ 0.065


def _toy_dataset(n=24, sites=4, seed=0, size=8):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, 1, size, size)).astype(np.float32)
    labels = np.arange(n) % 2
    images[labels == 1, :, 2:5, 2:5] += 2.0
    subjects = [f"sub{i:03d}" for i in range(n)]
    table = pd.DataFrame({"subject": subjects, "label": labels, "site": [f"site{i % sites}" for i in range(n)],
                          "family": [f"fam{i // 2}" for i in range(n)], "synthetic": True})
    return SurfaceImageDataset.from_arrays(images, table, ["left_thickness"], group_column="family")


def test_make_splits_grouped_and_leave_site_out():
    ds = _toy_dataset(40, sites=5)
    folds = make_splits(ds, CVConfig(n_splits=5))
    seen = np.concatenate([te for _, te in folds])
    assert sorted(seen.tolist()) == list(range(40))
    for tr, te in folds:
        assert not set(ds.groups[tr]) & set(ds.groups[te])  # families never split
        assert not set(ds.subjects[tr]) & set(ds.subjects[te])
    loso = make_splits(ds, CVConfig(scheme="loso"))
    assert len(loso) == 5
    for tr, te in loso:
        assert len(set(ds.sites[te])) == 1 and not set(ds.sites[tr]) & set(ds.sites[te])


def test_cross_validate_normalizer_never_sees_test_fold(tmp_path):
    ds = _toy_dataset(24)
    ds.images[5] = 1e4  # poisoned subject: it must not enter the statistics of the fold that tests it
    sch = ScheduleConfig(epochs=1, mixup_epochs=1, batch_size=8, lr=1e-3)
    r = cross_validate(ds, model_cfg=TINY, schedule=sch, cv=CVConfig(n_splits=3, bootstrap_rounds=0),
                       out_dir=tmp_path, device="cpu", progress=False)
    for k, (tr, te) in enumerate(r["splits"]):
        z = np.load(tmp_path / "folds" / "left_thickness" / f"fold{k:02d}" / "normalizer.npz")
        clean = ds.images[tr].astype(np.float64)
        np.testing.assert_allclose(z["mean"].ravel(), [clean.mean()], rtol=1e-5)
        if 5 in te:
            assert abs(float(z["mean"].ravel()[0])) < 1.0


def test_cross_validate_writes_outputs_and_skips_finished_folds(tmp_path):
    ds = _toy_dataset(24)
    sch = ScheduleConfig(epochs=2, mixup_epochs=1, batch_size=8, lr=1e-2)
    cv = CVConfig(scheme="loso", bootstrap_rounds=50)
    r1 = cross_validate(ds, model_cfg=TINY, schedule=sch, cv=cv, out_dir=tmp_path, device="cpu", progress=False)
    pred = pd.read_csv(tmp_path / "predictions.csv")
    assert list(pred.columns[:6]) == ["subject", "site", "label", "fold", "channel", "score"]
    assert pred["synthetic"].all() and len(pred) == 24
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["meta"]["scheme"] == "loso" and res["meta"]["synthetic"] is True
    fold0 = tmp_path / "folds" / "left_thickness" / "fold00"
    assert (fold0 / "model.pt").is_file() and not (fold0 / "last.pt").exists()
    stamp = (fold0 / "predictions.csv").stat().st_mtime_ns
    r2 = cross_validate(ds, model_cfg=TINY, schedule=sch, cv=cv, out_dir=tmp_path, device="cpu", progress=False)
    assert (fold0 / "predictions.csv").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(r1["predictions"], r2["predictions"], check_dtype=False)


def test_train_model_resume_reaches_same_state(tmp_path):
    ds = _toy_dataset(24)
    norm = Normalizer().fit(ds.images, np.arange(24))
    full = ScheduleConfig(epochs=4, mixup_epochs=2, lr_step_epochs=1, batch_size=8, lr=0.05, final_lr=0.01)
    part = ScheduleConfig(epochs=2, mixup_epochs=2, lr_step_epochs=1, batch_size=8, lr=0.05, final_lr=0.01)
    kw = dict(model_cfg=TINY, in_channels=1, device="cpu", seed=3, progress=False)
    ref, _ = train_model(ds.fold(np.arange(24), norm), schedule=full, checkpoint_dir=tmp_path / "a", **kw)
    train_model(ds.fold(np.arange(24), norm), schedule=part, checkpoint_dir=tmp_path / "b", **kw)
    resumed, hist = train_model(ds.fold(np.arange(24), norm), schedule=full, checkpoint_dir=tmp_path / "b",
                                resume=tmp_path / "b" / "last.pt", **kw)
    assert hist["epochs_run"] == 4 and hist["lr"] == pytest.approx([0.05, 0.005, 0.01, 0.01])
    for k, v in ref.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
