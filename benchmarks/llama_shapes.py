"""The matrices of one Llama decoder block, shared by the benchmarks (imported beside them)."""

from __future__ import annotations

HIDDEN, MLP = 4096, 11008  # Llama-7B


def block_shapes(hidden: int = HIDDEN, ffn: int | None = None, suffix: str = "") -> dict:
    """``{"self_attn.q_proj" + suffix: (rows, cols), ...}``: q, k, v, o of ``hidden x hidden``,
    gate and up of ``ffn x hidden``, down of ``hidden x ffn`` (``ffn`` by default
    ``hidden * 11008 / 4096``, rounded, as Llama-7B's)."""
    ffn = round(hidden * MLP / HIDDEN) if ffn is None else ffn
    shapes = {f"self_attn.{p}_proj": (hidden, hidden) for p in "qkvo"}
    shapes |= {"mlp.gate_proj": (ffn, hidden), "mlp.up_proj": (ffn, hidden)}
    shapes["mlp.down_proj"] = (hidden, ffn)
    return {name + suffix: shape for name, shape in shapes.items()}
