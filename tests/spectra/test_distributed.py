"""StreamingCovariance.all_reduce across two real processes (gloo backend, file rendezvous)."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from infospec import StreamingCovariance


def _worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(100 + rank)
        x = torch.randn(40 + 17 * rank, 6, generator=g, dtype=torch.float64) + 5.0 * rank
        acc = StreamingCovariance(6)
        acc.update(x)
        acc.all_reduce()
        torch.save(
            {"count": acc.count, "mean": acc.mean, "scatter": acc.scatter}, f"{out_file}.{rank}"
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_all_reduce_equals_pooled_data(tmp_path):
    world = 2
    mp.spawn(
        _worker,
        args=(world, str(tmp_path / "init"), str(tmp_path / "out")),
        nprocs=world,
        join=True,
    )
    data = []
    for rank in range(world):
        g = torch.Generator().manual_seed(100 + rank)
        data.append(torch.randn(40 + 17 * rank, 6, generator=g, dtype=torch.float64) + 5.0 * rank)
    pooled = torch.cat(data).numpy()
    for rank in range(world):
        state = torch.load(f"{tmp_path / 'out'}.{rank}")
        assert state["count"] == pooled.shape[0]
        np.testing.assert_allclose(state["mean"].numpy(), pooled.mean(0), rtol=1e-12)
        cov = state["scatter"].numpy() / (pooled.shape[0] - 1)
        np.testing.assert_allclose(cov, np.cov(pooled, rowvar=False), rtol=1e-10)


def test_all_reduce_without_process_group_is_a_no_op():
    acc = StreamingCovariance(3)
    acc.update(torch.randn(10, 3))
    before = acc.scatter.clone()
    assert acc.all_reduce() is acc
    torch.testing.assert_close(acc.scatter, before)
