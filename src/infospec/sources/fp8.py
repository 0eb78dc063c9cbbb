"""FP8 weights, dequantized when they are loaded, and the scale tensors beside them.

FP8 checkpoints (``float8_e4m3fn``/``float8_e5m2``; safetensors ``F8_E4M3``/``F8_E5M2``)
store each weight with a scale that restores its magnitude. An FP8 weight's entry keeps
its stored dtype, and :meth:`~infospec.sources.WeightEntry.load` returns it in float32,
multiplied by its scale where one is found. The rule:

* The scale of the FP8 tensor ``<name>`` is the tensor ``<name>_scale_inv`` (DeepSeek-V3,
  Hugging Face ``FP8Linear``), else ``<name>_scale`` (``weight_scale``: compressed-tensors,
  FBGEMM, ModelOpt), in the same file set, state dict or module.
* Both are multipliers: ``W = float32(W_fp8) * scale``. (DeepSeek's ``scale_inv`` is the
  inverse of the quantisation scale, that is the dequantisation factor.)
* Its shape says how it applies: one element, one scale for the tensor; ``(out,)`` or
  ``(out, 1)``, one per row; ``(ceil(out/b), ceil(in/b))`` for a 2-D weight, one per
  ``b x b`` block, broadcast over the block (the last blocks cut to the matrix), with
  ``b = 128`` (DeepSeek-V3) unless the model folder's ``config.json`` gives
  ``quantization_config.weight_block_size``. A weight whose scale has another shape is
  skipped with the reason.
* A scale tensor is listed as skipped, its reason naming its weight. A
  ``float8_e8m0fnu`` tensor (a power-of-two scale format, as in MX formats) that is not
  the scale of an FP8 weight is skipped as a scale format, not a weight.
* An FP8 weight without a scale is upcast alone.

A NaN in the FP8 data (``float8_e4m3fn`` encodes NaN as ``0x7F``/``0xFF``) stays a NaN in
float32, so the analysis reports the matrix as an error row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

__all__ = ["DEFAULT_BLOCK", "FP8_DTYPES", "SCALE_DTYPE", "Fp8Plan", "block_size", "fp8_plan"]

#: Dtypes of FP8 weights, dequantized to float32 at load.
FP8_DTYPES = frozenset({"float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz"})
#: A scale-only dtype (an 8-bit exponent), never analysed as a weight.
SCALE_DTYPE = "float8_e8m0fnu"
#: DeepSeek-V3's block size.
DEFAULT_BLOCK = (128, 128)
_SUFFIXES = ("_scale_inv", "_scale")


class Fp8Plan(NamedTuple):
    """Which tensor scales which FP8 weight, found from names, shapes and dtypes.

    Attributes
    ----------
    scale_of : dict of str to str
        FP8 weight name to its scale tensor's name.
    weight_of : dict of str to str
        Scale tensor name to its weight's name.
    reasons : dict of str to str
        Skip reasons: scale tensors, lone ``float8_e8m0fnu`` tensors, FP8 weights whose
        scale has no known layout.
    block : tuple of int
        Block size of block-wise scales.
    """

    scale_of: dict[str, str]
    weight_of: dict[str, str]
    reasons: dict[str, str]
    block: tuple[int, int]

    def loader(self, name: str, dtype: str, shape: tuple[int, ...], load: Callable, scale_load):
        """The loader of tensor ``name``: ``load`` itself unless it is an FP8 weight.

        ``scale_load`` returns the scale tensor's loader, called only for an FP8 weight
        with a scale.
        """
        if dtype not in FP8_DTYPES:
            return load
        scale = self.scale_of.get(name)
        return _dequantizing(load, scale_load(scale) if scale else None, shape, self.block)


def block_size(config: Mapping[str, Any] | None) -> tuple[int, int]:
    """``quantization_config.weight_block_size`` of a model config, else (128, 128)."""
    q = (config or {}).get("quantization_config")
    size = q.get("weight_block_size") if isinstance(q, Mapping) else None
    if (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and 0 < s < 2**31 for s in size)
    ):
        return (size[0], size[1])
    return DEFAULT_BLOCK


def _layout(shape: tuple[int, ...], scale_shape: tuple[int, ...], block: tuple[int, int]):
    """How a scale of ``scale_shape`` applies to a weight of ``shape``, or None."""
    if math.prod(scale_shape) == 1:
        return "tensor"
    if shape and scale_shape in ((shape[0],), (shape[0], 1)):
        return "row"
    if len(shape) == 2 and scale_shape == (-(-shape[0] // block[0]), -(-shape[1] // block[1])):
        return "block"
    return None


def fp8_plan(
    tensors: Mapping[str, tuple[tuple[int, ...], str]],
    *,
    block: tuple[int, int] = DEFAULT_BLOCK,
    prefix: str = "",
) -> Fp8Plan:
    """Pair FP8 weights with their scales (see the module docstring).

    Parameters
    ----------
    tensors : mapping of str to (shape, dtype)
        Every tensor of the source by full name; dtypes as torch names them.
    block : (int, int), default (128, 128)
        Block size of block-wise scales.
    prefix : str, default ""
        Put before a weight's name in the reasons (a module's name, when ``tensors``
        are its own).

    Returns
    -------
    Fp8Plan
    """
    scale_of: dict[str, str] = {}
    weight_of: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for name, (shape, dtype) in tensors.items():
        if dtype not in FP8_DTYPES:
            continue
        for suffix in _SUFFIXES:
            scale = name + suffix
            if scale not in tensors:
                continue
            scale_shape = tensors[scale][0]
            weight_of[scale] = name
            reasons[scale] = f"scale of the FP8 weight '{prefix}{name}' (applied when it is loaded)"
            if _layout(shape, scale_shape, block) is None:
                reasons[name] = (
                    f"FP8 weight whose scale '{scale}' has shape {scale_shape}, which is "
                    f"neither one scale, one per row nor one per {block[0]}x{block[1]} block "
                    f"of its shape {shape}"
                )
            else:
                scale_of[name] = scale
            break
    for name, (_shape, dtype) in tensors.items():
        if dtype == SCALE_DTYPE and name not in weight_of:
            reasons[name] = (
                f"dtype {SCALE_DTYPE} is a scale format (powers of two), not a weight, and "
                f"no FP8 weight names it as its scale"
            )
    return Fp8Plan(scale_of, weight_of, reasons, block)


def _dequantizing(load: Callable, scale_load: Callable | None, shape, block):
    def dequantized(device: Any = None):
        import torch

        w = load(device).to(torch.float32)
        if scale_load is None:
            return w
        scale = scale_load(device).to(device=w.device, dtype=torch.float32)
        layout = _layout(tuple(w.shape), tuple(scale.shape), block)
        if layout == "tensor":
            return w * scale.reshape(())
        if layout == "row":
            return w * scale.reshape(-1, *([1] * (w.dim() - 1)))
        rows, cols = w.shape
        full = scale.repeat_interleave(block[0], dim=0)[:rows].repeat_interleave(block[1], dim=1)
        return w * full[:, :cols]

    return dequantized
