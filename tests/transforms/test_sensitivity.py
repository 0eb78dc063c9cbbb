"""End-to-end sensitivities and weighting='sensitivity' in compress."""

import pytest
import torch
from torch import nn

import infospec
from infospec import InputError
from infospec.transforms.sensitivity import first_batches, output_sensitivities


class TwoBranches(nn.Module):
    """out = a(x) + gain * b(x): branch b's errors reach the output scaled by gain**2."""

    def __init__(self, gain):
        super().__init__()
        self.a, self.b, self.gain = nn.Linear(24, 24), nn.Linear(24, 24), gain

    def forward(self, x):
        return self.a(x) + self.gain * self.b(x)


def test_sensitivities_equal_the_closed_form_of_a_linear_chain(gen):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 20), nn.Linear(20, 6)).double()
    x = torch.randn(400, 12, generator=gen, dtype=torch.float64)
    noise = 1e-2
    got = output_sensitivities(model, {"0": model[0], "1": model[1]}, [x], noise=noise)
    with torch.no_grad():
        y1, out = model[0](x), model(x)
        # the same draws as the hooks (seed + 7919 * batch index, one generator per layer)
        d1 = torch.randn(y1.shape, generator=torch.Generator().manual_seed(0)).double()
        d1 = noise * y1.float().pow(2).mean().sqrt().double() * d1
        d2 = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).double()
        d2 = noise * out.float().pow(2).mean().sqrt().double() * d2
        energy = float((out**2).sum())
        s1 = float(((d1 @ model[1].weight.T) ** 2).sum()) / energy / noise**2
        s2 = float((d2**2).sum()) / energy / noise**2
    assert got["0"] == pytest.approx(s1, rel=1e-5)  # the float32 rms rounds the noise scale
    assert got["1"] == pytest.approx(s2, rel=1e-5)
    assert got["1"] == pytest.approx(1.0, rel=0.05)  # the output layer: about 1 by design


def test_sensitivity_weighting_moves_rank_to_the_branch_that_matters(gen):
    torch.manual_seed(0)
    model = TwoBranches(gain=0.05)
    with torch.no_grad():
        model.b.weight.copy_(model.a.weight)  # same spectra: relative weighting ties them
    data = [torch.randn(256, 24, generator=gen) for _ in range(3)]
    rel = infospec.compress(model, data, ratio=0.5)
    sens = infospec.compress(model, data, ratio=0.5, weighting="sensitivity")
    ranks = {r["name"]: r["rank"] for r in rel.plan}
    assert ranks["a"] == ranks["b"]
    ranks_s = {r["name"]: r["rank"] for r in sens.plan}
    assert ranks_s["a"] > ranks["a"] > ranks_s["b"]
    gains = {r["name"]: r["sensitivity"] for r in sens.plan}
    assert gains["b"] < 0.01 * gains["a"]  # (0.05)^2 of a, about
    assert "sensitivity" in sens.seconds and sens.settings["weighting"] == "sensitivity"
    # and it lowers the measured end-to-end error at the same budget
    x = torch.randn(512, 24, generator=gen)
    with torch.no_grad():
        ref = model(x)
        err = {k: float(((r.model(x) - ref) ** 2).sum()) for k, r in (("rel", rel), ("s", sens))}
    assert err["s"] < err["rel"]
    # bits: the branch that matters gets the wider codes
    q = infospec.compress(model, data, bits=4, weighting="sensitivity")
    widths = {r["name"]: r["bits"] for r in q.plan}
    assert widths["a"] > widths["b"]


def test_first_batches_records_a_stream_as_it_passes():
    stream = (torch.full((2,), float(i)) for i in range(5))
    passing, kept = first_batches(stream, 2)
    assert kept == []  # nothing read yet
    assert len(list(passing)) == 5 and [float(b[0]) for b in kept] == [0.0, 1.0]
    data = [1, 2, 3]
    same, head = first_batches(data, 2)
    assert same is data and head == [1, 2]


def test_compress_streams_data_once_with_sensitivity(gen):
    model = TwoBranches(gain=1.0)
    stream = (torch.randn(64, 24, generator=gen) for _ in range(3))
    res = infospec.compress(
        model, stream, ratio=0.5, weighting="sensitivity", sensitivity_batches=2
    )
    assert all(r["sensitivity"] > 0 for r in res.plan)


def test_errors():
    model = TwoBranches(gain=1.0)
    with pytest.raises(InputError, match="weighting='sensitivity' measures"):
        infospec.compress(model, None, ratio=0.5, method="weights", weighting="sensitivity")
    with pytest.raises(InputError, match="sensitivity_batches must be an integer >= 1"):
        infospec.compress(
            model, [torch.randn(8, 24)], ratio=0.5, weighting="sensitivity", sensitivity_batches=0
        )
    with pytest.raises(InputError, match="weighting"):
        infospec.compress(model, [torch.randn(8, 24)], ratio=0.5, weighting="end-to-end")
    dead = nn.Linear(24, 24)
    with pytest.raises(InputError, match="does not reach the output"):
        output_sensitivities(model, {"dead": dead}, [torch.randn(8, 24)])
    with pytest.raises(InputError, match="noise must be"):
        output_sensitivities(model, {"a": model.a}, [torch.randn(8, 24)], noise=0.0)
    with pytest.raises(InputError, match="yielded no batch"):
        output_sensitivities(model, {"a": model.a}, [])
