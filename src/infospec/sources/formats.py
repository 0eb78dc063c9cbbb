"""What a file holds, told from its first bytes rather than its name.

:func:`sniff` reads at most :data:`SNIFF_BYTES` bytes (and, for a zip archive, its
central directory through :mod:`zipfile`, never a member's data) and names the format:

=================  ==========================================================
format             recognised by
=================  ==========================================================
``safetensors``    an 8-byte little-endian header length, then ``{``
``torch-zip``      a zip archive (``PK\\x03\\x04``) with a ``data.pkl`` member:
                   ``torch.save`` since PyTorch 1.6
``torchscript``    a zip archive with ``code/`` or ``constants.pkl`` members:
                   ``torch.jit.save``
``torch-legacy``   a pickle (protocol 2) whose first object is PyTorch's legacy
                   magic number: ``torch.save(..., _use_new_zipfile_serialization=False)``
``pickle``         any other pickle stream (``\\x80`` and a protocol 2 to 5)
``gguf``           ``GGUF`` (llama.cpp; read by :class:`~infospec.sources.gguf_source.GGUFSource`)
``hdf5``           ``\\x89HDF\\r\\n\\x1a\\n`` (Keras ``.h5``)
``npy``            ``\\x93NUMPY``
``npz``            a zip archive of ``.npy`` members
``keras``          a zip archive with ``config.json`` and ``model.weights.h5``
``zip``            any other zip archive
``onnx``           best effort: a ``.onnx`` name and a protobuf field-1 varint
                   (``ir_version``) first
``unknown``        anything else
=================  ==========================================================

:func:`regular_file` refuses a FIFO, a device or a socket before anything opens it (a
FIFO would block the reader), and :func:`refusal` gives the message for a format
infospec does not read, with the command to run instead.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import struct
import zipfile
from pathlib import Path

from .._errors import SourceError

__all__ = [
    "SNIFF_BYTES",
    "convert_pickle_command",
    "refusal",
    "regular_file",
    "sniff",
    "then_analyze",
]

#: Bytes read from the start of a file to tell its format.
SNIFF_BYTES = 16
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_KIND_WORDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def regular_file(path: Path) -> int:
    """Check that ``path`` is a regular file (links followed) and return its size.

    Raises
    ------
    SourceError
        If it is missing, unreadable, a folder, or a FIFO, device or socket.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SourceError(f"No such file: '{path}'.") from None
    except OSError as exc:
        raise SourceError(f"The file '{path}' cannot be read: {exc.strerror or exc}.") from exc
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    if stat.S_ISDIR(st.st_mode):
        raise SourceError(f"'{path}' is a folder, not a file.")
    what = _KIND_WORDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
    raise SourceError(
        f"'{path}' is {what}, not a regular file: infospec reads checkpoints from regular "
        f"files only. Copy the checkpoint to a file and pass that."
    )


def _zip_format(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return "zip"
    # members sit under one root folder, named after the file (torch.save of code.pt
    # writes code/data.pkl): TorchScript adds <root>/code/ and <root>/constants.pkl
    parts = [n.split("/") for n in names]
    if any((len(p) > 2 and p[1] == "code") or p[1:] == ["constants.pkl"] for p in parts):
        return "torchscript"
    if any(p[1:] == ["data.pkl"] for p in parts):
        return "torch-zip"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    if "config.json" in names and any(n.endswith(".h5") for n in names):
        return "keras"
    return "zip"


def sniff(path: Path) -> str:
    """The format of the regular file ``path``, from its first bytes (see the table).

    Raises
    ------
    SourceError
        If the file cannot be read.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError as exc:
        raise SourceError(f"The file '{path}' cannot be read: {exc.strerror or exc}.") from exc
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] >= 2:
        return "safetensors"  # first: no other format has "{" at byte 8
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _zip_format(path)
    if head.startswith(_LEGACY_MAGIC):
        return "torch-legacy"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if head.startswith(b"GGUF"):
        return "gguf"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if path.suffix.lower() == ".onnx" and head[:1] == b"\x08":
        return "onnx"
    return "unknown"


def _python_command(code: str) -> str:
    return f"python -c {shlex.quote(code)}"


def _lit(path: Path | str) -> str:
    return json.dumps(str(path))


def convert_pickle_command(path: Path) -> str:
    """A shell command that converts a trusted pickle checkpoint to safetensors."""
    out = _lit(f"{path}.safetensors")
    code = (
        f"import torch; from safetensors.torch import save_file; "
        f'ck = torch.load({_lit(path)}, map_location="cpu", weights_only=False); '
        f'sd = ck.state_dict() if hasattr(ck, "state_dict") else ck.get("state_dict", ck); '
        f"save_file({{k: v.contiguous().clone() for k, v in sd.items() "
        f"if isinstance(v, torch.Tensor)}}, {out})"
    )
    return _python_command(code)


def _numpy_command(path: Path, expr: str) -> str:
    code = (
        f"import numpy as np; from safetensors.numpy import save_file; "
        f"save_file({expr}, {_lit(f'{path}.safetensors')})"
    )
    return _python_command(code)


def then_analyze(path: Path) -> str:
    """``then run: infospec analyze <path>.safetensors``, quoted for the shell."""
    return f"then run: infospec analyze {shlex.quote(f'{path}.safetensors')}"


def refusal(path: Path, fmt: str) -> SourceError:
    """The error for a file in format ``fmt`` that infospec does not read.

    Each message names the file and the format, and gives a command to run instead.
    """
    then = then_analyze(path)
    lit = _lit(path)
    if fmt == "gguf":  # read by GGUFSource; refused only without the gguf package
        return SourceError(
            f"The file '{path}' is a GGUF file; reading it needs the gguf package: "
            f"pip install 'infospec[gguf]'."
        )
    if fmt == "onnx":
        code = (
            f"import onnx; from onnx import numpy_helper; from safetensors.numpy import "
            f"save_file; m = onnx.load({lit}); save_file({{t.name: numpy_helper.to_array(t) "
            f"for t in m.graph.initializer}}, {_lit(f'{path}.safetensors')})"
        )
        return SourceError(
            f"The file '{path}' looks like an ONNX model, which infospec does not read: "
            f"export its weights with: {_python_command(code)} ; {then}."
        )
    if fmt in ("hdf5", "keras"):
        word = "an HDF5 file (Keras weights)" if fmt == "hdf5" else "a Keras archive"
        code = (
            f"import h5py, numpy as np; from safetensors.numpy import save_file; d = {{}}; "
            f'f = h5py.File({lit}); f.visititems(lambda n, o: d.__setitem__(n.replace("/", '
            f'"."), np.ascontiguousarray(o[()])) if isinstance(o, h5py.Dataset) else None); '
            f"save_file(d, {_lit(f'{path}.safetensors')})"
        )
        hint = (
            f"export its weights with: {_python_command(code)} ; {then} (Keras stores a "
            f"Dense kernel as in x out, which has the same spectrum, and a conv kernel as "
            f"(*k, in, out))"
            if fmt == "hdf5"
            else f"run: unzip {shlex.quote(str(path))} model.weights.h5 ; then infospec "
            f"analyze model.weights.h5 prints the command that exports its weights"
        )
        return SourceError(f"The file '{path}' is {word}, which infospec does not read: {hint}.")
    if fmt == "npy":
        cmd = _numpy_command(path, f'{{"weight": np.load({lit})}}')
        return SourceError(
            f"The file '{path}' is a NumPy array, which infospec reads only inside a state "
            f"dict: convert it with: {cmd} ; {then}."
        )
    if fmt == "npz":
        cmd = _numpy_command(path, f"dict(np.load({lit}))")
        return SourceError(
            f"The file '{path}' is a NumPy archive, which infospec does not read as a file: "
            f"convert it with: {cmd} ; {then}."
        )
    if fmt == "pickle":
        return SourceError(
            f"The file '{path}' is a plain Python pickle, not a PyTorch checkpoint, and "
            f"infospec never unpickles code: if you trust the file, convert it in a trusted "
            f"environment with: {convert_pickle_command(path)} ; {then}."
        )
    if fmt == "zip":
        return SourceError(
            f"The file '{path}' is a zip archive that is neither a PyTorch checkpoint nor "
            f"TorchScript: unzip it and pass the checkpoint inside."
        )
    return SourceError(
        f"The file '{path}' is in no format infospec reads (its first bytes match neither "
        f"safetensors, a PyTorch checkpoint, TorchScript, GGUF, ONNX, HDF5 nor NumPy): it "
        f"may be truncated or corrupt; pass a .safetensors file, a PyTorch checkpoint "
        f"(.bin, .pt, .pth, .ckpt), an index or a model folder."
    )
