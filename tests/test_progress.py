"""Progress on stderr: plain rate-limited lines without a terminal, quiet by default."""

import gc

import pytest

from infospec import _progress
from infospec._progress import PlainProgress, progress_bar


class _Clock:
    """A fake time.monotonic, moved by hand."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr(_progress.time, "monotonic", c)
    return c


@pytest.mark.parametrize("enabled", [None, False])
def test_quiet_without_a_terminal_unless_asked(enabled, capfd):
    items = [1, 2, 3]
    assert progress_bar(items, total=3, desc="x", unit="batch", enabled=enabled) is items
    assert progress_bar(total=3, desc="x", unit="run", enabled=enabled) is None
    assert capfd.readouterr().err == ""


def test_plain_lines_at_a_low_rate(clock, capfd):
    bar = progress_bar(range(9), total=9, desc="activations", unit="batch", enabled=True)
    assert isinstance(bar, PlainProgress)
    seen = []
    for item in bar:
        seen.append(item)
        clock.t += 3.0  # 3 s a batch: a line once 10 s have passed since the last
    assert seen == list(range(9))
    assert capfd.readouterr().err.splitlines() == [
        "activations: 4/9 batch (44 %), 12 s, about 15 s left",
        "activations: 8/9 batch (89 %), 24 s, about 3 s left",
        "activations: 9/9 batch in 27.0 s",
    ]


def test_a_short_run_prints_only_its_final_line(clock, capfd):
    for _ in progress_bar([1, 2], total=2, desc="weights", unit="layer", enabled=True):
        clock.t += 1.0
    assert capfd.readouterr().err == "weights: 2/2 layer in 2.0 s\n"


def test_manual_plain_bar_with_postfix_closes_once(clock, capfd):
    bar = progress_bar(total=None, desc="demo", unit="run", enabled=True)
    bar.set_postfix_str("seed 1", refresh=False)
    clock.t = 11.0
    bar.update(2)
    bar.close()
    bar.close()
    assert capfd.readouterr().err.splitlines() == [
        "demo: 2 run, 11 s [seed 1]",
        "demo: 2 run in 11.0 s [seed 1]",
    ]


def test_an_interrupted_iteration_still_ends_its_line(clock, capfd):
    bar = PlainProgress([1, 2, 3], total=3, desc="w", unit="layer")
    it = iter(bar)
    assert next(it) == 1
    del it, bar
    gc.collect()
    assert capfd.readouterr().err == "w: 0/3 layer in 0.0 s\n"


def test_a_manual_bar_is_not_iterable():
    with pytest.raises(TypeError, match="manual PlainProgress"):
        list(PlainProgress(total=1, desc="x", unit="run"))
