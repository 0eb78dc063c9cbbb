"""The latent capacity of a Gaussian encoder, collected during training (``Monitor(latent=...)``).

:class:`LatentWatch` hooks the module (or the pair of modules) that produce a VAE encoder's
mean :math:`\\mu(x)` and log variance :math:`\\log \\sigma^2(x)`, keeps the rows of the
training-mode forward passes of a window (at most ``max_tokens`` per pass, a seeded random
subset, the same rows of both), and turns them into one row of the monitor's ``latent``
table with :func:`infospec.measures.latent.latent_capacity`: the capacity and the KL rate
in bits and the number of active dimensions. The rows are pooled over the processes of a
``torch.distributed`` group when the monitor is distributed, so that every rank measures the
global batch.

The encoder's output is read as follows:

* ``latent=("enc.mu", "enc.logvar")``: two modules, each returning one tensor of shape
  (..., d); the rows of the i-th call of one are paired with those of the i-th call of the
  other.
* ``latent="enc"``: one module returning either a tuple or list whose first two items are
  ``mu`` and ``logvar``, or one tensor of width 2d read as ``[mu | logvar]`` (the halves of
  its last axis, ``torch.chunk(out, 2, dim=-1)``, the usual single-head VAE layout).

Memory: ``rows x d x 16`` bytes on the CPU per window (float64 ``mu`` and ``logvar``), at
most ``window x passes per step x max_tokens`` rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._checks import shown
from .._errors import InputError
from .._names import close_matches
from ..measures.latent import latent_capacity

__all__ = ["LATENT_METRICS", "LatentWatch", "check_latent"]

#: Measures of the ``latent`` table, in the order they are logged.
LATENT_METRICS: tuple[str, ...] = ("capacity_bits", "kl_rate_bits", "active_dims")


def check_latent(model: nn.Module, latent: Any, func: str = "Monitor") -> tuple[str, ...]:
    """The module names of ``latent`` (one name or a pair), each a module of ``model``.

    Raises
    ------
    InputError
        If ``latent`` is not a string or a pair of strings, or names no module of ``model``
        (the message lists close matches).
    """
    names = (latent,) if isinstance(latent, str) else latent
    if (
        not isinstance(names, (tuple, list))
        or len(names) not in (1, 2)
        or not all(isinstance(n, str) for n in names)
    ):
        raise InputError(
            f"The 'latent' parameter of {func} must be the name of the module returning the "
            f"encoder's (mu, logvar), or a pair of names (the module of mu, the module of "
            f"logvar); got {shown(latent)}."
        )
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise InputError(
                f"The 'latent' parameter of {func} names {name!r}, which is not a module of "
                f"the model (names as in model.named_modules()); close: "
                f"{close_matches(name, [n for n in modules if n])}."
            )
    if len(names) == 2 and names[0] == names[1]:
        raise InputError(
            f"The 'latent' parameter of {func} names {names[0]!r} twice; give one name for a "
            f"module returning (mu, logvar), or the two modules of mu and logvar."
        )
    return tuple(names)


def _as_rows(t: Any, role: str, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim < 1:
        got = type(t).__name__
        if isinstance(t, torch.Tensor):
            got += f" of dtype {t.dtype}, shape {tuple(t.shape)}"
        raise InputError(
            f"Monitor(latent=...): the {role} from module '{name}' must be a floating-point "
            f"tensor of shape (..., d); got {got}."
        )
    return t.detach().reshape(-1, t.shape[-1])


class LatentWatch:
    """Hooks on the encoder's mean and log variance; rows of the window; one record.

    Parameters
    ----------
    model : nn.Module
    names : tuple of str
        From :func:`check_latent`.
    max_tokens : int or None
        Most rows kept from one forward pass (a random subset drawn with ``seed``).
    seed : int
    """

    def __init__(
        self, model: nn.Module, names: tuple[str, ...], *, max_tokens: int | None, seed: int
    ) -> None:
        self.names = names
        self.max_tokens = max_tokens
        self._gen = torch.Generator().manual_seed(seed)
        self._mu: list[torch.Tensor] = []
        self._logvar: list[torch.Tensor] = []
        self._pending: dict[str, list[torch.Tensor]] = {"mu": [], "logvar": []}
        self.error = ""
        modules = dict(model.named_modules())
        self._handles = []
        if len(names) == 1:
            self._handles.append(modules[names[0]].register_forward_hook(self._joint_hook))
        else:
            for role, name in zip(("mu", "logvar"), names, strict=True):
                hook = self._role_hook(role)
                self._handles.append(modules[name].register_forward_hook(hook))

    # -- hooks --------------------------------------------------------------------------
    def _joint_hook(self, module: nn.Module, args: Any, out: Any) -> None:
        if not module.training or self.error:
            return
        try:
            if isinstance(out, (tuple, list)):
                if len(out) < 2:
                    raise InputError(
                        f"Monitor(latent=...): module '{self.names[0]}' returned a "
                        f"{type(out).__name__} of {len(out)} item(s); it must return "
                        f"(mu, logvar, ...) or one tensor [mu | logvar]."
                    )
                mu, logvar = (
                    _as_rows(out[0], "mu", self.names[0]),
                    _as_rows(out[1], "logvar", self.names[0]),
                )
            else:
                both = _as_rows(out, "output", self.names[0])
                if both.shape[1] % 2:
                    raise InputError(
                        f"Monitor(latent=...): module '{self.names[0]}' returned one tensor "
                        f"of odd width {both.shape[1]}, which cannot be read as [mu | logvar]"
                        f"; name the modules of mu and logvar apart: latent=(mu, logvar)."
                    )
                mu, logvar = both.chunk(2, dim=1)
            self._add(mu, logvar)
        except InputError as exc:
            self.error = str(exc)

    def _role_hook(self, role: str):
        name = self.names[0 if role == "mu" else 1]

        def hook(module: nn.Module, args: Any, out: Any) -> None:
            if not module.training or self.error:
                return
            try:
                self._pending[role].append(_as_rows(out, role, name))
                if self._pending["mu"] and self._pending["logvar"]:
                    self._add(self._pending["mu"].pop(0), self._pending["logvar"].pop(0))
            except InputError as exc:
                self.error = str(exc)

        return hook

    def _add(self, mu: torch.Tensor, logvar: torch.Tensor) -> None:
        if mu.shape != logvar.shape:
            raise InputError(
                f"Monitor(latent=...): mu has shape {tuple(mu.shape)} and logvar "
                f"{tuple(logvar.shape)} (as rows x dimensions) in the same forward pass; "
                f"they must match."
            )
        n = mu.shape[0]
        if self.max_tokens is not None and n > self.max_tokens:
            keep = torch.randperm(n, generator=self._gen)[: self.max_tokens]
            mu, logvar = mu[keep.to(mu.device)], logvar[keep.to(logvar.device)]
        self._mu.append(mu.to("cpu", torch.float64))
        self._logvar.append(logvar.to("cpu", torch.float64))

    def remove(self) -> None:
        """Remove the hooks (the rows collected so far are kept until :meth:`record`)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # -- the record ----------------------------------------------------------------------
    def record(self, *, group: Any = None, pooled: bool = False) -> dict[str, Any]:
        """The ``latent`` row's fields: status, dim, samples, the measures, warning.

        With ``pooled``, every rank's rows are gathered first (a collective of
        ``torch.distributed``: every rank of ``group`` must call it). The rows are emptied.
        """
        mu = torch.cat(self._mu) if self._mu else torch.empty(0, 0, dtype=torch.float64)
        logvar = torch.cat(self._logvar) if self._logvar else mu.clone()
        error = self.error
        if pooled:
            import torch.distributed as dist

            parts: list[Any] = [None] * dist.get_world_size(group)
            dist.all_gather_object(parts, (mu, logvar, error), group=group)
            kept = [p for p in parts if p[0].numel()]
            if kept:
                mu = torch.cat([p[0] for p in kept])
                logvar = torch.cat([p[1] for p in kept])
            error = next((p[2] for p in parts if p[2]), "")
        self._mu, self._logvar, self._pending = [], [], {"mu": [], "logvar": []}
        self.error = ""
        row: dict[str, Any] = {"dim": int(mu.shape[1]) if mu.ndim == 2 else 0}
        row["samples"] = int(mu.shape[0])
        if error:
            return {**row, "status": "error", "warning": error}
        if mu.shape[0] < 2:
            return {
                **row,
                "status": "error",
                "warning": f"{mu.shape[0]} row(s) of the latent in the window (training-mode "
                f"forward passes of {' and '.join(map(repr, self.names))}); 2 are needed",
            }
        try:
            cap = latent_capacity(mu, logvar, bits=True)
        except InputError as exc:  # NaN or infinity in the encoder's outputs
            return {**row, "status": "error", "warning": str(exc)}
        return {
            **row,
            "status": "ok",
            "capacity_bits": float(cap.total),
            "kl_rate_bits": float(cap.kl_rate),
            "active_dims": cap.n_active,
            "warning": "",
        }


def names_text(names: Sequence[str]) -> str:
    """The latent row's layer: the module, or ``mu_module|logvar_module``."""
    return "|".join(names)
