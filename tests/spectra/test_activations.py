"""ActivationCovariances: linear layers through their inputs, shared inputs, masks, precision."""

import pytest
import torch
from torch import nn

from infospec import InputError
from infospec.spectra import covariance
from infospec.spectra.activations import ActivationCovariances, MappedCovariance


class _Block(nn.Module):
    """Three projections of one input (as q, k, v), an up- and a down-projection."""

    def __init__(self, d=16, up=48):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.up = nn.Linear(d, up)
        self.down = nn.Linear(up, d)

    def forward(self, x):
        h = self.q(x) * torch.sigmoid(self.k(x)) + self.v(x)
        return self.down(torch.tanh(self.up(h)))


def _model():
    torch.manual_seed(0)
    return _Block().double()


def _batches(gen, n=3):
    # (batch, seq, d) with a mask: some padding at the end of each sequence
    out = []
    for i in range(n):
        x = torch.randn(4, 10 + i, 16, generator=gen, dtype=torch.float64) * 2 + 3
        mask = torch.ones(4, 10 + i, dtype=torch.bool)
        mask[1, 7:] = mask[3, 4:] = False
        out.append((x, mask))
    return out


def _collect(model, batches, **kwargs):
    with ActivationCovariances(dict(model.named_children()), **kwargs) as acts, torch.no_grad():
        for x, mask in batches:
            acts.set_token_mask(mask)
            model(x)
    return acts


def test_linear_inputs_equal_the_outputs_covariance(gen):
    model = _model()
    batches = _batches(gen)
    direct = _collect(model, batches)
    mapped = _collect(model, batches, linear_inputs=True)
    assert set(mapped._through_input) == {"q", "k", "v", "up"}  # down: wider input
    real = sum(int(m.sum()) for _, m in batches)
    for name, acc in direct.accumulators.items():
        other = mapped.accumulators[name]
        assert other.count == acc.count == real
        torch.testing.assert_close(other.mean, acc.mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(other.scatter, acc.scatter, rtol=1e-10, atol=1e-9)
    # the up-projection (16 -> 48): eigenvalues through the 16-wide input side, the other
    # 32 exact zeros, equal to those of the 48 x 48 covariance
    up = mapped.accumulators["up"]
    assert isinstance(up, MappedCovariance)
    eig = up.eigenvalues()
    full = torch.linalg.eigvalsh(direct.accumulators["up"].covariance()).flip(0)
    torch.testing.assert_close(eig, full.clamp_min(0), rtol=1e-10, atol=1e-13 * float(full[0]))
    assert bool((eig[16:] == 0).all()) and float(eig[15] / eig[0]) > 1e-6
    torch.testing.assert_close(up.eigenvalues(ddof=0), eig * (real - 1) / real)


def test_layers_fed_one_tensor_share_one_gram_product(gen, monkeypatch):
    calls = []
    real = covariance.batch_moments

    def counting(x, **kwargs):
        calls.append(x.shape[-1])
        return real(x, **kwargs)

    monkeypatch.setattr("infospec.spectra.activations.batch_moments", counting)
    model = _model()
    batches = _batches(gen, n=2)
    _collect(model, batches, linear_inputs=True)
    # per pass: one 16-wide input for q, k, v; up's input h; down's output (16 wide)
    assert calls == [16, 16, 16] * 2
    calls.clear()
    _collect(model, batches)
    assert calls == [16, 16, 16, 48, 16] * 2


def test_changed_weights_make_the_layer_an_error(gen):
    model = _model()
    (x, _mask), *_ = _batches(gen)
    with ActivationCovariances({"up": model.up}, linear_inputs=True) as acts, torch.no_grad():
        model(x)
        model.up.weight.mul_(2)
        model(x)
    assert "changed between forward passes" in acts.errors["up"]
    assert "linear_inputs=False" in acts.errors["up"]


def test_a_module_with_another_hook_is_read_from_its_output(gen):
    model = _model()
    batches = _batches(gen, n=1)
    handle = model.up.register_forward_hook(lambda m, i, o: o * 2)  # rewrites the output
    try:
        acts = _collect(model, batches, linear_inputs=True)
        plain = _collect(model, batches)
    finally:
        handle.remove()
    assert "up" not in acts._through_input
    torch.testing.assert_close(acts.accumulators["up"].scatter, plain.accumulators["up"].scatter)


def test_a_batch_shared_output_is_broadcast_to_the_mask(gen):
    table = nn.Embedding(12, 5).double()

    class Pos(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos = table

        def forward(self, ids):
            return self.pos(torch.arange(ids.shape[1])[None])  # (1, seq, 5)

    model = Pos()
    ids = torch.zeros(3, 12, dtype=torch.long)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[0, 5:] = mask[2, 9:] = False
    with ActivationCovariances({"pos": model.pos}) as acts, torch.no_grad():
        acts.set_token_mask(mask)
        model(ids)
    acc = acts.accumulators["pos"]
    assert acc.count == int(mask.sum())  # one row per real token
    rows = table.weight.detach()[torch.arange(12).expand(3, 12)[mask]]
    torch.testing.assert_close(acc.mean, rows.mean(0))


def test_nan_outputs_and_inputs_stop_the_layer(gen):
    model = _model()
    x = torch.randn(2, 5, 16, generator=gen, dtype=torch.float64)
    x[1, 2, 3] = float("nan")
    with ActivationCovariances(dict(model.named_children()), linear_inputs=True) as acts:
        with torch.no_grad():
            model(x)
    assert "NaN/Inf" in acts.errors["q"] and "seen in its input" in acts.errors["q"]
    assert "NaN/Inf" in acts.errors["down"] and "input" not in acts.errors["down"]


def test_hook_time_is_kept_and_reset(gen):
    model = _model()
    acts = _collect(model, _batches(gen, n=1))
    assert acts.seconds > 0
    acts.reset()
    assert acts.seconds == 0 and not acts.accumulators


def test_bad_precision():
    with pytest.raises(InputError, match="'precision' parameter of ActivationCovariances must"):
        ActivationCovariances({}, precision="bf16")


def test_a_mapped_covariance_merges_like_any_accumulator(gen):
    model = _model()
    batches = _batches(gen)
    first = _collect(model, batches[:2], linear_inputs=True).accumulators["up"]
    rest = _collect(model, batches[2:], linear_inputs=True).accumulators["up"]
    whole = _collect(model, batches).accumulators["up"]
    first.merge(rest)  # no input-side snapshot any more: the full 48 x 48 route
    assert first.count == whole.count
    torch.testing.assert_close(first.scatter, whole.scatter, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(
        first.eigenvalues(),
        whole.eigenvalues(),
        rtol=1e-8,
        atol=1e-12 * float(whole.eigenvalues()[0]),
    )
    first.reset()
    assert first.count == 0 and float(first.scatter.abs().sum()) == 0
