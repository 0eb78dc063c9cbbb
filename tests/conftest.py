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
