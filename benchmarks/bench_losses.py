"""Cost of the training losses per optimizer step, relative to the model's own step.

For an MLP and a small transformer encoder, times one full training step (forward,
task loss, backward, optimizer step) without any extra loss and with each of
:class:`~infospec.training.CodingRateLoss`, :func:`~infospec.training.rate_reduction_loss`,
:class:`~infospec.training.InfoSpecLoss` and :class:`~infospec.training.SpectralRegularizer`,
and prints the median milliseconds per step and the overhead in percent.

Each configuration runs ``--warmup`` untimed steps, then ``--steps`` steps timed one by one
with :func:`time.perf_counter` (after a device synchronisation on CUDA); the table shows
the median and the interquartile range. Configurations are interleaved round-robin in
``--rounds`` rounds, so that slow drifts of the machine spread over all of them. On CPU the
process CPU time of each step (:func:`time.process_time`) is measured too: with
``--threads 1`` (the CPU default) it is the step's cost even on a machine shared with
other jobs, where wall-clock times inflate; the overhead column then uses it.

Usage::

    python benchmarks/bench_losses.py              # CPU, default sizes
    python benchmarks/bench_losses.py --quick      # a smoke run
    python benchmarks/bench_losses.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from infospec.training import (
    CodingRateLoss,
    InfoSpecLoss,
    SpectralRegularizer,
    rate_reduction_loss,
)


class MLP(nn.Module):
    def __init__(self, d_in: int, width: int, depth: int, classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = d_in
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.GELU()]
            d = width
        self.encoder = nn.Sequential(*layers)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return self.head(z), z


class Transformer(nn.Module):
    def __init__(self, d: int, layers: int, heads: int, classes: int) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d, heads, dim_feedforward=4 * d, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x).mean(dim=1)  # pooled features, as a CLS token would be
        return self.head(z), z


def make_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    extra: str,
    autocast: torch.dtype | None,
    act_layers: str,
) -> tuple[Callable[[], None], Callable[[], None]]:
    """A closure running one training step, and one cleaning up (hooks)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    task = nn.CrossEntropyLoss()
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    extra_fn: Callable[[torch.Tensor], torch.Tensor]
    if extra == "none":
        extra_fn = lambda z: z.new_zeros(())  # noqa: E731
    elif extra == "coding_rate":
        cr = CodingRateLoss(eps=0.5, weight=0.1)
        extra_fn = cr
    elif extra == "rate_reduction":
        extra_fn = lambda z: 0.1 * rate_reduction_loss(z, y, eps=0.5)  # noqa: E731
    elif extra == "info_spec":
        pen = InfoSpecLoss(model, beta=1e-4, gamma=1e-3, activation_layers=act_layers)
        extra_fn = lambda z: pen()  # noqa: E731
        cleanup = pen.remove
    elif extra == "spectral_reg":
        reg = SpectralRegularizer(model, k=2)
        extra_fn = lambda z: 1e-4 * reg()  # noqa: E731
    else:  # pragma: no cover
        raise ValueError(extra)
    device_type = x.device.type
    amp = torch.autocast(device_type, dtype=autocast) if autocast is not None else None

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with amp if amp is not None else contextlib.nullcontext():
            logits, z = model(x)
            loss = task(logits.float(), y) + extra_fn(z)
        loss.backward()
        opt.step()

    return step, cleanup


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    autocast = None if args.dtype == "float32" else getattr(torch, args.dtype)
    torch.manual_seed(0)
    setups = {
        "mlp": dict(
            model=lambda: MLP(args.mlp_in, args.mlp_width, args.mlp_depth, 10),
            x=lambda: torch.randn(args.mlp_batch, args.mlp_in),
            # the GELU outputs (post-activation features) of each block
            act_layers=r"^encoder\.("
            + "|".join(str(2 * i + 1) for i in range(args.mlp_depth))
            + r")$",
        ),
        "transformer": dict(
            model=lambda: Transformer(args.d_model, args.layers, args.heads, 10),
            x=lambda: torch.randn(args.batch, args.seq, args.d_model),
            act_layers=r"^encoder\.layers\.\d+$",  # the output of each encoder block
        ),
    }
    extras = ["none", "coding_rate", "rate_reduction", "info_spec", "spectral_reg"]
    rows = []
    for name, s in setups.items():
        if args.only and name not in args.only:
            continue
        x = s["x"]().to(device)
        y = torch.randint(0, 10, (x.shape[0],), device=device)
        act_layers = s["act_layers"]
        steps, cleanups = {}, []
        times: dict[str, list[float]] = {e: [] for e in extras}
        cpu: dict[str, list[float]] = {e: [] for e in extras}
        for extra in extras:
            torch.manual_seed(0)
            model = s["model"]().to(device)
            steps[extra], c = make_step(model, x, y, extra, autocast, act_layers)
            cleanups.append(c)
            for _ in range(args.warmup):
                steps[extra]()
        sync(device)
        per_round = max(1, args.steps // args.rounds)
        for _ in range(args.rounds):
            for extra in extras:
                for _ in range(per_round):
                    sync(device)
                    t0, c0 = time.perf_counter(), time.process_time()
                    steps[extra]()
                    sync(device)
                    times[extra].append(time.perf_counter() - t0)
                    cpu[extra].append(time.process_time() - c0)
        for c in cleanups:
            c()
        use_cpu = device.type == "cpu"
        ref = cpu if use_cpu else times
        base = statistics.median(ref["none"])
        for extra in extras:
            t = sorted(times[extra])
            q1, q3 = t[len(t) // 4], t[(3 * len(t)) // 4]
            rows.append(
                dict(
                    model=name,
                    loss=extra,
                    ms=1e3 * statistics.median(t),
                    iqr=1e3 * (q3 - q1),
                    cpu_ms=1e3 * statistics.median(cpu[extra]) if use_cpu else float("nan"),
                    overhead=100 * (statistics.median(ref[extra]) - base) / base,
                    n=len(t),
                )
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads (CPU default 1)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few steps")
    p.add_argument("--only", nargs="*", choices=["mlp", "transformer"])
    p.add_argument("--mlp-in", type=int, default=512)
    p.add_argument("--mlp-width", type=int, default=1024)
    p.add_argument("--mlp-depth", type=int, default=3)
    p.add_argument("--mlp-batch", type=int, default=256)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    if args.quick:
        args.steps, args.rounds, args.warmup = 3, 1, 1
        args.mlp_width, args.mlp_batch, args.d_model, args.seq, args.batch = 64, 32, 32, 8, 4
    if args.threads is None and args.device == "cpu":
        args.threads = 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = bench(args)
    print(
        f"torch {torch.__version__}, device {args.device}, autocast {args.dtype}, "
        f"threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}"
    )
    print(
        f"MLP: {args.mlp_in}->{args.mlp_width}x{args.mlp_depth}->10, batch {args.mlp_batch}; "
        f"transformer: d={args.d_model}, {args.layers} layers, {args.heads} heads, "
        f"ffn {4 * args.d_model}, seq {args.seq}, batch {args.batch}"
    )
    basis = "CPU time" if args.device == "cpu" else "wall time"
    print(f"overhead: median {basis} per step relative to the step without an extra loss")
    print(
        f"{'model':<12} {'extra loss':<15} {'wall ms':>9} {'IQR ms':>8} {'CPU ms':>9} "
        f"{'overhead':>9}  n"
    )
    for r in rows:
        print(
            f"{r['model']:<12} {r['loss']:<15} {r['ms']:>9.1f} {r['iqr']:>8.1f} "
            f"{r['cpu_ms']:>9.1f} {r['overhead']:>+8.1f}%  {r['n']}"
        )


if __name__ == "__main__":
    main()
