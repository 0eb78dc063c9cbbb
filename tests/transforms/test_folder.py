"""load_compressed reads plan.json as untrusted text: special files, deep nesting, duplicates."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

import infospec
from infospec import InputError, SourceError
from infospec.transforms.folder import PLAN_FILE


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))


@pytest.fixture(params=["lowrank", "quantized"])
def saved(request, tmp_path):
    """A folder written by CompressionResult.save (low rank or quantized)."""
    data = [torch.randn(64, 16, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    kwargs = {"ratio": 0.5} if request.param == "lowrank" else {"bits": 4, "group_size": 16}
    return infospec.compress(_mlp(), data, **kwargs).save(tmp_path / "saved")


def _replace_plan(folder, make):
    """``folder`` with plan.json removed and ``make(path)`` called to put something there."""
    plan = folder / PLAN_FILE
    os.remove(plan)
    make(plan)
    return folder


def _write(text):
    return lambda path: path.write_text(text)


def test_a_saved_folder_still_loads(saved):
    assert isinstance(infospec.load_compressed(_mlp(), saved), torch.nn.Module)


def test_a_deeply_nested_plan_is_a_source_error(saved):
    fmt = json.loads((saved / PLAN_FILE).read_text())["format"]
    deep = f'{{"format": "{fmt}", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    folder = _replace_plan(saved, _write(deep))
    with pytest.raises(SourceError, match=r"compressed-model plan '.*plan\.json' is nested too"):
        infospec.load_compressed(_mlp(), folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_a_fifo_plan_is_refused_without_blocking(saved):
    folder = _replace_plan(saved, os.mkfifo)
    with pytest.raises(SourceError, match=r"plan\.json' is a FIFO .*not a regular file"):
        infospec.load_compressed(_mlp(), folder)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_plan_linked_to_dev_zero_is_refused_without_reading(saved):
    folder = _replace_plan(saved, lambda path: os.symlink("/dev/zero", path))
    with pytest.raises(SourceError, match=r"plan\.json' is a character device, not a regular"):
        infospec.load_compressed(_mlp(), folder)


def test_a_plan_with_a_key_twice_is_a_source_error(saved):
    text = (saved / PLAN_FILE).read_text()
    twice = text.replace("{", '{"layers": [], ', 1)  # "layers" given twice at the top
    folder = _replace_plan(saved, _write(twice))
    with pytest.raises(SourceError, match=r"plan\.json' has the key 'layers' twice in one"):
        infospec.load_compressed(_mlp(), folder)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"format": "infospec-lowrank-1", "n": ' + "9" * 5000 + "}", "holds an integer of"),
        (b"\xff\xfe{}", "is not UTF-8 text"),
        ("{not json", "is not valid JSON"),
    ],
    ids=["huge-int", "not-utf8", "not-json"],
)
def test_other_unreadable_plans_are_source_errors(saved, content, match):
    write = (lambda p: p.write_bytes(content)) if isinstance(content, bytes) else _write(content)
    folder = _replace_plan(saved, write)
    with pytest.raises(SourceError, match=r"compressed-model plan '.*plan\.json' " + match):
        infospec.load_compressed(_mlp(), folder)


def test_a_plan_that_is_a_folder_or_missing_is_named(saved):
    folder = _replace_plan(saved, os.mkdir)
    with pytest.raises(SourceError, match=r"plan\.json' is a folder, not a file"):
        infospec.load_compressed(_mlp(), folder)
    shutil.rmtree(folder / PLAN_FILE)
    with pytest.raises(InputError, match=r"not a compressed-model folder .*: it has no plan\.json"):
        infospec.load_compressed(_mlp(), folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_stored_tensors_that_are_a_fifo_are_refused_without_blocking(saved):
    # the factors' (or quantized tensors') file is checked as a safetensors header first
    plan = json.loads((saved / PLAN_FILE).read_text())
    stored = saved / (
        "quantized.safetensors" if "quant" in plan["format"] else "factors.safetensors"
    )
    assert stored.exists()
    stored.unlink()
    os.mkfifo(stored)
    with pytest.raises(SourceError, match=r"is a FIFO"):
        infospec.load_compressed(_mlp(), saved)
