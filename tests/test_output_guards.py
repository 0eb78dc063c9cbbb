"""Output files (issue 15, data loss) and process faults (issues 9, 15) of the command line.

``--out`` never replaces an input, replaces a file infospec did not write only with
``--force``, writes through links keeping the target's mode, and turns a refused write
(read-only or full filesystem, ``/proc``) into one ``infospec: error:`` line with exit 2
and no file left. Ctrl-C and SIGTERM during start-up print one line (exit 130 / 143).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from infospec import InputError, cli_analyze, cli_options
from infospec._io import atomic_write, check_output, is_infospec_output
from infospec.cli import main

ERROR = "infospec: error: "


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"fc.weight": torch.randn(20, 16, generator=torch.Generator().manual_seed(0))}, path)
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(ERROR)
    return err[0]


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# -- the output is never an input ---------------------------------------------------------
@pytest.mark.parametrize("force", [False, True])
def test_out_naming_the_model_file_is_refused_and_the_model_kept(model, capsys, force):
    before = model.read_bytes()
    argv = ["analyze", str(model), "--format", "json", "--out", str(model), "--no-fits"]
    assert main(argv + (["--force"] if force else [])) == 2
    line = _error_line(capsys)
    assert "is the input file" in line and "--out" in line
    assert model.read_bytes() == before


def test_out_as_a_hard_link_or_a_symlink_to_the_model_is_refused(model, tmp_path, capsys):
    before = model.read_bytes()
    os.link(model, tmp_path / "hard.json")
    os.symlink(model, tmp_path / "soft.json")
    for name in ("hard.json", "soft.json"):
        argv = ["analyze", str(model), "--out", str(tmp_path / name), "--no-fits", "--force"]
        assert main(argv) == 2
        assert "is the input file" in _error_line(capsys)
    assert model.read_bytes() == before and (tmp_path / "soft.json").is_symlink()


def test_out_naming_a_folders_config_json_is_refused(tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"fc.weight": torch.randn(20, 16)}, folder / "model.safetensors")
    config = folder / "config.json"
    config.write_text('{"model_type": "bert"}')
    argv = ["analyze", str(folder), "--format", "json", "--out", str(config), "--no-fits"]
    assert main([*argv, "--force"]) == 2
    assert "is a file of the input folder" in _error_line(capsys)
    assert config.read_text() == '{"model_type": "bert"}'
    # a report inside the model folder may be written, and written again
    report = folder / "report.json"
    for _ in range(2):
        assert main(["analyze", str(folder), "--out", str(report), "--no-fits"]) == 0
    assert json.loads(report.read_text())["weights"][0]["name"] == "fc.weight"


def test_out_naming_the_data_file_is_refused(tmp_path, capsys):
    data = tmp_path / "texts.txt"
    data.write_text("one text\n")
    folder = tmp_path / "model"
    folder.mkdir()
    argv = ["analyze", str(folder), "--data", str(data), "--out", str(data), "--force"]
    assert main(argv) == 2
    assert f"is the input file '{data}'" in _error_line(capsys)
    assert data.read_text() == "one text\n"


# -- an existing file that infospec did not write needs --force ---------------------------
def test_replacing_a_file_infospec_did_not_write_needs_force(model, tmp_path, capsys):
    other = tmp_path / "notes.json"
    other.write_text('{"mine": 1}')
    argv = ["analyze", str(model), "--out", str(other), "--no-fits"]
    assert main(argv) == 2
    assert "not a report infospec wrote; pass --force" in _error_line(capsys)
    assert other.read_text() == '{"mine": 1}'
    assert main([*argv, "--force"]) == 0
    assert json.loads(other.read_text())["meta"]["infospec"]


@pytest.mark.parametrize("suffix", ["json", "csv", "html", "txt"])
def test_infospec_reports_are_recognised_by_content(model, tmp_path, suffix):
    out = tmp_path / f"report.{suffix}"
    argv = ["analyze", str(model), "--out", str(out), "--no-fits", "--no-progress"]
    assert main(argv) == 0
    assert is_infospec_output(out)
    assert main(argv) == 0  # written again without --force


def test_a_checkpoint_or_a_config_is_not_an_infospec_output(model, tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"meta": 1, "model_type": "bert"}')
    assert not is_infospec_output(model)
    assert not is_infospec_output(config)
    assert is_infospec_output(tmp_path / "empty.csv") is False  # missing
    (tmp_path / "empty.csv").write_text("")
    assert is_infospec_output(tmp_path / "empty.csv")  # nothing to lose


def test_check_output_refuses_a_directory(tmp_path):
    with pytest.raises(InputError, match=r"--out '.*' is a directory; give a file path"):
        check_output(tmp_path)


# -- links and modes ----------------------------------------------------------------------
def test_out_through_a_symlink_keeps_the_link_and_the_targets_mode(model, tmp_path):
    report = tmp_path / "report.json"
    assert main(["analyze", str(model), "--out", str(report), "--no-fits"]) == 0
    os.chmod(report, 0o600)
    link = tmp_path / "link.json"
    link.symlink_to(report)
    assert main(["analyze", str(model), "--out", str(link), "--no-fits", "--layers", "fc"]) == 0
    assert link.is_symlink() and os.readlink(link) == str(report)
    assert oct(os.stat(report).st_mode & 0o777) == oct(0o600)
    assert json.loads(report.read_text())["meta"]["layers"] == ["fc"]
    assert _leftovers(tmp_path) == []


def test_atomic_write_keeps_an_existing_files_mode(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("old")
    os.chmod(path, 0o640)
    with atomic_write(path) as fh:
        fh.write("new")
    assert path.read_text() == "new" and os.stat(path).st_mode & 0o777 == 0o640


# -- refused writes: one line, exit 2, nothing left ----------------------------------------
@pytest.mark.parametrize(
    ("where", "code", "words"),
    [
        ("replace", errno.EROFS, "the filesystem is read-only"),
        ("fsync", errno.ENOSPC, "the filesystem is full"),
        ("mkstemp", errno.EACCES, "permission denied"),
    ],
)
def test_a_refused_write_is_one_line_and_leaves_nothing(
    model, tmp_path, capsys, monkeypatch, where, code, words
):
    """The system's refusal simulated in-process (the subprocess tests below use real mounts)."""
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    target = {"replace": (os, "replace"), "fsync": (os, "fsync"), "mkstemp": (tempfile, "mkstemp")}
    monkeypatch.setattr(*target[where], refuse)
    out = tmp_path / "out" / "r.json"
    out.parent.mkdir()
    assert main(["analyze", str(model), "--out", str(out), "--no-fits"]) == 2
    line = _error_line(capsys)
    assert f"Cannot write the output to '{out}': {words}" in line
    assert list(out.parent.iterdir()) == []


def test_out_under_proc_is_one_line(model, capsys):
    assert main(["analyze", str(model), "--out", "/proc/infospec-report.json", "--no-fits"]) == 2
    assert "Cannot write the output to '/proc/infospec-report.json'" in _error_line(capsys)


def _mount_works() -> bool:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


needs_mount = pytest.mark.skipif(
    not _mount_works(), reason="no private mount namespace here (unshare -m, mount tmpfs)"
)


def _in_mount(tmp_path, setup: str, argv: list[str]) -> subprocess.CompletedProcess:
    """Run the CLI in a private mount namespace where ``D`` is a fresh tmpfs, after ``setup``."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cli = " ".join(f"'{a}'" for a in [sys.executable, "-m", "infospec.cli", *argv])
    script = (
        f"set -e; D='{mnt}'; mount -t tmpfs -o size=256k tmpfs \"$D\"; {setup}; set +e; "
        f'{cli.replace("@D", mnt.as_posix())}; rc=$?; echo LEFT; ls -A "$D"; exit $rc'
    )
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True)


@needs_mount
def test_out_on_a_read_only_mount_is_one_line_exit_2(model, tmp_path):
    done = _in_mount(
        tmp_path,
        'mount -o remount,ro,bind "$D" "$D"',
        ["analyze", str(model), "--out", "@D/r.json", "--no-fits", "--no-progress"],
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"{ERROR}Cannot write the output to '{tmp_path / 'mnt' / 'r.json'}': the filesystem is "
        f"read-only; nothing was written there. Give a writable path (--out)."
    ]
    assert done.stdout.split("LEFT")[1].split() == []


@needs_mount
def test_out_on_a_full_filesystem_is_one_line_exit_2(model, tmp_path):
    done = _in_mount(
        tmp_path,
        'dd if=/dev/zero of="$D/fill" bs=4096 2>/dev/null || true',
        ["analyze", str(model), "--out", "@D/r.json", "--no-fits", "--no-progress"],
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(ERROR) and "the filesystem is full" in line
    assert done.stdout.split("LEFT")[1].split() == ["fill"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0500 directory anyway")
def test_out_in_a_directory_without_write_permission(model, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert main(["analyze", str(model), "--out", str(folder / "r.json"), "--no-fits"]) == 2
        assert "permission denied" in _error_line(capsys)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_an_os_error_elsewhere_is_one_line(model, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "/somewhere/file")

    monkeypatch.setattr(cli_analyze, "_run_describe", refuse)
    assert main(["describe", str(model)]) == 2
    assert _error_line(capsys) == (
        f"{ERROR}Permission denied '/somewhere/file'; check the path and its permissions, "
        f"or the free space."
    )


# -- the other verbs that write ------------------------------------------------------------
def test_compare_out_is_guarded(model, tmp_path, capsys):
    tuned = tmp_path / "t.safetensors"
    save_file({"fc.weight": torch.randn(20, 16)}, tuned)
    before = tuned.read_bytes()
    assert main(["compare", str(model), str(tuned), "--out", str(tuned), "--force"]) == 2
    assert "is the input file" in _error_line(capsys)
    assert tuned.read_bytes() == before


def test_track_out_and_html_are_guarded(model, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoint-1").mkdir(parents=True)
    ckpt = run / "checkpoint-1" / "model.safetensors"
    shutil.copy(model, ckpt)
    before = ckpt.read_bytes()
    for flag in ("--out", "--html"):
        assert main(["track", str(run), flag, str(ckpt), "--force"]) == 2
        line = _error_line(capsys)
        assert f"{flag} '{ckpt}' is a file of the input folder" in line
    assert ckpt.read_bytes() == before


def test_demo_out_refuses_a_folder_with_other_files(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "results.csv").write_text("precious\n")
    assert main(["demo", "--quick", "--out", str(folder)]) == 2
    assert "pass --force to write the demo's files into it" in _error_line(capsys)
    assert (folder / "results.csv").read_text() == "precious\n"


# -- names with control characters reach a terminal escaped --------------------------------
@pytest.fixture
def hostile_names(tmp_path):
    path = tmp_path / "h.safetensors"
    g = torch.Generator().manual_seed(0)
    save_file(
        {
            "evil\u202eplh.weight": torch.randn(20, 16, generator=g),
            "red\x1b[31m.weight": torch.randn(20, 16, generator=g),
        },
        path,
    )
    return path


def test_csv_on_a_terminal_is_escaped_and_raw_into_a_pipe(hostile_names, capsys, monkeypatch):
    argv = ["analyze", str(hostile_names), "--format", "csv", "--no-fits", "--no-progress"]
    monkeypatch.setattr(cli_options, "stdout_is_terminal", lambda: True)
    assert main(argv) == 0
    shown = capsys.readouterr().out
    assert "\u202e" not in shown and "\x1b" not in shown
    assert "evil\\u202eplh.weight" in shown and "red\\x1b[31m.weight" in shown
    monkeypatch.setattr(cli_options, "stdout_is_terminal", lambda: False)
    assert main(argv) == 0
    raw = capsys.readouterr().out
    assert "evil\u202eplh.weight" in raw and "red\x1b[31m.weight" in raw


def test_json_to_stdout_carries_names_as_escapes(hostile_names, capsys):
    argv = ["analyze", str(hostile_names), "--format", "json", "--no-fits", "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.isascii() and "\x1b" not in text
    names = {r["name"] for r in json.loads(text)["weights"]}
    assert names == {"evil\u202eplh.weight", "red\x1b[31m.weight"}


# -- process faults --------------------------------------------------------------------------
def test_device_meta_is_one_line_in_cli_words(model, capsys):
    assert main(["analyze", str(model), "--device", "meta", "--no-fits"]) == 2
    assert _error_line(capsys) == (
        f"{ERROR}--device is 'meta', a device whose tensors hold no values, so there is no "
        f"spectrum to compute on it. Use --device cpu."
    )


_SLOW_START = textwrap.dedent(
    """
    import importlib.abc, sys, time
    from infospec.cli import main

    class SlowTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch":
                print("importing torch", flush=True)
                time.sleep(60)   # a start-up that the signal interrupts
            return None

    sys.meta_path.insert(0, SlowTorch())
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize(
    ("sig", "rc", "line"),
    [
        (signal.SIGINT, 130, "infospec: interrupted; no output file was written."),
        (signal.SIGTERM, 143, "infospec: terminated (SIGTERM); no output file was written."),
    ],
)
def test_a_signal_while_torch_loads_is_one_line(model, tmp_path, sig, rc, line):
    out = tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_START, "analyze", str(model), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "importing torch\n"  # start-up reached torch
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == rc
    assert err.strip().splitlines() == [line]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_sigterm_while_writing_leaves_no_file(model, tmp_path, capsys, monkeypatch):
    """SIGTERM in the middle of the write: the handler main installs unwinds atomic_write."""
    out = tmp_path / "r.json"
    real_fsync = os.fsync
    handler = signal.getsignal(signal.SIGTERM)

    def fsync_then_terminated(fd):
        real_fsync(fd)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "fsync", fsync_then_terminated)
    assert main(["analyze", str(model), "--out", str(out), "--no-fits"]) == 143
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("terminated (SIGTERM); no output file was written.")
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    assert signal.getsignal(signal.SIGTERM) is handler  # main restored the handler
