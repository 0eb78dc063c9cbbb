"""One weight tensor of a model, described without reading its data.

A :class:`WeightEntry` names a tensor (its full dotted name), gives its stored shape,
dtype and kind (how it becomes a matrix, see :mod:`infospec.spectra.conventions`), says
whether an analysis skips it and why, and loads it on demand.

Skip rules, checked in this order (the first that applies is the reason):

1. an empty tensor (a dimension of size 0);
2. a dtype that is not floating point (integer index buffers, masks, quantized codes),
   or one that torch cannot read;
3. a parameter with no data (on the ``meta`` device, or an uninitialised lazy one);
4. a 0-D or 1-D tensor (a bias, a norm scale), or a tensor with no known matrix layout;
5. a matrix whose smaller side is below ``min_dim`` (default :data:`DEFAULT_MIN_DIM` = 10,
   the ``min_evals`` of WeightWatcher 0.7's documentation; its code's default is 8:
   fewer than 10 singular values make no spectrum worth fitting). A source's entries use
   the flattened matrix of a convolution (``in_proj`` split into ``E x E``), the
   laxest reading; :func:`infospec.analyze` then applies the rule to each kernel
   position's ``out x in`` matrix when it reads convolutions per position or pooled (its
   default), through :func:`size_skip_reason`. WeightWatcher counts a pooled layer's
   eigenvalues instead (``min(out, in) * positions >= 8``), so it analyses, for example,
   a ``(1024, 1, 512, 1)`` kernel (512 matrices ``1024 x 1``) that infospec skips. A
   fused mixture-of-experts tensor ``(E, a, b)`` (kinds ``"experts"`` and
   ``"experts_transposed"``) gives ``E`` matrices, one per expert; the rule applies to
   each expert's ``out x in`` matrix.

Tied weights (one tensor under two names) are listed under both names; the second is
skipped with the reason ``same tensor as '<first name>' (tied weights)``. Before these
rules, the scale tensor of an FP8 weight, a lone ``float8_e8m0fnu`` tensor and an FP8
weight whose scale has no known layout are skipped as such (:mod:`infospec.sources.fp8`),
and so are the companion tensors of a packed bitsandbytes or GPTQ weight, whose entry has
the matrix's shape and a dtype naming the format (``bnb_nf4``, ``gptq_int4``:
:mod:`infospec.sources.packed`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import SourceError
from ..spectra.conventions import EXPERT_KINDS, KINDS, matrix_layout
from .packed import PACKED_DTYPES

__all__ = ["DEFAULT_MIN_DIM", "ENTRY_KINDS", "EXPERT_LEAVES", "WeightEntry", "fused_experts_kinds"]

#: Smallest matrix side analysed by default (WeightWatcher's ``min_evals`` default).
DEFAULT_MIN_DIM = 10

#: Kinds an entry can have: those of :data:`infospec.spectra.conventions.KINDS`, and
#: ``"other"`` for a tensor with no matrix convention (always skipped).
ENTRY_KINDS: tuple[str, ...] = (*KINDS, "other")

_READABLE_FLOATS = {
    "float64",
    "float32",
    "float16",
    "bfloat16",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
}

if TYPE_CHECKING:  # listing entries needs no torch; loading them does
    import torch

#: Other dtypes torch has (read, but skipped as not floating): integers, bool, complex,
#: quantized. A file's dtype outside these and :data:`_READABLE_FLOATS` cannot be read.
_OTHER_TORCH_DTYPES = {
    "bool",
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "complex32",
    "complex64",
    "complex128",
    "quint8",
    "qint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "float4_e2m1fn_x2",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    "bits8",
    "bits16",
    *(f"{sign}int{b}" for sign in ("", "u") for b in range(1, 8)),
}

Loader = Callable[[Any], "torch.Tensor"]


@dataclass(frozen=True, slots=True)
class WeightEntry:
    """A weight tensor of a model, read lazily.

    Attributes
    ----------
    name : str
        Full dotted name, as in the model's ``state_dict``
        (``"encoder.layer.0.attention.self.query.weight"``).
    shape : tuple of int
        Stored shape.
    dtype : str
        Stored dtype, as torch names it without the ``torch.`` prefix (``"bfloat16"``), or
        the file's own code when torch has no equivalent (``"F4"``).
    kind : str
        One of :data:`ENTRY_KINDS`: how the tensor becomes a matrix
        (:func:`infospec.spectra.conventions.as_matrices`).
    skip_reason : str or None
        Why an analysis skips this tensor, or ``None`` if it is analysed.
    origin : str
        Where it comes from: the file holding it, ``"module BertModel"`` or
        ``"state dict"``.
    loader : callable
        ``loader(device)`` returns the tensor; use :meth:`load`.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str
    skip_reason: str | None = None
    origin: str = ""
    loader: Loader | None = field(default=None, repr=False, compare=False)

    @property
    def skipped(self) -> bool:
        """Whether an analysis skips this tensor (see :attr:`skip_reason`)."""
        return self.skip_reason is not None

    @property
    def numel(self) -> int:
        """Number of scalars in the tensor."""
        return math.prod(self.shape)

    @property
    def matrix_shape(self) -> tuple[int, int] | None:
        """``(rows, cols)`` of each matrix under the default conventions, or ``None``.

        ``None`` for kind ``"other"``. A convolution is flattened here, as in the skip
        rule; :func:`infospec.analyze` reads it pooled by default, as ``out x in`` per
        kernel position: ``matrix_layout(entry.kind, entry.shape, conv="pooled")``. See
        :func:`infospec.spectra.conventions.matrix_layout`.
        """
        if self.kind == "other":
            return None
        layout = matrix_layout(self.kind, self.shape)
        return (layout.rows, layout.cols)

    def load(self, *, device: torch.device | str | None = None) -> torch.Tensor:
        """Read the tensor now, with its stored dtype (detached from any graph).

        A tensor from a file is read alone, through a memory map, so that a checkpoint
        larger than memory can be analysed one tensor at a time. An FP8 weight comes back
        dequantized to float32, its scale applied (:mod:`infospec.sources.fp8`), and so
        does a packed bitsandbytes or GPTQ weight (:mod:`infospec.sources.packed`).

        Parameters
        ----------
        device : torch.device or str, optional
            Where to put the tensor; by default a file's tensor is read to the CPU and a
            module's parameter stays where it is.

        Returns
        -------
        torch.Tensor
            Shape :attr:`shape`.

        Raises
        ------
        SourceError
            If the file cannot be read any more (moved, changed or corrupt since it was
            opened), naming the file and the tensor.
        """
        if self.loader is None:
            raise SourceError(f"The tensor '{self.name}' ({self.origin}) has no loader.")
        return self.loader(device)


def skip_reason_for(
    kind: str, shape: tuple[int, ...], dtype: str, *, min_dim: int, conv: str = "flatten"
) -> str | None:
    """The reason to skip a tensor of this kind, shape and dtype, or ``None`` (rules 1, 2, 4, 5).

    ``conv`` is the convolution mode of rule 5 (:data:`~infospec.spectra.conventions.CONV_MODES`).
    """
    if math.prod(shape) == 0:
        return f"empty tensor (shape {shape})"
    if dtype not in _READABLE_FLOATS and dtype not in PACKED_DTYPES:
        if dtype not in _OTHER_TORCH_DTYPES:
            return f"dtype {dtype} cannot be read as a torch tensor"
        return f"non-floating dtype {dtype} (an index, mask or quantized buffer, not a weight)"
    if kind == "other":
        ndim = len(shape)
        if ndim == 0:
            return "0-D tensor (scalar)"
        if ndim == 1:
            return "1-D tensor (bias or norm scale)"
        return f"{ndim}-D tensor with no known matrix layout"
    return size_skip_reason(kind, shape, min_dim=min_dim, conv=conv)


def size_skip_reason(
    kind: str, shape: tuple[int, ...], *, min_dim: int, conv: str = "flatten"
) -> str | None:
    """Rule 5 alone: why a tensor's matrices are too small under ``conv``, or ``None``.

    Each matrix of :func:`~infospec.spectra.conventions.matrix_layout` must have both
    sides at least ``min_dim``; per position or pooled, that is every kernel position's
    ``out x in`` matrix.

    Examples
    --------
    >>> size_skip_reason("conv2d", (1024, 1, 512, 1), min_dim=10, conv="pooled")
    'smaller side 1 < min_dim=10 (512 kernel-position matrices 1024 x 1)'
    >>> size_skip_reason("conv2d", (1024, 1, 512, 1), min_dim=10) is None  # 1024 x 512
    True
    """
    count, rows, cols = matrix_layout(kind, shape, conv=conv)
    if min(rows, cols) >= min_dim:
        return None
    what = f"matrix {rows} x {cols}"
    if count > 1 and kind.startswith("conv") and kind != "conv1d_transposed":
        what = f"{count} kernel-position matrices {rows} x {cols}"
    elif kind in EXPERT_KINDS:
        what = f"{count} expert matrices {rows} x {cols}"
    return f"smaller side {min(rows, cols)} < min_dim={min_dim} ({what})"


def skip_reason_under(entry: WeightEntry, *, min_dim: int, conv: str) -> str | None:
    """Why an analysis reading convolutions as ``conv`` skips ``entry``, or ``None``.

    A source applies ``min_dim`` to a flattened kernel (:attr:`WeightEntry.skip_reason`);
    read per position or pooled, each position's ``out x in`` matrix must pass it, a
    stricter rule whose reason replaces the flattened one. Other reasons stand.
    :func:`infospec.analyze` and ``infospec describe`` both decide through this function.

    Examples
    --------
    >>> e = WeightEntry("conv.weight", (1024, 1, 512, 1), "float32", "conv2d")
    >>> e.skip_reason is None, skip_reason_under(e, min_dim=10, conv="pooled")
    (True, 'smaller side 1 < min_dim=10 (512 kernel-position matrices 1024 x 1)')
    """
    reason = entry.skip_reason
    if conv != "flatten" and entry.kind != "other":
        flat = size_skip_reason(entry.kind, entry.shape, min_dim=min_dim)
        if reason is None or reason == flat:
            reason = size_skip_reason(entry.kind, entry.shape, min_dim=min_dim, conv=conv)
    return reason


def generic_kind(shape: tuple[int, ...]) -> str:
    """Kind of a tensor of unknown role: ``"matrix"`` if 2-D once leading 1s are dropped."""
    core = list(shape)
    while len(core) > 2 and core[0] == 1:
        core.pop(0)
    return "matrix" if len(core) == 2 else "other"


_CONV_BY_NDIM = {3: "conv1d", 4: "conv2d", 5: "conv3d"}

#: Names of the fused mixture-of-experts parameters of ``transformers`` 5 (``...experts.<leaf>``).
EXPERT_LEAVES: tuple[str, ...] = ("gate_up_proj", "down_proj", "up_proj", "gate_proj")


def is_fused_experts(name: str, shape: tuple[int, ...]) -> bool:
    """Whether a tensor is a fused experts weight: 3-D, named ``...experts.<EXPERT_LEAVES>``."""
    parts = name.split(".")
    return (
        len(shape) == 3
        and len(parts) >= 2
        and parts[-1] in EXPERT_LEAVES
        and parts[-2].lower().endswith("experts")
    )


def experts_transposed(shapes: dict[str, tuple[int, ...]]) -> bool | None:
    """Whether one experts module's fused tensors are stored ``(E, in, out)``, from their shapes.

    ``shapes`` maps the module's leaves (``"gate_up_proj"``, ``"down_proj"``...) to 3-D
    shapes. An expert maps ``H -> 2I`` (``gate_up_proj``, or ``H -> I`` for a separate
    ``up_proj``/``gate_proj``) and ``down_proj`` maps ``I -> H``. With ``gate_up_proj``
    ``(E, a, b)`` and ``down_proj`` ``(E, c, d)``: ``(E, out, in)`` (Mixtral, Qwen-MoE)
    has ``b == c`` and ``a == 2 d``; ``(E, in, out)`` (gpt-oss, Llama 4) has ``a == d``
    and ``b == 2 c``. Both cannot hold (it would need ``d = 0``). ``None`` when the
    shapes do not decide (no ``down_proj``, or only square or separate projections,
    whose two layouts have the same shapes).
    """
    down = shapes.get("down_proj")
    gate_up = shapes.get("gate_up_proj")
    if down is None or gate_up is None or down[0] != gate_up[0]:
        return None
    (_, a, b), (_, c, d) = gate_up, down
    plain = b == c and a == 2 * d
    flipped = a == d and b == 2 * c
    return flipped if plain != flipped else None


def fused_experts_kinds(shapes: dict[str, tuple[int, ...]]) -> dict[str, str]:
    """The kind of every fused experts tensor among ``shapes`` (full name to shape).

    Each experts module's tensors (same prefix) are read together: the orientation is
    :func:`experts_transposed` of their shapes, and where that does not decide,
    ``"experts_transposed"``, the layout of the checkpoints that store fused experts
    (gpt-oss, Llama 4; Mixtral's and Qwen-MoE's save one 2-D matrix per expert).

    Examples
    --------
    >>> fused_experts_kinds({"m.experts.gate_up_proj": (4, 96, 32),
    ...                      "m.experts.down_proj": (4, 32, 48)})  # Mixtral's layout
    {'m.experts.gate_up_proj': 'experts', 'm.experts.down_proj': 'experts'}
    """
    groups: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, shape in shapes.items():
        if is_fused_experts(name, tuple(shape)):
            prefix, _, leaf = name.rpartition(".")
            groups.setdefault(prefix, {})[leaf] = tuple(shape)
    out: dict[str, str] = {}
    for prefix, leaves in groups.items():
        flip = experts_transposed(leaves)
        kind = "experts" if flip is False else "experts_transposed"
        out.update((f"{prefix}.{leaf}", kind) for leaf in leaves)
    return out


def infer_kind(
    name: str,
    shape: tuple[int, ...],
    *,
    conv1d_modules: frozenset[str] = frozenset(),
    experts_kind: str | None = None,
) -> str:
    """Kind of a tensor known only by its name and shape (from a file or a state dict).

    In order: a 3-D ``...experts.gate_up_proj`` (or ``down_proj``, ``up_proj``,
    ``gate_proj``: a fused mixture-of-experts weight) is ``experts_kind`` when given, and
    otherwise ``"other"``: one tensor's name and shape do not tell ``(E, out, in)`` from
    ``(E, in, out)``, so a caller that sees the module's tensors decides
    (:func:`fused_experts_kinds`, as :class:`~infospec.sources.StateDictSource` does);
    a 2-D ``*in_proj_weight`` with rows divisible by 3 is
    ``"in_proj"``; a 2-D ``weight`` of a module named in ``conv1d_modules`` (``c_attn``,
    ``c_fc``... of a GPT-2-style model) is ``"conv1d_transposed"``; a 2-D ``weight`` of a
    module whose name contains ``embed`` (or is ``wte``/``wpe``) is ``"embedding"``; a 3-,
    4- or 5-D ``weight`` is a convolution kernel in PyTorch's ``(out, in, *k)`` layout;
    anything else is ``"matrix"`` if it is 2-D once leading axes of size 1 are dropped, and
    ``"other"`` otherwise.
    """
    parts = name.split(".")
    leaf = parts[-1]
    module = parts[-2] if len(parts) > 1 else ""
    ndim = len(shape)
    if experts_kind in EXPERT_KINDS and is_fused_experts(name, shape):
        return experts_kind
    if ndim == 2 and leaf.endswith("in_proj_weight") and shape[0] % 3 == 0:
        return "in_proj"
    if leaf == "weight":
        if ndim == 2 and module in conv1d_modules:
            return "conv1d_transposed"
        if ndim == 2 and ("embed" in module.lower() or module in ("wte", "wpe")):
            return "embedding"
        if ndim in _CONV_BY_NDIM:
            return _CONV_BY_NDIM[ndim]
    return generic_kind(shape)


def natural_key(name: str) -> tuple:
    """Sort key putting ``layer.2`` before ``layer.10``."""
    parts = []
    for chunk in _split_digits(name):
        parts.append((0, int(chunk), "") if chunk.isdigit() else (1, 0, chunk))
    return tuple(parts)


def _split_digits(name: str) -> list[str]:
    out: list[str] = []
    for ch in name:
        if out and ch.isdigit() == out[-1][-1].isdigit():
            out[-1] += ch
        else:
            out.append(ch)
    return out
