import re

import numpy as np
import pytest

from infospec._io import is_infospec_output
from infospec.cli import main

pytest.importorskip("matplotlib")


def _rows(out: str, label: str) -> dict[int, tuple[float, float, float]]:
    """``t -> (sigma^2, f_c, bits/pixel)`` of one image's block of the printed table."""
    block = out.split(label, 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in block.splitlines()[2:]:
        m = re.match(r"\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)$", line)
        if not m:
            break
        rows[int(m[1])] = tuple(float(v) for v in m.groups()[1:])
    return rows


def _image(tmp_path, name, rng):
    from matplotlib import image as mpimg

    path = tmp_path / name
    mpimg.imsave(path, rng.random((40, 56)), cmap="gray")
    return path


def test_digits_and_china_write_a_figure_and_the_numbers(tmp_path, capsys):
    pytest.importorskip("sklearn")
    out = tmp_path / "spectrum.png"
    argv = ["spectrum", "sklearn:digits", "sklearn:china", "--out", str(out)]
    assert main([*argv, "--timesteps", "50,500"]) == 0
    text = capsys.readouterr().out
    assert "sklearn:digits (scikit-learn load_digits, 1797 images, 8x8): alpha 2.267" in text
    assert "sklearn:china (scikit-learn sample image china.jpg, 427x640): alpha 2.093" in text
    rows = _rows(text, "sklearn:china (")
    assert sorted(rows) == [50, 500]
    sigma2_50, fc_50, bits_50 = rows[50]
    assert sigma2_50 == pytest.approx(0.008057, rel=1e-3)  # cosine schedule, T = 1000
    assert fc_50 > rows[500][1] and bits_50 > rows[500][2] > 0  # more noise: lower f_c
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and is_infospec_output(out)
    # its own figure is replaced without --force
    assert main(["spectrum", "sklearn:digits", "--out", str(out), "--schedule", "linear"]) == 0
    assert out.read_bytes() != data


def test_image_files_png_and_jpeg(tmp_path, capsys, rng):
    png = _image(tmp_path, "noise.png", rng)
    jpg = _image(tmp_path, "noise.jpg", rng) if _has_pillow() else None
    files = [str(png)] + ([str(jpg)] if jpg else [])
    assert main(["spectrum", *files, "--out", str(tmp_path / "s.png"), "--f-min", "0.05"]) == 0
    text = capsys.readouterr().out
    alpha = float(re.search(r"noise.png \(file, 40x56\): alpha (\S+)", text)[1])
    assert abs(alpha) < 0.3  # white noise: a flat spectrum


def _has_pillow() -> bool:
    try:
        import PIL  # noqa: F401
    except ImportError:
        return False
    return True


def test_refuses_to_replace_a_file_infospec_did_not_write(tmp_path, capsys):
    pytest.importorskip("sklearn")
    out = tmp_path / "mine.png"
    out.write_bytes(b"\x89PNG\r\n\x1a\n not infospec's")
    assert main(["spectrum", "sklearn:digits", "--out", str(out)]) == 2
    assert "exists and is not a report infospec wrote; pass --force" in capsys.readouterr().err
    assert main(["spectrum", "sklearn:digits", "--out", str(out), "--force"]) == 0
    assert is_infospec_output(out)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["missing.png"], "Cannot read the image 'missing.png': no such file"),
        (["sklearn:lena"], "Unknown built-in image 'sklearn:lena'; use one of sklearn:china"),
        (["sklearn:digits", "--timesteps", "0,5"], r"--timesteps must be comma-separated ints"),
        (["sklearn:digits", "--timesteps", "a"], r"--timesteps must be comma-separated ints"),
        (["sklearn:digits", "--steps", "10", "--schedule", "linear"], "--steps must be an int"),
        (
            ["sklearn:digits", "--steps", "99999999999999999999"],
            r"--steps must be an int in \[1, 100000\] for the cosine schedule",
        ),
        (
            ["sklearn:digits", "--steps", "100000000", "--timesteps", "1"],
            r"--steps must be an int in \[1, 100000\]",
        ),
        (["sklearn:digits", "--steps", "0"], r"--steps must be an int in \[1, 100000\]"),
        (["sklearn:digits", "--f-min", "-1"], "--f-min must be a frequency > 0"),
    ],
)
def test_errors_name_the_input(tmp_path, capsys, monkeypatch, argv, match):
    monkeypatch.chdir(tmp_path)
    assert main(["spectrum", *argv]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "infospec-spectrum.png").exists()


def test_an_unreadable_file_is_named(tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    assert main(["spectrum", str(bad), "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert f"Cannot read the image '{bad}'" in err
    assert not (tmp_path / "s.png").exists()


def test_pixel_scaling_to_the_ddpm_range():
    from infospec.tools.spectrum_cli import _to_unit_range

    np.testing.assert_array_equal(_to_unit_range(np.array([0, 255], np.uint8), "x"), [-1, 1])
    np.testing.assert_array_equal(_to_unit_range(np.array([0.0, 0.5, 1.0]), "x"), [-1, 0, 1])
    from infospec import SourceError

    with pytest.raises(SourceError, match="Cannot read the image 'x': float pixels outside"):
        _to_unit_range(np.array([2.0]), "x")


def test_the_cli_step_bound_is_the_library_one():
    from infospec.spectra.diffusion import MAX_STEPS
    from infospec.tools import spectrum_cli

    assert spectrum_cli.MAX_STEPS == MAX_STEPS
