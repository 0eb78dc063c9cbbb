"""Tests of the Lightning and Hugging Face callbacks with real (tiny) training runs on CPU."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from infospec._errors import InputError
from infospec.training import callbacks
from infospec.training.monitor import Monitor


def _has_hooks(model: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _data(n: int = 96, d: int = 12, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def _check_history(monitor: Monitor, steps: list[int]) -> None:
    frame = monitor.history()
    assert sorted(frame["step"].unique().tolist()) == steps
    assert set(frame["table"]) == {"activations", "weights"}
    ok = frame.query("status == 'ok'")
    assert len(ok) == len(frame)
    for col in ("flatness", "effective_rank"):
        assert np.isfinite(ok[col].to_numpy(float)).all()
    acts = frame.query("table == 'activations'")
    assert np.isfinite(acts["entropy_bits_per_dim"].to_numpy(float)).all()
    assert np.isfinite(acts["coding_rate_bits"].to_numpy(float)).all()
    assert (acts["samples"] > acts["dim"]).all()


def test_importing_the_module_does_not_import_the_frameworks():
    code = (
        "import sys, infospec.training.callbacks as c; "
        "assert 'lightning' not in sys.modules and 'pytorch_lightning' not in sys.modules; "
        "assert 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        callbacks.Nope  # noqa: B018


class _Shell(callbacks._MonitorShell):
    """The framework-independent part of both callbacks, without importing a framework."""

    def __init__(self, monitor=None, **options):
        self._init_shell("Shell", monitor, options)


def test_shell_options_and_monitor_lifecycle():
    model = nn.Sequential(nn.Linear(12, 12))
    with pytest.raises(InputError, match=r"Shell got unknown Monitor option\(s\) 'evry'.*every"):
        _Shell(evry=3)
    given = Monitor(model, every=3)
    assert _Shell(given).monitor is given
    with pytest.raises(InputError, match=r"either a Monitor or Monitor options, not both"):
        _Shell(given, every=3)
    with pytest.raises(InputError, match=r"'monitor' argument of Shell must be an infospec"):
        _Shell(model)
    with pytest.raises(InputError, match=r"passed no model"):
        _Shell(every=2)._start(None)
    # a given monitor is re-attached, whatever model the framework passes
    given.remove()
    shell = _Shell(given)
    assert shell._start(nn.Linear(12, 12)) is given and _has_hooks(model)
    shell._stop()
    assert not _has_hooks(model)
    # a monitor built from options is kept for the same model, replaced for another
    made = _Shell(every=2, alerts=None)
    first = made._start(model)
    made._stop()
    assert made._start(model) is first
    other = nn.Sequential(nn.Linear(12, 12))
    second = made._start(other)
    assert second is not first and second.model is other
    first.remove()
    made._stop()
    assert not _has_hooks(model) and not _has_hooks(other)


# -- PyTorch Lightning -------------------------------------------------------------------


def _lightning_run(tmp_path, callback, *, steps=6, accumulate=1):
    L = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.loggers import CSVLogger

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 12))
            self.head = nn.Linear(12, 3)

        def forward(self, x):
            return self.head(self.net(x))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    torch.manual_seed(0)
    module = Tiny()
    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    logger = CSVLogger(tmp_path, name="run")
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accumulate_grad_batches=accumulate,
        log_every_n_steps=1,
    )
    with warnings.catch_warnings():
        # Lightning's own chatter on a tiny CPU run (no workers, torch deprecations)
        warnings.filterwarnings("ignore", message=".*(num_workers|many workers|LeafSpec).*")
        trainer.fit(module, loader)
    return module, trainer, logger


def test_lightning_callback_real_run(tmp_path):
    pytest.importorskip("lightning.pytorch")
    callback = callbacks.InfospecLightningCallback(every=2, window=2, layers=r"^net\.", alerts=None)
    module, trainer, logger = _lightning_run(tmp_path, callback)
    assert trainer.global_step == 6
    assert list(callback.monitor.layers) == ["net.0", "net.2"]
    _check_history(callback.monitor, [2, 4, 6])
    assert not _has_hooks(module)  # removed on fit end
    # the measures reached the trainer's logger
    logger.save()
    logged = pd.read_csv(logger.experiment.metrics_file_path)
    col = "infospec/activations/net.2/flatness"
    assert col in logged.columns
    values = logged[["step", col]].dropna()
    assert sorted(values["step"].astype(int).tolist()) == [2, 4, 6]
    assert np.isfinite(values[col].to_numpy(float)).all()


def test_lightning_callback_counts_optimizer_steps_under_accumulation(tmp_path):
    pytest.importorskip("lightning.pytorch")
    callback = callbacks.InfospecLightningCallback(every=2, window=1, alerts=None)
    module, trainer, _ = _lightning_run(tmp_path, callback, steps=4, accumulate=2)
    assert trainer.global_step == 4
    frame = callback.monitor.history()
    assert sorted(frame["step"].unique().tolist()) == [2, 4]
    # window=1 optimizer step = 2 accumulated batches of 16 rows
    assert (frame.query("table == 'activations'")["samples"] == 32).all()
    assert not _has_hooks(module)


def test_lightning_callback_with_a_given_monitor_and_bad_options():
    pytest.importorskip("lightning.pytorch")
    cls = callbacks.InfospecLightningCallback
    model = nn.Sequential(nn.Linear(12, 12))
    monitor = Monitor(model, every=3)
    assert cls(monitor).monitor is monitor
    with pytest.raises(InputError, match=r"unknown Monitor option\(s\) 'evry'"):
        cls(evry=3)
    with pytest.raises(InputError, match=r"either a Monitor or Monitor options, not both"):
        cls(monitor, every=3)
    with pytest.raises(InputError, match=r"'monitor' argument of InfospecLightningCallback"):
        cls(model)
    monitor.remove()


# -- Hugging Face Trainer ----------------------------------------------------------------


class _HFModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 12))
        self.head = nn.Linear(12, 3)

    def forward(self, x, labels=None):
        logits = self.head(self.net(x))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


class _HFData(torch.utils.data.Dataset):
    def __init__(self):
        self.x, self.y = _data()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def _hf_run(tmp_path, callback, steps=6):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    model = _HFModel()
    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        max_steps=steps,
        per_device_train_batch_size=16,
        learning_rate=0.05,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=_HFData(), callbacks=[callback])
    trainer.train()
    return model, trainer


def test_trainer_callback_real_run(tmp_path):
    pytest.importorskip("transformers")
    callback = callbacks.InfospecTrainerCallback(
        every=2, window=2, layers=["net.0", "net.2"], alerts=None
    )
    model, trainer = _hf_run(tmp_path, callback)
    assert trainer.state.global_step == 6
    _check_history(callback.monitor, [2, 4, 6])
    assert not _has_hooks(model)  # removed on train end
    entries = [e for e in trainer.state.log_history if any(k.startswith("infospec/") for k in e)]
    assert [e["step"] for e in entries] == [2, 4, 6]
    value = entries[-1]["infospec/weights/net.0.weight/log_sigma_var"]
    assert math.isfinite(value) and value > 0
    last = callback.monitor.history().query("step == 6 and matrix == 'net.0.weight'")
    assert value == pytest.approx(float(last["log_sigma_var"].iloc[0]), rel=1e-12)


def test_trainer_callback_reuses_a_monitor_across_runs(tmp_path):
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    holder = _HFModel()
    monitor = Monitor(holder, every=3, window=1, alerts=None)
    monitor.remove()
    callback = callbacks.InfospecTrainerCallback(monitor)
    with pytest.raises(InputError, match=r"unknown Monitor option\(s\) 'window_'"):
        callbacks.InfospecTrainerCallback(window_=2)
    # a callback given a monitor re-attaches it at train begin and removes it at the end
    callback.on_train_begin(None, None, None, model=holder)
    assert callback.monitor is monitor and monitor._attached
    callback.on_train_end(None, None, None)
    assert not _has_hooks(holder) and not monitor._attached
    with pytest.raises(InputError, match=r"passed no model"):
        callbacks.InfospecTrainerCallback(every=2).on_train_begin(None, None, None)


def test_shell_pools_over_processes_when_a_group_runs(monkeypatch):
    model = nn.Sequential(nn.Linear(12, 12))
    monkeypatch.setattr(callbacks, "_process_group_size", lambda: 2)
    made = _Shell(every=2, alerts=None)
    assert made._start(model).distributed is True
    made._stop()
    kept = _Shell(every=2, alerts=None, distributed=False)
    assert kept._start(nn.Sequential(nn.Linear(12, 12))).distributed is False
    kept._stop()
    monkeypatch.setattr(callbacks, "_process_group_size", lambda: 1)
    single = _Shell(every=2, alerts=None)
    assert single._start(nn.Sequential(nn.Linear(12, 12))).distributed is False
    single._stop()


_DDP_SCRIPT = """
import sys
import torch
from torch import nn
import lightning.pytorch as L
from infospec.training.callbacks import InfospecLightningCallback


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 12))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


if __name__ == "__main__":
    out = sys.argv[1]
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 12, generator=g), torch.randint(0, 12, (128,), generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    cb = InfospecLightningCallback(every=2, window=2, alerts=None, log_path=f"{out}/log.jsonl")
    trainer = L.Trainer(
        max_steps=4, accelerator="cpu", devices=2, strategy="ddp", logger=False,
        callbacks=[cb], enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), loader)
    assert cb.monitor.distributed
    cb.monitor.history().to_pickle(f"{out}/history.{trainer.global_rank}.pkl")
"""


@pytest.mark.slow
def test_lightning_ddp_pools_the_ranks(tmp_path):
    """A real two-process Lightning DDP run on the CPU (gloo): the callback pools the ranks."""
    pytest.importorskip("lightning.pytorch")
    script = tmp_path / "train.py"
    script.write_text(_DDP_SCRIPT)
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rank0, rank1 = (pd.read_pickle(tmp_path / f"history.{r}.pkl") for r in (0, 1))
    pd.testing.assert_frame_equal(rank0, rank1)
    acts = rank0[rank0["table"] == "activations"]
    # 2 steps of the window x 16 rows per batch x 2 ranks (the sampler splits the data)
    assert set(acts["samples"]) == {64}
    assert sorted(set(acts["step"])) == [2, 4]
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(lines) == len(rank0)  # written by rank 0 only
