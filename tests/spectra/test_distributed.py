"""StreamingCovariance.all_reduce across two real processes (gloo backend, file rendezvous)."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from infospec import StreamingCovariance


def _worker(rank: int, world: int, init_file: str, out_file: str, precision: str = "auto") -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(100 + rank)
        x = torch.randn(40 + 17 * rank, 6, generator=g, dtype=torch.float64) + 5.0 * rank
        if precision == "float32":
            x = x.float()  # float32 rows, float32 Gram products, float64 state
        acc = StreamingCovariance(6, precision=precision)
        acc.update(x)
        acc.all_reduce()
        torch.save(
            {"count": acc.count, "mean": acc.mean, "scatter": acc.scatter}, f"{out_file}.{rank}"
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
@pytest.mark.parametrize("precision", ["auto", "float32"])
def test_all_reduce_equals_pooled_data(tmp_path, precision):
    world = 2
    mp.spawn(
        _worker,
        args=(world, str(tmp_path / "init"), str(tmp_path / "out"), precision),
        nprocs=world,
        join=True,
    )
    data = []
    for rank in range(world):
        g = torch.Generator().manual_seed(100 + rank)
        x = torch.randn(40 + 17 * rank, 6, generator=g, dtype=torch.float64) + 5.0 * rank
        data.append(x.float().double() if precision == "float32" else x)
    pooled = torch.cat(data).numpy()
    for rank in range(world):
        state = torch.load(f"{tmp_path / 'out'}.{rank}")
        assert state["count"] == pooled.shape[0]
        assert state["scatter"].dtype == torch.float64
        np.testing.assert_allclose(state["mean"].numpy(), pooled.mean(0), rtol=1e-12)
        cov = state["scatter"].numpy() / (pooled.shape[0] - 1)
        expected = np.cov(pooled, rowvar=False)
        if precision == "auto":
            np.testing.assert_allclose(cov, expected, rtol=1e-10)
        else:  # float32 Grams of batches of <= 57 rows: within 57 u32 of sqrt(C_ii C_jj)
            scale = np.sqrt(np.outer(np.diag(expected), np.diag(expected)))
            assert (np.abs(cov - expected) / scale).max() <= 57 * 2.0**-24


def test_all_reduce_without_process_group_is_a_no_op():
    acc = StreamingCovariance(3)
    acc.update(torch.randn(10, 3))
    before = acc.scatter.clone()
    assert acc.all_reduce() is acc
    torch.testing.assert_close(acc.scatter, before)
