import json
import math

import numpy as np
import pytest

from infospec._errors import InputError
from infospec.tools.rope import (
    long_term_decay,
    minimal_rope_base,
    rope_config,
    rope_feasibility,
    rope_frequencies,
)

BASE = dict(
    rope_theta=500000.0,
    hidden_size=4096,
    num_attention_heads=32,
    max_position_embeddings=131072,
    num_hidden_layers=32,
)
SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
    "llama3": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "longrope": {
        "rope_type": "longrope",
        "long_factor": list(np.linspace(1.0, 40.0, 64)),
        "short_factor": list(np.linspace(1.0, 2.0, 64)),
        "original_max_position_embeddings": 4096,
    },
}


@pytest.mark.parametrize("kind", ["default", *SCALINGS])
@pytest.mark.parametrize("seq_len", [None, 200000])
def test_frequencies_match_transformers(kind, seq_len):
    # transformers computes inv_freq in float32, so agreement is to float32 round-off
    # (~1e-7 relative); 1e-12 is impossible against a float32 oracle.
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    d = dict(BASE)
    if kind != "default":
        d["rope_scaling"] = SCALINGS[kind]
    hf = LlamaConfig(**d)
    ours = rope_frequencies(d, seq_len=seq_len)
    if kind == "default":
        ref = 1.0 / (500000.0 ** (torch.arange(0, 128, 2).float() / 128))
    else:
        ref, _ = ROPE_INIT_FUNCTIONS[kind](hf, "cpu", seq_len=seq_len)
    np.testing.assert_allclose(ours, ref.double().numpy(), rtol=2e-6)


def test_default_closed_form_and_partial():
    cfg = dict(BASE, head_dim=64, partial_rotary_factor=0.5)
    th = rope_frequencies(cfg)
    np.testing.assert_allclose(th, 500000.0 ** (-np.arange(0, 32, 2) / 32), rtol=1e-15)


def test_long_term_decay_curve_and_min():
    th = 10000.0 ** (-np.arange(0, 128, 2) / 128)
    curve = long_term_decay(th, 5000, block=777, return_curve=True)
    m = np.arange(5000)[:, None]
    np.testing.assert_allclose(curve, np.cos(m * th).mean(axis=1), rtol=0, atol=1e-13)
    assert curve[0] == pytest.approx(1.0)
    bmin, arg = long_term_decay(th, 5000, block=333)
    assert bmin == pytest.approx(curve.min(), abs=1e-13) and arg == int(curve.argmin())


def test_minimal_base_is_first_passing_grid_value():
    # Computed here (Men et al.'s published table could not be checked in this session):
    # the first grid value passing is the minimum over the grid of passing values and
    # every earlier grid value fails.
    grid = 10.0 ** np.arange(2, 7.001, 0.05)
    b = minimal_rope_base(4096, head_dim=128, grid=grid)
    ex = np.arange(0, 128, 2) / 128
    assert long_term_decay(1 / b**ex, 4096)[0] >= 0
    for g in grid[grid < b]:
        assert long_term_decay(1 / g**ex, 4096)[0] < 0


def test_verdict_pass_fail_and_json():
    v = rope_feasibility(dict(BASE, rope_theta=10000.0), context=4096)
    rows = {r["bound"].split()[0]: r for r in v.rows}
    assert rows["aliasing"]["actual"] == pytest.approx(2 * math.pi * 10000.0)
    assert rows["DC"]["required"] == pytest.approx(4096 / math.acos(0.01))
    assert rows["precision"]["actual"] == 2**24
    assert json.loads(v.to_json())[0]["bound"].startswith("aliasing")
    assert "aliasing" in v.to_text()
    bad = rope_feasibility(dict(BASE, rope_theta=100.0), context=100000, dtype="bf16")
    assert not bad.passed


def test_errors_name_the_field(tmp_path):
    with pytest.raises(InputError, match="rope_theta"):
        rope_config({"hidden_size": 8, "max_position_embeddings": 4})
    with pytest.raises(InputError, match="max_position_embeddings"):
        rope_config({"rope_theta": 1e4, "head_dim": 8})
    with pytest.raises(InputError, match="hidden_size"):
        rope_config({"rope_theta": 1e4, "max_position_embeddings": 8})
    with pytest.raises(InputError, match="absolute"):
        rope_config({"position_embedding_type": "absolute"})
    with pytest.raises(InputError, match="low_freq_factor"):
        rope_frequencies(dict(BASE, rope_scaling={"rope_type": "llama3", "factor": 8.0}))
    with pytest.raises(InputError, match="not supported"):
        rope_config(dict(BASE, rope_scaling={"rope_type": "magic"}))
    with pytest.raises(InputError, match="dtype"):
        rope_feasibility(BASE, dtype="int8")
    with pytest.raises(InputError, match="eps"):
        rope_feasibility(BASE, eps=2.0)
    p = tmp_path / "config.json"
    p.write_text(json.dumps(BASE))
    assert rope_config(tmp_path).head_dim == 128
