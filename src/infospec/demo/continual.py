r"""The continual-learning check: permuted-pixel digits learned one task after another.

Task 1 is the digits as they are; task :math:`t > 1` permutes the 64 pixels with a fixed
permutation (the same for every seed). One MLP is trained on the tasks in order, for the
same number of epochs on each, with one Adam optimiser throughout, once with the plain
cross-entropy (``baseline``) and once with the spectral regulariser of Lewandowski et al.
added (``spectral``). After each task the network is evaluated on every task, so the table
holds the full accuracy matrix :math:`A[i, j]` (after training on task :math:`i`, tested on
task :math:`j`):

* plasticity: :math:`A[t, t]`, the accuracy on each new task right after learning it. For
  a fully connected network a permuted task is exactly as hard as the original one from a
  fresh initialisation (the initialisation's law is invariant to permuting the inputs), so
  :math:`A[1, 1]` is the reference: a fall of :math:`A[t, t]` below it is lost plasticity;
* forgetting: :math:`A[T, 1]`, the accuracy on the first task at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .experiment import DemoConfig, DigitsData, _accuracy, _batches, build_mlp, run_grid

__all__ = ["CONTINUAL_ARMS", "CONTINUAL_COLUMNS", "run_continual", "task_permutations"]

#: The two arms of the check.
CONTINUAL_ARMS: tuple[str, ...] = ("baseline", "spectral")

#: Long-format columns of the continual table.
CONTINUAL_COLUMNS: tuple[str, ...] = (
    "run",
    "seed",
    "method",
    "trained_task",
    "eval_task",
    "accuracy",
    "sigma_max_mean",
)


def task_permutations(n_tasks: int, n_features: int, *, seed: int = 0) -> list[np.ndarray]:
    """Pixel orders of the tasks: the identity first, then fixed random permutations.

    Examples
    --------
    >>> perms = task_permutations(3, 5, seed=0)
    >>> perms[0].tolist(), len(perms), sorted(perms[2].tolist())
    ([0, 1, 2, 3, 4], 3, [0, 1, 2, 3, 4])
    """
    rng = np.random.default_rng(50_000 + seed)
    return [np.arange(n_features)] + [rng.permutation(n_features) for _ in range(n_tasks - 1)]


def _sigma_max_mean(model: torch.nn.Module) -> float:
    with torch.no_grad():
        norms = [
            float(torch.linalg.matrix_norm(m.weight.double(), ord=2))
            for m in model.modules()
            if isinstance(m, torch.nn.Linear)
        ]
    return float(np.mean(norms))


def continual_run(
    method: str, seed: int, data: DigitsData, config: DemoConfig
) -> list[tuple[Any, ...]]:
    """One sequence of tasks for one arm and seed; rows of :data:`CONTINUAL_COLUMNS`."""
    from ..training import SpectralRegularizer

    perms = task_permutations(config.continual_tasks, data.X_train.shape[1], seed=config.split_seed)
    model = build_mlp(data.X_train.shape[1], config.hidden, 10, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(20_000 + seed)
    reg = (
        SpectralRegularizer(model, k=config.spectral_k, seed=seed) if method == "spectral" else None
    )
    run = f"continual-{method}-s{seed}"
    rows: list[tuple[Any, ...]] = []
    test_sets = [data.X_test[:, torch.as_tensor(p)] for p in perms]
    model.train()
    for task, perm in enumerate(perms, start=1):
        X = data.X_train[:, torch.as_tensor(perm)]
        for _ in range(config.continual_epochs):
            for idx in _batches(len(data.y_train), config.batch_size, gen):
                loss = F.cross_entropy(model(X[idx]), data.y_train[idx])
                if reg is not None:
                    loss = loss + config.spectral_lambda * reg()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        smax = _sigma_max_mean(model)
        for j, X_te in enumerate(test_sets, start=1):
            acc = _accuracy(model, X_te, data.y_test)
            rows.append((run, seed, method, task, j, acc, smax))
    return rows


def run_continual(
    config: DemoConfig, data: DigitsData, *, tick: Callable[[str], None] | None = None
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Both arms for every seed; returns the long table and seconds spent per arm."""
    runs, seconds = run_grid(
        lambda method, seed: continual_run(method, seed, data, config),
        CONTINUAL_ARMS,
        config.seeds,
        label="continual ",
        tick=tick,
    )
    rows = [row for run in runs for row in run]
    return pd.DataFrame.from_records(rows, columns=list(CONTINUAL_COLUMNS)), seconds
