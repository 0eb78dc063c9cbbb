"""track(run): checkpoint series into one SQLite table, incrementally, and its page."""

import importlib
import sqlite3

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

import infospec
from infospec import InputError, SourceError
from infospec.analysis.track import TRACK_METRICS, find_checkpoints, read_monitor_log
from infospec.cli import main

track_module = importlib.import_module("infospec.analysis.track")


def _train(run, steps=120, every=30, seed=0):
    """A real run: an MLP fitted to a random teacher, a safetensors checkpoint every 30 steps."""
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(32, 8, generator=g)
    model = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.Tanh(), torch.nn.Linear(48, 24))
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    run.mkdir(parents=True, exist_ok=True)
    for step in range(1, steps + 1):
        x = torch.randn(64, 32, generator=g)
        loss = (model(x)[:, :8] - torch.tanh(x @ teacher)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % every == 0:
            folder = run / f"checkpoint-{step}"
            folder.mkdir()
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            save_file(state, folder / "model.safetensors")
    return model


@pytest.fixture
def run(tmp_path):
    folder = tmp_path / "run"
    _train(folder)
    (folder / "notes.txt").write_text("not a checkpoint")
    return folder


def test_track_values_are_analyze_and_compare_values(run):
    result = infospec.track(run, progress=False)
    assert result.analysed == [f"checkpoint-{s}" for s in (30, 60, 90, 120)]
    frame = result.frame
    assert list(frame.columns) == ["checkpoint", "step", "tensor", "metric", "value"]
    assert sorted(frame["step"].unique()) == [30, 60, 90, 120]
    alpha = result.pivot("alpha")
    assert list(alpha.index) == ["0.weight", "2.weight"] and list(alpha.columns) == [
        30,
        60,
        90,
        120,
    ]
    for step in (30, 90):
        report = infospec.analyze(run / f"checkpoint-{step}", progress=False)
        for row in report.weights:
            for metric in ("alpha", "flatness", "effective_rank", "stable_rank"):
                got = result.pivot(metric).loc[row["name"], step]
                assert got == pytest.approx(row[metric], rel=1e-12)
    pair = infospec.compare(run / "checkpoint-60", run / "checkpoint-90", progress=False)
    for row in pair.weights:
        assert result.pivot("overlap_left").loc[row["name"], 90] == pytest.approx(
            row["overlap_left"], abs=1e-12
        )
        assert result.pivot("rel_delta").loc[row["name"], 90] == pytest.approx(
            row["rel_delta"], rel=1e-12
        )
    assert set(TRACK_METRICS) <= set(frame["metric"])
    # the store holds the same table
    with sqlite3.connect(result.store) as con:
        stored = pd.read_sql("SELECT * FROM metrics", con)
    assert len(stored) == len(frame)


def test_rerun_does_no_work_for_unchanged_checkpoints(run, monkeypatch):
    infospec.track(run, progress=False)
    analysis = importlib.import_module("infospec.analysis.analyze")
    compare_module = importlib.import_module("infospec.analysis.compare")

    def refuse(*args, **kwargs):
        raise AssertionError("an unchanged checkpoint was read again")

    monkeypatch.setattr(analysis, "analyze", refuse)
    monkeypatch.setattr(compare_module, "compare", refuse)
    again = infospec.track(run, progress=False)
    assert again.analysed == [] and len(again.unchanged) == 4
    monkeypatch.undo()
    # a new checkpoint: only it is read (against the one before it)
    state = {k: v + 0.01 for k, v in _state(run / "checkpoint-120").items()}
    (run / "checkpoint-150").mkdir()
    save_file(state, run / "checkpoint-150" / "model.safetensors")
    more = infospec.track(run, progress=False)
    assert more.analysed == ["checkpoint-150"]
    # a checkpoint rewritten under the same name: it and its successor are read again
    save_file(
        {k: v * 2 for k, v in _state(run / "checkpoint-60").items()},
        run / "checkpoint-60" / "model.safetensors",
    )
    redo = infospec.track(run, progress=False)
    assert redo.analysed == ["checkpoint-60", "checkpoint-90"]
    with sqlite3.connect(redo.store) as con:
        assert con.execute("SELECT count(*) FROM checkpoints").fetchone()[0] == 5


def _state(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_interrupted_track_leaves_the_store_consistent(run, monkeypatch):
    compare_module = importlib.import_module("infospec.analysis.compare")
    real = compare_module.compare
    calls = []

    def interrupted(base, tuned, **kw):
        calls.append(tuned)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(base, tuned, **kw)

    monkeypatch.setattr(compare_module, "compare", interrupted)
    with pytest.raises(KeyboardInterrupt):
        infospec.track(run, progress=False)
    store = run / "infospec-track.sqlite"
    with sqlite3.connect(store) as con:
        done = [r[0] for r in con.execute("SELECT checkpoint FROM checkpoints ORDER BY step")]
        per_key = con.execute("SELECT count(*) FROM metrics GROUP BY key").fetchall()
    assert done == ["checkpoint-30", "checkpoint-60"]
    assert len(per_key) == 2 and all(n > 0 for (n,) in per_key)
    monkeypatch.undo()
    rest = infospec.track(run, progress=False)
    assert rest.analysed == ["checkpoint-90", "checkpoint-120"]
    assert rest.unchanged == ["checkpoint-30", "checkpoint-60"]


def test_explicit_list_files_and_errors(tmp_path, run):
    files = []
    for step in (3, 1, 2):
        path = tmp_path / f"step_{step}.safetensors"
        save_file({"w": torch.randn(16, 12, generator=torch.Generator().manual_seed(step))}, path)
        files.append(path)
    assert [c.step for c in find_checkpoints(tmp_path)] == [1, 2, 3]
    listed = infospec.track(files, store=tmp_path / "list.sqlite", progress=False)
    # a list is compared in its own order; the table is in step order
    assert listed.analysed == ["step_3.safetensors", "step_1.safetensors", "step_2.safetensors"]
    assert sorted(listed.frame["step"].unique()) == [1, 2, 3]
    with pytest.raises(InputError, match=r"'store' parameter of track is required"):
        infospec.track(files, progress=False)
    with pytest.raises(SourceError, match=r"holds no checkpoint: no entry is named like"):
        infospec.track(tmp_path / "run" / "checkpoint-30", progress=False)
    with pytest.raises(SourceError, match=r"run folder .* does not exist"):
        infospec.track(tmp_path / "nope", progress=False)
    with pytest.raises(SourceError, match=r"checkpoint .*missing.* \(item 1 of 'run'\)"):
        infospec.track([files[0], tmp_path / "missing"], store=tmp_path / "x.sqlite")
    infospec.track(run, progress=False)
    with pytest.raises(InputError, match=r"was written with overlap=True, not False"):
        infospec.track(run, overlap=False, progress=False)
    bad = tmp_path / "bad.sqlite"
    bad.write_text("this is not a database" * 100)
    with pytest.raises(SourceError, match=r"is not an infospec SQLite store"):
        infospec.track(run, store=bad, progress=False)
    with pytest.raises(InputError, match=r"has no metric 'nonsense'"):
        listed.pivot("nonsense")


def test_html_page_and_monitor_log(run, tmp_path):
    result = infospec.track(run, progress=False)
    page = tmp_path / "track.html"
    result.to_html(page)
    text = page.read_text()
    assert text.count("<img") == 4  # alpha, flatness and overlap heatmaps, the curves
    assert "overlap_left" in text
    # a Monitor log of a training run reads into the same table and page
    from infospec.training import Monitor

    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 12))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    log = tmp_path / "monitor.jsonl"
    with Monitor(model, every=5, window=2, log_path=log, alerts=None) as monitor:
        for _ in range(20):
            loss = model(torch.randn(64, 16)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            monitor.step()
    logged = read_monitor_log(log)
    steps = sorted(logged.frame["step"].unique())
    assert steps == [5, 10, 15, 20]
    history = monitor.history()
    want = history[(history["table"] == "weights") & (history["step"] == 10)]
    got = logged.pivot("alpha")[10]
    for _, row in want.iterrows():
        assert got.loc[row["matrix"]] == pytest.approx(row["alpha"], rel=1e-12)
    assert "activations/0" in set(logged.frame["tensor"])
    logged.to_html(tmp_path / "monitor.html")
    assert (tmp_path / "monitor.html").read_text().count("<img") == 3
    with pytest.raises(SourceError, match=r"is not a Monitor log: it lacks the columns"):
        bad = tmp_path / "x.csv"
        bad.write_text("a,b\n1,2\n")
        read_monitor_log(bad)


def test_cli_track(run, tmp_path, capsys):
    out = tmp_path / "long.csv"
    html = tmp_path / "t.html"
    assert main(["track", str(run), "--out", str(out), "--html", str(html), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "4 checkpoints analysed, 0 unchanged" in text and "median alpha by step" in text
    frame = pd.read_csv(out)
    assert set(frame["checkpoint"]) == {f"checkpoint-{s}" for s in (30, 60, 90, 120)}
    assert html.is_file()
    assert main(["track", str(run)]) == 0
    assert "0 checkpoints analysed, 4 unchanged" in capsys.readouterr().out
    assert main(["track", str(tmp_path / "empty-nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["track", str(run), "--k", "0"]) == 2
    assert "--k must be an int >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_minilm_fine_tuned_for_a_few_steps(tmp_path):
    """MiniLM fine-tuned for 3 steps on the built-in corpus (a SimCSE-style dropout loss)."""
    from infospec.example import example_batches, example_corpus, load_model_folder
    from infospec.sources.example import minilm_path

    torch.manual_seed(0)
    model, tokenizer = load_model_folder(minilm_path())
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = example_batches(tokenizer, example_corpus(48), batch_size=16)
    run = tmp_path / "run"
    for step, batch in enumerate(batches, start=1):
        a = model(**batch).last_hidden_state[:, 0]
        b = model(**batch).last_hidden_state[:, 0]
        sim = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T
        loss = torch.nn.functional.cross_entropy(sim / 0.05, torch.arange(len(sim)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.save_pretrained(run / f"checkpoint-{step}")
    result = infospec.track(run, layers=r"attention\.self\.query", progress=False)
    overlap = result.pivot("overlap_left")
    assert overlap.shape == (6, 2)
    # a few small steps move the top singular subspaces little, and the change is real
    assert np.all(overlap.to_numpy() > 0.5)
    assert np.all(result.pivot("rel_delta").to_numpy() > 0)
