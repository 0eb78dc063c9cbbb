r"""The spectral regulariser of Lewandowski et al.: keep each layer's largest singular value near 1.

.. math::

    \mathcal R(\theta) = \sum_{l} \big(\sigma_{\max}(W_l)^k - 1\big)^2

with :math:`\sigma_{\max}` estimated by power iteration, one step per training step, the
singular vectors kept in buffers between steps (as
:func:`torch.nn.utils.parametrizations.spectral_norm` does).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import count_in_range, shown
from .._errors import InfospecWarning, InputError
from .._validation import check_not_meta, check_positive
from ..spectra.conventions import as_matrices
from .losses import _check_model, _full_precision, _select_weights

__all__ = ["SpectralRegularizer"]

#: Power-iteration steps run once at construction, so that the first estimate is close.
WARMUP_ITERATIONS = 15
#: Largest ``eps``: the norm floor must be a finite float32 (the work dtype of all but
#: float64 weights).
MAX_EPS = float(torch.finfo(torch.float32).max)


def _work_dtype(w: torch.Tensor) -> torch.dtype:
    return torch.float64 if w.dtype == torch.float64 else torch.float32


def _power_iteration(
    W: torch.Tensor, u: torch.Tensor, steps: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``steps`` >= 1 power-iteration steps on ``W`` (m, n) from the left vector ``u`` (m,).

    Each step is :math:`v \leftarrow W^\top u / \|W^\top u\|`, then
    :math:`u \leftarrow W v / \|W v\|`; no gradient is recorded.
    """
    v = u.new_empty(W.shape[1])
    with torch.no_grad():
        # the vectors do not depend on the scale of W: iterate on W / max|W|, so that the
        # eps floor of the normalisation does not meet a matrix of tiny entries (1e-20
        # gave u = v = 0 and sigma = 0) and products of huge ones do not overflow
        top = W.abs().amax()  # no host sync: this runs at every training step
        W = W / torch.where((top > 0) & torch.isfinite(top), top, torch.ones_like(top))
        for _ in range(steps):
            v = F.normalize(W.mT @ u, dim=0, eps=eps)
            u = F.normalize(W @ v, dim=0, eps=eps)
    return u, v


def _spectral_penalty(
    matrices: Sequence[torch.Tensor],
    us: Sequence[torch.Tensor],
    vs: Sequence[torch.Tensor],
    k: float,
) -> torch.Tensor:
    r""":math:`\sum_l (\hat\sigma_l^k - 1)^2` with :math:`\hat\sigma_l = u_l^\top W_l v_l`.

    ``u_l`` and ``v_l`` are constants: the gradient in :math:`W_l` is
    :math:`2 (\hat\sigma^k - 1)\, k \hat\sigma^{k-1}\, u v^\top` (0 at
    :math:`\hat\sigma = 0` when :math:`k < 1`, where that slope is infinite).
    """
    total = None
    for W, u, v in zip(matrices, us, vs, strict=True):
        sigma = torch.dot(u, W @ v)
        # sigma >= 0 once u, v come from power iteration. For k < 1 the slope k sigma^(k-1)
        # is infinite at sigma = 0 (a zero-initialised layer): there the term is held at
        # its value 1 with gradient 0 (the floor is the dtype's smallest normal number),
        # instead of an infinite gradient times a zero vector (NaN).
        floor = torch.finfo(sigma.dtype).tiny if k < 1 else 0.0
        term = (sigma.clamp_min(floor) ** k - 1.0) ** 2
        total = term if total is None else total + term
    assert total is not None
    return total


class SpectralRegularizer(nn.Module):
    r"""Spectral regulariser: penalise each weight matrix's top singular value away from 1.

    .. math::

        \mathcal R(\theta) = \sum_{l} \big(\hat\sigma_l^{\,k} - 1\big)^2, \qquad
        \hat\sigma_l = u_l^\top W_l v_l \approx \sigma_{\max}(W_l)

    the regulariser of Lewandowski et al. (2024), which keeps the maximum singular value
    of every layer close to its value under a good initialisation (1) and so sustains
    gradient diversity and trainability in continual learning. Called with no arguments,
    it returns :math:`\mathcal R` for the current weights; add ``lam * reg()`` to the loss.

    :math:`\sigma_{\max}` is estimated by power iteration. Each call in training mode runs
    ``n_power_iterations`` steps :math:`v \leftarrow W^\top u/\|W^\top u\|`,
    :math:`u \leftarrow W v / \|W v\|` from the vectors kept in buffers (``u_0``, ``v_0``,
    ...), stores them, and returns the penalty of :math:`\hat\sigma = u^\top W v` with
    :math:`u, v` held constant: differentiable in :math:`W`, with gradient
    :math:`\partial\hat\sigma/\partial W = u v^\top`, the gradient of
    :math:`\sigma_{\max}` once the vectors have converged. Buffers are updated only when
    both the regulariser and the module owning the weight are in training mode, so
    ``model.eval()`` freezes them (as in
    :func:`torch.nn.utils.parametrizations.spectral_norm`); they start from seeded random
    vectors refined by :data:`WARMUP_ITERATIONS` steps, and since the weights move little
    per step one step per training step tracks :math:`\sigma_{\max}`. Weights in float16 or
    bfloat16 are read in float32 (autocast off); the penalty is float32, or float64 for
    float64 weights.

    Convolution kernels are one ``out x (in * prod(kernel))`` matrix and an attention
    ``in_proj`` weight three matrices (query, key, value), as in the analysis
    (:func:`~infospec.spectra.conventions.as_matrices`, ``conv="flatten"``). The paper
    also pulls bias vectors toward zero; that term is not included here (use weight
    decay on biases for it).

    Parameters
    ----------
    model : torch.nn.Module
        The model being trained; it is not registered as a submodule (the regulariser's
        state dict holds only its buffers).
    k : float > 0, default 2
        The exponent :math:`k` (the paper's default is 2).
    layers : str, sequence of str, or None
        Weight parameters, by full dotted name (``"0.weight"``): a regular expression
        searched anywhere in the name, or a sequence of exact names and patterns.
        ``None``: every Linear, convolution, transposed convolution, GPT-2 ``Conv1D`` and
        attention ``in_proj`` weight (embedding tables only when named).
    n_power_iterations : int >= 1, default 1
        Power-iteration steps per call in training mode.
    eps : float in (0, MAX_EPS], default 1e-12
        Floor on norms when the vectors are normalised (:data:`MAX_EPS` is the largest
        float32).
    seed : int in [-2**63, 2**64 - 1], default 0
        Seed of the initial random vectors.

    Attributes
    ----------
    matrix_names : list of str
        Label of each regularised matrix (``"0.weight"``, ``"attn.in_proj_weight[q]"``),
        in the order of the buffers ``u_0, v_0, u_1, v_1, ...``.

    Raises
    ------
    InputError
        If ``model`` is not a module or has no weight matrix, if a pattern of ``layers``
        is invalid or matches nothing (the message lists close matches), if ``k``,
        ``n_power_iterations``, ``eps`` or ``seed`` is invalid, or if a chosen weight is a
        meta tensor (no values; also when called). When called: if the penalty overflows
        (a large ``k`` on a large :math:`\sigma_{\max}`).

    References
    ----------
    A. Lewandowski, M. Bortkiewicz, S. Kumar, A. György, D. Schuurmans, M. Ostaszewski and
    M. C. Machado, "Learning Continually by Spectral Regularization", ICLR 2025,
    arXiv:2406.06811.
    T. Miyato, T. Kataoka, M. Koyama and Y. Yoshida, "Spectral normalization for generative
    adversarial networks", ICLR 2018 (power iteration with persistent vectors).

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.diag(torch.tensor([3.0, 1.0, 0.5, 0.1])))
    ...     _ = net[2].weight.copy_(torch.eye(2, 4))
    >>> reg = SpectralRegularizer(net, k=2)
    >>> reg.matrix_names
    ['0.weight', '2.weight']
    >>> round(float(reg().detach()), 4)        # (3^2 - 1)^2 + (1^2 - 1)^2
    64.0
    >>> {name: round(s, 4) for name, s in reg.sigmas().items()}
    {'0.weight': 3.0, '2.weight': 1.0}
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        k: float = 2.0,
        layers: str | Sequence[str] | None = None,
        n_power_iterations: int = 1,
        eps: float = 1e-12,
        seed: int = 0,
    ) -> None:
        super().__init__()
        func = "SpectralRegularizer"
        model = _check_model(model, func)
        self.k = check_positive(k, "k", func)
        self.n_power_iterations = check_positive(
            n_power_iterations, "n_power_iterations", func, integer=True
        )
        self.eps = check_positive(eps, "eps", func)
        if self.eps > MAX_EPS:
            raise InputError(
                f"The 'eps' parameter of {func} must be a float in (0, {MAX_EPS:.4g}] (a "
                f"finite float32; it floors the norms of the power-iteration vectors, "
                f"default 1e-12). Got {shown(eps)} instead."
            )
        # torch.Generator.manual_seed's range (torch.initial_seed() may exceed 2**63)
        seed = count_in_range(seed, f"The 'seed' parameter of {func}", low=-(2**63), high=2**64 - 1)
        object.__setattr__(self, "model", model)
        self._params = _select_weights(model, layers, param="layers", func=func)
        for name, mod, p_name, _ in self._params:
            check_not_meta(getattr(mod, p_name), f"model.{name}", func)
        self._gen = torch.Generator().manual_seed(seed)
        self.matrix_names: list[str] = []
        # (index into _params, index of the matrix within that parameter's matrices)
        self._slots: list[tuple[int, int]] = []
        self._warned: set[str] = set()
        self._cold: set[int] = set()  # slots re-initialised: warm up at the next finite W
        for p_idx, (name, mod, p_name, kind) in enumerate(self._params):
            weight = getattr(mod, p_name)
            for j, (label, mat) in enumerate(as_matrices(kind, weight.detach(), name=name)):
                i = len(self.matrix_names)
                u, v = self._initial_vectors(mat)
                self.register_buffer(f"u_{i}", u)
                self.register_buffer(f"v_{i}", v)
                self.matrix_names.append(label)
                self._slots.append((p_idx, j))

    def _initial_vectors(self, mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Seeded random vectors for ``mat``, refined by the warm-up steps when it is finite."""
        W = mat.detach().to(_work_dtype(mat))
        u = torch.randn(W.shape[0], generator=self._gen, dtype=W.dtype).to(W.device)
        u = F.normalize(u, dim=0, eps=self.eps)
        if not bool(torch.isfinite(W).all()):
            v = F.normalize(torch.ones(W.shape[1], dtype=W.dtype, device=W.device), dim=0)
            return u, v
        return _power_iteration(W, u, WARMUP_ITERATIONS, self.eps)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, InfospecWarning, stacklevel=4)

    def _follow_modules(self) -> None:
        """Re-resolve each weight's module by name; new vectors where it was replaced.

        After ``model[2] = nn.Linear(...)`` the regulariser acts on the module the model
        holds now (the old one is detached and would get the penalty's gradient in vain).
        A weight whose module is gone is an error.
        """
        for p_idx, (name, mod, p_name, kind) in enumerate(self._params):
            owner = name.rsplit(".", 1)[0] if "." in name else ""
            try:
                now = self.model.get_submodule(owner) if owner else self.model
            except AttributeError:
                now = None
            weight = getattr(now, p_name, None) if now is not None else None
            if not isinstance(weight, torch.Tensor):
                raise InputError(
                    f"SpectralRegularizer: the weight '{name}' is no longer in the model (its "
                    f"module '{owner}' was removed or replaced by one without '{p_name}'). "
                    f"Create a new SpectralRegularizer for the changed model."
                )
            old_shape = getattr(mod, p_name).shape
            if now is mod and weight.shape == old_shape:
                continue
            self._params[p_idx] = (name, now, p_name, kind)
            mats = as_matrices(kind, weight.detach(), name=name)
            for i, (p, j) in enumerate(self._slots):
                if p == p_idx:
                    u, v = self._initial_vectors(mats[j][1])
                    setattr(self, f"u_{i}", u)
                    setattr(self, f"v_{i}", v)
            self._warn_once(
                f"replaced/{name}/{id(now)}",
                f"SpectralRegularizer: the module of '{name}' was replaced "
                f"({type(now).__name__}, weight {tuple(weight.shape)}); it now regularises the "
                f"new module, from new power-iteration vectors.",
            )

    def _matrices(self) -> list[torch.Tensor]:
        """The regularised matrices, read now from the model (differentiable)."""
        self._follow_modules()
        per_param = []
        for name, mod, p_name, kind in self._params:
            check_not_meta(getattr(mod, p_name), f"model.{name}", "SpectralRegularizer")
            per_param.append([m for _, m in as_matrices(kind, getattr(mod, p_name), name=name)])
        return [per_param[p][j] for p, j in self._slots]

    def _vectors(self, i: int, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, v = getattr(self, f"u_{i}"), getattr(self, f"v_{i}")
        if u.device != W.device or u.dtype != W.dtype:  # the model moved or changed dtype
            u, v = u.to(W.device, W.dtype), v.to(W.device, W.dtype)
            setattr(self, f"u_{i}", u)
            setattr(self, f"v_{i}", v)
        return u, v

    def forward(self) -> torch.Tensor:
        """The penalty :math:`\\sum_l (\\hat\\sigma_l^k - 1)^2` for the current weights.

        A matrix whose estimate :math:`\\hat\\sigma_l` is not finite (a NaN or Inf in the
        weight) is left out of the penalty for this call, with an
        :class:`~infospec.InfospecWarning` once per matrix, and its vectors are
        re-initialised (warmed up again once the weight is finite), so one bad step does
        not make the penalty NaN for the rest of training. The penalty of a call in
        which every matrix was left out is 0.
        """
        mats = self._matrices()
        device = mats[0].device
        us, vs, work = [], [], []
        with _full_precision(device):
            for i, ((p_idx, _), M) in enumerate(zip(self._slots, mats, strict=True)):
                W = M.to(_work_dtype(M))
                u, v = self._vectors(i, W)
                if self.training and self._params[p_idx][1].training:
                    steps = self.n_power_iterations
                    if i in self._cold:
                        steps = max(steps, WARMUP_ITERATIONS)
                    new_u, new_v = _power_iteration(W, u, steps, self.eps)
                    u.copy_(new_u)
                    v.copy_(new_v)
                    # Clones: a later in-place update must not touch tensors saved for backward.
                    u, v = u.clone(), v.clone()
                us.append(u)
                vs.append(v)
                work.append(W)
            with torch.no_grad():
                sig = torch.stack(
                    [torch.dot(u, W @ v) for W, u, v in zip(work, us, vs, strict=True)]
                )
                finite = torch.isfinite(sig)
                bad = [] if bool(finite.all()) else [i for i, ok in enumerate(finite) if not ok]
            self._cold.difference_update(range(len(work)))
            for i in bad:
                u, v = self._initial_vectors(work[i])
                getattr(self, f"u_{i}").copy_(u)
                getattr(self, f"v_{i}").copy_(v)
                self._cold.add(i)
                self._warn_once(
                    f"nonfinite/{i}",
                    f"SpectralRegularizer: the weight matrix '{self.matrix_names[i]}' holds "
                    f"NaN or Inf; its term is left out of the penalty while it does, and its "
                    f"power-iteration vectors are re-initialised.",
                )
            keep = [i for i in range(len(work)) if i not in set(bad)]
            if not keep:
                return torch.zeros((), dtype=work[0].dtype, device=device)
            penalty = _spectral_penalty(
                [work[i] for i in keep], [us[i] for i in keep], [vs[i] for i in keep], self.k
            )
            if not bool(torch.isfinite(penalty.detach())):  # every sigma is finite here
                top = max(range(len(sig)), key=lambda i: float(sig[i]) if i in keep else 0.0)
                raise InputError(
                    f"SpectralRegularizer: the penalty overflows "
                    f"{str(penalty.dtype).replace('torch.', '')}: sigma_max of "
                    f"'{self.matrix_names[top]}' is {float(sig[top]):.4g} and "
                    f"(sigma^k - 1)^2 with k={shown(self.k)} is too large to represent. "
                    f"Use a smaller 'k' (default 2) or rescale the weights."
                )
            return penalty

    @torch.no_grad()
    def sigmas(self) -> dict[str, float]:
        """The current estimates :math:`u^\\top W v` of each matrix's top singular value."""
        out = {}
        for i, (label, M) in enumerate(zip(self.matrix_names, self._matrices(), strict=True)):
            W = M.to(_work_dtype(M))
            u, v = self._vectors(i, W)
            out[label] = float(torch.dot(u, W @ v))
        return out

    def extra_repr(self) -> str:
        return (
            f"k={self.k}, matrices={len(self.matrix_names)}, "
            f"n_power_iterations={self.n_power_iterations}"
        )
