"""Monitor(latent=...): a Gaussian encoder's capacity, KL rate and active dimensions."""

import math
import warnings

import pandas as pd
import pytest
import torch
from torch import nn

from infospec import InfospecWarning, InputError
from infospec.measures.latent import latent_capacity
from infospec.training.latent_watch import LATENT_METRICS, check_latent
from infospec.training.monitor import MONITOR_COLUMNS, Monitor


class Encoder(nn.Module):
    """Gaussian encoder of 3 latent dimensions; ``joint`` returns [mu | logvar]."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.mu = nn.Linear(16, 3)
        self.logvar = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.tanh(self.body(x))
        return self.mu(h), self.logvar(h)


class VAE(nn.Module):
    def __init__(self, collapsed: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = Encoder()
        self.joint = nn.Linear(8, 6)  # a one-head encoder: [mu | logvar]
        self.dec = nn.Linear(3, 8)
        if collapsed:  # every input gets the same code: no capacity at all
            for layer in (self.enc.mu, self.joint):
                nn.init.zeros_(layer.weight)

    def forward(self, x):
        mu, logvar = self.enc(x)
        self.joint(x)
        return self.dec(mu + torch.randn_like(mu) * (0.5 * logvar).exp())


def _batches(n=3, rows=40):
    g = torch.Generator().manual_seed(4)
    return [torch.randn(rows, 8, generator=g) for _ in range(n)]


def _latent(monitor: Monitor) -> pd.DataFrame:
    h = monitor.history()
    return h[h["table"] == "latent"].reset_index(drop=True)


def _run(model, batches, **kwargs):
    kw = {"every": len(batches), "window": len(batches), "alerts": None, **kwargs}
    monitor = Monitor(model, **kw)
    metrics = {}
    for x in batches:
        model(x)
        metrics = monitor.step()
    monitor.remove()
    return monitor, metrics


@pytest.mark.parametrize(
    "latent, layer",
    [("enc", "enc"), (("enc.mu", "enc.logvar"), "enc.mu|enc.logvar"), ("joint", "joint")],
)
def test_the_row_is_latent_capacity_of_the_window(latent, layer):
    model, batches = VAE(), _batches()
    monitor, metrics = _run(model, batches, latent=latent, min_dim=3)
    with torch.no_grad():
        if layer == "joint":
            mu, logvar = torch.cat([model.joint(x) for x in batches]).chunk(2, dim=-1)
        else:
            mu, logvar = (torch.cat(t) for t in zip(*(model.enc(x) for x in batches), strict=True))
    want = latent_capacity(mu, logvar)
    row = _latent(monitor).iloc[0]
    assert (row["layer"], row["status"], row["dim"], row["samples"]) == (layer, "ok", 3, 120)
    assert row["capacity_bits"] == pytest.approx(float(want.total), rel=1e-6)
    assert row["kl_rate_bits"] == pytest.approx(float(want.kl_rate), rel=1e-6)
    assert row["active_dims"] == want.n_active
    assert 0 < row["capacity_bits"] <= row["kl_rate_bits"]
    tag = f"infospec/latent/{layer}/capacity_bits"
    assert metrics[tag] == pytest.approx(row["capacity_bits"])
    # the other tables are still measured beside it
    assert {"activations", "weights", "latent"} == set(monitor.history()["table"])


def test_only_the_window_and_training_mode_are_collected():
    model, batches = VAE(), _batches(4, rows=50)
    monitor = Monitor(model, every=4, window=2, latent="enc", alerts=None, max_tokens=32)
    hooks = []
    for i, x in enumerate(batches):
        hooks.append(len(model.enc._forward_hooks))
        model(x)
        if i == 2:  # an evaluation pass inside the window is not collected
            model.eval()
            model(x)
            model.train()
        monitor.step()
    # hooks only for the last two steps' passes, and gone after the measurement
    assert hooks == [0, 0, 1, 1] and len(model.enc._forward_hooks) == 0
    row = _latent(monitor).iloc[0]
    assert row["samples"] == 2 * 32  # max_tokens rows of each of the window's 2 passes
    monitor.remove()


def test_latent_only_and_a_collapse_alert():
    model = VAE(collapsed=True)
    alerts = []
    monitor, _ = _run(
        model,
        _batches(),
        latent="joint",
        weights=False,
        activations=False,
        alerts={"latent/capacity_bits": 0.5},
        alert_callback=alerts.append,
    )
    row = _latent(monitor).iloc[0]
    assert row["capacity_bits"] == 0.0 and row["active_dims"] == 0
    assert row["kl_rate_bits"] > 0  # a KL paid for codes that carry nothing
    assert list(monitor.history()["table"]) == ["latent"]
    assert [(a.table, a.layer, a.metric) for a in alerts] == [("latent", "joint", "capacity_bits")]
    assert "the latent of 'joint' fell to 0" in alerts[0].message


def test_the_log_has_the_latent_columns(tmp_path):
    path = tmp_path / "log.csv"
    _run(VAE(), _batches(), latent="enc", weights=False, activations=False, log_path=path)
    frame = pd.read_csv(path)
    assert list(frame.columns) == list(MONITOR_COLUMNS)
    assert set(LATENT_METRICS) <= set(frame.columns)
    assert frame["table"].tolist() == ["latent"] and frame["active_dims"].iloc[0] >= 1


class Odd(nn.Module):
    def __init__(self, out) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.out = out

    def forward(self, x):
        self.lin(x)
        return self.out(x)


@pytest.mark.parametrize(
    "out, message",
    [
        (lambda x: x[:, :3], "odd width 3, which cannot be read as \\[mu \\| logvar\\]"),
        (lambda x: (x,), "returned a tuple of 1 item"),
        (lambda x: (x, x[:, :2]), "mu has shape \\(5, 4\\) and logvar \\(5, 2\\)"),
        (lambda x: (x, x.long()), "logvar from module '' must be a floating-point tensor"),
        (lambda x: torch.full_like(x, math.nan), "'mu' argument of latent_capacity must be finite"),
    ],
)
def test_a_bad_encoder_output_is_an_error_row(out, message):
    model = Odd(out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor, _ = _run(model, [torch.randn(5, 4)], latent="", weights=False, alerts=None)
    row = _latent(monitor).iloc[0]
    assert row["status"] == "error"
    assert pd.Series([row["warning"]]).str.contains(message).iloc[0], row["warning"]
    assert any("could not be measured" in str(w.message) for w in caught)


def test_too_few_rows_is_an_error_row():
    model = Odd(lambda x: x)
    with pytest.warns(InfospecWarning, match="the latent of layer '\\(model\\)' could not be"):
        monitor, _ = _run(model, [torch.randn(1, 4)], latent="", weights=False, activations=False)
    row = _latent(monitor).iloc[0]
    assert row["status"] == "error" and row["samples"] == 1
    assert "1 row(s) of the latent in the window" in row["warning"]


def test_latent_argument_errors():
    model = VAE()
    with pytest.raises(InputError, match=r"names 'enc\.mus', which is not a module.*'enc\.mu'"):
        Monitor(model, latent="enc.mus")
    with pytest.raises(InputError, match="'latent' parameter of Monitor must be the name"):
        Monitor(model, latent=("enc.mu", "enc.logvar", "dec"))
    with pytest.raises(InputError, match="'latent' parameter of Monitor must be the name"):
        Monitor(model, latent=3)
    with pytest.raises(InputError, match=r"names 'enc\.mu' twice"):
        check_latent(model, ["enc.mu", "enc.mu"])
    with pytest.raises(InputError, match="Switch on at least one table \\(or give latent"):
        Monitor(model, weights=False, activations=False)
    with pytest.raises(InputError, match="prefixed by 'activations/', 'weights/' or 'latent/'"):
        Monitor(model, alerts={"latent/capacity": 1.0})


def test_a_latent_log_reads_as_a_track(tmp_path):
    from infospec.analysis.track import read_monitor_log

    path = tmp_path / "log.jsonl"
    monitor, _ = _run(VAE(), _batches(), latent="enc", weights=False, log_path=path)
    track = read_monitor_log(path).frame
    latent = track[track["tensor"] == "latent/enc"].set_index("metric")["value"]
    row = _latent(monitor).iloc[0]
    assert latent["capacity_bits"] == pytest.approx(row["capacity_bits"])
    assert latent["active_dims"] == row["active_dims"]
    assert "activations/enc.body" in set(track["tensor"])
