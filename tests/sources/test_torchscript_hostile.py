"""Hostile TorchScript archives: zip bombs, foreign compressions, truncation.

``torch.jit.save`` deflates its ``code/`` members (and only those) and stores the rest;
``torch.jit.load`` inflates them into memory. A bomb is refused from the zip headers,
before ``torch.jit.load`` reads anything."""

import zipfile

import pytest
import torch
from torch import nn

from infospec import SourceError
from infospec.cli import main
from infospec.sources import open_source
from infospec.sources.formats import check_torch_archive, sniff
from infospec.sources.torchscript_source import TorchScriptSource


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3)
        self.fc = nn.Linear(16, 12)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(ConvNet()), path)
    return path


@pytest.fixture
def no_jit_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load was called")

    monkeypatch.setattr(torch.jit, "load", refuse)


def _one_error_line(capsys, argv, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("infospec: error: "), err
    for word in words:
        assert word in err, (word, err)


def test_jit_save_deflates_only_code_and_passes(archive):
    with zipfile.ZipFile(archive) as z:
        methods = {i.filename.split("/")[1]: i.compress_type for i in z.infolist()}
        deflated = {i.filename for i in z.infolist() if i.compress_type}
    assert methods["code"] == zipfile.ZIP_DEFLATED and methods["data.pkl"] == zipfile.ZIP_STORED
    assert deflated and all(n.split("/")[1] == "code" for n in deflated)
    stored = {
        i.compress_type for i in zipfile.ZipFile(archive).infolist() if "/code/" not in i.filename
    }
    assert stored == {zipfile.ZIP_STORED}
    check_torch_archive(archive, "torchscript")
    src = open_source(archive)
    assert isinstance(src, TorchScriptSource)
    assert torch.equal({e.name: e for e in src}["fc.weight"].load(), ConvNet().fc.weight.detach())


def test_a_fully_deflated_rezip_loads_the_same_values(tmp_path, archive):
    out = tmp_path / "deflated.pt"
    with zipfile.ZipFile(archive) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zo:
        for name in zin.namelist():
            zo.writestr(name, zin.read(name))
    entries = {e.name: e for e in open_source(out)}  # jit.load inflates, never maps
    assert torch.equal(entries["conv.weight"].load(), ConvNet().conv.weight.detach())


def test_a_code_zip_bomb_is_refused_before_jit_load(tmp_path, archive, no_jit_load, capsys):
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(archive) as zin, zipfile.ZipFile(bomb, "w") as zo:
        code = next(n for n in zin.namelist() if n.endswith(".py") and "/code/" in n)
        for info in zin.infolist():
            data = zin.read(info.filename)
            new = zipfile.ZipInfo(info.filename)
            new.compress_type = info.compress_type
            if info.filename == code:
                with zo.open(new, "w", force_zip64=True) as fh:
                    fh.write(data)
                    for _ in range(6):  # 96 MiB of spaces: over 64 MiB + 32 x ~100 kB
                        fh.write(b" " * (1 << 24))
            else:
                zo.writestr(new, data)
    with pytest.raises(
        SourceError,
        match=r"'.*bomb\.pt' has \d+ deflated member\(s\) whose \d+ bytes inflate to \d+ "
        r"bytes, over 32 times their size plus 64 MiB.*zip bomb",
    ):
        TorchScriptSource(bomb)
    _one_error_line(capsys, ["describe", str(bomb)], "zip bomb")


def test_other_compressions_are_refused(tmp_path, archive, no_jit_load):
    out = tmp_path / "bz.pt"
    with zipfile.ZipFile(archive) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_BZIP2) as zo:
        for name in zin.namelist():
            zo.writestr(name, zin.read(name))
    with pytest.raises(
        SourceError,
        match=r"TorchScript archive '.*bz\.pt' is a zip archive with \d+ compressed member\(s\) "
        r"\(first: '.*', bzip2,.*torch\.jit\.load cannot read",
    ):
        open_source(out)


def test_truncated_archive_says_truncated(tmp_path, archive, capsys):
    raw = archive.read_bytes()
    cut = tmp_path / "cut.pt"
    for n in (len(raw) // 2, len(raw) - 1, 100):
        cut.write_bytes(raw[:n])
        assert sniff(cut) == "zip-corrupt"
        for opener in (open_source, TorchScriptSource):
            with pytest.raises(SourceError, match=r"'.*cut\.pt' is a truncated or corrupt zip"):
                opener(cut)
    _one_error_line(capsys, ["describe", str(cut)], "truncated or corrupt zip archive")
