"""Overhead of :class:`infospec.training.monitor.Monitor` at its defaults on two models.

Trains two models on fixed random data (CPU), alternating blocks of ``every`` optimizer
steps without and with a monitor attached (ABBA order, so that a drift in the machine's
load hits both alike), and prints one row per model:

* ``step off`` / ``step on``: median time of an optimizer step without the monitor, and
  with it outside its measured windows (where it leaves no hook on the model);
* ``hook``: median extra time of a step whose forward passes are collected;
* ``measure``: median time of one measurement (every layer's spectra and measures);
* ``overhead``: the amortised cost of monitoring, attributed within each block of
  ``every`` steps with the monitor: (time of its ``window`` collected steps, the measured
  one included, minus ``window`` median plain steps of the same block) / (``every`` median
  plain steps); the median over blocks. Attributing within a block keeps the figure
  meaningful on a shared machine whose load drifts;
* ``blocks``: the direct estimate, the mean over rounds of (block with / block without
  the monitor - 1), each round running the two blocks back to back, +- two standard
  errors (the same quantity, but exposed to the drift of the machine's load).

Models:

* ``mlp``: 784-512-512-10 ReLU MLP, batch 256 (an MNIST-sized classifier), Adam;
* ``transformer``: ``nn.TransformerEncoder`` of 2 layers (d_model 128, 4 heads, feed-forward
  512, sequences of 64 tokens, batch 32) with a linear head on the mean token, Adam.

Usage::

    python benchmarks/bench_monitor.py [--threads 1] [--blocks 4] [--every 200] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn

from infospec.training.monitor import Monitor


class _Encoder(nn.Module):
    def __init__(self, d_model: int = 128, heads: int = 4, ff: int = 512, depth: int = 2):
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=ff, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(dim=1))


def _setup(name: str, gen: torch.Generator):
    if name == "mlp":
        model = nn.Sequential(
            nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
        )
        xs = [torch.randn(256, 784, generator=gen) for _ in range(4)]
        ys = [torch.randint(0, 10, (256,), generator=gen) for _ in range(4)]
    else:
        model = _Encoder()
        xs = [torch.randn(32, 64, 128, generator=gen) for _ in range(4)]
        ys = [torch.randint(0, 10, (32,), generator=gen) for _ in range(4)]
    return model, list(zip(xs, ys, strict=True))


def _block(model, opt, batches, steps: int, monitor: Monitor | None, times: list[float]):
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for i in range(steps):
        t0 = time.perf_counter()
        x, y = batches[i % len(batches)]
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if monitor is not None:
            monitor.step()
        times.append(time.perf_counter() - t0)
    return time.perf_counter() - start


def bench(name: str, *, every: int, blocks: int, warmup: int = 20) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model, batches = _setup(name, gen)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _block(model, opt, batches, warmup, None, [])
    kwargs = {} if every <= 0 else {"every": every}
    monitor = Monitor(model, **kwargs)
    every, window = monitor.every, monitor.window
    monitor.remove()
    plain_off: list[float] = []
    plain_on: list[float] = []
    hook_extra: list[float] = []
    attributed: list[float] = []
    block_off: list[float] = []
    block_on: list[float] = []
    for b in range(blocks):
        order = (False, True) if b % 2 == 0 else (True, False)
        for on in order:
            times: list[float] = []
            if on:
                monitor.attach()  # blocks start at a step = 1 (mod every): one window each
                block_on.append(_block(model, opt, batches, every, monitor, times))
                monitor.remove()
                plain = times[: every - window]
                ref = statistics.median(plain)
                plain_on += plain
                hook_extra += [t - ref for t in times[every - window : -1]]
                attributed.append((sum(times[every - window :]) - window * ref) / (every * ref))
            else:
                block_off.append(_block(model, opt, batches, every, None, times))
                plain_off += times
    assert not any(m._forward_hooks for m in model.modules())
    paired = [on / off - 1 for on, off in zip(block_on, block_off, strict=True)]
    standard_error = statistics.stdev(paired) / len(paired) ** 0.5 if blocks > 1 else 0.0
    frame = monitor.history()
    assert len(frame) and frame["step"].nunique() == blocks
    return {
        "every": every,
        "window": window,
        "layers": len(monitor.layers),
        "rows": len(frame) // blocks,
        "step_off_ms": 1e3 * statistics.median(plain_off),
        "step_on_ms": 1e3 * statistics.median(plain_on),
        "hook_ms": 1e3 * statistics.median(hook_extra) if hook_extra else 0.0,
        "measure_ms": 1e3 * statistics.median(monitor.measure_seconds),
        "overhead_pct": 100 * statistics.median(attributed),
        "block_ratio_pct": 100 * statistics.mean(paired),
        "block_ratio_se": 100 * standard_error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--blocks", type=int, default=4, help="blocks with and without")
    parser.add_argument("--every", type=int, default=0, help="0: the Monitor default")
    parser.add_argument("--models", default="mlp,transformer")
    parser.add_argument("--quick", action="store_true", help="every=20, 2 blocks (smoke test)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.every, args.blocks = 20, 2
    warnings.simplefilter("ignore")
    header = (
        f"{'model':<12} {'every':>5} {'win':>3} {'layers':>6} {'rows':>4} {'step off':>9} "
        f"{'step on':>9} {'hook':>8} {'measure':>9} {'overhead':>9} {'blocks':>8}"
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.blocks} blocks")
    print(header)
    for name in args.models.split(","):
        r = bench(name, every=args.every, blocks=args.blocks)
        print(
            f"{name:<12} {r['every']:>5} {r['window']:>3} {r['layers']:>6} {r['rows']:>4} "
            f"{r['step_off_ms']:>7.2f}ms {r['step_on_ms']:>7.2f}ms {r['hook_ms']:>6.2f}ms "
            f"{r['measure_ms']:>7.1f}ms {r['overhead_pct']:>8.2f}% "
            f"{r['block_ratio_pct']:>5.1f}% +- {2 * r['block_ratio_se']:.1f}"
        )


if __name__ == "__main__":
    main()
