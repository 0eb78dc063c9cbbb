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
