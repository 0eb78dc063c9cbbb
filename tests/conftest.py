import numpy as np
import pytest
import torch


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(20261123)


def random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


@pytest.fixture
def tiny_bert():
    """A factory of seeded tiny ``transformers.BertModel``s: ``tiny_bert(**config)``.

    Defaults: 2 layers of width 32, 2 heads, feed-forward 64, vocabulary 60, 24 positions;
    any ``BertConfig`` field can be overridden. Weights are drawn after
    ``torch.manual_seed(0)``. Returns ``(model, config)``.
    """
    transformers = pytest.importorskip("transformers")

    def build(**overrides):
        fields = {
            "vocab_size": 60,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 24,
            **overrides,
        }
        config = transformers.BertConfig(**fields)
        torch.manual_seed(0)
        return transformers.BertModel(config), config

    return build
