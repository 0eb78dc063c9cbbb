"""Listing hostile safetensors headers: time and peak memory of each step of a listing.

Writes each header to a temporary folder and lists it in a fresh interpreter (so that
the peak RSS, read from ``/proc/self/status`` ``VmHWM``, is the step's own), with
stdout sent to ``/dev/null``:

* ``N tiny tensors``: ``--tensors`` one-byte 1-D tensors (``m.<i>``), about 70 bytes of
  header each (a million: 69 MB), as safetensors writes a header (no spaces);
* ``N tiny matrices``: the same number of ``1 x 1`` tensors named ``m.<i>.weight``, whose
  kind depends on the name (the case where every name is looked at);
* the tiny tensors written with spaces (``", "``, ``": "``, as Python's ``json.dumps``
  writes), which the fast path leaves to the entry-by-entry check;
* ``long names``: ``--names`` tensors whose names are ``--name-kb`` kB long.

Steps: ``header`` (``read_safetensors_header``), ``entries``
(``open_source(path).entries()``, the listing every command starts with) and
``describe`` (``infospec describe``). With ``--before SRC``, each step is also run
with ``SRC`` (a folder holding an ``infospec`` package, e.g. ``git archive HEAD src |
tar -x -C /tmp/old`` then ``/tmp/old/src``) first on ``PYTHONPATH``: the code before a
change, measured in the same run. Prints one row per case and step: header MB, wall
seconds, CPU seconds, peak RSS MB, the 1-minute load average when it ran. Usage::

    python benchmarks/bench_hostile_headers.py [--tensors 1000000] [--names 900]
        [--name-kb 100] [--before /tmp/old/src] [--timeout 300]
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

_RUN = """
import os, sys, time
from infospec.cli import main
from infospec.sources import open_source, read_safetensors_header
wall, cpu = time.perf_counter(), time.process_time()
if sys.argv[2] == "header":
    read_safetensors_header(sys.argv[1])
elif sys.argv[2] == "entries":
    entries = open_source(sys.argv[1]).entries()
    assert len(entries) > 0 and entries[-1].name
else:
    sys.stdout = open(os.devnull, "w")
    main(["describe", sys.argv[1]])
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
print(f"{wall:.2f} {cpu:.2f} {peak:.0f}", file=sys.stderr)
"""


def _write(path: Path, text: str, data_bytes: int) -> Path:
    raw = text.encode()
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        fh.write(bytes(data_bytes))
    return path


def _tiny(folder: Path, n: int, *, spaced: bool = False, matrices: bool = False) -> Path:
    shape, leaf = ("1,1", ".weight") if matrices else ("1", "")
    entry = '"m.{i}LEAF":{{"dtype":"U8","shape":[SHAPE],"data_offsets":[{i},{j}]}}'
    entry = entry.replace("LEAF", leaf).replace("SHAPE", shape)
    if spaced:
        entry = entry.replace(":", ": ").replace(",", ", ")
    parts = (entry.format(i=i, j=i + 1) for i in range(n))
    name = f"tiny{'_spaced' if spaced else ''}{'_matrices' if matrices else ''}.safetensors"
    return _write(folder / name, "{" + (", " if spaced else ",").join(parts) + "}", n)


def _long(folder: Path, n: int, kb: int) -> Path:
    tail = "a" * (kb * 1000)
    parts = (
        f'"{i:05d}{tail}":{{"dtype":"U8","shape":[1],"data_offsets":[{i},{i + 1}]}}'
        for i in range(n)
    )
    return _write(folder / "long.safetensors", "{" + ",".join(parts) + "}", n)


def _measure(path: Path, what: str, src: str | None, timeout: float) -> str:
    """'wall | CPU | peak' of one step in a fresh interpreter, or why there is none."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _RUN, str(path), what],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return f"over {timeout:g} | - | -"
    if proc.returncode != 0:
        return f"failed ({proc.stderr.strip().splitlines()[-1][:60]}) | - | -"
    wall, cpu, peak = proc.stderr.split()[-3:]
    return f"{wall} | {cpu} | {peak}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=1_000_000)
    parser.add_argument("--names", type=int, default=900)
    parser.add_argument("--name-kb", type=int, default=100)
    parser.add_argument("--before", metavar="SRC", help="folder holding the code before")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per step")
    args = parser.parse_args()
    print("| case | header MB | step | code | wall s | CPU s | peak RSS MB | load avg |")
    print("|---|---|---|---|---|---|---|---|")
    codes = [("now", None)] + ([("before", args.before)] if args.before else [])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        n = args.tensors
        for label, make in (
            (f"{n} tiny tensors", lambda: _tiny(folder, n)),
            (f"{n} tiny matrices (*.weight, 1x1)", lambda: _tiny(folder, n, matrices=True)),
            (f"{n} tiny tensors, JSON with spaces", lambda: _tiny(folder, n, spaced=True)),
            (
                f"{args.names} names of {args.name_kb} kB",
                lambda: _long(folder, args.names, args.name_kb),
            ),
        ):
            path = make()
            mb = path.stat().st_size / 1e6
            for what in ("header", "entries", "describe"):
                for code, src in codes:
                    cells = _measure(path, what, src, args.timeout)
                    load = os.getloadavg()[0]
                    print(f"| {label} | {mb:.1f} | {what} | {code} | {cells} | {load:.1f} |")
            path.unlink()


if __name__ == "__main__":
    main()
