"""Monitor(distributed=True) across two real processes (gloo backend, file rendezvous)."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from infospec import InputError
from infospec.measures.latent import latent_capacity
from infospec.training.monitor import Monitor

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is missing")


class _Seeded(nn.Module):
    """Linear layers ``name=(in, out)``, initialised from seed 0 (the same on every rank)."""

    def __init__(self, **layers: tuple[int, int]) -> None:
        super().__init__()
        torch.manual_seed(0)
        for name, (n_in, n_out) in layers.items():
            setattr(self, name, nn.Linear(n_in, n_out))


class Net(_Seeded):
    """``extra`` runs only when asked; ``probe`` sees its own input (NaN on one rank)."""

    def __init__(self) -> None:
        super().__init__(inp=(8, 16), extra=(16, 16), out=(16, 4), probe=(8, 12))

    def forward(self, x, use_extra=True, probe_input=None):
        h = torch.tanh(self.inp(x))
        if use_extra:
            h = torch.tanh(self.extra(h))
        self.probe(x if probe_input is None else probe_input)
        return self.out(h)


class Up(_Seeded):
    """An 8 -> 32 up-projection: its outputs have rank 8, the rest is round-off."""

    def __init__(self) -> None:
        super().__init__(a=(8, 8), up=(8, 32))

    def forward(self, x, use_up=True):
        h = self.a(x)
        return self.up(h) if use_up else h


def _shard(rank: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(10 + rank)
    return torch.randn(30 + 10 * rank, 8, generator=g, dtype=torch.float64) + 2.0 * rank


def _worker(rank: int, world: int, tmp: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=world)
    try:
        model = Net().double()
        kwargs = {"every": 1, "window": 1, "max_tokens": None, "alerts": None}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            monitor = Monitor(model, distributed=True, log_path=f"{tmp}/log.jsonl", **kwargs)
            x = _shard(rank)
            # rank 1 never calls `extra`, and feeds `probe` a NaN
            probe = x if rank == 0 else torch.full_like(x, float("nan"))
            model(x, use_extra=rank == 0, probe_input=probe)
            monitor.step()
            monitor.remove()
            # the same without pooling: each rank its own rows, and a warning says so
            alone = Monitor(model, **kwargs)
            model(x, use_extra=True)
            alone.step()
            alone.remove()
        # bf16, an up-projection run on rank 1 only: rank 0 must use bf16's rank floor too
        low = Up().bfloat16()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            up = Monitor(low, distributed=True, weights=False, **kwargs)
            low(_shard(rank).float().bfloat16(), use_up=rank == 1)
            up.step()
            up.remove()
        up.history().to_pickle(f"{tmp}/up.{rank}.pkl")
        # the latent table: `inp`'s 16 outputs read as [mu | logvar], rows of both ranks
        lat = Monitor(
            model, latent="inp", distributed=True, weights=False, activations=False, **kwargs
        )
        model(x)
        lat.step()
        lat.remove()
        lat.history().to_pickle(f"{tmp}/latent.{rank}.pkl")
        # ranks that watch different layers get a clear error, not a collective mismatch
        watched = "inp" if rank == 0 else "inp|out"
        differ = Monitor(model, layers=watched, distributed=True, **kwargs)
        model(x)
        try:
            differ.step()
            said_differ = "no error"
        except InputError as exc:
            said_differ = str(exc)
        finally:
            differ.remove()
        with open(f"{tmp}/differ.{rank}.txt", "w") as fh:
            fh.write(said_differ)
        monitor.history().to_pickle(f"{tmp}/pooled.{rank}.pkl")
        alone.history().to_pickle(f"{tmp}/alone.{rank}.pkl")
        with open(f"{tmp}/warnings.{rank}.json", "w") as fh:
            json.dump([str(w.message) for w in caught], fh)
    finally:
        dist.destroy_process_group()


def _acts(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["table"] == "activations"].set_index("layer").sort_index()


def test_distributed_monitor_pools_the_ranks_rows(tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, str(tmp_path)), nprocs=world, join=True)
    pooled = [pd.read_pickle(tmp_path / f"pooled.{r}.pkl") for r in range(world)]
    # the reference: one process that sees both shards, `extra` only on rank 0's
    model = Net().double()
    ref = Monitor(model, every=1, window=1, max_tokens=None, alerts=None)
    model(_shard(0), use_extra=True)
    model(_shard(1), use_extra=False)
    ref.step()
    ref.remove()
    expected = _acts(ref.history()).drop(index="probe")
    cols = ["flatness", "effective_rank", "entropy_bits_per_dim", "coding_rate_bits"]
    for frame in pooled:
        got = _acts(frame)
        assert got.loc["probe", "status"] == "error"
        assert "could not be measured on rank(s) [1]" in got.loc["probe", "warning"]
        got = got.drop(index="probe")
        assert got.index.tolist() == expected.index.tolist() == ["extra", "inp", "out"]
        assert got["samples"].tolist() == expected["samples"].tolist() == [30, 70, 70]
        np.testing.assert_allclose(
            got[cols].to_numpy(float), expected[cols].to_numpy(float), rtol=1e-9
        )
    # the coarsest input dtype sets the rank floor on every rank, as in one process
    ups = [_acts(pd.read_pickle(tmp_path / f"up.{r}.pkl")) for r in range(world)]
    pd.testing.assert_frame_equal(ups[0], ups[1])
    low = Up().bfloat16()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = Monitor(low, every=1, window=1, max_tokens=None, alerts=None, weights=False)
        low(_shard(0).float().bfloat16(), use_up=False)
        low(_shard(1).float().bfloat16(), use_up=True)
        alone.step()
        alone.remove()
    one = _acts(alone.history())
    assert ups[0].loc["up", "samples"] == one.loc["up", "samples"] == 40
    assert ups[0].loc["up", "rank"] == one.loc["up", "rank"] == 8
    np.testing.assert_allclose(
        ups[0].loc[["a", "up"], cols].to_numpy(float),
        one.loc[["a", "up"], cols].to_numpy(float),
        rtol=1e-9,
    )
    # the latent capacity of the pooled rows, the same on both ranks
    with torch.no_grad():
        out = torch.cat([Net().double().inp(_shard(r)) for r in range(world)])
    want = latent_capacity(*out.chunk(2, dim=-1))
    for rank in range(world):
        lat = pd.read_pickle(tmp_path / f"latent.{rank}.pkl")
        assert lat["table"].tolist() == ["latent"] and lat["samples"].tolist() == [70]
        assert lat["capacity_bits"].iloc[0] == pytest.approx(float(want.total), rel=1e-12)
        assert lat["kl_rate_bits"].iloc[0] == pytest.approx(float(want.kl_rate), rel=1e-12)
    for rank in range(world):
        said = (tmp_path / f"differ.{rank}.txt").read_text()
        assert "the ranks watch different layers (counts [1, 2])" in said
    # weights are the same everywhere; only rank 0 wrote the log
    pd.testing.assert_frame_equal(pooled[0], pooled[1])
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(lines) == len(pooled[0])
    # without pooling, each rank measured its own 30 or 40 rows and was told so once
    for rank in range(world):
        alone = _acts(pd.read_pickle(tmp_path / f"alone.{rank}.pkl"))
        assert set(alone["samples"]) == {30 + 10 * rank}
        said = json.loads((tmp_path / f"warnings.{rank}.json").read_text())
        assert sum("distributed=False" in m for m in said) == 1


def test_distributed_option_is_checked_and_harmless_without_a_group():
    model = nn.Sequential(nn.Linear(8, 16))
    with pytest.raises(InputError, match="'distributed' parameter of Monitor must be True"):
        Monitor(model, distributed="yes")
    # no process group: the same rows as without the option
    rows = []
    for distributed in (False, True):
        torch.manual_seed(1)
        x = torch.randn(64, 8)
        with Monitor(model, every=1, window=1, alerts=None, distributed=distributed) as m:
            model(x)
            m.step()
        rows.append(m.history().drop(columns=["warning"]))
    pd.testing.assert_frame_equal(rows[0], rows[1])
