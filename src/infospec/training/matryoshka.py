r"""The nested-prefix loss of Matryoshka Representation Learning.

A Matryoshka embedding is trained so that every prefix :math:`z_{1:m}` of it, for
:math:`m` in a set of nested sizes :math:`\mathcal M`, is a good representation on its own:

.. math::

    \mathcal L(z, y) = \sum_{m \in \mathcal M} c_m\, \ell\big(W_m z_{1:m},\, y\big),

with a classifier :math:`W_m` per size (MRL), or one classifier :math:`W` whose first
:math:`m` columns serve the prefix of size :math:`m` (:math:`W_m = W_{:, 1:m}`, MRL-E, the
"efficient" variant with a single head), and :math:`\ell` the cross-entropy. Any other
per-prefix loss can be given as ``criterion(prefix, target)`` instead of a head.

The research notes claim that such codes "implicitly perform reverse water-filling
online": a prefix code is optimal when its coordinates come in decreasing order of
variance along the principal directions, which is what the KLT truncation
(:func:`infospec.transforms.truncation_curve`) achieves. ``infospec demo matryoshka``
measures whether training with this loss gets there.

References
----------
A. Kusupati, G. Bhatt, A. Rege et al., "Matryoshka Representation Learning", NeurIPS 2022.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import count_in_range, shown
from .._errors import InputError
from .._validation import check_choice, check_finite, check_not_meta, describe

__all__ = ["HEADS", "MatryoshkaLoss"]

#: Kinds of classifier head of :class:`MatryoshkaLoss`.
HEADS = ("separate", "shared")
#: Largest prefix size, ``embed_dim`` and ``num_classes`` (an int32 size).
MAX_SIZE = 2**31 - 1
#: Most parameters of the classifier heads together (4 GiB of float32).
MAX_HEAD_PARAMS = 2**30


class MatryoshkaLoss(nn.Module):
    r"""Weighted sum of a loss on each nested prefix of an embedding (MRL and MRL-E).

    Parameters
    ----------
    dims : sequence of int
        Prefix sizes :math:`\mathcal M`, strictly increasing, each in ``[1, embed_dim]``
        (e.g. ``(8, 16, 32, 64)``). The full size need not be among them.
    num_classes : int, optional
        Number of classes of the linear classifier heads (cross-entropy). Give it, or
        ``criterion``.
    embed_dim : int, optional
        Width of the embeddings; default ``max(dims)``. Needed by ``head="shared"``.
    head : {"separate", "shared"}, default "separate"
        One ``nn.Linear(m, num_classes)`` per prefix (MRL), or one
        ``nn.Linear(embed_dim, num_classes)`` whose first ``m`` input columns serve the
        prefix of size ``m`` (MRL-E: the bias is shared too).
    weights : sequence of float >= 0, optional
        :math:`c_m`, one per prefix; default all 1 (as in the paper). The loss is
        :math:`\sum_m c_m \ell_m` (not divided by their sum).
    criterion : callable, optional
        ``criterion(prefix, target) -> scalar tensor``, used instead of the heads (any
        per-prefix loss: contrastive, regression...). Then ``num_classes`` must be None.

    Attributes
    ----------
    heads : nn.ModuleList or None
        The classifier heads (one, for ``"shared"``), trainable parameters of this module:
        give them to the optimizer (``list(model.parameters()) + list(loss.parameters())``).
    last_losses : dict of int to float
        The per-prefix losses of the last call (detached), for logging.

    Raises
    ------
    InputError
        If ``dims`` is not a strictly increasing sequence of ints in [1, 2**31 - 1],
        ``weights`` is not a sequence of one finite float >= 0 per prefix, neither or both
        of ``num_classes`` and ``criterion`` are given, ``num_classes`` is not an int in
        [2, 2**31 - 1], ``embed_dim`` is not an int in [max(dims), 2**31 - 1], or the
        heads would hold more than :data:`MAX_HEAD_PARAMS` (2**30) parameters.

    Examples
    --------
    >>> import torch
    >>> loss_fn = MatryoshkaLoss((2, 4, 8), num_classes=3)
    >>> z = torch.randn(16, 8, requires_grad=True)
    >>> loss = loss_fn(z, torch.randint(0, 3, (16,)))
    >>> loss.backward()
    >>> sorted(loss_fn.last_losses)
    [2, 4, 8]
    """

    def __init__(
        self,
        dims: Sequence[int],
        num_classes: int | None = None,
        *,
        embed_dim: int | None = None,
        head: str = "separate",
        weights: Sequence[float] | None = None,
        criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        func = "MatryoshkaLoss"
        if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or not dims:
            raise InputError(
                f"The 'dims' argument of {func} must be a non-empty sequence of prefix sizes "
                f"such as (8, 16, 32); got {shown(dims)}."
            )
        sizes = []
        for m in dims:
            if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= MAX_SIZE:
                raise InputError(
                    f"The 'dims' argument of {func} must hold ints in [1, {MAX_SIZE}]; got "
                    f"{shown(m)} in {shown(dims)}."
                )
            sizes.append(m)
        if any(b <= a for a, b in itertools.pairwise(sizes)):
            raise InputError(
                f"The 'dims' argument of {func} must be strictly increasing (nested prefixes); "
                f"got {tuple(sizes)}."
            )
        self.dims = tuple(sizes)
        self.embed_dim = (
            self.dims[-1]
            if embed_dim is None
            else count_in_range(embed_dim, f"The 'embed_dim' argument of {func}", high=MAX_SIZE)
        )
        if self.embed_dim < self.dims[-1]:
            raise InputError(
                f"The 'embed_dim' of {func} ({self.embed_dim}) is smaller than the largest "
                f"prefix ({self.dims[-1]})."
            )
        if weights is None:
            self.weights = (1.0,) * len(self.dims)
        else:
            w = _weights_list(weights)
            if w is None or len(w) != len(self.dims):
                raise InputError(
                    f"The 'weights' argument of {func} must be a sequence of one finite float "
                    f">= 0 per prefix ({len(self.dims)}, as dims={self.dims}); got "
                    f"{shown(weights)}."
                )
            self.weights = tuple(w)
        self.head = check_choice(head, "head", func, HEADS)
        if (num_classes is None) == (criterion is None):
            raise InputError(
                f"{func} takes exactly one of 'num_classes' (linear classifier heads with "
                f"cross-entropy) or 'criterion' (a loss on each prefix)."
            )
        self.criterion = criterion
        self.heads: nn.ModuleList | None
        if num_classes is not None:
            if (
                isinstance(num_classes, bool)
                or not isinstance(num_classes, int)
                or not 2 <= num_classes <= MAX_SIZE
            ):
                raise InputError(
                    f"The 'num_classes' argument of {func} must be an int in [2, {MAX_SIZE}]; "
                    f"got {shown(num_classes)}."
                )
            widths = (self.embed_dim,) if self.head == "shared" else self.dims
            n_params = sum(m + 1 for m in widths) * num_classes
            if n_params > MAX_HEAD_PARAMS:
                raise InputError(
                    f"The classifier heads of {func} would hold {n_params:.3g} parameters "
                    f"(num_classes={num_classes} x {len(widths)} head(s) of widths up to "
                    f"{widths[-1]}), more than {MAX_HEAD_PARAMS:.3g}. Use fewer classes or "
                    f"smaller 'dims', head='shared', or a 'criterion'."
                )
            if self.head == "shared":
                self.heads = nn.ModuleList([nn.Linear(self.embed_dim, num_classes)])
            else:
                self.heads = nn.ModuleList([nn.Linear(m, num_classes) for m in self.dims])
        else:
            self.heads = None
        self.last_losses: dict[int, float] = {}

    def logits(self, z: torch.Tensor, m: int) -> torch.Tensor:
        """The head's logits on the prefix of size ``m`` (one of :attr:`dims`)."""
        if self.heads is None:
            raise InputError("MatryoshkaLoss.logits needs heads (num_classes), not a criterion.")
        if m not in self.dims:
            raise InputError(f"MatryoshkaLoss.logits: {m} is not one of the prefixes {self.dims}.")
        lin = self.heads[0]
        prefix = z[..., :m].to(lin.weight.dtype)  # float64/16 embeddings, float32 heads
        if self.head == "shared":
            lin = self.heads[0]
            return F.linear(prefix, lin.weight[:, :m], lin.bias)
        return self.heads[self.dims.index(m)](prefix)

    def forward(self, z: torch.Tensor, target: Any) -> torch.Tensor:
        """The weighted sum of the per-prefix losses, a scalar tensor.

        Parameters
        ----------
        z : torch.Tensor, shape (batch, embed_dim)
            Embeddings.
        target : torch.Tensor
            Class indices of shape (batch,) for the heads, or whatever ``criterion`` takes.

        Raises
        ------
        InputError
            If ``z`` is not a finite floating tensor of shape (batch, embed_dim) with
            batch >= 1, is a meta tensor or is not on the heads' device; with heads, if
            ``target`` is not an integer tensor of shape (batch,) with values in
            ``[0, num_classes)``; with a criterion, if it does not return a 0-d tensor.
        """
        func = "MatryoshkaLoss"
        if not isinstance(z, torch.Tensor) or not z.is_floating_point() or z.ndim != 2:
            raise InputError(
                f"The 'z' argument of MatryoshkaLoss must be a floating tensor of shape "
                f"(batch, {self.embed_dim}); got "
                f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}."
            )
        check_not_meta(z, "z", func)
        if z.shape[1] != self.embed_dim:
            raise InputError(
                f"The 'z' argument of MatryoshkaLoss has width {z.shape[1]}; the loss was built "
                f"for embed_dim={self.embed_dim}."
            )
        if z.shape[0] == 0:
            raise InputError(f"The 'z' argument of {func} is an empty batch: {describe(z)}.")
        check_finite(z, "z", func)
        if self.heads is not None:
            self._check_target(z, target)
        total = z.new_zeros(())
        losses: dict[int, float] = {}
        for m, c in zip(self.dims, self.weights, strict=True):
            if self.criterion is not None:
                part = self.criterion(z[:, :m], target)
                if not isinstance(part, torch.Tensor) or part.ndim != 0:
                    got = describe(part) if isinstance(part, torch.Tensor) else shown(part)
                    raise InputError(
                        f"The 'criterion' of {func} must return a 0-d tensor (a scalar loss, "
                        f"e.g. a mean); on the prefix of size {m} it returned {got}."
                    )
            else:
                part = F.cross_entropy(self.logits(z, m), target)
            losses[m] = float(part.detach())
            total = total + c * part
        self.last_losses = losses
        return total

    def _check_target(self, z: torch.Tensor, target: Any) -> None:
        """Class indices for the heads: an integer tensor (batch,) in [0, num_classes)."""
        func = "MatryoshkaLoss"
        lin = self.heads[0]
        if z.device != lin.weight.device:
            raise InputError(
                f"The 'z' argument of {func} is on {z.device} but the heads are on "
                f"{lin.weight.device}; move the loss there too (loss_fn.to(z.device))."
            )
        n_classes = lin.out_features
        if not isinstance(target, torch.Tensor) or target.dtype == torch.bool:
            got = describe(target) if isinstance(target, torch.Tensor) else shown(target)
            raise InputError(
                f"The 'target' argument of {func} must be a tensor of class indices of shape "
                f"({z.shape[0]},) or of class probabilities of shape ({z.shape[0]}, "
                f"{n_classes}), as F.cross_entropy takes; got {got}."
            )
        check_not_meta(target, "target", func)
        if target.device != z.device:
            raise InputError(
                f"The 'target' argument of {func} is on {target.device} but 'z' is on "
                f"{z.device}; move it there (target.to(z.device))."
            )
        if target.is_floating_point():  # class probabilities (soft or one-hot labels)
            if target.shape != (z.shape[0], n_classes):
                raise InputError(
                    f"The 'target' argument of {func} holds floats, so it must be class "
                    f"probabilities of shape ({z.shape[0]}, {n_classes}); got "
                    f"{describe(target)}. Class indices are an integer tensor."
                )
            check_finite(target, "target", func)
            return
        if target.is_complex() or target.shape != (z.shape[0],):
            raise InputError(
                f"The 'target' argument of {func} must be an integer tensor of class indices "
                f"of shape ({z.shape[0]},) (one per row of z); got {describe(target)}."
            )
        # F.cross_entropy's ignore_index (-100 by default) marks rows to leave out
        bad = ((target < 0) | (target >= n_classes)) & (target != _IGNORE_INDEX)
        if bool(bad.any()):
            first = int(bad.nonzero()[0, 0])
            raise InputError(
                f"The 'target' argument of {func} must hold class indices in "
                f"[0, {n_classes - 1}] (num_classes={n_classes}) or {_IGNORE_INDEX} (ignored, "
                f"as F.cross_entropy's ignore_index); got {int(target[first])} at index "
                f"{first}."
            )


#: F.cross_entropy's default ignore_index, which the heads' loss leaves out.
_IGNORE_INDEX = -100


def _weights_list(weights: Any) -> list[float] | None:
    """``weights`` as a list of finite floats >= 0, or None if it is not one."""
    if isinstance(weights, (str, bytes)):
        return None
    try:
        items = list(weights)
    except TypeError:
        return None
    out = []
    for c in items:
        if isinstance(c, torch.Tensor) and c.numel() == 1 and c.device.type != "meta":
            c = c.item()  # a weight given as a 0-d tensor
        if isinstance(c, bool) or not isinstance(c, numbers.Real):
            return None
        c = float(c)
        if not (math.isfinite(c) and c >= 0):
            return None
        out.append(c)
    return out
