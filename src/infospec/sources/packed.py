"""Packed integer weights (bitsandbytes, GPTQ) found by their tensors, dequantized at load.

A quantized checkpoint stores each linear layer as integer codes and the tensors that turn
them back into numbers. infospec lists such a layer as one entry with the matrix's own
``out x in`` shape and a dtype naming the format, and :meth:`WeightEntry.load
<infospec.sources.WeightEntry.load>` returns the dequantized matrix in float32; the
companion tensors are listed as skipped, each naming its weight. The layouts read, as their
writers document and write them (tested on files written by ``bitsandbytes`` 0.50 through
``transformers``, and by ``gptqmodel`` 7.7):

**bitsandbytes 4-bit** (``load_in_4bit``; ``bnb_4bit_quant_type`` ``"nf4"`` or ``"fp4"``;
dtype ``bnb_nf4``/``bnb_fp4``). ``<w>`` holds the codes, two per byte, the first in the
high nibble (any ``bnb_4bit_quant_storage`` dtype, read as bytes); ``<w>.quant_state.
bitsandbytes__nf4`` (or ``__fp4``) is a JSON object in bytes with the matrix ``shape``,
``blocksize`` and, for double quantization, ``nested_blocksize`` and ``nested_offset``;
``<w>.quant_map`` holds the 16 code values and ``<w>.absmax`` one scale per block of
``blocksize`` codes. With double quantization (``bnb_4bit_use_double_quant``) ``absmax``
is itself 8-bit: ``absmax = nested_quant_map[absmax] * nested_absmax[block] +
nested_offset``, one ``nested_absmax`` per ``nested_blocksize`` scales. Then, over the
flattened matrix, ``W[i] = quant_map[code[i]] * absmax[i // blocksize]``.

**bitsandbytes 8-bit** (``load_in_8bit``, LLM.int8; dtype ``bnb_int8``). An ``int8``
matrix ``<m>.weight`` beside a row scale ``<m>.SCB`` of ``out`` elements:
``W = weight * SCB[:, None] / 127``. ``<m>.weight_format``, when present, must be 0 (row
major); the tiled GPU layouts of older versions are skipped with the reason.

**GPTQ** (AutoGPTQ, GPTQModel, optimum; dtype ``gptq_int<b>``, ``b`` in 2, 3, 4, 8). A
module ``<m>`` holds ``qweight`` (int32, ``(in*b/32, out)``: the codes of each column
packed along the input dimension, value ``j`` of a word at bits ``b*j``, a 3-bit column a
contiguous little-endian bit stream), ``qzeros`` (int32, ``(G, out*b/32)``, packed the
same way along the output dimension), ``scales`` (``(G, out)``) and ``g_idx`` (``(in,)``,
the group of each input, absent when it is ``i // (in/G)``). The entry is named
``<m>.weight``, as the layer's unquantized weight is, and holds
``W[o, i] = scales[g, o] * (q[i, o] - z[g, o])`` with ``g = g_idx[i]``, where ``z`` is the
stored zero in ``gptq_v2`` (``quantization_config.checkpoint_format``) and in the ``gptq``
format (v1, what AutoGPTQ and GPTQModel write by default) the stored word plus one in
every field (``0x11111111`` at 4 bits, ``0x55555555`` at 2, ``0x01010101`` at 8) modulo
2**32, undoing GPTQModel's
subtraction of one from every field of a word at once, borrows included; a 3-bit v1 zero
is the stored field plus one. The number of bits is ``32 * qzeros.shape[1] / out`` (checked
against ``quantization_config.bits`` when a folder's config gives it). A loaded GPTQ module
holds v2 zeros when its ``qzero_format()`` or its class's ``REQUIRES_FORMAT_V2`` says so
(GPTQModel converts at load); an exllama, Marlin, BitBLAS, Machete or QQQ module is skipped,
its kernel having rearranged ``qweight``.

A module with ``qweight`` and ``qzeros`` in another layout (AWQ's ``(in, out*b/32)``) or
with other bits is listed as skipped with the reason; so is a layer whose companion tensors
are missing or have shapes that do not fit its codes. What can only be checked on the data
(a ``g_idx`` out of range, a non-finite scale) makes its entry an error row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .._errors import InfospecError, SourceError
from .._text import printable

__all__ = ["PACKED_DTYPES", "PackedPlan", "packed_plan"]

#: Dtype labels of packed weights (each loads as float32).
PACKED_DTYPES = frozenset(
    {"bnb_nf4", "bnb_fp4", "bnb_int8", "gptq_int2", "gptq_int3", "gptq_int4", "gptq_int8"}
)
_INTEGERS = frozenset({"uint8", "int8", "int16", "int32"})
_STATE = ".quant_state.bitsandbytes__"
#: Largest quant_state tensor read while listing (bitsandbytes writes about 200 bytes).
_MAX_STATE_BYTES = 1 << 16
_GPTQ_BITS = (2, 3, 4, 8)
#: Largest block size of a bitsandbytes 4-bit quant_state (bitsandbytes uses 32 to 4096).
_MAX_BLOCK = 1 << 16
_FLOATS = frozenset({"float32", "float16", "bfloat16", "float64"})


class _Packed(NamedTuple):
    stored: str  # the tensor holding the codes
    shape: tuple[int, int]
    dtype: str
    parts: dict[str, str]  # role -> tensor name
    params: dict[str, Any]


class PackedPlan(NamedTuple):
    """The packed weights of a source, by entry name, and the skip reasons of their parts.

    Attributes
    ----------
    weights : dict of str to _Packed
        Entry name to how it is stored: the tensor with the codes (``stored``), the
        matrix's ``shape`` and dtype label, the companion tensors and the parameters.
    renamed : dict of str to str
        Stored name of the codes to the entry name, where they differ (GPTQ's ``qweight``
        listed as ``weight``).
    reasons : dict of str to str
        Skip reasons by stored name: companion tensors, and layers that cannot be read.
    """

    weights: dict[str, _Packed]
    renamed: dict[str, str]
    reasons: dict[str, str]

    def loader(self, name: str, loader_of: Callable[[str], Callable]) -> Callable:
        """The dequantizing loader of the packed entry ``name``."""
        spec = self.weights[name]
        decode = _DECODERS[spec.dtype]

        def load(device: Any = None):
            parts = {role: loader_of(t)(device) for role, t in spec.parts.items()}
            return decode(name, loader_of(spec.stored)(device), parts, spec)

        return load


EMPTY_PLAN = PackedPlan({}, {}, {})


def may_hold_packed(dtypes, names: list[str]) -> bool:
    """Whether tensors of these dtypes and names can include a packed weight.

    An integer dtype and a name with a marker of a layout (``.quant_state.bitsandbytes__``,
    a name ending in ``.SCB`` or ``.qweight``), looked for in one joined string: a few
    hundredths of a second for a million names, where a loop over them takes ten times
    that. A name holding a newline can only make it say yes.
    """
    if not any(d in _INTEGERS for d in dtypes):
        return False
    text = "\n".join(names)
    return _STATE in text or any(
        f"{end}\n" in text or text.endswith(end) for end in (".SCB", ".qweight")
    )


def packed_plan(
    tensors: Mapping[str, tuple[tuple[int, ...], str]],
    read: Callable[[str], Any],
    *,
    quantization: Mapping[str, Any] | None = None,
) -> PackedPlan:
    """Find the packed weights among ``tensors`` (see the module docstring).

    Parameters
    ----------
    tensors : mapping of str to (shape, dtype)
        Every tensor of the source by full name; dtypes as torch names them.
    read : callable
        ``read(name)`` returns a tensor's data; called only for bitsandbytes'
        ``quant_state`` tensors (about 200 bytes, at most 64 KiB: the JSON with the shape)
        and ``weight_format`` scalars. A read that fails makes a skip reason.
    quantization : mapping, optional
        The model config's ``quantization_config`` (GPTQ ``bits``, ``checkpoint_format``).

    Returns
    -------
    PackedPlan
    """
    weights: dict[str, _Packed] = {}
    renamed: dict[str, str] = {}
    reasons: dict[str, str] = {}
    q = quantization if isinstance(quantization, Mapping) else {}
    for name, (_shape, dtype) in tensors.items():
        if _STATE in name:
            weight, _, qtype = name.partition(_STATE)
            found = _bnb4(weight, qtype, name, tensors, read)
        elif name == "SCB" or name.endswith(".SCB"):  # bare: a module's own tensors
            found = _bnb8(name[: -len("SCB")].removesuffix("."), tensors, read)
        elif (name == "qweight" or name.endswith(".qweight")) and dtype in _INTEGERS:
            found = _gptq(name[: -len("qweight")].removesuffix("."), tensors, q)
        else:
            continue
        if found is None:
            continue
        entry, packed, part_reason, reason = found
        for part in packed.parts.values():
            reasons[part] = part_reason
        if reason is not None:
            reasons[packed.stored] = reason
            continue
        weights[entry] = packed
        if packed.stored != entry:
            renamed[packed.stored] = entry
    return PackedPlan(weights, renamed, reasons)


# --- bitsandbytes 4-bit --------------------------------------------------------------


def _bnb4(weight, qtype, state_name, tensors, read):
    label = f"bnb_{qtype}"
    part = f"part of the bitsandbytes {qtype} weight '{weight}' (dequantized with it)"
    if qtype not in ("nf4", "fp4") or weight not in tensors:
        return None
    parts = {"state": state_name}
    for role in ("absmax", "quant_map", "nested_absmax", "nested_quant_map"):
        if f"{weight}.{role}" in tensors:
            parts[role] = f"{weight}.{role}"

    def skip(why):
        return (
            weight,
            _Packed(weight, (0, 0), label, parts, {}),
            part,
            (f"bitsandbytes {qtype} weight whose {why}"),
        )

    state_shape, state_dtype = tensors[state_name]
    if state_dtype != "uint8" or len(state_shape) != 1 or state_shape[0] > _MAX_STATE_BYTES:
        return skip(f"quant_state '{state_name}' is not a uint8 vector of at most 64 KiB")
    try:
        raw = read(state_name).contiguous().cpu().numpy().tobytes()
    except Exception as exc:  # a tensor with no data (meta device), a damaged file
        return skip(f"quant_state '{state_name}' cannot be read ({printable(str(exc), 80)})")
    from .safetensors_format import _loads  # the hardened parser of untrusted JSON

    try:
        state = _loads(raw.decode("utf-8"), SourceError, lambda exc: f"character {exc.pos}")
    except UnicodeDecodeError as exc:
        return skip(f"quant_state '{state_name}' is not JSON ({printable(str(exc), 80)})")
    except SourceError as exc:  # invalid, a key twice, too deep, a huge integer
        return skip(f"quant_state '{state_name}' is not JSON that can be read: it {exc}")
    if not isinstance(state, dict):
        return skip(f"quant_state '{state_name}' is not a JSON object")
    shape = state.get("shape")
    blocksize = state.get("blocksize")
    if not (
        isinstance(shape, list)
        and len(shape) == 2
        and all(_positive(s) for s in shape)
        and _blocksize(blocksize)
    ):
        return skip(
            f"quant_state '{state_name}' lacks a 2-D 'shape' and a 'blocksize' in "
            f"[1, {_MAX_BLOCK}] "
            f"(found shape {printable(repr(shape), 60)}, blocksize "
            f"{printable(repr(blocksize), 20)})"
        )
    n = shape[0] * shape[1]
    stored_shape, stored_dtype = tensors[weight]
    if math.prod(stored_shape) * _itemsize(stored_dtype) != -(-n // 2):
        return skip(
            f"codes '{weight}' ({stored_shape}, {stored_dtype}) do not hold the "
            f"{-(-n // 2)} bytes of two 4-bit codes per element of shape {tuple(shape)}"
        )
    blocks = -(-n // blocksize)
    nested = "nested_absmax" in parts
    need = {"absmax": (blocks,), "quant_map": (16,)}
    if nested:
        nb = state.get("nested_blocksize")
        offset = state.get("nested_offset")
        if (
            not _blocksize(nb)
            or not isinstance(offset, int | float)
            or isinstance(offset, bool)
            or not _finite(offset)
        ):
            return skip(
                f"quant_state '{state_name}' lacks the 'nested_blocksize' and "
                f"'nested_offset' of its nested absmax"
            )
        need["nested_absmax"] = (-(-blocks // nb),)
        need["nested_quant_map"] = (256,)
    for role, size in need.items():
        t = parts.get(role)
        if t is None:
            return skip(f"tensor '{weight}.{role}' is missing")
        if math.prod(tensors[t][0]) != size[0]:
            return skip(f"'{t}' has {math.prod(tensors[t][0])} elements, not {size[0]}")
        # 8-bit codes where double quantization made them so, else floating scales
        want = "uint8" if role == "absmax" and nested else "floating"
        if (tensors[t][1] == "uint8") != (want == "uint8") or (
            want == "floating" and tensors[t][1] not in _FLOATS
        ):
            return skip(f"'{t}' has dtype {tensors[t][1]}, not {want}")
    params = {"blocksize": blocksize, "n": n}
    if nested:
        params.update(nested_blocksize=nb, nested_offset=float(offset))
    return weight, _Packed(weight, (shape[0], shape[1]), label, parts, params), part, None


def _decode_bnb4(name, codes, parts, spec):
    import torch

    p = spec.params
    n, bs = p["n"], p["blocksize"]
    codes = codes.contiguous().view(torch.uint8).reshape(-1)
    quant_map = parts["quant_map"].float().reshape(-1)
    byte = torch.arange(256, device=codes.device)
    table = torch.stack((quant_map[byte >> 4], quant_map[byte & 15]), dim=1)  # a byte's 2
    values = torch.index_select(table, 0, codes.int()).reshape(-1)[:n]
    absmax = parts["absmax"]
    if "nested_absmax" in parts:
        nested = parts["nested_quant_map"].float().reshape(-1)
        absmax = torch.index_select(nested, 0, absmax.reshape(-1).int())
        _blockwise_(absmax, parts["nested_absmax"].float().reshape(-1), p["nested_blocksize"])
        absmax += p["nested_offset"]
    return _blockwise_(values, absmax.float().reshape(-1), bs).reshape(spec.shape)


def _blockwise_(values, scale, block):
    """``values[i] *= scale[i // block]`` in place over a flat tensor (no padded copy)."""
    n = values.numel()
    full = n // block * block
    values[:full].view(-1, block).mul_(scale[: full // block].view(-1, 1))
    if full < n:
        values[full:].mul_(scale[full // block])
    return values


# --- bitsandbytes 8-bit (LLM.int8) -----------------------------------------------------


def _bnb8(module, tensors, read):
    weight = _join(module, "weight")
    if weight not in tensors or tensors[weight][1] != "int8":
        return None
    scb = _join(module, "SCB")
    parts = {"SCB": scb}
    fmt = _join(module, "weight_format")
    part = f"part of the bitsandbytes int8 weight '{weight}' (dequantized with it)"
    if fmt in tensors:
        parts["format"] = fmt
    packed = _Packed(weight, (0, 0), "bnb_int8", parts, {})
    shape = tensors[weight][0]
    if tensors[scb][1] not in _FLOATS:
        return weight, packed, part, f"bitsandbytes int8 weight whose '{scb}' is not floating"
    if len(shape) != 2 or tensors[scb][0] not in ((shape[0],), (shape[0], 1)):
        rows = f"({shape[0]},)" if len(shape) == 2 else "one per row of a 2-D weight"
        why = (
            f"bitsandbytes int8 weight of shape {shape} whose row scale '{scb}' has shape "
            f"{tensors[scb][0]}, not {rows}"
        )
        return weight, packed, part, why
    if fmt in tensors:
        try:
            value = read(fmt).reshape(-1).tolist() if math.prod(tensors[fmt][0]) == 1 else None
        except Exception as exc:  # a tensor with no data (meta device), a damaged file
            why = f"bitsandbytes int8 weight whose '{fmt}' cannot be read ({printable(exc, 80)})"
            return weight, packed, part, why
        if value != [0]:
            return (
                weight,
                packed,
                part,
                (
                    f"bitsandbytes int8 weight whose '{fmt}' is {printable(repr(value), 40)}, "
                    f"a tiled GPU layout (only 0, row-major, is read)"
                ),
            )
    return weight, packed._replace(shape=(shape[0], shape[1])), part, None


def _decode_bnb8(name, codes, parts, spec):
    # as bitsandbytes computes it: (codes * SCB) * float32(1/127)
    w = codes.float()  # in place: one float32 matrix
    w.mul_(parts["SCB"].float().reshape(-1, 1))
    return w.mul_(1.0 / 127.0)


# --- GPTQ --------------------------------------------------------------------------------


def _gptq(module, tensors, q):
    qweight, qzeros, scales, g_idx = (
        _join(module, s) for s in ("qweight", "qzeros", "scales", "g_idx")
    )
    entry = _join(module, "weight")
    if qzeros not in tensors or entry in tensors:
        return None
    parts = {"qzeros": qzeros, "scales": scales}
    if g_idx in tensors:
        parts["g_idx"] = g_idx

    def skip(why, label="gptq"):
        return (
            entry,
            _Packed(qweight, (0, 0), label, parts, {}),
            (f"part of the GPTQ-packed weight '{entry}' (dequantized with it)"),
            why,
        )

    if scales not in tensors:
        return skip(f"GPTQ-packed layer '{module}' without its 'scales' tensor")
    (qw, qw_dtype), (qz, _), (sc, _) = tensors[qweight], tensors[qzeros], tensors[scales]
    if len(qw) != 2 or len(qz) != 2 or len(sc) != 2 or qz[0] != sc[0]:
        return skip(
            f"GPTQ-packed layer '{module}' whose qweight {qw}, qzeros {qz} and scales {sc} "
            f"are not (in*bits/32, out), (groups, out*bits/32) and (groups, out)"
        )
    groups, out = sc
    if groups == 0 or out == 0:
        return skip(f"GPTQ-packed layer '{module}' whose scales {sc} are empty")
    if qw[1] != out:
        layout = "AWQ's (in, out*bits/32)" if qw[1] * 32 % out == 0 else "an unknown layout"
        return skip(
            f"packed layer '{module}' whose qweight {qw} is in {layout}, not GPTQ's "
            f"(in*bits/32, out) for {out} outputs (only GPTQ's layout is read)"
        )
    word = _itemsize(qw_dtype) * 8
    bits = qz[1] * word // out if (qz[1] * word) % out == 0 else None
    declared = q.get("bits") if q.get("quant_method", "gptq") == "gptq" else None
    if bits is None:
        return skip(
            f"GPTQ-packed layer '{module}' whose qzeros {qz} do not hold a whole number of "
            f"bits for each of its {out} outputs (as (groups, out*bits/32) would)"
        )
    if bits not in _GPTQ_BITS or (_positive(declared) and declared != bits):
        return skip(
            f"GPTQ-packed layer '{module}' whose qzeros {qz} for {out} outputs give "
            f"{bits} bits (read: {', '.join(map(str, _GPTQ_BITS))}"
            + (f"; the config says {declared}" if _positive(declared) else "")
            + ")"
        )
    if word != 32 or tensors[qzeros][1] != qw_dtype or (qw[0] * 32) % bits:
        return skip(
            f"GPTQ-packed layer '{module}' whose qweight {qw} ({qw_dtype}) and qzeros "
            f"({tensors[qzeros][1]}) are not int32 words of {bits}-bit codes"
        )
    n_in = qw[0] * 32 // bits
    if tensors[scales][1] not in _FLOATS:
        return skip(f"GPTQ-packed layer '{module}' whose scales have dtype {tensors[scales][1]}")
    if g_idx in tensors and tensors[g_idx][1] not in _INTEGERS | {"int64"}:
        return skip(f"GPTQ-packed layer '{module}' whose g_idx has dtype {tensors[g_idx][1]}")
    if g_idx in tensors and tensors[g_idx][0] != (n_in,):
        return skip(
            f"GPTQ-packed layer '{module}' whose g_idx has shape {tensors[g_idx][0]}, not "
            f"({n_in},) for its qweight {qw}"
        )
    if g_idx not in tensors and n_in % groups:
        return skip(
            f"GPTQ-packed layer '{module}' without g_idx whose {n_in} inputs do not split "
            f"into its {groups} groups"
        )
    v2 = q.get("checkpoint_format") == "gptq_v2"
    label = f"gptq_int{bits}"
    packed = _Packed(qweight, (out, n_in), label, parts, {"bits": bits, "v1": not v2})
    return entry, packed, f"part of the GPTQ-packed weight '{entry}' (dequantized with it)", None


def _unpack(words, bits: int, dim: int):
    """The ``bits``-bit codes packed in int32 ``words`` along ``dim`` (0 or 1), as uint8.

    Along ``dim`` the words are one little-endian bit stream per column (row): code ``j``
    takes bits ``[j*bits, (j+1)*bits)``. One code slot at a time, in int32: the temporary
    is one slot's codes, not the matrix in int64.
    """
    import torch

    w = words.view(torch.int32)
    if dim == 1:
        w = w.T
    rows, cols = w.shape
    mask = (1 << bits) - 1
    if 32 % bits == 0:  # whole codes in each word
        per = 32 // bits
        codes = torch.empty(rows, per, cols, dtype=torch.uint8, device=w.device)
        for j in range(per):
            codes[:, j] = (w >> (bits * j)) & mask
        codes = codes.reshape(rows * per, cols)
    else:  # 32 codes in every `bits` words, some across two words
        g = w.reshape(rows // bits, bits, cols)
        codes = torch.empty(rows // bits, 32, cols, dtype=torch.uint8, device=w.device)
        for j in range(32):
            word, shift = divmod(j * bits, 32)
            if shift + bits <= 32:
                value = (g[:, word] >> shift) & mask
            else:  # the low bits from this word (no sign bits), the high from the next
                value = (g[:, word] >> shift) & ((1 << (32 - shift)) - 1)
                value |= (g[:, word + 1] << (32 - shift)) & mask
            codes[:, j] = value
        codes = codes.reshape(rows // bits * 32, cols)
    return codes.T if dim == 1 else codes


def _decode_gptq(name, qweight, parts, spec):
    import torch

    bits, v1 = spec.params["bits"], spec.params["v1"]
    out, n_in = spec.shape
    qzeros = parts["qzeros"]
    if v1 and 32 % bits == 0:
        # v1 stores zero - 1 as GPTQModel writes it: one subtracted from every field of a
        # word at once, borrows included; adding it back the same way restores each zero
        ones = sum(1 << (bits * j) for j in range(32 // bits))
        qzeros = ((qzeros.to(torch.int64) + ones) & 0xFFFFFFFF).to(torch.int32)
        z = _unpack(qzeros, bits, 1)[:, :out].float()  # (groups, out)
    else:  # v2; or 3-bit v1, which GPTQModel corrects field by field
        z = _unpack(qzeros, bits, 1)[:, :out].float() + (1 if v1 else 0)
    scales = parts["scales"].float()
    groups = scales.shape[0]
    if "g_idx" in parts:
        g = parts["g_idx"].reshape(-1).long()
        if g.numel() and (int(g.min()) < 0 or int(g.max()) >= groups):
            # one damaged tensor: an error row, not the end of the run (a SourceError)
            raise InfospecError(
                f"The GPTQ-packed weight '{name}' has a g_idx outside [0, {groups}) "
                f"(found {int(g.min())}..{int(g.max())}): the file is damaged."
            )
    else:
        g = torch.arange(n_in, device=qweight.device) // (n_in // groups)
    w = _unpack(qweight, bits, 0).T.contiguous().float()  # (out, in): transposed as codes
    step = max(1, (1 << 22) // max(out, 1))  # columns of ~16 MB: temporaries stay small
    for start in range(0, n_in, step):
        cols = g[start : start + step]
        w[:, start : start + step] -= z[cols].T
        w[:, start : start + step] *= scales[cols].T
    return w


#: The decoder of each packed dtype: ``decode(name, codes, parts, spec)``.
_DECODERS = {
    "bnb_nf4": _decode_bnb4,
    "bnb_fp4": _decode_bnb4,
    "bnb_int8": _decode_bnb8,
    **{f"gptq_int{b}": _decode_gptq for b in _GPTQ_BITS},
}


def _join(module: str, name: str) -> str:
    return f"{module}.{name}" if module else name


def _blocksize(x) -> bool:
    return _positive(x) and x <= _MAX_BLOCK


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except OverflowError:  # an integer too large for a float
        return False


def _positive(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 < x < 2**40


def _itemsize(dtype: str) -> int:
    return {
        "uint8": 1,
        "int8": 1,
        "int16": 2,
        "int32": 4,
        "int64": 8,
        "float16": 2,
        "bfloat16": 2,
        "float32": 4,
        "float64": 8,
    }.get(dtype, 0)
