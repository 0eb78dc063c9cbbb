"""Model order of file sources: real architectures' names, sorted back from file order."""

import random

import pytest
import torch

from infospec.sources import minilm_path, open_source
from infospec.sources.order import sort_model_order

transformers = pytest.importorskip("transformers")


def _tiny_models():
    T = transformers
    return {
        "bert": lambda: T.BertModel(
            T.BertConfig(
                vocab_size=50,
                hidden_size=16,
                num_hidden_layers=12,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=20,
            )
        ),
        "llama": lambda: T.LlamaForCausalLM(
            T.LlamaConfig(
                vocab_size=50,
                hidden_size=16,
                num_hidden_layers=11,
                num_attention_heads=2,
                num_key_value_heads=1,
                intermediate_size=32,
            )
        ),
        "gpt2": lambda: T.GPT2LMHeadModel(
            T.GPT2Config(vocab_size=50, n_embd=16, n_layer=11, n_head=2, n_positions=20)
        ),
        "t5": lambda: T.T5ForConditionalGeneration(
            T.T5Config(vocab_size=50, d_model=16, d_ff=32, num_layers=3, num_heads=2, d_kv=8)
        ),
        "vit": lambda: T.ViTModel(
            T.ViTConfig(
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
                image_size=16,
                patch_size=8,
            )
        ),
        "distilbert": lambda: T.DistilBertModel(
            T.DistilBertConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=32)
        ),
    }


@pytest.mark.parametrize("arch", list(_tiny_models()))
def test_alphabetical_and_shuffled_names_come_back_in_model_order(arch):
    """The matrices (2-D and more) in the order of the model's own parameters."""
    torch.manual_seed(0)
    model = _tiny_models()[arch]()
    params = [(n, p) for n, p in model.named_parameters()]
    matrices = [n for n, p in params if p.dim() >= 2]
    names = [n for n, _ in params]
    for scrambled in (sorted(names), random.Random(0).sample(names, len(names))):
        got = [n for n in sort_model_order(scrambled) if n in set(matrices)]
        assert got == matrices


def test_minilm_file_reads_along_depth():
    """The bundled MiniLM safetensors file: its header is alphabetical, entries are not."""
    names = [e.name for e in open_source(minilm_path()).entries()]
    weights = [n for n in names if n.endswith(".weight") and "LayerNorm" not in n]
    assert weights[:3] == [
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
    ]
    block = [
        "attention.self.query.weight",
        "attention.self.key.weight",
        "attention.self.value.weight",
        "attention.output.dense.weight",
        "intermediate.dense.weight",
        "output.dense.weight",
    ]
    expected = [f"encoder.layer.{i}.{b}" for i in range(6) for b in block]
    assert weights[3:-1] == expected
    assert weights[-1] == "pooler.dense.weight"
    # within a layer, each weight comes before its bias
    assert names.index("encoder.layer.0.attention.self.query.weight") + 1 == names.index(
        "encoder.layer.0.attention.self.query.bias"
    )


def test_llama_and_gpt2_style_lists_written_by_hand():
    llama = [
        "lm_head.weight",
        "model.embed_tokens.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.10.self_attn.q_proj.weight",
        "model.layers.2.self_attn.q_proj.weight",
        "model.norm.weight",
    ]
    assert sort_model_order(llama) == [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.2.self_attn.q_proj.weight",
        "model.layers.10.self_attn.q_proj.weight",
        "model.norm.weight",
        "lm_head.weight",
    ]
    gpt2 = ["ln_f.weight", "h.1.mlp.c_proj.weight", "h.1.attn.c_attn.weight", "wpe.weight"]
    gpt2 += ["wte.weight", "h.1.ln_1.weight", "h.1.mlp.c_fc.weight", "h.1.attn.c_proj.weight"]
    assert sort_model_order(gpt2) == [
        "wte.weight",
        "wpe.weight",
        "h.1.ln_1.weight",
        "h.1.attn.c_attn.weight",
        "h.1.attn.c_proj.weight",
        "h.1.mlp.c_fc.weight",
        "h.1.mlp.c_proj.weight",
        "ln_f.weight",
    ]


def test_unknown_names_keep_the_given_order_and_numbers_sort_numerically():
    names = ["zeta.w", "alpha.w", "stage10.w", "stage2.w", "mid.3.w", "mid.1.w", "zeta.b"]
    assert sort_model_order(names) == [
        "zeta.w",
        "zeta.b",
        "alpha.w",
        "stage2.w",
        "stage10.w",
        "mid.1.w",
        "mid.3.w",
    ]
    assert sort_model_order(["a.b", "a"]) == ["a", "a.b"]
    assert sort_model_order([]) == []
    # duplicates (a name listed twice) are kept
    assert sort_model_order(["x", "x"]) == ["x", "x"]


def test_sharded_files_in_model_order(tmp_path):
    from safetensors.torch import save_file

    save_file({"layers.10.weight": torch.ones(12, 12)}, tmp_path / "b.safetensors")
    save_file({"layers.2.weight": torch.ones(12, 12)}, tmp_path / "a.safetensors")
    import json

    weight_map = {"layers.10.weight": "b.safetensors", "layers.2.weight": "a.safetensors"}
    index = {"weight_map": weight_map}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    names = [e.name for e in open_source(tmp_path).entries()]
    assert names == ["layers.2.weight", "layers.10.weight"]
