import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from learn.checkpoint import load_checkpoint
from learn.metrics import binary_metrics
from learn.training import ensemble_scores, evaluate, fit, keras_decay_scheduler, mixup_batch, train_one_epoch
from learn.utils import set_seed


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).float()
    return TensorDataset(x, y)


def _model():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 1))


def test_keras_decay_scheduler_per_batch():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.01, momentum=0.9, nesterov=True)
    sched = keras_decay_scheduler(opt, 3e-3)
    lrs = []
    for _ in range(500):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    t = np.arange(500)
    np.testing.assert_allclose(lrs, 0.01 / (1 + 3e-3 * t), rtol=1e-12)


def test_keras_decay_scheduler_bad_decay():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="decay: expected a finite number >= 0; found"):
        keras_decay_scheduler(opt, -1.0)


def test_train_one_epoch_steps_scheduler_per_batch():
    set_seed(0)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = keras_decay_scheduler(opt, 0.5)
    loader = DataLoader(_data(), batch_size=16)
    loss = train_one_epoch(model, loader, opt, nn.BCEWithLogitsLoss(), "cpu", scheduler=sched, progress=False)
    assert np.isfinite(loss)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / (1 + 0.5 * 4))


def test_mixup_batch_convex_combination():
    x = torch.arange(8.0).reshape(4, 2)
    g = torch.Generator().manual_seed(0)
    xm, perm, lam = mixup_batch(x, generator=g)
    assert 0.0 <= lam <= 1.0
    torch.testing.assert_close(xm, lam * x + (1 - lam) * x[perm])


def test_fit_learns_and_keeps_best():
    set_seed(0)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, nesterov=True)
    tr = DataLoader(_data(128, 0), batch_size=16, shuffle=True)
    va = DataLoader(_data(64, 1), batch_size=32)
    hist = fit(model, tr, va, optimizer=opt, epochs=6, loss_fn=nn.BCEWithLogitsLoss(), device="cpu",
               keep="best", metrics_fn=binary_metrics, seed=0, progress=False, mixup_epochs=2)
    assert hist["best_epoch"] == int(np.argmin(hist["val_loss"]))
    ev = evaluate(model, va, "cpu", nn.BCEWithLogitsLoss())
    assert ev["loss"] == pytest.approx(min(hist["val_loss"]), rel=1e-6)
    assert binary_metrics(ev["y_true"], ev["scores"])["auc"] > 0.9


def test_fit_resume_equals_uninterrupted(tmp_path):
    def run(epochs, ckdir, resume=None):
        set_seed(1)
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, nesterov=True)
        sched = keras_decay_scheduler(opt, 1e-2)
        tr = DataLoader(_data(96, 0), batch_size=16, shuffle=True)
        va = DataLoader(_data(32, 1), batch_size=32)
        hist = fit(model, tr, va, optimizer=opt, scheduler=sched, epochs=epochs, loss_fn=nn.BCEWithLogitsLoss(),
                   device="cpu", checkpoint_dir=ckdir, keep="last", resume=resume, seed=1, progress=False,
                   args={"run": "test"})
        return model, opt, hist

    full, full_opt, full_hist = run(4, tmp_path / "a")
    run(2, tmp_path / "b")
    resumed, res_opt, res_hist = run(4, tmp_path / "b", resume=tmp_path / "b" / "last.pt")
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    assert res_hist["train_loss"] == full_hist["train_loss"]
    assert res_opt.param_groups[0]["lr"] == full_opt.param_groups[0]["lr"]
    ck = load_checkpoint(tmp_path / "b" / "last.pt")
    assert ck["epoch"] == 3 and ck["args"] == {"run": "test"}
    assert (tmp_path / "b" / "last.config.json").is_file()


def test_fit_bad_keep():
    with pytest.raises(ValueError, match=r"keep: expected one of \('best', 'last'\)"):
        fit(_model(), [], None, optimizer=torch.optim.SGD(_model().parameters(), lr=0.1), epochs=1,
            loss_fn=nn.BCEWithLogitsLoss(), device="cpu", keep="first")


def test_ensemble_scores_mean():
    np.testing.assert_allclose(ensemble_scores([[0.2, 0.4], [0.4, 0.8]]), [0.3, 0.6])
    with pytest.raises(ValueError, match="same samples"):
        ensemble_scores([[0.1], [0.1, 0.2]])
