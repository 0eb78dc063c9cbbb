"""Write the packed-weight test files with the real writers (run by hand, not by the tests).

Needs ``bitsandbytes`` (0.50), ``transformers`` (5.x) and ``gptqmodel`` (7.7) on the CPU::

    python tests/data/packed/write_packed.py

Each folder is a model folder as its writer saves it (``model.safetensors`` and
``config.json``); ``<folder>.reference.safetensors`` holds every packed matrix as the
writer's own library dequantizes it, by entry name: bitsandbytes' device-independent
4-bit dequantizer (``backends.default.ops._dequantize_4bit_compute``, after
``dequantize_blockwise`` of a nested absmax), ``int8_vectorwise_dequant``, GPTQModel's
``dequantize_weight``. (bitsandbytes 0.50's CPU kernel behind ``dequantize_4bit`` gives
other values for a matrix whose row length is not a multiple of the block size, as the
MLP's ``down_proj`` here, 64 x 96 in blocks of 64, than the flat block order of its generic
code, which its quantizer follows: against the original weights its error is 3.3x that of
the generic code.)

* ``bnb_nf4_double``, ``bnb_fp4``, ``bnb_int8``: a one-block Llama (hidden 64, MLP 96,
  vocabulary 32) of fixed random weights, loaded by ``transformers`` with a
  ``BitsAndBytesConfig`` and saved with ``save_pretrained``; the fp4 one stores its codes
  in bfloat16 words (``bnb_4bit_quant_storage``) and computes in bfloat16.
* ``gptq_<bits>bit_*``: the same Llama's linear layers packed by GPTQModel's
  ``TorchLinear.pack`` (the packer its ``save`` runs) from a round-to-nearest quantization
  per group, converted to the v1 checkpoint format by GPTQModel's
  ``convert_gptq_v2_to_v1_format_module`` unless the name says ``v2``; ``act`` ones have
  an act-order ``g_idx`` (a permutation of the inputs). In the asymmetric ones every fourth
  row is made non-negative, so that its zero points are 0: the v1 format stores zero - 1 by
  subtracting one from every field of a word at once, and such a zero borrows from the
  next field.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).parent


def tiny_llama(folder: Path):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=32,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(folder)
    return model


def bnb(base: Path, name: str, **config):
    import bitsandbytes.functional as F
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
    from bitsandbytes.functional import QuantState
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    out = HERE / name
    shutil.rmtree(out, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(
        base, quantization_config=BitsAndBytesConfig(**config), device_map="cpu"
    )
    model.save_pretrained(out)
    ref = {}
    with safe_open(out / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        for k in keys:
            if ".quant_state.bitsandbytes__" in k:
                w = k.split(".quant_state.")[0]
                parts = {p[len(w) + 1 :]: f.get_tensor(p) for p in keys if p.startswith(w + ".")}
                state = QuantState.from_dict(parts, device="cpu")
                absmax = state.absmax
                if state.nested:
                    absmax = F.dequantize_blockwise(absmax, state.state2) + state.offset
                codes = f.get_tensor(w).view(torch.uint8).reshape(-1)
                ref[w] = _dequantize_4bit_compute(
                    codes, absmax.float(), state.code, state.blocksize, state.shape, state.dtype
                ).float()
            elif k.endswith(".SCB"):
                m = k[: -len(".SCB")]
                ref[m + ".weight"] = F.int8_vectorwise_dequant(
                    f.get_tensor(m + ".weight"), f.get_tensor(k)
                )
    save_file(ref, HERE / f"{name}.reference.safetensors")


def gptq(model, name: str, bits: int, group_size: int, sym: bool, act: bool, v2: bool):
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear
    from gptqmodel.quantization.config import QuantizeConfig
    from gptqmodel.utils.model import convert_gptq_v2_to_v1_format_module

    out = HERE / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    gen = torch.Generator().manual_seed(bits)
    state, ref = {}, {}
    maxq = 2**bits - 1
    for mod_name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or mod_name == "lm_head":
            if mod_name == "lm_head":
                state["lm_head.weight"] = mod.weight.detach().half()
            continue
        lin = torch.nn.Linear(mod.in_features, mod.out_features, bias=False).half()
        lin.weight.data.copy_(mod.weight.detach())
        if not sym:  # every fourth row non-negative: zero points of 0, which v1 borrows
            lin.weight.data[::4] = lin.weight.data[::4].abs()
        W = lin.weight.float()
        n_in = W.shape[1]
        groups = n_in // group_size
        perm = torch.randperm(n_in, generator=gen) if act else torch.arange(n_in)
        g_idx = (torch.argsort(perm) // group_size).to(torch.int32)
        scales = torch.empty(W.shape[0], groups)
        zeros = torch.empty(W.shape[0], groups)
        for g in range(groups):
            cols = W[:, g_idx == g]
            if sym:
                s = 2 * cols.abs().max(1).values / maxq
                z = torch.full_like(s, (maxq + 1) // 2)
            else:
                lo, hi = cols.min(1).values, cols.max(1).values
                s = (hi - lo) / maxq
                z = torch.round(-lo / s).clamp(0, maxq)
            scales[:, g], zeros[:, g] = s.half().float(), z
        q = TorchLinear(
            bits=bits,
            group_size=group_size,
            sym=sym,
            desc_act=act,
            in_features=n_in,
            out_features=W.shape[0],
            bias=False,
        )
        q.pack(lin, scales, zeros, g_idx)
        q.post_init()
        ref[f"{mod_name}.weight"] = q.dequantize_weight().T.float().contiguous()
        if not v2:
            convert_gptq_v2_to_v1_format_module(q, QuantizeConfig(bits=bits))
        for k, v in q.state_dict().items():
            if k in ("qweight", "qzeros", "scales", "g_idx"):
                state[f"{mod_name}.{k}"] = v.contiguous()
    for k, v in model.state_dict().items():
        if k.endswith("norm.weight") or k.endswith("embed_tokens.weight"):
            state[k] = v.half()
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    config = model.config.to_dict()
    config["quantization_config"] = {
        "quant_method": "gptq",
        "bits": bits,
        "group_size": group_size,
        "desc_act": act,
        "sym": sym,
        "checkpoint_format": "gptq_v2" if v2 else "gptq",
    }
    (out / "config.json").write_text(json.dumps(config, indent=1, default=str))
    save_file(ref, HERE / f"{name}.reference.safetensors")


def main():
    base = Path("/tmp/infospec_tiny_llama")
    model = tiny_llama(base)
    bnb(
        base,
        "bnb_nf4_double",
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
    )
    bnb(
        base,
        "bnb_fp4",
        load_in_4bit=True,
        bnb_4bit_quant_type="fp4",
        bnb_4bit_quant_storage=torch.bfloat16,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    bnb(base, "bnb_int8", load_in_8bit=True)
    for bits, sym, act, v2 in (
        (4, True, False, False),
        (4, False, True, False),
        (2, False, False, False),
        (3, True, True, False),
        (8, False, False, True),
    ):
        name = (
            f"gptq_{bits}bit_{'sym' if sym else 'asym'}{'_act' if act else ''}{'_v2' if v2 else ''}"
        )
        gptq(model, name, bits, 32, sym, act, v2)
    shutil.rmtree(base)


if __name__ == "__main__":
    main()
