"""Two-stage transfer, leakage-free XGBoost stacking (SYNTHETIC cohorts)."""

import pandas as pd
import pytest
import torch

from learn import ConfigError, DataError
from learn.metrics import roc_auc
from learn.surface import synthetic as S
from learn.surface.dataset import SurfaceImageDataset
from learn.surface.stacking import average_predictions, stack_predictions
from learn.surface.train import CVConfig, ModelConfig, ScheduleConfig, cross_validate
from learn.surface.transfer import model_from_state, two_stage_cross_validate

TINY = ModelConfig("tiny", None, tiny_width=8, tiny_depth=2)
SHORT = ScheduleConfig(epochs=4, mixup_epochs=2, lr=0.05, lr_step_epochs=2, final_lr=1e-3, batch_size=16)
GRID = {"max_depth": [1, 2], "n_estimators": [20]}


def _cohort_dataset(n, seed, metrics=("thickness", "sulc"), label_is_sex=True, effect=2.5):
    if label_is_sex:
        c = S.hcp_like_cohort(n, template="grid", hemis=("left",), metrics=metrics, effect_size=effect,
                              n_regions=2, radius_mm=10.0, grid_size=16, fwhm_mm=8.0, seed=seed)
    else:
        c = S.abide_like_cohort(4, (10, 14), template="grid", hemis=("left",), metrics=metrics, effect_size=effect,
                                n_regions=2, radius_mm=10.0, grid_size=16, seed=seed)
    images, channels = c.images(S.template_rasterizers(c, size=16))
    return SurfaceImageDataset.from_arrays(images, c.table, channels)


def test_model_from_state_copies_every_tensor():
    from learn.surface.models import build_model

    torch.manual_seed(0)
    source = build_model("tiny", weights=None, tiny_width=8, tiny_depth=2)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p))
    state = source.state_dict()
    kept = model_from_state(state, TINY, 1, reset_head=False)
    for k, v in state.items():
        assert torch.equal(kept.state_dict()[k], v), k
    fresh = model_from_state(state, TINY, 1, reset_head=True)
    for k, v in state.items():
        same = torch.equal(fresh.state_dict()[k], v)
        assert same == (not k.startswith("fc.")), k
    with pytest.raises(ConfigError, match="source weights do not fit"):
        model_from_state(state, ModelConfig("tiny", None, tiny_width=4, tiny_depth=2), 1)


def test_two_stage_target_starts_from_source_weights(monkeypatch):
    source = _cohort_dataset(24, seed=1)
    target = _cohort_dataset(24, seed=2, label_is_sex=False)
    target = SurfaceImageDataset.from_arrays(
        target.images, target.table.assign(subject=[f"t{i}" for i in range(len(target))]), target.channels)
    seen = []
    import learn.surface.train as T

    real = T.model_from_state

    def spy(state, *a, **k):
        model = real(state, *a, **k)
        seen.append((state, {n: t.clone() for n, t in model.state_dict().items()}))
        return model

    monkeypatch.setattr(T, "model_from_state", spy)
    r = two_stage_cross_validate(source, target, strategy="two_stage", model_cfg=TINY, source_schedule=SHORT,
                                 target_schedule=SHORT, cv=CVConfig(n_splits=2, bootstrap_rounds=0),
                                 channels=["left_thickness"], device="cpu", progress=False)
    states = r["source_states"]
    assert set(states) == {"left_thickness"} and len(seen) == 2  # one initial model per target fold
    for state, init in seen:
        assert state is states["left_thickness"]
        for name, t in state.items():
            if not name.startswith("fc."):
                assert torch.equal(init[name], t), name  # tensor by tensor: the source model's weights
    assert len(r["predictions"]) == len(target)


def test_two_stage_rejects_shared_subjects_and_bad_strategy():
    ds = _cohort_dataset(12, seed=1)
    with pytest.raises(DataError, match="in both the source and the target cohort"):
        two_stage_cross_validate(ds, ds, model_cfg=TINY, source_schedule=SHORT, target_schedule=SHORT,
                                 cv=CVConfig(n_splits=2), device="cpu", progress=False)
    with pytest.raises(ConfigError, match="'strategy' should be one of"):
        two_stage_cross_validate(None, ds, strategy="hcp", model_cfg=TINY, source_schedule=SHORT,
                                 target_schedule=SHORT, cv=CVConfig(n_splits=2))


def test_stacking_pipeline_shuffled_labels_near_chance():
    ds = _cohort_dataset(60, seed=3)
    cv = CVConfig(n_splits=3, inner_splits=2, normalization="pixel", bootstrap_rounds=0, shuffle_labels=True)
    r = cross_validate(ds, model_cfg=TINY, schedule=SHORT, cv=cv, device="cpu", progress=False)
    pred = r["predictions"]
    for k, (tr, te) in enumerate(r["splits"]):
        inner = set(pred[(pred.fold == k) & (pred.role == "inner")]["subject"])
        assert inner == set(ds.subjects[tr])  # stacker features: training subjects only, out of fold
        assert not inner & set(ds.subjects[te])
    stacked = stack_predictions(pred, param_grid=GRID, seed=0)
    assert sorted(stacked["subject"]) == sorted(ds.subjects)
    auc = roc_auc(stacked["label"], stacked["score"])
    avg = average_predictions(pred)
    print("shuffled labels: stacked AUC", auc, "averaged AUC", roc_auc(avg["label"], avg["score"]))
    assert abs(auc - 0.5) < 0.2


def test_stack_predictions_requires_inner_rows_and_disjoint_subjects():
    pred = pd.DataFrame({"subject": ["a", "b"], "site": "s", "label": [0, 1], "fold": 0, "channel": "c",
                         "score": [0.1, 0.9], "role": "test", "inner_fold": -1})
    with pytest.raises(DataError, match="needs out-of-fold training features"):
        stack_predictions(pred)
    leak = pd.concat([pred, pred.assign(role="inner", inner_fold=0)], ignore_index=True)
    with pytest.raises(ValueError, match=r"subject\(s\) in both the training and the test set"):
        stack_predictions(leak, param_grid=GRID)
