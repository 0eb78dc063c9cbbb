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
                   (or a file of 3 to 13 bytes that is the start of that number: one
                   cut short, which reading then reports as truncated)
``pickle``         any other pickle stream (``\\x80`` and a protocol 2 to 5)
``gguf``           ``GGUF`` (llama.cpp; read by :class:`~infospec.sources.gguf_source.GGUFSource`)
``hdf5``           ``\\x89HDF\\r\\n\\x1a\\n`` (Keras ``.h5``)
``npy``            ``\\x93NUMPY``
``npz``            a zip archive of ``.npy`` members
``keras``          a zip archive with ``config.json`` and ``model.weights.h5``
``zip``            any other zip archive
``zip-corrupt``    ``PK\\x03\\x04`` without a readable central directory (the end of
                   a zip archive): a truncated or corrupt archive
``onnx``           best effort: a ``.onnx`` name and a protobuf field-1 varint
                   (``ir_version``) first
``unknown``        anything else
=================  ==========================================================

:func:`regular_file` refuses a FIFO, a device or a socket before anything opens it (a
FIFO would block the reader), and :func:`refusal` gives the message for a format
infospec does not read, with the command to run instead. :func:`check_torch_archive`
checks the members of a ``torch.save`` or ``torch.jit.save`` zip archive through its
central and local headers, before PyTorch reads any of it: no member is compressed where
PyTorch never compresses (a compressed tensor would be memory-mapped as its compressed
bytes; a compressed member can inflate to any size), and every member lies inside the
file, apart from the others.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import struct
import zipfile
from itertools import pairwise
from pathlib import Path

from .._errors import SourceError
from .._text import printable

__all__ = [
    "SNIFF_BYTES",
    "check_torch_archive",
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


def _zip_problem(path: Path) -> str | None:
    """Why :mod:`zipfile` cannot read the central directory of ``path``, or ``None``."""
    try:
        with zipfile.ZipFile(path):
            return None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _zip_format(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error):
        return "zip-corrupt"
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


#: Compression methods by zip code, for messages.
_METHODS = {zipfile.ZIP_DEFLATED: "deflated", zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
_METHODS[9] = "deflate64"
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip member's local header (30 bytes)
#: A TorchScript archive's deflated members may inflate to at most this many bytes plus
#: :data:`_INFLATE_RATIO` times their compressed size (torch.jit.save's code: 2-9 times).
_INFLATE_SLACK = 64 << 20
_INFLATE_RATIO = 32


def _resave(path: Path) -> str:
    """The command that re-saves the deflated checkpoint ``path`` as torch.save writes it.

    ``torch.load`` without a memory map inflates deflated members correctly.
    """
    out = f"{path}.resaved.pt"
    code = (
        f'import torch; torch.save(torch.load({_lit(path)}, map_location="cpu", '
        f"weights_only=True), {_lit(out)})"
    )
    return (
        f"if you trust the file, re-save it with: {_python_command(code)} ; then run: "
        f"infospec analyze {shlex.quote(out)}"
    )


def check_torch_archive(path: Path, fmt: str) -> None:
    """Check the members of a ``torch.save`` or TorchScript zip archive before PyTorch reads it.

    Only the central directory and each member's 30-byte local header are read, never a
    member's data. ``torch.save`` writes every member stored (uncompressed), which lets
    ``torch.load(mmap=True)`` map tensors from the file, so a ``torch-zip`` archive must
    have stored members only: a compressed tensor would be mapped as its compressed
    bytes (garbage values), and a compressed ``data.pkl`` can inflate to any size.
    ``torch.jit.save`` deflates its ``code/`` members (which ``torch.jit.load`` inflates
    into memory, the archive being read whole anyway), so a ``torchscript`` archive may
    have deflated members that inflate to at most 64 MiB plus 32 times their compressed
    size (its code inflates 2 to 9 times). For both, a stored member's two sizes agree,
    each member starts with a local header of its name and method, and its data lies
    inside the file, before the central directory, apart from the other members.

    Parameters
    ----------
    path : pathlib.Path
    fmt : {"torch-zip", "torchscript"}
        As :func:`sniff` named it.

    Raises
    ------
    SourceError
        Naming the file, the first faulty member and what to do.
    """
    torchscript = fmt == "torchscript"
    what = "TorchScript archive" if torchscript else "PyTorch checkpoint"
    writer = "torch.jit.save" if torchscript else "torch.save"
    try:
        size = os.stat(path).st_size
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            end = min(getattr(archive, "start_dir", size), size)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise SourceError(f"The {what} '{path}' cannot be read: {exc.strerror or exc}.") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(
            f"The {what} '{path}' is a truncated or corrupt zip archive (zipfile: "
            f"{why}): copy or download it again."
        ) from None

    def corrupt(info: zipfile.ZipInfo, problem: str) -> SourceError:
        return SourceError(
            f"The {what} '{path}' is a corrupt zip archive: its member "
            f"'{printable(info.filename, 200)}' {problem}. It may be truncated or "
            f"altered: copy or download it again, or re-save it with {writer}."
        )

    compressed = [i for i in infos if i.compress_type != zipfile.ZIP_STORED]
    refused = [i for i in compressed if not torchscript or i.compress_type != zipfile.ZIP_DEFLATED]
    if refused:
        first = refused[0]
        method = _METHODS.get(first.compress_type, f"method {first.compress_type}")
        if not torchscript and all(i.compress_type == zipfile.ZIP_DEFLATED for i in refused):
            fix = _resave(path)  # torch.load reads deflate when it does not map the file
        else:
            fix = f"save it again with {writer} where it was made"
        never = (
            "which torch.jit.save never writes (it deflates only its code) and "
            "torch.jit.load cannot read"
            if torchscript
            else "which torch.save never writes (it stores every member uncompressed, so "
            "that tensors can be memory-mapped)"
        )
        raise SourceError(
            f"The {what} '{path}' is a zip archive with {len(refused)} compressed "
            f"member(s) (first: '{printable(first.filename, 200)}', {method}, "
            f"{first.compress_size} bytes that inflate to {first.file_size}), {never}: it "
            f"was not written by {writer}, or was re-zipped. infospec does not inflate "
            f"them (a compressed member can inflate to any size); {fix}."
        )
    if compressed:
        packed = sum(i.compress_size for i in compressed)
        inflated = sum(i.file_size for i in compressed)
        if inflated > _INFLATE_SLACK + _INFLATE_RATIO * packed:
            raise SourceError(
                f"The {what} '{path}' has {len(compressed)} deflated member(s) whose "
                f"{packed} bytes inflate to {inflated} bytes, over {_INFLATE_RATIO} times "
                f"their size plus 64 MiB, which torch.jit.save never writes (its code "
                f"inflates 2 to 9 times): it may be a zip bomb, and infospec does not "
                f"inflate it; save the module again with torch.jit.save where it was made."
            )
    try:
        spans = _member_spans(path, infos, end, corrupt)
    except OSError as exc:
        raise SourceError(f"The {what} '{path}' cannot be read: {exc.strerror or exc}.") from None
    spans.sort(key=lambda s: s[0])
    for (_, stop, before), (start, _, info) in pairwise(spans):
        if start < stop:
            raise corrupt(
                info,
                f"starts at byte {start}, inside the member "
                f"'{printable(before.filename, 200)}' (overlapping members, as in a zip bomb)",
            )


def _member_spans(
    path: Path, infos: list[zipfile.ZipInfo], end: int, corrupt
) -> list[tuple[int, int, zipfile.ZipInfo]]:
    """Each member's (first byte, byte after its data, info), its local header checked."""
    spans: list[tuple[int, int, zipfile.ZipInfo]] = []
    with open(path, "rb") as fh:
        for info in infos:
            if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
                raise corrupt(
                    info,
                    f"is stored (uncompressed) yet declares {info.compress_size} bytes in "
                    f"the file for {info.file_size} bytes of data",
                )
            if info.header_offset < 0:
                raise corrupt(info, f"starts at byte {info.header_offset}, before the file")
            fh.seek(info.header_offset)
            raw = fh.read(_LOCAL_HEADER.size)
            if len(raw) < _LOCAL_HEADER.size:
                raise corrupt(info, f"starts at byte {info.header_offset}, past the file's end")
            sig, _, _, method, _, _, _, _, _, n_name, n_extra = _LOCAL_HEADER.unpack(raw)
            name = fh.read(n_name)
            encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
            if (
                sig != b"PK\x03\x04"
                or method != info.compress_type
                or name.decode(encoding, "replace") != info.orig_filename
            ):
                raise corrupt(
                    info,
                    f"has no local header of its own name and compression at byte "
                    f"{info.header_offset}, where the central directory puts it",
                )
            stop = info.header_offset + _LOCAL_HEADER.size + n_name + n_extra + info.compress_size
            if stop > end:
                raise corrupt(
                    info,
                    f"declares {info.compress_size} bytes of data from byte "
                    f"{info.header_offset}, past the {end} bytes that members can occupy",
                )
            spans.append((info.header_offset, stop, info))
    return spans


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
    if head.startswith(_LEGACY_MAGIC) or (3 <= len(head) and _LEGACY_MAGIC.startswith(head)):
        return "torch-legacy"  # the second: cut short within the magic number
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
    """A shell command that converts a trusted pickle checkpoint to safetensors.

    Tied tensors (one storage under two names, as GPT-2's ``lm_head`` and ``wte``) are
    written once, under their first name, so the converted file analyses as the module
    does (safetensors refuses shared tensors, and a copy of each would count twice).
    """
    out = _lit(f"{path}.safetensors")
    code = (
        f"import torch; from safetensors.torch import save_file; "
        f'ck = torch.load({_lit(path)}, map_location="cpu", weights_only=False); '
        f'sd = ck.state_dict() if hasattr(ck, "state_dict") else ck.get("state_dict", ck); '
        f"seen = set(); "
        f"save_file({{k: v.contiguous().clone() for k, v in sd.items() "
        f"if isinstance(v, torch.Tensor) and not ((v.data_ptr(), v.shape) in seen "
        f"or seen.add((v.data_ptr(), v.shape)))}}, {out})"
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
    if fmt == "zip-corrupt":
        return SourceError(
            f"The file '{path}' is a truncated or corrupt zip archive (zipfile: "
            f"{_zip_problem(path) or 'unreadable'}): its central directory, which ends "
            f"every zip archive (a torch.save checkpoint, a TorchScript archive), is "
            f"missing or damaged. Copy or download it again."
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
