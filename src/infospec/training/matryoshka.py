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
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import shown
from .._errors import InputError
from .._validation import check_choice

__all__ = ["HEADS", "MatryoshkaLoss"]

#: Kinds of classifier head of :class:`MatryoshkaLoss`.
HEADS = ("separate", "shared")


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
        If ``dims`` is not a strictly increasing sequence of positive ints, ``weights``
        does not match it, neither or both of ``num_classes`` and ``criterion`` are given,
        or ``embed_dim`` is smaller than ``max(dims)``.

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
            if isinstance(m, bool) or not isinstance(m, int) or m < 1:
                raise InputError(
                    f"The 'dims' argument of {func} must hold ints >= 1; got {shown(m)} in "
                    f"{dims!r}."
                )
            sizes.append(m)
        if any(b <= a for a, b in itertools.pairwise(sizes)):
            raise InputError(
                f"The 'dims' argument of {func} must be strictly increasing (nested prefixes); "
                f"got {tuple(sizes)}."
            )
        self.dims = tuple(sizes)
        self.embed_dim = self.dims[-1] if embed_dim is None else int(embed_dim)
        if self.embed_dim < self.dims[-1]:
            raise InputError(
                f"The 'embed_dim' of {func} ({self.embed_dim}) is smaller than the largest "
                f"prefix ({self.dims[-1]})."
            )
        if weights is None:
            self.weights = (1.0,) * len(self.dims)
        else:
            w = [float(c) for c in weights]
            if len(w) != len(self.dims) or any(not c >= 0 for c in w):
                raise InputError(
                    f"The 'weights' argument of {func} must give one float >= 0 per prefix "
                    f"({len(self.dims)}); got {tuple(weights)!r}."
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
            if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
                raise InputError(
                    f"The 'num_classes' argument of {func} must be an int >= 2; got "
                    f"{num_classes!r}."
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
        prefix = z[..., :m]
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
            If ``z`` is not a floating tensor of shape (batch, embed_dim).
        """
        if not isinstance(z, torch.Tensor) or not z.is_floating_point() or z.ndim != 2:
            raise InputError(
                f"The 'z' argument of MatryoshkaLoss must be a floating tensor of shape "
                f"(batch, {self.embed_dim}); got "
                f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}."
            )
        if z.shape[1] != self.embed_dim:
            raise InputError(
                f"The 'z' argument of MatryoshkaLoss has width {z.shape[1]}; the loss was built "
                f"for embed_dim={self.embed_dim}."
            )
        total = z.new_zeros(())
        losses: dict[int, float] = {}
        for m, c in zip(self.dims, self.weights, strict=True):
            if self.criterion is not None:
                part = self.criterion(z[:, :m], target)
            else:
                part = F.cross_entropy(self.logits(z, m), target)
            losses[m] = float(part.detach())
            total = total + c * part
        self.last_losses = losses
        return total
