"""MatryoshkaLoss: per-prefix losses summed with weights, separate and shared heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from infospec import InputError
from infospec.training.matryoshka import MatryoshkaLoss


def test_separate_heads_sum_the_cross_entropies_of_each_prefix():
    torch.manual_seed(0)
    loss_fn = MatryoshkaLoss((2, 4, 8), num_classes=3, weights=(1.0, 0.5, 2.0))
    z = torch.randn(10, 8)
    y = torch.randint(0, 3, (10,))
    want = sum(
        c * F.cross_entropy(head(z[:, :m]), y)
        for m, c, head in zip((2, 4, 8), (1.0, 0.5, 2.0), loss_fn.heads, strict=True)
    )
    got = loss_fn(z, y)
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    assert set(loss_fn.last_losses) == {2, 4, 8}
    assert loss_fn.last_losses[2] == pytest.approx(
        float(F.cross_entropy(loss_fn.heads[0](z[:, :2]), y)), rel=1e-6
    )


def test_shared_head_uses_the_first_columns_of_one_classifier():
    torch.manual_seed(1)
    loss_fn = MatryoshkaLoss((3, 6), num_classes=4, head="shared", embed_dim=6)
    assert len(loss_fn.heads) == 1
    lin = loss_fn.heads[0]
    z = torch.randn(7, 6)
    y = torch.randint(0, 4, (7,))
    want = F.cross_entropy(z[:, :3] @ lin.weight[:, :3].T + lin.bias, y) + F.cross_entropy(
        lin(z), y
    )
    assert float(loss_fn(z, y)) == pytest.approx(float(want), rel=1e-6)


def test_a_criterion_sees_only_the_prefix():
    seen = []

    def criterion(prefix, target):
        seen.append(prefix.shape[1])
        return ((prefix - target[:, : prefix.shape[1]]) ** 2).mean()

    loss_fn = MatryoshkaLoss((1, 3), criterion=criterion, embed_dim=5)
    z = torch.zeros(4, 5, requires_grad=True)
    loss_fn(z, torch.ones(4, 5)).backward()
    assert seen == [1, 3]
    # the last two coordinates are in no prefix: no gradient reaches them
    assert torch.all(z.grad[:, 3:] == 0) and torch.all(z.grad[:, :3] != 0)


def test_training_with_the_loss_makes_short_prefixes_classify():
    """On separable toy data a 2-wide prefix learns to classify when the loss asks for it."""
    torch.manual_seed(2)
    x = torch.randn(400, 10)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    enc = torch.nn.Linear(10, 8)
    loss_fn = MatryoshkaLoss((2, 8), num_classes=2)
    opt = torch.optim.Adam(list(enc.parameters()) + list(loss_fn.parameters()), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        loss_fn(enc(x), y).backward()
        opt.step()
    with torch.no_grad():
        acc2 = (loss_fn.logits(enc(x), 2).argmax(1) == y).float().mean()
    assert float(acc2) > 0.95


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dims": (), "num_classes": 2}, "non-empty sequence"),
        ({"dims": "8,16", "num_classes": 2}, "non-empty sequence"),
        ({"dims": (4, 4), "num_classes": 2}, "strictly increasing"),
        ({"dims": (0, 4), "num_classes": 2}, r"ints in \[1, 2147483647\]"),
        ({"dims": (2, 4)}, "exactly one of 'num_classes'"),
        ({"dims": (2, 4), "num_classes": 2, "criterion": lambda a, b: a.sum()}, "exactly one"),
        ({"dims": (2, 4), "num_classes": 1}, r"int in \[2, 2147483647\]"),
        ({"dims": (2, 4), "num_classes": 2, "weights": (1.0,)}, "one finite float >= 0 per prefix"),
        ({"dims": (2, 4), "num_classes": 2, "embed_dim": 3}, "smaller than the largest"),
        ({"dims": (2, 4), "num_classes": 2, "head": "tied"}, "'head' parameter"),
    ],
)
def test_documented_errors(kwargs, match):
    dims = kwargs.pop("dims")
    with pytest.raises(InputError, match=match):
        MatryoshkaLoss(dims, **kwargs)


def test_bad_embeddings_are_named():
    loss_fn = MatryoshkaLoss((2, 4), num_classes=2)
    with pytest.raises(InputError, match="width 5; the loss was built for embed_dim=4"):
        loss_fn(torch.randn(3, 5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(InputError, match="floating tensor of shape"):
        loss_fn(torch.ones(3, 4, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(InputError, match="not one of the prefixes"):
        loss_fn.logits(torch.randn(3, 4), 3)
