r"""Forward hooks that stream a model's activations into covariance accumulators.

One implementation serves the analysis report (:func:`infospec.analyze`) and the training
monitor: :class:`ActivationCovariances` attaches a forward hook to each chosen module and
feeds its output, as rows of features, into a :class:`StreamingCovariance` kept on the
model's device in float64.

Features of an output tensor:

* convolution outputs ``(batch, channels, *spatial)`` give one row per spatial position,
  with the channels as features;
* everything else ``(..., d)`` gives one row per leading index (tokens of a sequence);
* a tuple or dict output (Hugging Face blocks) contributes its first tensor.

Padding tokens can be excluded: call :meth:`ActivationCovariances.set_token_mask` with a
``(batch, seq)`` mask before the forward pass (the analysis does it with a batch's
``attention_mask``); rows of outputs whose leading shape matches the mask are filtered, and
an output of leading shape ``(1, seq)``, shared by every sequence of the batch (BERT's
position embeddings), is broadcast to the mask first: one row per real token, as for the
other layers, so that no layer's covariance depends on how the data is batched.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _torch_module

from .._errors import InfospecError, InputError
from .._validation import check_choice, check_positive
from .covariance import StreamingCovariance, _check_precision, batch_moments

__all__ = ["ActivationCovariances", "MappedCovariance", "first_tensor", "output_features"]

_CONV = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def first_tensor(output: Any) -> torch.Tensor | None:
    """The first tensor of a module output (a tensor, tuple/list, dict or ModelOutput)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            t = first_tensor(item)
            if t is not None:
                return t
    return None


def output_features(module: nn.Module, out: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Rows of features of one output; the flag tells whether rows follow (batch, seq) order."""
    if isinstance(module, _CONV) and out.ndim >= 3:
        return out.movedim(1, -1).reshape(-1, out.shape[1]), False
    if out.ndim == 1:
        return out.reshape(1, -1), False
    return out.reshape(-1, out.shape[-1]), True


def _plain_call(module: nn.Module) -> bool:
    """Whether ``module``'s output is its class's forward of its input, untouched.

    Only our hook on it, no pre-hook, no instance ``forward`` (wrappers such as
    accelerate's offloading replace it) and no global module hook
    (``register_module_forward_hook`` or its pre-hook: they run on every module, before its
    own, and may rewrite inputs and outputs). The shortcuts that read an output from its
    input (linear layers, embedding lookups) need it.
    """
    return (
        len(module._forward_hooks) == 1
        and not module._forward_pre_hooks
        and "forward" not in vars(module)
        and not _torch_module._global_forward_hooks
        and not _torch_module._global_forward_pre_hooks
    )


#: Linear modules whose forward is exactly ``F.linear(x, weight, bias)``.
_LINEAR = (nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear)

#: Input tensors whose batch moments are kept for the other layers of the same pass.
_SHARED_INPUTS = 4


class MappedCovariance(StreamingCovariance):
    r"""The covariance of :math:`y = Wx + b` made from a :class:`StreamingCovariance` of ``x``.

    A snapshot (the input accumulator may go on): :math:`n`, :math:`\bar y = W\bar x + b`
    and :math:`M_y = W M_x W^\top` in float64, so it merges and reduces like any
    accumulator. For an up-projection (:math:`d_\text{out} > d_\text{in}`)
    :meth:`eigenvalues` works on the input side: with :math:`M_x = V\Lambda V^\top` and
    :math:`B = W V \Lambda^{1/2}`, the nonzero eigenvalues of :math:`BB^\top = M_y` are
    those of the :math:`d_\text{in} \times d_\text{in}` matrix :math:`B^\top B`, and the
    other :math:`d_\text{out} - d_\text{in}` are exact zeros (the output spans at most
    :math:`d_\text{in}` directions): two :math:`d_\text{in}`-sized eigendecompositions
    instead of one of :math:`d_\text{out}` (MiniLM's 1536-wide layers: 64x fewer
    operations), with the same absolute error, :math:`O(\epsilon_{64}\lambda_{\max})`.
    """

    def __init__(
        self, source: StreamingCovariance, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> None:
        w = weight.to(source.scatter)
        # the state is set here, not by StreamingCovariance.__init__: its d_out x d_out
        # zeros (19 MB for a 1536-wide layer) would be replaced before they are read
        self.dim, self.precision = w.shape[0], source.precision
        self._w = w
        #: the input's state at the snapshot (None once this accumulator has changed)
        self._source: StreamingCovariance | None = source.copy()
        self.count = source.count
        self.mean = w @ source.mean
        if bias is not None:
            self.mean += bias.to(self.mean)
        self._scatter = None  # formed when first read: the eigenvalues need not

    @property
    def scatter(self) -> torch.Tensor:
        """The centred scatter of the outputs, :math:`W M_x W^\\top` (formed once)."""
        if self._scatter is None:
            m = self._w @ self._source.scatter @ self._w.mT
            self._scatter = (m + m.mT) / 2
        return self._scatter

    @scatter.setter
    def scatter(self, value: torch.Tensor) -> None:
        self._scatter = value

    def _merge(self, n_b: int, mean_b: torch.Tensor, scatter_b: torch.Tensor) -> None:
        self.scatter  # noqa: B018 - form it from the snapshot before it changes
        self._source = None
        super()._merge(n_b, mean_b, scatter_b)

    def reset(self) -> None:
        """Forget every sample (and the input-side snapshot)."""
        self.scatter  # noqa: B018
        self._source = None
        super().reset()

    def eigenvalues(self, *, ddof: int = 1) -> torch.Tensor:
        """Covariance eigenvalues, descending, non-negative; through the input when narrower."""
        d_out, d_in = self._w.shape
        if self._source is None or d_in >= d_out:
            return super().eigenvalues(ddof=ddof)
        lam, vecs = torch.linalg.eigh(self._source.covariance(ddof=ddof))
        b = (self._w @ vecs) * lam.clamp_min(0).sqrt()
        small = torch.linalg.eigvalsh(b.mT @ b).flip(-1).clamp_min(0)
        return torch.cat([small, small.new_zeros(d_out - d_in)])


class ActivationCovariances:
    r"""Streaming covariances of the outputs of named modules, fed by forward hooks.

    Parameters
    ----------
    modules : mapping of str to nn.Module
        Full dotted names and the modules to observe.
    max_tokens : int > 0, optional
        Cap on the rows taken from one output of one forward pass: a uniform random subset
        (seeded, so reproducible) when an output has more rows. ``None`` keeps every row,
        and then the result does not depend on how the data is split into batches.
    device : torch.device or str, optional
        Where the accumulators live; default: the device of each module's first output.
    seed : int, default 0
        Seed of the row subsampling.
    training_only : bool, default False
        Ignore forward passes of modules in evaluation mode (a validation loop inside a
        training run), as the training monitor needs.
    precision : {"auto", "float64", "float32"}, default "auto"
        Precision of the per-batch Gram products (:class:`StreamingCovariance`): ``"auto"``
        is float64 for float32 and float64 outputs, float32 for 16-bit ones.
    linear_inputs : bool, default False
        For a plain ``nn.Linear`` no wider at its input than at its output, accumulate the
        covariance of its *input* and map it at the end (see Notes). Only valid while the
        weights stay fixed (an evaluation pass, as :func:`infospec.analyze` makes); a
        weight changed in place or replaced between forward passes makes that layer an
        error. Off for training (the monitor).
    observe : {"outputs", "inputs"}, default "outputs"
        What each module's accumulator streams: its output (forward hooks), or its first
        input tensor (forward *pre*-hooks, called before the module runs), the covariance
        that activation-aware compression (:func:`infospec.compress`) whitens with. With
        ``"inputs"``, ``linear_inputs`` has no effect and :attr:`dtypes` holds the inputs'
        dtypes.

    Notes
    -----
    **Linear layers through their inputs.** For :math:`y = Wx + b` applied row by row, the
    mean and centred scatter of the outputs are exactly

    .. math::

        \bar y = W\bar x + b,\qquad M_y = W M_x W^\top ,

    so a layer ``d_in -> d_out`` can be accumulated at the cost of a :math:`d_\text{in}`-wide
    Gram product per row instead of a :math:`d_\text{out}`-wide one (an up-projection
    384 -> 1536 costs 16x less), and layers fed the *same* input tensor in one forward pass
    (the query, key and value projections of an attention block) share one Gram product:
    the batch moments of an input are computed once per pass and merged into each
    layer's accumulator. :math:`M_y` is formed in float64 when :attr:`accumulators` is
    read. It is the covariance of the exact outputs of the layer's weights: the rounding of
    the forward pass's own float32 product (a noise of about
    :math:`\epsilon_{32}^2\bar\lambda`, under the rounding floor of
    :func:`~infospec.analysis.activation_record`) is not in it. Used only for modules of
    exactly that type, without other forward hooks or pre-hooks and with their class's
    ``forward`` (wrappers such as accelerate's offloading replace it), so the output is
    the affine map of the input.

    **Lookups through their distinct rows.** The output of a plain ``nn.Embedding``
    (no other hook, its class's ``forward``) has equal rows for equal indices, so its batch
    moments are formed from one row per distinct index, weighted by how often it occurs
    (:func:`~infospec.spectra.covariance.batch_moments` with ``counts``); an output shared
    by the batch (leading shape ``(1, seq)``, as BERT's position embeddings) likewise
    counts each position's row once per real token there. The result is the same as from
    every row (to round-off); a token-type embedding of one type costs one row. Not with
    ``max_tokens``, which samples rows.

    A layer whose output is not a floating tensor, changes width between batches, or
    contains NaN/Inf stops accumulating; its reason is kept in :attr:`errors` and the other
    layers go on. Use as a context manager (or call :meth:`remove`) so the hooks are removed
    even when the forward pass raises.
    """

    def __init__(
        self,
        modules: Mapping[str, nn.Module],
        *,
        max_tokens: int | None = None,
        device: torch.device | str | None = None,
        seed: int = 0,
        training_only: bool = False,
        precision: str = "auto",
        linear_inputs: bool = False,
        observe: str = "outputs",
    ) -> None:
        if max_tokens is not None:
            max_tokens = check_positive(
                max_tokens, "max_tokens", "ActivationCovariances", integer=True
            )
        self.max_tokens = max_tokens
        self.device = device
        self.training_only = training_only
        self.precision = _check_precision(precision, "ActivationCovariances")
        self.linear_inputs = bool(linear_inputs)
        self.observe = check_choice(
            observe, "observe", "ActivationCovariances", ("outputs", "inputs")
        )
        self._accs: dict[str, StreamingCovariance] = {}
        self.errors: dict[str, str] = {}
        #: dtype of each layer's outputs (sets the rounding floor of its covariance spectrum)
        self.dtypes: dict[str, torch.dtype] = {}
        #: seconds spent in the hooks (row selection and accumulation; host time)
        self.seconds = 0.0
        #: layers accumulated through their inputs: name -> (module, weight, bias, versions)
        self._through_input: dict[str, tuple] = {}
        self._mapped: dict[str, tuple[int, StreamingCovariance]] = {}
        self._shared: dict[tuple, tuple[torch.Tensor, Any]] = {}
        self._mask: torch.Tensor | None = None
        self._rows: tuple[torch.Tensor, torch.Tensor] | None = None  # indices of its rows
        self._gen = torch.Generator().manual_seed(seed)
        self._handles = [
            module.register_forward_pre_hook(self._make_hook(name, module))
            if self.observe == "inputs"
            else module.register_forward_hook(self._make_hook(name, module))
            for name, module in modules.items()
        ]

    # -- hooks ---------------------------------------------------------------------------
    def _make_hook(self, name: str, module: nn.Module):
        def hook(_mod: nn.Module, inputs: Any, output: Any = None) -> None:
            if name in self.errors or (self.training_only and not module.training):
                return
            start = time.perf_counter()
            try:
                self._observe(name, module, inputs, output)
            except InfospecError as exc:
                self.errors[name] = str(exc)
            finally:
                self.seconds += time.perf_counter() - start

        return hook

    def _use_input(self, name: str, module: nn.Module, inputs: Any) -> bool:
        """Whether layer ``name`` is accumulated through its input (decided at its first pass)."""
        if name in self._through_input:
            return True
        if not self.linear_inputs or name in self._accs or type(module) not in _LINEAR:
            return False
        x = inputs[0] if isinstance(inputs, tuple) and len(inputs) == 1 else None
        weight, bias = module.weight, module.bias
        if (
            not isinstance(x, torch.Tensor)
            or not x.is_floating_point()
            or x.ndim < 1
            or x.shape[-1] != module.in_features
            or module.in_features > module.out_features
            or not _plain_call(module)
            or weight.device.type == "meta"
            or not weight.is_floating_point()
        ):
            return False
        self._through_input[name] = (module, weight, bias, self._versions(weight, bias))
        return True

    @staticmethod
    def _versions(weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[int, int]:
        return weight._version, -1 if bias is None else bias._version

    def _observe(self, name: str, module: nn.Module, inputs: Any, output: Any) -> None:
        observe_inputs = self.observe == "inputs"
        out = first_tensor(inputs if observe_inputs else output)
        if out is None or not out.is_floating_point():
            what = "no tensor" if out is None else f"a {out.dtype} tensor"
            raise InputError(
                f"layer '{name}' {'received' if observe_inputs else 'returned'} {what}; "
                f"only floating {self.observe} have a covariance spectrum"
            )
        if out.device.type == "meta":
            raise InputError(
                f"layer '{name}' {'received' if observe_inputs else 'returned'} a meta tensor "
                f"(no values): run the model on real data on a real device"
            )
        through_input = not observe_inputs and self._use_input(name, module, inputs)
        if through_input:
            mod, weight, bias, versions = self._through_input[name]
            if (
                mod.weight is not weight
                or mod.bias is not bias
                or self._versions(weight, bias) != versions
            ):
                raise InputError(
                    f"the weights of layer '{name}' changed between forward passes; "
                    f"ActivationCovariances(linear_inputs=True) needs fixed weights "
                    f"(use linear_inputs=False while training)"
                )
            source = inputs[0]
        else:
            source = out
        ids = None if observe_inputs else self._lookup_ids(module, inputs, out)
        moments = self._moments(module, source, ids)
        if moments is None:
            raise InputError(
                f"layer '{name}' produced NaN/Inf activations; its statistics stop here"
                + (" (seen in its input)" if through_input else "")
            )
        if moments[0] == 0:  # every row masked out
            return
        width = moments[1].shape[0]
        acc = self._accs.get(name)
        if acc is not None and width != acc.dim:
            raise InputError(
                f"layer '{name}' produced features of width {width} after "
                f"earlier batches of width {acc.dim}; batches must have a "
                f"consistent width"
            )
        if acc is None:
            acc = StreamingCovariance(width, device=moments[1].device, precision=self.precision)
            self._accs[name] = acc
            self.dtypes[name] = out.dtype
        acc._merge_moments(*moments)  # made by batch_moments: checked there

    def _lookup_ids(self, module: nn.Module, inputs: Any, out: torch.Tensor):
        """The indices a plain ``nn.Embedding`` looked up (one per output row), else None.

        Rows of equal index are equal, so the batch moments are formed from the distinct
        rows, each counted as often as it occurs (:func:`batch_moments` with ``counts``):
        a token-type embedding of one type costs one row instead of one per token.
        """
        if type(module) is not nn.Embedding or self.max_tokens is not None:
            return None
        ids = inputs[0] if isinstance(inputs, tuple) and len(inputs) == 1 else None
        if (
            not isinstance(ids, torch.Tensor)
            or ids.is_floating_point()
            or ids.is_complex()
            or ids.dtype == torch.bool
            or tuple(ids.shape) != tuple(out.shape[:-1])
            or not _plain_call(module)
        ):
            return None
        return ids

    def _moments(self, module: nn.Module, t: torch.Tensor, ids: torch.Tensor | None = None):
        """Batch moments of the rows of ``t``; shared by the layers fed the same tensor.

        ``t`` is the tensor the module received or returned, not a detached view: a
        detached tensor is a new object at every call, and the object is the key. ``ids``
        (see :meth:`_lookup_ids`) groups equal rows.
        """
        mask = self._mask
        conv = isinstance(module, _CONV)  # channels as features: other rows of one tensor
        key = (
            id(t), t.data_ptr(), t._version, tuple(t.shape), t.stride(), conv, id(mask),
            ids is None,
        )  # fmt: skip
        hit = self._shared.get(key)
        if hit is not None and hit[0] is t:
            return hit[1]
        rows, seq_ordered = output_features(module, t.detach())
        index = counts = None  # the rows kept (flat indices), and how often each counts
        if (
            mask is not None
            and seq_ordered
            and t.ndim >= 3
            and t.shape[1] == mask.shape[1]
            and t.shape[0] in (1, mask.shape[0])
        ):
            if mask.device != t.device:
                mask = self._mask = mask.to(t.device)
                key = (*key[:6], id(mask), key[7])
                self._rows = None
            if self._rows is None:
                # flat indices of the real tokens, their positions and the real tokens at
                # each position: a gather by index is about twice as fast as boolean
                # indexing, and made once per pass
                flat = mask.flatten().nonzero().squeeze(1)
                self._rows = (flat, flat % mask.shape[1], mask.sum(dim=0))
            per_token = rows.shape[0] // max(1, t.shape[0] * t.shape[1])  # (batch, seq, ..., d)
            if t.shape[0] == mask.shape[0]:
                index = self._rows[0]
            elif ids is None and self.max_tokens is None and per_token == 1:
                # an output shared by the batch (leading shape (1, seq), as position
                # embeddings): each position's row counts once per real token there, as
                # if broadcast, so that no layer's covariance depends on the batching
                index = self._rows[2].nonzero().squeeze(1)
                counts = self._rows[2].index_select(0, index)
            else:
                index = self._rows[1]  # broadcast: one row per real token
            if per_token > 1:  # outputs (batch, seq, k, d): the k rows of each real token
                step = torch.arange(per_token, device=index.device)
                index = (index[:, None] * per_token + step).flatten()
        if ids is not None:
            flat_ids = ids.detach().reshape(-1).to(rows.device)
            if index is None:
                index = torch.arange(flat_ids.shape[0], device=rows.device)
            else:
                flat_ids = flat_ids.index_select(0, index)
            distinct, inverse, counts = torch.unique(
                flat_ids, return_inverse=True, return_counts=True
            )
            # any row of each index will do: they are equal
            index = index.new_empty(distinct.shape[0]).scatter_(0, inverse, index)
        if index is not None:
            rows = rows.reshape(-1, rows.shape[-1]).index_select(0, index)
        if self.max_tokens is not None and rows.shape[0] > self.max_tokens:
            idx = torch.randperm(rows.shape[0], generator=self._gen)[: self.max_tokens]
            rows = rows[idx.to(rows.device)]
        moments = (
            batch_moments(
                rows,
                precision=self.precision,
                device=self.device or rows.device,
                counts=counts,
            )
            if rows.shape[0]
            else (0, None, None)
        )
        if len(self._shared) >= _SHARED_INPUTS:
            self._shared.pop(next(iter(self._shared)))
        self._shared[key] = (t, moments)  # holding t keeps its id from being reused
        return moments

    @property
    def accumulators(self) -> dict[str, StreamingCovariance]:
        """Each layer's covariance of its outputs (layers through their inputs mapped here)."""
        out: dict[str, StreamingCovariance] = {}
        for name, acc in self._accs.items():
            if name not in self._through_input:
                out[name] = acc
                continue
            cached = self._mapped.get(name)
            if cached is None or cached[0] != acc.count:
                cached = (acc.count, self._map_linear(name, acc))
                self._mapped[name] = cached
            out[name] = cached[1]
        return out

    def _map_linear(self, name: str, acc: StreamingCovariance) -> StreamingCovariance:
        _mod, weight, bias, _versions = self._through_input[name]
        return MappedCovariance(acc, weight.detach(), None if bias is None else bias.detach())

    def set_token_mask(self, mask: torch.Tensor | None) -> None:
        """Rows to keep in (batch, seq)-shaped outputs of the next forward pass (or None)."""
        self._mask = None if mask is None else mask.detach().to(torch.bool)
        self._rows = None
        self._shared.clear()

    # -- lifecycle -----------------------------------------------------------------------
    def remove(self) -> None:
        """Remove every hook; the model is left as it was. Safe to call twice."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._shared.clear()

    def reset(self) -> None:
        """Forget the accumulated statistics and errors (hooks stay attached)."""
        self._accs.clear()
        self._mapped.clear()
        self._through_input.clear()
        self._shared.clear()
        self.errors.clear()
        self.dtypes.clear()
        self.seconds = 0.0

    def __enter__(self) -> ActivationCovariances:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
