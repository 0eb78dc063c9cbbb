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


def _reference(rows):
    """Count, mean and centred scatter of rows, straight from the definition (float64)."""
    rows = rows.double()
    mean = rows.mean(0)
    return rows.shape[0], mean, (rows - mean).mT @ (rows - mean)


class _Embedder(nn.Module):
    """Word, position (shared by the batch) and token-type lookups, as BERT's embeddings."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.word = nn.Embedding(20, 6).double()
        self.pos = nn.Embedding(16, 6).double()
        self.kind = nn.Embedding(2, 6).double()
        self.mix = nn.Linear(6, 6).double()  # a plain tensor shared by the batch, (1, seq, 6)

    def forward(self, ids):
        seq = ids.shape[1]
        positions = torch.arange(seq)[None]
        shared = self.mix(self.pos.weight[:seq][None])
        return self.word(ids) + self.pos(positions) + self.kind(torch.zeros_like(ids)) + shared


def test_lookups_are_accumulated_from_their_distinct_rows(gen, monkeypatch):
    model = _Embedder()
    ids = torch.randint(0, 20, (5, 11), generator=gen)
    ids[:, :3] = 4  # many repeats
    mask = torch.ones(5, 11, dtype=torch.bool)
    mask[1, 6:] = mask[4, 2:] = False
    widths = []
    real = covariance.batch_moments

    def counting(x, **kwargs):
        widths.append(x.shape[0])
        return real(x, **kwargs)

    monkeypatch.setattr("infospec.spectra.activations.batch_moments", counting)
    with ActivationCovariances(dict(model.named_children())) as acts, torch.no_grad():
        acts.set_token_mask(mask)
        model(ids)
    n = int(mask.sum())
    flat_positions = torch.arange(11).expand(5, 11)[mask]
    expected = {
        "word": model.word.weight[ids[mask]],
        "pos": model.pos.weight[flat_positions],
        "kind": model.kind.weight[torch.zeros(n, dtype=torch.long)],
        "mix": model.mix(model.pos.weight[:11])[flat_positions],
    }
    accs = acts.accumulators
    for name, rows in expected.items():
        count, mean, scatter = _reference(rows.detach())
        acc = accs[name]
        assert acc.count == count == n, name
        torch.testing.assert_close(acc.mean, mean, rtol=1e-13, atol=1e-14)
        torch.testing.assert_close(acc.scatter, scatter, rtol=1e-12, atol=1e-12)
    assert float(accs["kind"].scatter.abs().max()) == 0.0  # one distinct row: no spread
    # in call order: the shared tensor (one row per position, counted per token), then one
    # row per distinct id, per position holding a real token, and the one token type
    assert widths == [11, len(torch.unique(ids[mask])), 11, 1]


def test_lookups_with_another_hook_or_a_token_cap_use_every_row(gen):
    model = _Embedder()
    ids = torch.randint(0, 20, (3, 7), generator=gen)
    handle = model.word.register_forward_hook(lambda m, i, o: o + 1.0)  # rewrites rows
    try:
        with ActivationCovariances({"word": model.word}) as acts, torch.no_grad():
            model(ids)
    finally:
        handle.remove()
    *_, scatter = _reference(model.word.weight[ids.flatten()].detach())
    torch.testing.assert_close(acts.accumulators["word"].scatter, scatter)
    with ActivationCovariances({"word": model.word}, max_tokens=50) as capped:
        with torch.no_grad():
            model(ids)
    assert capped.accumulators["word"].count == 21
    torch.testing.assert_close(capped.accumulators["word"].scatter, scatter)


def test_a_copy_is_independent(gen):
    acc = covariance.StreamingCovariance(3)
    acc.update(torch.randn(10, 3, generator=gen))
    twin = acc.copy()
    acc.update(torch.randn(10, 3, generator=gen))
    assert twin.count == 10 and acc.count == 20
    assert not torch.equal(twin.scatter, acc.scatter)


def test_a_global_hook_turns_the_shortcuts_off(gen):
    """A global forward hook may rewrite any output: rows of one index differ, and a linear
    layer's output is no longer the map of its input."""
    model = _Embedder()
    ids = torch.randint(0, 4, (3, 9), generator=gen)
    noise = torch.Generator().manual_seed(5)
    seen = {}

    def noisy(mod, _inputs, out):
        if isinstance(mod, (nn.Embedding, nn.Linear)):
            out = out + 0.1 * torch.randn(out.shape, generator=noise, dtype=out.dtype)
            seen[mod] = out
            return out
        return None

    handle = torch.nn.modules.module.register_module_forward_hook(noisy)
    try:
        modules = {"word": model.word, "mix": model.mix}
        with ActivationCovariances(modules, linear_inputs=True) as acts, torch.no_grad():
            model(ids)
    finally:
        handle.remove()
    assert not acts._through_input
    for name, module in modules.items():
        *_, scatter = _reference(seen[module].reshape(-1, 6))
        torch.testing.assert_close(acts.accumulators[name].scatter, scatter)


def test_outputs_with_several_rows_per_token_keep_those_of_the_real_tokens(gen):
    lookup = nn.Embedding(10, 4).double()
    ids = torch.randint(0, 10, (2, 5, 3), generator=gen)  # 3 lookups per token
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    with ActivationCovariances({"e": lookup}) as acts, torch.no_grad():
        acts.set_token_mask(mask)
        lookup(ids)
    acc = acts.accumulators["e"]
    rows = lookup.weight[ids[mask].flatten()].detach()
    n, mean, scatter = _reference(rows)
    assert acc.count == n == 24
    torch.testing.assert_close(acc.mean, mean)
    torch.testing.assert_close(acc.scatter, scatter)


def test_a_meta_forward_pass_is_an_error_row(gen):
    model = nn.Sequential(nn.Linear(4, 4)).to("meta")
    with ActivationCovariances({"0": model[0]}) as acts, torch.no_grad():
        model(torch.empty(3, 4, device="meta"))
    assert "meta tensor" in acts.errors["0"]
