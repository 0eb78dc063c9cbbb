"""analyze(distributed=True) and torchrun-style ``infospec analyze`` on 2 and 3 gloo processes.

Each test spawns real processes (file or env:// rendezvous) on the CPU; the report of
the group must equal the single-process one: the same rows in the same order, every
column to 1e-12.
"""

import gc
import json
import math
import socket

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from infospec import InputError, SourceError, analyze, compare, track
from infospec.analysis.distributed import assign_by_cost, entry_cost

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is missing")

#: name -> shape of the test checkpoint; "nan.weight" is all NaN, "bias" is skipped (1-D)
SHAPES = {
    "a.weight": (48, 32),
    "b.weight": (64, 64),
    "c.weight": (24, 80),
    "nan.weight": (32, 16),
    "d.weight": (40, 40),
    "e.weight": (16, 96),
    "bias": (40,),
}


def _checkpoint(path, *, tuned: bool = False) -> str:
    """The test checkpoint; ``tuned``: each matrix plus a rank-2 change (seed 8)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(7)
    change = torch.Generator().manual_seed(8)
    tensors = {}
    for name, shape in SHAPES.items():
        t = torch.randn(*shape, generator=g, dtype=torch.float32)
        if name == "nan.weight":
            t[3, 5] = float("nan")
        if tuned and len(shape) == 2:
            t += (
                0.1
                * torch.randn(shape[0], 2, generator=change)
                @ torch.randn(2, shape[1], generator=change)
            )
        tensors[name] = t
    save_file(tensors, str(path))
    return str(path)


class Net(nn.Module):
    """Three linear layers in float64, the same weights on every rank (seed 0)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(12, 20)
        self.mid = nn.Linear(20, 20)
        self.out = nn.Linear(20, 6)
        self.double()

    def forward(self, x):
        return self.out(torch.tanh(self.mid(torch.tanh(self.inp(x)))))


def _batches(rank: int) -> list[torch.Tensor]:
    """Rank ``rank``'s shard: 2 batches of unequal sizes."""
    g = torch.Generator().manual_seed(50 + rank)
    return [
        torch.randn(30 + 7 * rank + 3 * i, 12, generator=g, dtype=torch.float64) for i in (0, 1)
    ]


def _tables(report) -> dict:
    return {
        "weights": report.weights,
        "skipped": report.skipped,
        "activations": report.activations,
        "spectra": {k: v.tolist() for k, v in report.spectra.items()},
        "meta": {k: report.meta.get(k) for k in ("world_size", "rank_items", "rank_batches")},
    }


def _worker(rank: int, world: int, tmp: str, ckpt: str, tuned: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=world)
    try:
        out: dict = {}
        weights = analyze(ckpt, distributed=True, workers=1, progress=False)
        out["weights"] = _tables(weights)
        out["compare"] = _tables(compare(ckpt, tuned, distributed=True, workers=1, progress=False))
        # a run of two checkpoints: rank 0 alone reads and writes the store
        run, store = [ckpt, tuned], f"{tmp}/run.sqlite"
        kw = {"store": store, "distributed": True, "workers": 1, "progress": False}
        first = track(run, **kw)
        again = track(run, **kw)
        frames = (first.frame.to_dict("list"), again.frame.to_dict("list"))
        out["track"] = (*frames, first.analysed, again.unchanged)
        try:
            track(run, **{**kw, "k": 3})
        except InputError as exc:
            out["track_error"] = str(exc)
        # one tensor: the other ranks have nothing to do and still take part
        one = analyze(ckpt, layers=r"^b\.weight$", distributed=True, workers=1, progress=False)
        out["one"] = _tables(one)
        both = analyze(Net(), _batches(rank), distributed=True, workers=1, progress=False)
        out["activations"] = _tables(both)
        # the model as DDP wraps it for training: the same report, names under "module."
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(Net())
        out["ddp"] = _tables(
            analyze(ddp, _batches(rank), distributed=True, workers=1, progress=False)
        )
        # DDP's reducer holds the group; it goes before the group does (a reducer outliving
        # destroy_process_group can abort the process at exit, seen once in CI on 2 cores)
        del ddp
        gc.collect()
        # an unreadable tensor on the last rank ends the run on every rank, with its name
        from infospec.sources.entry import WeightEntry

        original = WeightEntry.load

        def broken(self, **kwargs):
            if rank == world - 1:
                raise SourceError(f"'{self.name}' cannot be read (test)")
            return original(self, **kwargs)

        WeightEntry.load = broken
        try:
            analyze(ckpt, distributed=True, workers=1, progress=False)
        except SourceError as exc:
            out["source_error"] = str(exc)
        finally:
            WeightEntry.load = original
        # a source missing on one rank only (a node without the shared folder)
        where = ckpt if rank == 0 else f"{tmp}/not-on-this-node.safetensors"
        try:
            analyze(where, distributed=True, workers=1, progress=False)
        except SourceError as exc:
            out["missing"] = str(exc)
        torch.save(out, f"{tmp}/out.{rank}")
        dist.barrier()  # no rank tears the group down while another still talks through it
    finally:
        dist.destroy_process_group()


def _unwrapped(row: dict) -> dict:
    """A row of a DDP-wrapped model's report with the wrapper's ``module.`` prefix dropped."""
    return {k: v.removeprefix("module.") if k in ("name", "tensor") else v for k, v in row.items()}


def _same_rows(got: list[dict], want: list[dict]) -> None:
    assert [r["name"] for r in got] == [r["name"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys(), g["name"]
        for key, value in w.items():
            other = g[key]
            if isinstance(value, float):
                assert isinstance(other, float), (g["name"], key)
                if math.isnan(value):
                    assert math.isnan(other), (g["name"], key)
                else:
                    assert other == pytest.approx(value, rel=1e-12, abs=1e-300), (g["name"], key)
            else:
                assert other == value, (g["name"], key)


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_report_equals_single_process(tmp_path, world):
    ckpt = _checkpoint(tmp_path / "model.safetensors")
    tuned = _checkpoint(tmp_path / "tuned.safetensors", tuned=True)
    mp.spawn(_worker, args=(world, str(tmp_path), ckpt, tuned), nprocs=world, join=True)
    alone = analyze(ckpt, workers=1, progress=False)
    pooled = [torch.load(f"{tmp_path}/out.{r}")["weights"] for r in range(world)]
    for got in pooled:  # every rank returns the same report
        _same_rows(got["weights"], alone.weights)
        _same_rows(got["skipped"], alone.skipped)
        assert got["spectra"].keys() == alone.spectra.keys()
        for key, esd in alone.spectra.items():
            assert got["spectra"][key] == pytest.approx(esd.tolist(), rel=1e-12)
        assert got["meta"]["world_size"] == world
        assert sum(got["meta"]["rank_items"]) == len(alone.weights)
    nan_row = next(r for r in alone.weights if r["name"] == "nan.weight")
    assert nan_row["status"] == "error"
    assert nan_row["warning"] == "tensor contains 1 NaN and 0 infinite value(s); not analysed"
    assert [r["name"] for r in alone.skipped] == ["bias"]

    single = analyze(ckpt, layers=r"^b\.weight$", workers=1, progress=False)
    for r in range(world):
        got = torch.load(f"{tmp_path}/out.{r}")["one"]
        _same_rows(got["weights"], single.weights)
        assert got["meta"]["rank_items"] == [1] + [0] * (world - 1)

    # compare: the pairs shared out the same way
    diff = compare(ckpt, tuned, workers=1, progress=False)
    assert [r["name"] for r in diff.weights if r["status"] == "error"] == ["nan.weight"]
    assert len(diff.weights) == 6
    for r in range(world):
        got = torch.load(f"{tmp_path}/out.{r}")["compare"]
        _same_rows(got["weights"], diff.weights)
        _same_rows(got["skipped"], diff.skipped)

    # track: the same long table, the store written once
    alone_run = track([ckpt, tuned], store=tmp_path / "alone.sqlite", workers=1, progress=False)
    want = alone_run.frame
    for r in range(world):
        frame, frame_again, analysed, unchanged = torch.load(f"{tmp_path}/out.{r}")["track"]
        assert analysed == unchanged == ["model.safetensors", "tuned.safetensors"]
        for columns in (frame, frame_again):
            got = pd.DataFrame(columns)
            assert got[["checkpoint", "tensor", "metric"]].equals(
                want[["checkpoint", "tensor", "metric"]]
            )
            assert got["value"].to_numpy() == pytest.approx(
                want["value"].to_numpy(), rel=1e-12, nan_ok=True
            )
        message = torch.load(f"{tmp_path}/out.{r}")["track_error"]
        assert message.startswith("rank 0: The track store ") and "k=10, not 3" in message

    # activations: each rank streamed its own shard; the pooled covariance is all of them
    data = [b for r in range(world) for b in _batches(r)]
    single = analyze(Net(), data, workers=1, progress=False)
    for r in range(world):
        got = torch.load(f"{tmp_path}/out.{r}")["activations"]
        _same_rows(got["activations"], single.activations)
        _same_rows(got["weights"], single.weights)
        # "out" (6 wide) is below min_dim: inp and mid are observed
        assert [a["name"] for a in got["activations"]] == ["inp", "mid"]
        assert [a["samples"] for a in got["activations"]] == [sum(len(b) for b in data)] * 2
        assert got["meta"]["rank_batches"] == [2] * world
        for key in single.spectra:
            assert got["spectra"][key] == pytest.approx(single.spectra[key].tolist(), rel=1e-12)
        ddp = torch.load(f"{tmp_path}/out.{r}")["ddp"]
        assert [row["name"] for row in ddp["activations"]] == ["module.inp", "module.mid"]
        for table in ("weights", "activations"):
            _same_rows([_unwrapped(row) for row in ddp[table]], getattr(single, table))

    # a failure that ends the run is raised on every rank, naming the rank, not a hang
    for r in range(world):
        message = torch.load(f"{tmp_path}/out.{r}")["source_error"]
        assert message.startswith(f"rank {world - 1}: '")
        assert message.endswith("' cannot be read (test)")
        missing = torch.load(f"{tmp_path}/out.{r}")["missing"]
        assert missing.startswith("rank 1: ") and "not-on-this-node.safetensors" in missing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli_worker(rank: int, world: int, tmp: str, ckpt: str, ports: list[int]) -> None:
    """``infospec analyze`` as torchrun starts it: RANK, WORLD_SIZE, MASTER_* set."""
    import importlib
    import os

    from infospec import cli

    analyze_module = importlib.import_module("infospec.analysis.analyze")

    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)}
        | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(ports[0])}
    )
    codes = [cli.main(["analyze", ckpt, "--workers", "1", "--out", f"{tmp}/report.json"])]
    # interrupted on the last rank, in the middle of its share: no rank writes a file
    original = analyze_module.singular_values

    def interrupted(*args, **kwargs):
        if rank == world - 1:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    analyze_module.singular_values = interrupted
    os.environ["MASTER_PORT"] = str(ports[1])
    codes.append(cli.main(["analyze", ckpt, "--workers", "1", "--out", f"{tmp}/stopped.csv"]))
    analyze_module.singular_values = original
    with open(f"{tmp}/codes.{rank}", "w") as fh:
        json.dump(codes, fh)


def test_torchrun_cli_writes_on_rank_0_and_an_interrupt_leaves_no_file(tmp_path):
    ckpt = _checkpoint(tmp_path / "model.safetensors")
    world = 2
    ports = [_free_port(), _free_port()]
    mp.spawn(_cli_worker, args=(world, str(tmp_path), ckpt, ports), nprocs=world, join=True)
    codes = [json.loads((tmp_path / f"codes.{r}").read_text()) for r in range(world)]
    assert codes == [[0, 130]] * world
    written = json.loads((tmp_path / "report.json").read_text())
    alone = analyze(ckpt, workers=1, progress=False)
    _same_rows(written["weights"], json.loads(alone.to_json())["weights"])
    assert written["meta"]["world_size"] == world
    assert not (tmp_path / "stopped.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if "stopped" in p.name) == []


def test_distributed_without_a_group_says_how_to_launch(tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    ckpt = _checkpoint(tmp_path / "model.safetensors")
    with pytest.raises(InputError, match=r"variable\(s\) RANK, WORLD_SIZE, MASTER_ADDR.*torchrun"):
        analyze(ckpt, distributed=True, progress=False)
    with pytest.raises(InputError, match="'distributed' parameter of analyze must be True or"):
        analyze(ckpt, distributed="yes", progress=False)


def test_costs_are_balanced_longest_first():
    # 8 -> rank 0, 5 -> 1, 4 -> 1 (5 < 8), 2 -> 0 (8 < 9), 1 -> 1 (9 < 10): 10 against 10
    assert assign_by_cost([8.0, 1.0, 5.0, 4.0, 2.0], 2) == [0, 1, 1, 1, 0]
    assert assign_by_cost([3.0, 3.0, 3.0], 3) == [0, 1, 2]
    assert assign_by_cost([], 4) == []
    # the Llama MLP (11008 x 4096) costs 2.69x an attention matrix (4096 x 4096)
    from infospec.sources.entry import WeightEntry

    def cost(shape):
        entry = WeightEntry(name="w", shape=shape, dtype="bf16", kind="linear")
        return entry_cost(entry, conv="pooled", split_in_proj=True)

    assert cost((11008, 4096)) / cost((4096, 4096)) == pytest.approx(11008 / 4096)
    assert cost((4096, 11008)) == cost((11008, 4096)) == 11008 * 4096 * 4096


def test_python_dash_m_infospec_is_the_command():
    import subprocess
    import sys

    import infospec

    done = subprocess.run(
        [sys.executable, "-m", "infospec", "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().endswith(infospec.__version__)


def test_each_rank_its_own_device(monkeypatch):
    from infospec.analysis.distributed import ProcessGroup, rank_device

    gloo = ProcessGroup(rank=1, world=2, group=None, backend="gloo")
    nccl = ProcessGroup(rank=1, world=2, group=None, backend="nccl")
    assert rank_device(None, gloo) is None  # the CPU
    assert rank_device(torch.device("cpu"), nccl) == torch.device("cpu")
    assert rank_device(torch.device("cuda", 3), gloo) == torch.device("cuda", 3)
    monkeypatch.setenv("LOCAL_RANK", "1")
    if torch.cuda.device_count() == 0:
        with pytest.raises(InputError, match="compute on their own GPU, but no CUDA device"):
            rank_device(None, nccl)
    else:
        expected = torch.device("cuda", 1 % torch.cuda.device_count())
        assert rank_device(None, nccl) == rank_device(torch.device("cuda"), gloo) == expected
