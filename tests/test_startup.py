"""Start-up cost: the command line and ``import infospec`` do not load torch until needed."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_import_infospec_does_not_import_torch():
    assert "torch" not in _modules_after("import infospec")


def test_help_does_not_import_torch():
    code = (
        "import contextlib, io\n"
        "from infospec.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['analyze', '--help'])\n"
    )
    assert "torch" not in _modules_after(code)


def test_lazy_names_resolve_to_the_defining_modules():
    import infospec
    from infospec.analysis import analyze
    from infospec.measures import spectral_flatness
    from infospec.spectra import singular_values

    assert infospec.analyze is analyze
    assert infospec.spectral_flatness is spectral_flatness
    assert infospec.singular_values is singular_values
    assert infospec.sources.open_source.__module__ == "infospec.sources.dispatch"


def test_all_lists_every_public_name_once():
    import infospec
    from infospec import measures

    names = infospec.__all__
    assert len(names) == len(set(names))
    assert set(measures.__all__) <= set(names)
    for name in names:
        assert getattr(infospec, name) is not None
    assert {"analyze", "Report", "StreamingCovariance", "InputError"} <= set(dir(infospec))


def test_unknown_attribute_raises_attribute_error():
    import infospec

    with pytest.raises(AttributeError, match="no attribute 'not_a_measure'"):
        _ = infospec.not_a_measure


def test_describe_of_a_safetensors_file_imports_neither_torch_nor_numpy(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file({"conv.weight": torch.zeros(16, 8, 3, 3), "fc.weight": torch.zeros(12, 20)}, path)
    code = (
        "import contextlib, io\n"
        "from infospec.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['describe', {str(path)!r}]) == 0\n"
    )
    loaded = _modules_after(code)
    assert "torch" not in loaded
    assert "numpy" not in loaded


def test_describe_applies_the_analysis_conv_rule(tmp_path, capsys):
    """describe and analyze agree on a conv whose per-position matrices are too small."""
    import torch
    from safetensors.torch import save_file

    from infospec import analyze
    from infospec.cli import main

    path = tmp_path / "m.safetensors"
    save_file(
        {
            "conv1.weight": torch.randn(1024, 1, 512, 1),  # 512 positions of 1024 x 1
            "conv2.weight": torch.randn(64, 32, 3, 3),
            "fc.weight": torch.randn(20, 30),
        },
        path,
    )
    assert main(["describe", str(path)]) == 0
    out = capsys.readouterr().out
    assert "9 x 64x32 pooled" in out
    assert "2 analysed, 1 skipped" in out
    report = analyze(path, progress=False)
    assert [w["name"] for w in report.weights] == ["conv2.weight", "fc.weight"]
    assert len(report.skipped) == 1
    assert main(["describe", str(path), "--conv", "flatten"]) == 0
    assert "3 analysed, 0 skipped" in capsys.readouterr().out


def test_static_dtype_names_cover_every_torch_dtype():
    """Listing a file decides 'cannot be read' without torch: the table must match torch's."""
    import torch

    from infospec.sources.entry import _OTHER_TORCH_DTYPES, _READABLE_FLOATS

    names = {
        str(v).replace("torch.", "") for v in vars(torch).values() if isinstance(v, torch.dtype)
    }
    assert names <= _OTHER_TORCH_DTYPES | _READABLE_FLOATS
    for name in _OTHER_TORCH_DTYPES | _READABLE_FLOATS:
        assert isinstance(getattr(torch, name), torch.dtype)
