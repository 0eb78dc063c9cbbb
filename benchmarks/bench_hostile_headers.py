"""Listing hostile safetensors headers: time and peak memory of ``infospec describe``.

Writes each header to a temporary folder and lists it in a fresh interpreter (so that
the peak RSS, read from ``/proc/self/status`` ``VmHWM``, is the listing's own), with
stdout sent to ``/dev/null``:

* ``N tiny tensors``: ``--tensors`` one-byte tensors (``m.<i>``), about 70 bytes of header
  each (a million: 69 MB);
* ``long names``: ``--names`` tensors whose names are ``--name-kb`` kB long;
* the same headers through ``read_safetensors_header`` alone.

Prints one line per case: header MB, wall seconds, CPU seconds, peak RSS MB, the load
average when it ran. Usage::

    python benchmarks/bench_hostile_headers.py [--tensors 1000000] [--names 900] [--name-kb 100]
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
from infospec.sources import read_safetensors_header
wall, cpu = time.perf_counter(), time.process_time()
if sys.argv[2] == "header":
    read_safetensors_header(sys.argv[1])
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


def _tiny(folder: Path, n: int) -> Path:
    parts = (f'"m.{i}":{{"dtype":"U8","shape":[1],"data_offsets":[{i},{i + 1}]}}' for i in range(n))
    return _write(folder / "tiny.safetensors", "{" + ",".join(parts) + "}", n)


def _long(folder: Path, n: int, kb: int) -> Path:
    tail = "a" * (kb * 1000)
    parts = (
        f'"{i:05d}{tail}":{{"dtype":"U8","shape":[1],"data_offsets":[{i},{i + 1}]}}'
        for i in range(n)
    )
    return _write(folder / "long.safetensors", "{" + ",".join(parts) + "}", n)


def _measure(path: Path, what: str) -> tuple[float, float, float]:
    proc = subprocess.run(
        [sys.executable, "-c", _RUN, str(path), what], capture_output=True, text=True, check=True
    )
    wall, cpu, peak = map(float, proc.stderr.split()[-3:])
    return wall, cpu, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=1_000_000)
    parser.add_argument("--names", type=int, default=900)
    parser.add_argument("--name-kb", type=int, default=100)
    args = parser.parse_args()
    print("| case | header MB | step | wall s | CPU s | peak RSS MB | load avg |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for label, path in (
            (f"{args.tensors} tiny tensors", _tiny(folder, args.tensors)),
            (f"{args.names} names of {args.name_kb} kB", _long(folder, args.names, args.name_kb)),
        ):
            mb = path.stat().st_size / 1e6
            for what in ("header", "describe"):
                wall, cpu, peak = _measure(path, what)
                load = os.getloadavg()[0]
                cells = [label, f"{mb:.1f}", what, f"{wall:.2f}", f"{cpu:.2f}", f"{peak:.0f}"]
                print("| " + " | ".join([*cells, f"{load:.1f}"]) + " |")
            path.unlink()


if __name__ == "__main__":
    main()
