"""Distributed evaluation scores each sample exactly once (2 CPU processes on gloo); bfloat16 autocast on CPU."""

import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import Dataset

from learn.training import ShardSampler, evaluate, fit, train_one_epoch

N = 5  # not a multiple of the world size


class _Indexed(Dataset):
    def __len__(self):
        return N

    def __getitem__(self, i):
        return torch.full((3,), float(i)), torch.tensor(float(i % 2)), i


def _model():
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2), nn.Linear(2, 1))


def _worker(rank, world, init_file, out_file):
    from learn.volumetric.train import _loader

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        # shards of 2 and 3 samples run 1 and 2 batches: evaluating through DDP (buffers broadcast at each
        # forward) would hang
        model = nn.parallel.DistributedDataParallel(_model())
        ev = evaluate(model, _loader(_Indexed(), 2, False, 0, True, 0), "cpu", nn.BCEWithLogitsLoss())
        # what a DistributedSampler (pads by repeating samples) gives, for contrast
        sampler = torch.utils.data.distributed.DistributedSampler(_Indexed(), shuffle=False)
        padded = evaluate(model, torch.utils.data.DataLoader(_Indexed(), batch_size=2, sampler=sampler), "cpu")
        if rank == 0:
            np.savez(out_file, ids=ev["ids"], scores=ev["scores"], loss=ev["loss"], padded_ids=padded["ids"])
        dist.barrier()  # both ranks done with every collective before the group goes: a rank that tears gloo
        # down while the other still talks to it aborts ("terminate called without an active exception")
    finally:
        dist.destroy_process_group()


def test_distributed_evaluation_scores_each_sample_once(tmp_path):
    out = tmp_path / "ev.npz"
    ctx = mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=False)
    deadline = time.monotonic() + 300
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.terminate()
            pytest.fail("the 2-process evaluation did not finish in 300 s (a collective that hangs?)")
    res = np.load(out)
    np.testing.assert_array_equal(res["ids"], np.arange(N))  # each sample once, in order
    torch.manual_seed(0)
    model = _model().eval()
    x = torch.stack([_Indexed()[i][0] for i in range(N)])
    y = torch.tensor([float(i % 2) for i in range(N)])
    with torch.no_grad():
        logits = model(x)[:, 0]
    np.testing.assert_allclose(res["scores"], torch.sigmoid(logits).numpy(), rtol=1e-6)
    np.testing.assert_allclose(res["loss"], nn.BCEWithLogitsLoss()(logits, y).item(), rtol=1e-5)
    assert len(res["padded_ids"]) == 6  # DistributedSampler repeats one sample


@pytest.mark.parametrize("world", [2, 3])
def test_shard_sampler_partitions_without_padding(world):
    shards = [list(ShardSampler(N, rank=r, world_size=world)) for r in range(world)]
    assert sum(shards, []) == list(range(N))
    with pytest.raises(ValueError, match="'rank' should be in"):
        ShardSampler(N, rank=world, world_size=world)


def test_bfloat16_autocast_trains_one_step_on_cpu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(2, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 1))
    data = [(torch.randn(4, 2, 8, 8, 8), torch.tensor([0.0, 1.0, 0.0, 1.0]))]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    seen = []
    h = model[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    loss = train_one_epoch(model, data, opt, nn.BCEWithLogitsLoss(), "cpu", amp=True, amp_dtype="bfloat16",
                           progress=False)
    h.remove()
    assert seen == [torch.bfloat16] and np.isfinite(loss)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    hist = fit(model, data, data, optimizer=opt, epochs=1, loss_fn=nn.BCEWithLogitsLoss(), device="cpu", amp=True,
               amp_dtype="bfloat16", progress=False)
    assert np.isfinite(hist["val_loss"][0])
