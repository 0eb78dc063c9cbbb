r"""Differentiable training losses from the information measures.

Every function here returns a value **to minimise**, in nats, as a 0-D tensor:

=====================================  ==================================================
:func:`coding_rate_loss`               :math:`-R(Z, \epsilon)`: minimising it *expands*
                                       the features (the expansion term of MCR² and
                                       SimDINO, which maximise :math:`R`)
:func:`rate_reduction_loss`            :math:`-\Delta R(Z, \Pi, \epsilon)` of MCR²
:func:`~.info_spec.info_spec_loss`   :math:`\beta \sum H(z) + \gamma \sum
                                       \mathrm{Var}[\log \sigma_i(W)]` of seed 001:
                                       minimising it *compresses* the activations and
                                       *flattens* the weight spectra
=====================================  ==================================================

The classes :class:`CodingRateLoss` (a module called on features) and
:class:`~infospec.training.info_spec.InfoSpecLoss` (forward hooks on a model, called with
no arguments; :mod:`infospec.training.info_spec` holds it and :func:`info_spec_loss`) are
thin shells over these functions.
The maths is not re-derived here: the coding rate, the rate reduction and the
log-determinants are those of :mod:`infospec.measures.information`, the log-spectrum
variance that of :mod:`infospec.measures.flatness`, and weight tensors become matrices by
:func:`infospec.spectra.conventions.as_matrices`.

Precision. The losses are computed in float32 when the input is float16, bfloat16 or
float32, and in float64 when it is float64 (or not a tensor); the result has that dtype.
Autocast is switched off inside, so a model trained under ``torch.autocast`` in bfloat16
still gets Gram matrices, Cholesky factors and singular values in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import shown
from .._errors import InputError
from .._names import match_names
from .._validation import (
    check_bool,
    check_ndim,
    check_positive,
)
from ..measures.information import _check_samples, _coding_rate_nats, rate_reduction
from ..sources.torch_sources import module_param_kind
from ..spectra.conventions import KINDS

__all__ = [
    "CodingRateLoss",
    "coding_rate_loss",
    "rate_reduction_loss",
]

_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu")

#: Kinds of weight tensors selected when ``layers`` (or ``weight_layers``) is None: the
#: matrices that map a layer's input to its output. Embedding tables and 2-D parameters of
#: unknown role (kind ``"matrix"``) are taken only when named explicitly.
DEFAULT_WEIGHT_KINDS: tuple[str, ...] = tuple(k for k in KINDS if k not in ("embedding", "matrix"))


# --------------------------------------------------------------------------------------
# shared private helpers (also used by regularizers.py)
# --------------------------------------------------------------------------------------


def _full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """A context in which autocast is off for ``device`` (a no-op where autocast is unknown)."""
    if device.type in _AUTOCAST_DEVICES:
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _upcast(x: Any) -> Any:
    """float16/bfloat16 tensors to float32 (differentiably); anything else unchanged."""
    if isinstance(x, torch.Tensor) and x.dtype in (torch.float16, torch.bfloat16):
        return x.to(torch.float32)
    return x


def _loss_dtype(*xs: Any) -> torch.dtype:
    """float64 when every input is a float64 tensor or not a tensor, otherwise float32."""
    for x in xs:
        if isinstance(x, torch.Tensor) and x.dtype != torch.float64:
            return torch.float32
    return torch.float64


def _device_of(x: Any) -> torch.device:
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")


def _resolve_layers(
    layers: Any, names: Sequence[str], *, param: str, what: str, func: str
) -> list[str]:
    """Names chosen by ``layers`` (the package's one rule: :func:`infospec._names.match_names`)."""
    return match_names(names, layers, param=param, func=func, what=what)


def _weight_params(model: nn.Module) -> list[tuple[str, nn.Module, str, str]]:
    """``(full name, owning module, parameter name, kind)`` of every matrix-like parameter.

    Kinds are those of :func:`infospec.sources.torch_sources.module_param_kind`; 1-D and
    other tensors without a matrix convention, uninitialised (lazy) parameters and second
    occurrences of tied parameters are left out.
    """
    out: list[tuple[str, nn.Module, str, str]] = []
    seen: set[int] = set()
    for mod_name, mod in model.named_modules():
        for p_name, p in mod.named_parameters(recurse=False):
            if isinstance(p, nn.parameter.UninitializedParameter) or id(p) in seen:
                continue
            seen.add(id(p))
            kind = module_param_kind(mod, p_name, tuple(p.shape))
            if kind == "other" or p.numel() == 0 or not p.is_floating_point():
                continue
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            out.append((name, mod, p_name, kind))
    return out


def _select_weights(
    model: nn.Module, layers: Any, *, param: str, func: str
) -> list[tuple[str, nn.Module, str, str]]:
    """The weight parameters chosen by ``layers`` (None: those of DEFAULT_WEIGHT_KINDS)."""
    params = _weight_params(model)
    if layers is None:
        chosen = [p for p in params if p[3] in DEFAULT_WEIGHT_KINDS]
        if not chosen:
            found = ", ".join(sorted({p[3] for p in params})) or "none"
            raise InputError(
                f"{func}: the module {type(model).__name__} has no weight matrix (no Linear, "
                f"convolution or attention projection; matrix-like parameters of other kinds: "
                f"{found}). Pass the model that holds the layers, or name the parameters with "
                f"'{param}'."
            )
        return chosen
    names = _resolve_layers(layers, [p[0] for p in params], param=param, what="weight", func=func)
    keep = set(names)
    return [p for p in params if p[0] in keep]


def _check_model(model: Any, func: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise InputError(
            f"The 'model' argument of {func} must be a torch.nn.Module; got {type(model).__name__}."
        )
    return model


# --------------------------------------------------------------------------------------
# coding rate and rate reduction
# --------------------------------------------------------------------------------------


def coding_rate_loss(
    Z: Any, *, eps: float = 0.5, normalize: bool = True, views_dim: int | None = None
) -> torch.Tensor:
    r"""Negative coding rate of a batch of features: the expansion term of MCR² and SimDINO.

    .. math::

        \mathcal L(Z) = -R(Z, \epsilon)
            = -\frac12 \log\det\Big(I + \frac{d}{n\epsilon^2} Z^\top Z\Big)

    with the rows of ``Z`` (``n x d``) first scaled to unit norm when ``normalize`` is true
    (SimDINO's features live on the sphere). Minimising it **expands** the features: it
    spreads them over more, and more equal, directions. SimDINO adds
    :math:`-\gamma R(Z, \epsilon)` to its loss; pass this times :math:`\gamma`. The
    coding rate is :func:`infospec.measures.information.coding_rate`'s computation: a
    Cholesky log-determinant on the smaller Gram side (``n x n`` when ``n < d``), finite for
    any finite batch, including ``n < d``, repeated rows and zero rows (a zero row stays
    zero under normalisation and adds nothing).

    Parameters
    ----------
    Z : tensor, shape (n, d), or (V, n, d) with ``views_dim``
        Features in rows. With ``views_dim``, one batch per view (augmentation, crop); the
        loss is the mean over views of the loss of each view. Finite.
    eps : float > 0, default 0.5
        The distortion :math:`\epsilon` (root mean squared error per sample).
    normalize : bool, default True
        Scale each row to unit L2 norm first.
    views_dim : int, optional
        Axis of ``Z`` holding the views (``Z`` is then 3-D).

    Returns
    -------
    torch.Tensor, shape ()
        :math:`-R` in nats, <= 0; float32 for float16/bfloat16/float32 input, float64 for
        float64 input.

    Raises
    ------
    InputError
        If ``Z`` does not have 2 dimensions (3 with ``views_dim``), has an empty axis or a
        NaN/Inf value, if ``views_dim`` is out of range, or if ``eps`` is not a float > 0.

    References
    ----------
    Y. Yu, K. H. R. Chan, C. You, C. Song and Y. Ma, "Learning diverse and discriminative
    representations via the principle of maximal coding rate reduction", NeurIPS 2020.
    Z. Wu, J. Zhang, D. Pai, X. Wang, C. Singh, J. Yang, J. Gao and Y. Ma, "Simplifying
    DINO via coding rate regularization" (SimDINO), arXiv:2502.10385, 2025.

    Examples
    --------
    >>> import torch
    >>> Z = torch.eye(4)[:2]                       # 2 orthonormal unit rows in 4-D
    >>> round(float(coding_rate_loss(Z, eps=1.0)), 6)     # -1/2 logdet(3 I_2) = -log 3
    -1.098612
    >>> Zv = torch.stack([Z, 2 * Z])               # two views; normalised, they agree
    >>> round(float(coding_rate_loss(Zv, eps=1.0, views_dim=0)), 6)
    -1.098612
    """
    func = "coding_rate_loss"
    eps = check_positive(eps, "eps", func)
    check_bool(normalize, "normalize", func)
    out_dtype = _loss_dtype(Z)
    with _full_precision(_device_of(Z)):
        z = _check_samples(_upcast(Z), func, batched=views_dim is not None)
        if views_dim is not None:
            check_ndim(z, "Z", func, min_ndim=3, max_ndim=3, expected="3 dimensions with views_dim")
            if (
                isinstance(views_dim, bool)
                or not isinstance(views_dim, int)
                or not (-3 <= views_dim < 3)
            ):
                raise InputError(
                    f"The 'views_dim' parameter of {func} must be an int in [-3, 2] for Z of "
                    f"shape {tuple(z.shape)}. Got {shown(views_dim)} instead."
                )
            z = z.movedim(views_dim, 0)
        if normalize:
            z = F.normalize(z, dim=-1)
        rate = _coding_rate_nats(z, eps, func)
    return (-rate.mean()).to(out_dtype)


class CodingRateLoss(nn.Module):
    r"""Module form of :func:`coding_rate_loss`: ``weight * (-R(Z, eps))``.

    .. math::

        \mathcal L(Z) = -w\, R(Z, \epsilon)

    Parameters
    ----------
    eps : float > 0, default 0.5
        The distortion :math:`\epsilon`.
    normalize : bool, default True
        Scale each row of ``Z`` to unit norm first.
    views_dim : int, optional
        Axis of ``Z`` holding views, averaged over.
    weight : float >= 0, default 1.0
        The factor :math:`w` (SimDINO's :math:`\gamma`).

    Raises
    ------
    InputError
        If ``eps`` is not > 0 or ``weight`` is negative; when called, as
        :func:`coding_rate_loss`.

    Examples
    --------
    >>> import torch
    >>> loss_fn = CodingRateLoss(eps=1.0, weight=0.5)
    >>> round(float(loss_fn(torch.eye(4)[:2])), 6)         # -0.5 log 3
    -0.549306
    """

    def __init__(
        self,
        *,
        eps: float = 0.5,
        normalize: bool = True,
        views_dim: int | None = None,
        weight: float = 1.0,
    ) -> None:
        super().__init__()
        func = "CodingRateLoss"
        self.eps = check_positive(eps, "eps", func)
        self.weight = check_positive(weight, "weight", func, allow_zero=True)
        self.normalize = check_bool(normalize, "normalize", func)
        self.views_dim = views_dim

    def forward(self, Z: torch.Tensor) -> torch.Tensor:
        """The loss ``-weight * R(Z)`` of a batch of features (see :func:`coding_rate_loss`)."""
        loss = coding_rate_loss(Z, eps=self.eps, normalize=self.normalize, views_dim=self.views_dim)
        return self.weight * loss

    def extra_repr(self) -> str:
        return (
            f"eps={self.eps}, normalize={self.normalize}, views_dim={self.views_dim}, "
            f"weight={self.weight}"
        )


def rate_reduction_loss(
    Z: Any, labels: Any, *, eps: float = 0.5, normalize: bool = True
) -> torch.Tensor:
    r"""Negative MCR² rate reduction of a labelled batch: the MCR² objective to minimise.

    .. math::

        \mathcal L(Z, \Pi) = -\Delta R = -R(Z, \epsilon) + \sum_j \frac{n_j}{2n}
            \log\det\Big(I + \frac{d}{n_j \epsilon^2} Z_j^\top Z_j\Big)

    with :math:`Z_j` the :math:`n_j` rows of class ``j``, after scaling every row to unit
    norm when ``normalize`` is true (MCR² constrains features to the sphere; without it
    the loss is unbounded below by scaling). Minimising it expands the whole set while
    compressing each class. The value is
    :func:`infospec.measures.information.rate_reduction`'s, negated; it is computed in
    float32 or better and is finite for rank-deficient classes (one sample, repeated rows).

    Parameters
    ----------
    Z : tensor, shape (n, d)
        Features in rows; finite.
    labels : tensor or array-like of integers, shape (n,)
        Class of each row.
    eps : float > 0, default 0.5
        The distortion :math:`\epsilon`.
    normalize : bool, default True
        Scale each row to unit L2 norm first.

    Returns
    -------
    torch.Tensor, shape ()
        :math:`-\Delta R` in nats; float32 for float16/bfloat16/float32 input, float64 for
        float64 input.

    Raises
    ------
    InputError
        If ``Z`` is not 2-D, empty or not finite, if ``labels`` is not a 1-D integer array
        with one label per row, or if ``eps`` is not a float > 0.

    References
    ----------
    Y. Yu, K. H. R. Chan, C. You, C. Song and Y. Ma, "Learning diverse and discriminative
    representations via the principle of maximal coding rate reduction", NeurIPS 2020.

    Examples
    --------
    >>> import torch
    >>> Z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> round(float(rate_reduction_loss(Z, torch.tensor([0, 0, 1, 1]), eps=1.0)), 6)
    -0.143841
    """
    func = "rate_reduction_loss"
    eps = check_positive(eps, "eps", func)
    check_bool(normalize, "normalize", func)
    out_dtype = _loss_dtype(Z)
    with _full_precision(_device_of(Z)):
        z = _check_samples(_upcast(Z), func, batched=False)
        if normalize:
            z = F.normalize(z, dim=-1)
        delta = rate_reduction(z, labels, eps=eps)
    return (-delta).to(out_dtype)


# --------------------------------------------------------------------------------------
# info-spec loss
# --------------------------------------------------------------------------------------
