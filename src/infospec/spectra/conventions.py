r"""How a weight tensor becomes one or more matrices.

A singular-value spectrum needs a matrix, but weights come as kernels of many layouts.
This module states, once, how each kind of tensor is read as a matrix
:math:`W \in \mathbb{R}^{\text{rows} \times \text{cols}}`. The rule everywhere is
**out x in**: a row per output unit, a column per input coordinate, so that the
layer computes :math:`y = W x` (for a convolution, at one output position, on the
flattened input patch).

``"linear"``, stored ``(out, in)``
    ``W`` as is.
``"conv1d"``, ``"conv2d"``, ``"conv3d"``, stored ``(out, in/g, *k)``
    ``conv="flatten"`` (the default of this module): one matrix ``out x (in/g * prod(k))``,
    flattened in the order of ``torch.nn.functional.unfold`` (input channel slowest, then
    the kernel axes). ``conv="per_position"``: ``prod(k)`` matrices ``out x in/g``, one per
    kernel position, labelled ``name[i]``, ``name[i,j]`` or ``name[i,j,l]``.
    ``conv="pooled"`` (the default of :func:`infospec.analyze` and the CLI): the same
    ``prod(k)`` matrices as one stack of shape ``(prod(k), out, in/g)`` labelled ``name``,
    whose spectra are pooled into one ESD (see below).
``"conv_transpose1d"`` to ``"conv_transpose3d"``, stored ``(in, out/g, *k)``
    The first two axes swapped, then as a convolution: ``out/g x (in * prod(k))``.
``"conv1d_transposed"``, stored ``(in, out)``
    ``W.T``. The ``Conv1D`` of GPT-2-style models (Hugging Face ``transformers``) stores
    its weight transposed: it computes ``x @ W + b``.
``"in_proj"``, stored ``(3E, E)``
    ``split_in_proj=True`` (default): three ``E x E`` matrices ``name[q]``, ``name[k]``,
    ``name[v]``, the query, key and value projections packed by
    ``nn.MultiheadAttention``; otherwise one ``3E x E`` matrix.
``"embedding"``, stored ``(vocab, dim)``
    As is: a row per token.
``"matrix"``, stored ``(1, ..., 1, m, n)``
    As is, leading axes of size 1 dropped: a 2-D tensor of unknown role, typically read
    from a file.
``"experts"``, stored ``(E, out, in)``
    ``E`` matrices ``W_e = T[e]``, ``out x in``, labelled ``name[0]`` ... ``name[E-1]``:
    the fused mixture-of-experts weights of ``transformers`` 5 (``experts.gate_up_proj``,
    ``experts.down_proj``...) in the layout of Mixtral, Qwen2-MoE and Qwen3-MoE, whose
    expert ``e`` computes ``F.linear(x, T[e])``.
``"experts_transposed"``, stored ``(E, in, out)``
    ``E`` matrices ``W_e = T[e].T``, ``out x in``, labelled as above: the layout of
    gpt-oss and Llama 4 (``is_transposed=True`` in ``transformers``), whose expert
    computes ``x @ T[e]``, and of their checkpoints, which store the fused tensors so.

Every expert's matrix is its own layer: one report row each, whatever ``conv`` is, and
``min_dim`` applies to each. A fused ``gate_up_proj`` is read as one ``2I x in`` matrix
per expert, the gate and up projections together (as an LSTM's gates, below): in
Mixtral's and Qwen's layout its first ``I`` rows are the gate's and the last ``I`` the
up projection's, in gpt-oss's the even rows the gate's and the odd ones up's.

``g`` is the number of groups of a grouped convolution: its kernel is read as one
matrix, the groups' blocks side by side.

**Pooled convolutions (WeightWatcher's convention).** WeightWatcher 0.7.7 (its default
``pool=True``) reads a ``Conv2d`` kernel :math:`K \in \mathbb{R}^{o \times i \times k_h
\times k_w}` as its :math:`k_h k_w` kernel-position matrices :math:`W^{(p)}_{ab} =
K_{a,b,p}` and concatenates their eigenvalues into one empirical spectral density,

.. math:: \mathrm{ESD} = \bigcup_{p=1}^{k_h k_w} \{\sigma_j(W^{(p)})^2\}_{j=1}^{\min(o, i)},

:math:`k_h k_w \min(o, i)` eigenvalues in all; ``conv="pooled"`` gives exactly these
matrices (``W^{(p)}`` transposed or not has the same singular values), and
:func:`infospec.analyze` pools their spectra into one report row. Permuting the kernel
positions leaves it unchanged. Where WeightWatcher 0.7.7 differs:

* *Normalisation.* With its default ``conv2d_norm=True`` it multiplies every ``W^{(p)}``
  by :math:`\sqrt{c/2}`, where ``c`` is its ``conv2d_count``, which is 1 when pooling
  (it is the number of positions only with ``pool=False``): its conv eigenvalues are
  :math:`\sigma^2/2`. infospec keeps the unnormalised :math:`\sigma^2` of every matrix,
  so ``alpha`` and ``stable_rank`` are equal, while WeightWatcher's ``log_norm`` and
  ``log_spectral_norm`` are lower by :math:`\log_{10} 2 \approx 0.30103`, its
  ``alpha_weighted`` and ``log_alpha_norm`` by :math:`\alpha \log_{10} 2`, and its
  ``xmin`` is half of ``alpha_xmin`` (``conv2d_norm=False`` removes the difference).
* *N and M.* It takes ``N = out``, ``M = in`` and swaps them once per position whose
  matrix is wider than tall, so for ``out < in`` and an even number of positions it
  reports ``N < M`` (``Q < 1``); infospec's per-position :math:`N = \max(o, i)`,
  :math:`M = \min(o, i)` always.
* *Sizes.* It skips a pooled layer, without saying so in its result, when ``M * k_h k_w``
  is below ``min_evals`` (default 8) or above ``max_evals`` (default 15000), with its
  ``M`` as above; infospec has no upper limit and applies ``min_dim`` to each position's
  matrix (:func:`infospec.sources.entry.skip_reason_for`).
* *Conv1d.* It reads a ``torch.nn.Conv1d`` kernel ``(out, in, k)`` as a 3-D array:
  NumPy's batched SVD of the ``out`` matrices ``in x k``, of whose singular values it
  keeps the largest ``min(out, in, k)``; and it skips every Conv1d with
  ``min(out, in, k) < 8``, i.e. every kernel shorter than 8. infospec pools the ``k``
  positions' ``out x in`` matrices, as for ``Conv2d``. It skips ``Conv3d`` and transposed
  convolutions (no layer type); infospec pools them the same way.

**Recurrent layers.** ``torch.nn.LSTM`` stores ``weight_ih_l{n}`` as ``(4H, in)`` and
``weight_hh_l{n}`` as ``(4H, H)``, the input, forget, cell and output gates' matrices
stacked along the rows (``i, f, g, o``); ``torch.nn.GRU`` stacks three, ``(3H, .)`` for
the reset, update and new gates (``r, z, n``); ``_reverse`` names are a bidirectional
layer's backward direction. infospec reads each stacked tensor as one ``4H x in`` (or
``3H x in``) matrix of kind ``"matrix"``, the gates side by side as one map from the input
to all pre-activations; it does not split the gates. WeightWatcher 0.7.7 finds no layer
type for ``LSTM``/``GRU`` modules and skips them without a row.

Singular values do not depend on the orientation (``W`` and ``W.T`` share them), but
which vectors are the columns (whose rate-distortion a report measures) does; hence
the convention. The matrices returned are views of the input where
possible, with its dtype and device: convert them with the measures' usual rule
(float64 by default) before computing spectra.

Examples
--------
>>> import torch
>>> conv = torch.nn.Conv2d(3, 8, kernel_size=(2, 2))
>>> [(label, tuple(m.shape)) for label, m in as_matrices("conv2d", conv.weight, name="c")]
[('c', (8, 12))]
>>> [label for label, _ in as_matrices("conv2d", conv.weight, name="c", conv="per_position")]
['c[0,0]', 'c[0,1]', 'c[1,0]', 'c[1,1]']
>>> [(label, tuple(m.shape)) for label, m in as_matrices("conv2d", conv.weight, name="c",
...                                                      conv="pooled")]
[('c', (4, 8, 3))]

References
----------
C. H. Martin, T. S. Peng and M. W. Mahoney, "Predicting trends in the quality of
state-of-the-art neural networks without access to training or testing data", Nature
Communications 12, 4122 (2021); C. H. Martin and M. W. Mahoney, "Implicit
self-regularization in deep neural networks", JMLR 22(165), 2021. The behaviour listed
above is read from WeightWatcher 0.7.7's source (``WWLayer.conv2D_Wmats``,
``WeightWatcher.apply_normalize_Wmats``, ``WWLayerIterator.layer_supported``) and checked
against its output (``tests/analysis/test_weightwatcher_conv.py``,
``benchmarks/compare_conv.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .._checks import check_choice, shown
from .._errors import InputError

if TYPE_CHECKING:  # torch and NumPy load on first use: matrix_layout needs neither
    import numpy as np
    import torch

__all__ = [
    "ANALYSIS_CONV",
    "CONV_MODES",
    "EXPERT_KINDS",
    "KINDS",
    "MatrixLayout",
    "as_matrices",
    "matrix_layout",
]

#: Every kind of weight tensor that has a matrix convention.
KINDS: tuple[str, ...] = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "conv1d_transposed",
    "in_proj",
    "embedding",
    "matrix",
    "experts",
    "experts_transposed",
)

#: The kinds of a fused mixture-of-experts tensor ``(E, a, b)``: one matrix per expert.
EXPERT_KINDS: tuple[str, ...] = ("experts", "experts_transposed")

#: How a convolution kernel becomes matrices (see the module docstring).
CONV_MODES: tuple[str, ...] = ("pooled", "flatten", "per_position")

#: The convolution mode of :func:`infospec.analyze` and the CLI: WeightWatcher's.
ANALYSIS_CONV = "pooled"

_CONV_NDIM = {
    "conv1d": 3,
    "conv2d": 4,
    "conv3d": 5,
    "conv_transpose1d": 3,
    "conv_transpose2d": 4,
    "conv_transpose3d": 5,
}
_LAYOUT_TEXT = {
    "linear": "(out, in)",
    "conv1d": "(out, in, k)",
    "conv2d": "(out, in, kh, kw)",
    "conv3d": "(out, in, kd, kh, kw)",
    "conv_transpose1d": "(in, out, k)",
    "conv_transpose2d": "(in, out, kh, kw)",
    "conv_transpose3d": "(in, out, kd, kh, kw)",
    "conv1d_transposed": "(in, out)",
    "in_proj": "(3E, E)",
    "embedding": "(vocab, dim)",
    "matrix": "(m, n), possibly with leading axes of size 1",
    "experts": "(E, out, in)",
    "experts_transposed": "(E, in, out)",
}


class MatrixLayout(NamedTuple):
    """How many matrices a weight tensor gives, and their common shape.

    Attributes
    ----------
    count : int
        Number of matrices (``prod(k)`` for a convolution read per position or pooled,
        3 for a split ``in_proj``, ``E`` for fused experts, otherwise 1). Pooled, they
        come as one stack and give one spectrum.
    rows : int
        Rows of each matrix (outputs).
    cols : int
        Columns of each matrix (inputs).
    """

    count: int
    rows: int
    cols: int


def _check_kind(kind: Any, func: str) -> str:
    return check_choice(kind, "kind", func, KINDS)


def _shape_error(kind: str, shape: tuple[int, ...], func: str, dtype: str = "") -> InputError:
    got = f"shape {shape}" + (f" and dtype {dtype}" if dtype else "")
    return InputError(
        f"The 'tensor' argument of {func} must have the layout {_LAYOUT_TEXT[kind]} for "
        f"kind {kind!r}; got {got}. Check the kind, or pass the tensor as kind 'matrix' "
        f"if it is a plain 2-D matrix."
    )


def _layout(
    kind: str, shape: tuple[int, ...], conv: str, split_in_proj: bool, func: str, dtype: str = ""
) -> MatrixLayout:
    ndim = len(shape)
    if kind in _CONV_NDIM:
        if ndim != _CONV_NDIM[kind]:
            raise _shape_error(kind, shape, func, dtype)
        a, b, *k = shape
        out, inp = (b, a) if kind.startswith("conv_transpose") else (a, b)
        n_pos = math.prod(k)
        if conv == "flatten":
            return MatrixLayout(1, out, inp * n_pos)
        return MatrixLayout(n_pos, out, inp)
    if kind == "matrix":
        if ndim < 2 or any(s != 1 for s in shape[:-2]):
            raise _shape_error(kind, shape, func, dtype)
        return MatrixLayout(1, shape[-2], shape[-1])
    if kind in EXPERT_KINDS:
        if ndim != 3:
            raise _shape_error(kind, shape, func, dtype)
        n_exp, a, b = shape
        return MatrixLayout(n_exp, b, a) if kind == "experts_transposed" else MatrixLayout(*shape)
    if ndim != 2:
        raise _shape_error(kind, shape, func, dtype)
    if kind == "conv1d_transposed":
        return MatrixLayout(1, shape[1], shape[0])
    if kind == "in_proj":
        if shape[0] % 3:
            raise InputError(
                f"The 'tensor' argument of {func} must have a number of rows divisible by 3 "
                f"for kind 'in_proj' (packed query, key and value projections, (3E, E)); "
                f"got shape {shape}. Pass it as kind 'matrix' if it is not packed."
            )
        if split_in_proj:
            return MatrixLayout(3, shape[0] // 3, shape[1])
        return MatrixLayout(1, shape[0], shape[1])
    return MatrixLayout(1, shape[0], shape[1])


def matrix_layout(
    kind: str, shape: Sequence[int], *, conv: str = "flatten", split_in_proj: bool = True
) -> MatrixLayout:
    """Number and shape of the matrices :func:`as_matrices` gives, from the shape alone.

    It reads no tensor data, so a report can list layers and skip tiny ones before
    loading anything.

    Parameters
    ----------
    kind : str
        One of :data:`KINDS` (see the table in the module docstring).
    shape : sequence of int
        Shape of the stored tensor.
    conv : {"flatten", "per_position", "pooled"}, default "flatten"
        How a convolution kernel becomes matrices (as in :func:`as_matrices`, whose
        default this is; :func:`infospec.analyze` defaults to ``"pooled"``).
    split_in_proj : bool, default True
        Whether a packed ``in_proj`` weight gives three ``E x E`` matrices.

    Returns
    -------
    MatrixLayout
        ``(count, rows, cols)``: ``count`` matrices ``rows x cols`` (``"per_position"``
        and ``"pooled"`` give the same layout; pooled, the matrices come as one stack).

    Raises
    ------
    InputError
        If ``kind`` or ``conv`` is unknown, or ``shape`` does not fit the kind.

    Examples
    --------
    >>> matrix_layout("conv2d", (64, 3, 7, 7))
    MatrixLayout(count=1, rows=64, cols=147)
    >>> matrix_layout("conv2d", (64, 3, 7, 7), conv="per_position")
    MatrixLayout(count=49, rows=64, cols=3)
    >>> matrix_layout("conv2d", (64, 3, 7, 7), conv="pooled")
    MatrixLayout(count=49, rows=64, cols=3)
    >>> matrix_layout("in_proj", (96, 32))
    MatrixLayout(count=3, rows=32, cols=32)
    >>> matrix_layout("experts_transposed", (8, 64, 256))  # gpt-oss gate_up: 8 x (256 x 64)
    MatrixLayout(count=8, rows=256, cols=64)
    """
    func = "matrix_layout"
    kind = _check_kind(kind, func)
    conv = check_choice(conv, "conv", func, CONV_MODES)
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"The 'shape' argument of {func} must be a sequence of ints; got {shown(shape)}."
        ) from exc
    return _layout(kind, dims, conv, bool(split_in_proj), func)


def as_matrices(
    entry_or_kind: Any,
    tensor: torch.Tensor | np.ndarray,
    *,
    conv: str = "flatten",
    split_in_proj: bool = True,
    name: str | None = None,
) -> list[tuple[str, torch.Tensor]]:
    r"""Read a weight tensor as labelled 2-D matrices, out x in.

    For a convolution with kernel :math:`K \in \mathbb{R}^{o \times i \times k_1 \times
    \dots}` the flattened matrix is :math:`W_{a, (b, p)} = K_{a, b, p}`, so that the
    output at one position is :math:`W\,\mathrm{vec}(x_{\text{patch}})`; the per-position
    slices are :math:`W^{(p)}_{a b} = K_{a, b, p}`, and ``conv="pooled"`` stacks them,
    :math:`S_{p a b} = K_{a, b, p}`, for one spectrum pooled over the positions
    (WeightWatcher's convention; its normalisation is discussed in the module docstring,
    which has the full table of conventions).

    Parameters
    ----------
    entry_or_kind : WeightEntry or str
        A :class:`~infospec.sources.WeightEntry` (its ``kind`` and ``name`` are used) or
        one of :data:`KINDS`.
    tensor : torch.Tensor or numpy.ndarray, shape fitting the kind
        The stored weight, for example ``entry.load()``.
    conv : {"flatten", "per_position", "pooled"}, default "flatten"
        ``"flatten"``: one ``out x (in * prod(k))`` matrix per kernel;
        ``"per_position"``: one ``out x in`` matrix per kernel position;
        ``"pooled"``: those matrices as one stack ``(prod(k), out, in)``, one label.
    split_in_proj : bool, default True
        Split a packed attention ``in_proj`` weight ``(3E, E)`` into its query, key and
        value matrices.
    name : str, optional
        Base of the labels; by default the entry's name, or ``"W"`` for a bare kind.

    Returns
    -------
    list of (str, torch.Tensor)
        ``(label, matrix)`` pairs, each matrix of shape ``(rows, cols)`` given by
        :func:`matrix_layout` (for a pooled convolution one pair, a stack of shape
        ``(count, rows, cols)`` whose singular values, batched, make one spectrum), in
        the input's dtype and on its device (views where possible). Labels are ``name``,
        or ``name[q]``/``name[k]``/``name[v]`` for a split ``in_proj``, ``name[i,j]``
        for a per-position convolution slice and ``name[e]`` for expert ``e`` of a fused
        experts tensor (``T[e]``, or ``T[e].T`` for ``"experts_transposed"``).

    Raises
    ------
    InputError
        If the kind or ``conv`` is unknown, the tensor's shape does not fit the kind, the
        tensor is empty, or it is not a tensor or array.

    Examples
    --------
    >>> import torch
    >>> w = torch.arange(6.0).reshape(2, 3)          # a Conv1D weight (in=2, out=3)
    >>> as_matrices("conv1d_transposed", w, name="c_fc")[0][1]
    tensor([[0., 3.],
            [1., 4.],
            [2., 5.]])
    >>> [label for label, _ in as_matrices("in_proj", torch.zeros(12, 4), name="attn")]
    ['attn[q]', 'attn[k]', 'attn[v]']
    >>> [(label, tuple(m.shape)) for label, m in
    ...  as_matrices("experts_transposed", torch.zeros(2, 16, 40), name="down_proj")]
    [('down_proj[0]', (40, 16)), ('down_proj[1]', (40, 16))]
    """
    import numpy as np
    import torch

    from .._validation import describe

    func = "as_matrices"
    if isinstance(entry_or_kind, str):
        kind = entry_or_kind
        base = "W" if name is None else name
    elif hasattr(entry_or_kind, "kind"):
        kind = entry_or_kind.kind
        base = getattr(entry_or_kind, "name", "W") if name is None else name
    else:
        raise InputError(
            f"The 'entry_or_kind' argument of {func} must be a WeightEntry or a kind string "
            f"(one of {', '.join(repr(k) for k in KINDS)}); got {type(entry_or_kind).__name__}."
        )
    if kind == "other" and getattr(entry_or_kind, "skip_reason", None):
        raise InputError(
            f"The tensor '{base}' has no matrix convention: {entry_or_kind.skip_reason}."
        )
    kind = _check_kind(kind, func)
    conv = check_choice(conv, "conv", func, CONV_MODES)
    if isinstance(tensor, np.ndarray):
        tensor = torch.from_numpy(tensor)
    if not isinstance(tensor, torch.Tensor):
        raise InputError(
            f"The 'tensor' argument of {func} must be a torch tensor or NumPy array; "
            f"got {type(tensor).__name__}."
        )
    shape = tuple(tensor.shape)
    layout = _layout(
        kind, shape, conv, bool(split_in_proj), func, str(tensor.dtype).replace("torch.", "")
    )
    if tensor.numel() == 0:
        raise InputError(
            f"The 'tensor' argument of {func} must not be empty; got {describe(tensor)} "
            f"for '{base}'."
        )

    if kind in _CONV_NDIM:
        kernel = tensor.transpose(0, 1) if kind.startswith("conv_transpose") else tensor
        if conv == "flatten":
            return [(base, kernel.reshape(layout.rows, layout.cols))]
        k_shape = kernel.shape[2:]
        slices = kernel.reshape(layout.rows, layout.cols, layout.count)
        if conv == "pooled":
            return [(base, slices.permute(2, 0, 1))]
        out = []
        for p, idx in enumerate(np.ndindex(*k_shape)):
            label = f"{base}[{','.join(str(i) for i in idx)}]"
            out.append((label, slices[:, :, p]))
        return out
    if kind in EXPERT_KINDS:
        flip = kind == "experts_transposed"
        return [(f"{base}[{e}]", tensor[e].T if flip else tensor[e]) for e in range(layout.count)]
    if kind == "conv1d_transposed":
        return [(base, tensor.T)]
    if kind == "in_proj" and split_in_proj:
        q, k, v = tensor.chunk(3, dim=0)
        return [(f"{base}[q]", q), (f"{base}[k]", k), (f"{base}[v]", v)]
    if kind == "matrix":
        return [(base, tensor.reshape(layout.rows, layout.cols))]
    return [(base, tensor)]
