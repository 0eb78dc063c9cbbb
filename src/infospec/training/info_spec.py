r"""The info-spec loss of seed 001: compress the activations, flatten the weight spectra.

:func:`info_spec_loss` is :math:`\beta \sum H(z) + \gamma \sum \mathrm{Var}[\log
\sigma_i(W)]` (the Gaussian entropy of each observed layer's activations and the variance
of the log singular values of each weight matrix), to minimise, in nats;
:class:`InfoSpecLoss` is its thin shell over a model (forward hooks, called with no
arguments). Precision and autocast as in :mod:`infospec.training.losses`, whose helpers
this module shares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._checks import shown
from .._errors import InfospecError, InputError
from .._validation import (
    check_finite,
    check_ndim,
    check_not_meta,
    check_positive,
    describe,
)
from ..measures.flatness import log_spectrum_variance
from ..measures.information import _coding_rate_nats
from ..sources.torch_sources import module_param_kind
from ..spectra.activations import first_tensor, output_features
from ..spectra.conventions import as_matrices
from .losses import (
    DEFAULT_WEIGHT_KINDS,
    _check_model,
    _full_precision,
    _loss_dtype,
    _resolve_layers,
    _select_weights,
    _upcast,
)

__all__ = ["InfoSpecLoss", "info_spec_loss"]


_LOG_2PI_E = math.log(2.0 * math.pi * math.e)


def _entropy_nats(rows: torch.Tensor, ridge: float, func: str) -> torch.Tensor:
    """Gaussian entropy of the ridged sample covariance of ``rows`` (n >= 2, d)."""
    n, d = rows.shape
    xc = rows - rows.mean(dim=0, keepdim=True)
    # 1/2 logdet(S + r I) = d/2 log r + 1/2 logdet(I + XcT Xc / ((n-1) r)): a coding rate
    # with d / (n eps^2) = 1 / ((n-1) r), computed on the smaller Gram side.
    eps = math.sqrt(d * (n - 1) * ridge / n)
    return 0.5 * d * (_LOG_2PI_E + math.log(ridge)) + _coding_rate_nats(xc, eps, func)


def info_spec_loss(
    activations: Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor],
    *,
    beta: float,
    gamma: float,
    ridge: float = 1e-4,
    amin: float = 1e-6,
) -> torch.Tensor:
    r"""The info-spec loss of seed 001: activation entropy plus weight log-spectrum spread.

    .. math::

        \mathcal L = \beta \sum_{a} H\big(\mathcal N(0, \Sigma_a + r I)\big)
                   + \gamma \sum_{W} \mathrm{Var}_i\big[\log \max(\sigma_i(W), a_{\min})\big]

    where :math:`\Sigma_a = \frac{1}{n-1} (X_a - \bar x_a)^\top (X_a - \bar x_a)` is the
    sample covariance (ddof 1) of the ``n`` rows of activation ``a``,
    :math:`H = \frac d2 \log(2\pi e) + \frac12 \log\det(\Sigma_a + rI)` its Gaussian
    entropy in nats, and :math:`\sigma_i(W)` the singular values of weight matrix ``W``.
    Minimising it **compresses** the activations (smaller, more equal covariance
    eigenvalues) and **flattens** the weight spectra (the variance is 0 when all singular
    values are equal).

    The ridge :math:`r` keeps the entropy finite when :math:`n \le d` (the sample
    covariance then has rank :math:`< d`) or the features are degenerate: every zero
    eigenvalue contributes :math:`\frac12 \log r` and no gradient. It is absolute, in the
    units of the activations' variance. The log-determinant is the coding-rate
    computation of :mod:`infospec.measures.information`,
    :math:`\frac12\log\det(\Sigma + rI) = \frac d2 \log r + R(X_c, \epsilon)` with
    :math:`\epsilon^2 = d (n-1) r / n`, on the smaller Gram side. The variance is
    :func:`infospec.measures.flatness.log_spectrum_variance` (ddof 0) of
    :func:`torch.linalg.svdvals`, whose gradient is stable even for repeated singular
    values; the floor ``amin`` bounds the gradient :math:`1/\sigma` of small ones.

    Parameters
    ----------
    activations : sequence of tensors, each of shape (..., d)
        Features along the last axis, rows along the leading axes (flattened), at least 2
        rows each; finite. Needed (non-empty) when ``beta > 0``, ignored otherwise.
    weights : sequence of tensors, each of shape (m, n)
        Weight matrices (convolution kernels already reshaped, for example by
        :func:`~infospec.spectra.conventions.as_matrices`); finite. Needed (non-empty) when
        ``gamma > 0``, ignored otherwise.
    beta : float >= 0
        Weight of the entropy term (nats).
    gamma : float >= 0
        Weight of the log-spectrum variance term (squared nats).
    ridge : float > 0, default 1e-4
        The ridge :math:`r` added to each covariance.
    amin : float > 0, default 1e-6
        Floor on the singular values before the logarithm.

    Returns
    -------
    torch.Tensor, shape ()
        The loss; float32 unless every input is float64.

    Raises
    ------
    InputError
        If ``beta`` or ``gamma`` is negative, ``ridge`` or ``amin`` not > 0; if ``beta > 0``
        and ``activations`` is empty, or ``gamma > 0`` and ``weights`` is empty; if an
        activation has fewer than 2 rows or 2 dimensions, or a weight is not a 2-D matrix;
        if any of them holds NaN/Inf or is a meta tensor; if ``beta`` or ``gamma`` is so
        large that the loss overflows (is not finite).

    References
    ----------
    Seed 001 of this project (the info-spec regulariser). T. M. Cover and J. A. Thomas,
    *Elements of Information Theory*, 2nd ed., Wiley, 2006, Theorem 8.4.1 (Gaussian
    entropy). A. Lewandowski et al., "Learning Continually by Spectral Regularization",
    ICLR 2025, arXiv:2406.06811 (singular values of weights and trainability).

    Examples
    --------
    >>> import math, torch
    >>> acts = [torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])]
    >>> W = torch.diag(torch.tensor([1.0, math.e ** 2]))    # log sigma = 0, 2: Var = 1
    >>> loss = info_spec_loss(acts, [W], beta=0.0, gamma=1.0)
    >>> round(float(loss), 6)
    1.0
    >>> h = info_spec_loss([acts[0].double()], [], beta=1.0, gamma=0.0, ridge=1e-12)
    >>> round(float(h), 6) == round(math.log(2 * math.pi * math.e * 2 / 3), 6)  # Sigma = 2/3 I
    True
    """
    func = "info_spec_loss"
    beta = check_positive(beta, "beta", func, allow_zero=True)
    gamma = check_positive(gamma, "gamma", func, allow_zero=True)
    ridge = check_positive(ridge, "ridge", func)
    amin = check_positive(amin, "amin", func)
    acts = _tensor_list(activations, "activations", func) if beta > 0 else []
    mats = _tensor_list(weights, "weights", func) if gamma > 0 else []
    if beta > 0 and not acts:
        raise InputError(
            f"The 'activations' argument of {func} must hold at least one tensor when "
            f"beta > 0 (beta={beta}); got none. Pass activations or set beta=0."
        )
    if gamma > 0 and not mats:
        raise InputError(
            f"The 'weights' argument of {func} must hold at least one matrix when gamma > 0 "
            f"(gamma={gamma}); got none. Pass weight matrices or set gamma=0."
        )
    out_dtype = _loss_dtype(*acts, *mats)
    device = (acts + mats)[0].device if acts or mats else torch.device("cpu")
    total = torch.zeros((), dtype=out_dtype, device=device)
    with _full_precision(device):
        for i, a in enumerate(acts):
            name = f"activations[{i}]"
            a = _upcast(a)
            check_ndim(a, name, func, min_ndim=2, expected="at least 2 dimensions (..., d)")
            rows = a.reshape(-1, a.shape[-1])
            if rows.shape[0] < 2 or rows.shape[1] < 1:
                raise InputError(
                    f"The '{name}' argument of {func} must have at least 2 rows (samples) and "
                    f"1 feature to have a covariance; got {describe(a)}."
                )
            check_finite(rows, name, func)
            total = total + beta * _entropy_nats(rows, ridge, func).to(out_dtype)
        for i, w in enumerate(mats):
            name = f"weights[{i}]"
            w = _upcast(w)
            check_ndim(w, name, func, min_ndim=2, max_ndim=2, expected="2 dimensions (a matrix)")
            if w.numel() == 0:
                raise InputError(f"The '{name}' argument of {func} is empty: {describe(w)}.")
            check_finite(w, name, func)
            sigma = torch.linalg.svdvals(w)
            total = total + gamma * log_spectrum_variance(sigma, amin=amin).to(out_dtype)
    if not bool(torch.isfinite(total.detach())):  # the terms are finite: beta or gamma overflowed
        raise InputError(
            f"The loss of {func} overflows {str(out_dtype).replace('torch.', '')} with "
            f"beta={shown(beta)} and gamma={shown(gamma)}: the weighted terms are too large "
            f"to represent. Use smaller 'beta' and 'gamma' (their sizes are what matters in "
            f"training; a weight near 1 is typical)."
        )
    return total


def _tensor_list(xs: Any, name: str, func: str) -> list[torch.Tensor]:
    if isinstance(xs, torch.Tensor):
        xs = [xs]
    if not isinstance(xs, Sequence) or not all(isinstance(x, torch.Tensor) for x in xs):
        raise InputError(
            f"The '{name}' argument of {func} must be a sequence of torch tensors; got "
            f"{type(xs).__name__}."
        )
    for i, x in enumerate(xs):
        check_not_meta(x, f"{name}[{i}]", func)
        if not x.is_floating_point():
            raise InputError(
                f"The '{name}[{i}]' argument of {func} must be a floating tensor; got "
                f"{describe(x)}."
            )
    return list(xs)


class InfoSpecLoss(nn.Module):
    r"""The info-spec loss of a model's chosen layers, read through forward hooks.

    .. math::

        \mathcal L = \beta \sum_{a} H\big(\mathcal N(0, \Sigma_a + r I)\big)
                   + \gamma \sum_{W} \mathrm{Var}_i\big[\log \max(\sigma_i(W), a_{\min})\big]

    (see :func:`info_spec_loss`). A forward hook on each module of ``activation_layers``
    keeps its latest output, with its graph; calling the loss with no arguments returns
    the penalty for the last forward pass of the model, differentiable in the activations
    and in the current weights::

        penalty = InfoSpecLoss(model, beta=1e-3, gamma=1e-2)
        loss = task_loss(model(x), y) + penalty()

    Outputs become rows of features as in the analysis
    (:func:`infospec.spectra.activations.output_features`): channels of a convolution,
    the last axis otherwise, the first tensor of a tuple output. Weight tensors become
    matrices by :func:`~infospec.spectra.conventions.as_matrices` (convolutions flattened,
    attention ``in_proj`` split into query, key and value). The model is not registered as
    a submodule: the loss has no parameters of its own.

    Parameters
    ----------
    model : torch.nn.Module
        The model being trained.
    beta : float >= 0
        Weight of the activation-entropy term; with 0 no hook is registered.
    gamma : float >= 0
        Weight of the weight-spectrum term; with 0 no singular values are computed.
    activation_layers : str, sequence of str, or None
        Modules whose outputs count, by full dotted name from ``model.named_modules()``:
        a regular expression searched anywhere in the name, or a sequence of exact names
        and patterns. ``None``: every module owning a weight matrix of the default kinds
        (Linear, convolutions, attention); those not called as modules in a forward pass
        (such as ``nn.MultiheadAttention.out_proj``, or the sublayers of
        ``nn.TransformerEncoderLayer`` on its inference fast path) are then skipped,
        whereas an explicitly chosen module that was not called is an error.
    weight_layers : str, sequence of str, or None
        Weight parameters, by full dotted name (``"0.weight"``,
        ``"layers.0.self_attn.in_proj_weight"``), chosen the same way. ``None``: every
        Linear, convolution, transposed convolution, GPT-2 ``Conv1D`` and attention
        ``in_proj`` weight; embedding tables and parameters of unknown role only when named.
    ridge : float > 0, default 1e-4
        Ridge added to each activation covariance.
    amin : float > 0, default 1e-6
        Floor on singular values before the logarithm.

    Raises
    ------
    InputError
        If ``model`` is not a module, a coefficient is invalid, a pattern is not a valid
        regular expression or matches nothing (the message lists close matches), or the
        model has no weight matrix when ``gamma > 0``. When called: if an explicitly chosen
        module was not called while others were, if a module's output is not a floating
        tensor, or if it holds NaN/Inf (the message names the module); if ``beta`` or
        ``gamma`` is so large that the loss overflows.
    InfospecError
        When called before any chosen module produced an output (no forward pass yet, or
        modules the model's forward never calls), or after :meth:`remove`.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    >>> with InfoSpecLoss(net, beta=1e-3, gamma=1e-2, activation_layers=r"^2$") as penalty:
    ...     out = net(torch.randn(32, 8))
    ...     loss = out.pow(2).mean() + penalty()
    ...     loss.backward()
    >>> penalty.activation_names, penalty.weight_names
    (['2'], ['0.weight', '2.weight'])
    >>> net._forward_hooks   # the context removed the hooks
    OrderedDict()
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        beta: float,
        gamma: float,
        activation_layers: str | Sequence[str] | None = None,
        weight_layers: str | Sequence[str] | None = None,
        ridge: float = 1e-4,
        amin: float = 1e-6,
    ) -> None:
        super().__init__()
        func = "InfoSpecLoss"
        model = _check_model(model, func)
        self.beta = check_positive(beta, "beta", func, allow_zero=True)
        self.gamma = check_positive(gamma, "gamma", func, allow_zero=True)
        self.ridge = check_positive(ridge, "ridge", func)
        self.amin = check_positive(amin, "amin", func)
        # Not a submodule: the model's parameters must not become this loss's parameters.
        object.__setattr__(self, "model", model)

        modules = dict(model.named_modules())
        modules.pop("", None)
        weight_owners = [name for name, mod in modules.items() if _owns_default_weight(mod)]
        self._explicit_activations = activation_layers is not None
        if activation_layers is None:
            act_names = weight_owners
        else:
            act_names = _resolve_layers(
                activation_layers,
                list(modules),
                param="activation_layers",
                what="module",
                func=func,
            )
        if self.beta > 0 and not act_names:
            raise InputError(
                f"{func}: the module {type(model).__name__} has no Linear, convolution or "
                f"attention layer whose output to use; name the modules with "
                f"'activation_layers', or set beta=0."
            )
        self.activation_names: list[str] = act_names if self.beta > 0 else []

        if weight_layers is not None or self.gamma > 0:
            weights = _select_weights(model, weight_layers, param="weight_layers", func=func)
        else:
            weights = []
        self._weights = weights if self.gamma > 0 else []
        self.weight_names: list[str] = [w[0] for w in self._weights]

        self._outputs: dict[str, Any] = {}
        self._handles = [
            modules[name].register_forward_hook(self._make_hook(name))
            for name in self.activation_names
        ]
        self._removed = False
        self._forwards = 0

    def _make_hook(self, name: str):
        def hook(_mod: nn.Module, _inp: Any, output: Any) -> None:
            self._outputs[name] = output
            self._forwards += 1

        return hook

    def activations(self) -> list[torch.Tensor]:
        """Rows of features (n, d) of each chosen module's latest output, in order."""
        func = "InfoSpecLoss"
        modules = dict(self.model.named_modules())
        rows = []
        for name in self.activation_names:
            if name not in self._outputs:
                if self._explicit_activations:
                    raise InputError(
                        f"{func}: the module '{name}' produced no output in the forward "
                        f"passes seen so far (it is not called by the model's forward). "
                        f"Choose another module in 'activation_layers'."
                    )
                continue
            out = first_tensor(self._outputs[name])
            if out is None or not out.is_floating_point():
                what = "no tensor" if out is None else f"a tensor with {describe(out)}"
                raise InputError(
                    f"{func}: the module '{name}' returned {what}; only floating outputs "
                    f"have a covariance. Choose another module in 'activation_layers'."
                )
            if not bool(torch.isfinite(out).all()):
                bad = int((~torch.isfinite(out)).sum())
                raise InputError(
                    f"{func}: the output of module '{name}' holds {bad} NaN/Inf value(s) "
                    f"(shape {tuple(out.shape)}); the loss is undefined. Check the batch and "
                    f"the learning rate."
                )
            rows.append(output_features(modules[name], out)[0])
        return rows

    def weight_matrices(self) -> list[tuple[str, torch.Tensor]]:
        """``(label, matrix)`` of each chosen weight, read now (differentiable)."""
        out: list[tuple[str, torch.Tensor]] = []
        for name, mod, p_name, kind in self._weights:
            out.extend(as_matrices(kind, getattr(mod, p_name), name=name))
        return out

    def forward(self) -> torch.Tensor:
        """The penalty for the model's last forward pass and its current weights."""
        if self._removed:
            raise InfospecError(
                "InfoSpecLoss was removed (its hooks are gone); create a new one to go on."
            )
        if self.beta > 0 and self._forwards == 0:
            shown = ", ".join(repr(n) for n in self.activation_names[:5])
            raise InfospecError(
                f"InfoSpecLoss has recorded no output of the chosen modules ({shown}): call "
                f"the model on a batch first, then the loss. If you did, these modules are "
                f"not called by the model's forward (as nn.MultiheadAttention.out_proj); "
                f"choose others with 'activation_layers'."
            )
        acts = self.activations() if self.beta > 0 else []
        if self.beta > 0 and not acts:
            raise InputError(
                f"InfoSpecLoss: none of the modules {self.activation_names[:5]} produced an "
                f"output in the last forward pass; name the modules with 'activation_layers'."
            )
        mats = [m for _, m in self.weight_matrices()]
        return info_spec_loss(
            acts, mats, beta=self.beta, gamma=self.gamma, ridge=self.ridge, amin=self.amin
        )

    def clear(self) -> None:
        """Forget the stored outputs (they keep their autograd graphs alive until then)."""
        self._outputs.clear()
        self._forwards = 0

    def remove(self) -> None:
        """Remove the hooks and the stored outputs; the model is left as it was."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._outputs.clear()
        self._removed = True

    def __enter__(self) -> InfoSpecLoss:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def extra_repr(self) -> str:
        return (
            f"beta={self.beta}, gamma={self.gamma}, ridge={self.ridge}, amin={self.amin}, "
            f"activations={len(self.activation_names)}, weights={len(self.weight_names)}"
        )


def _owns_default_weight(module: nn.Module) -> bool:
    for p_name, p in module.named_parameters(recurse=False):
        if isinstance(p, nn.parameter.UninitializedParameter):
            continue
        if module_param_kind(module, p_name, tuple(p.shape)) in DEFAULT_WEIGHT_KINDS:
            return True
    return False
