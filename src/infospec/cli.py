"""The ``infospec`` command: a thin shell over :func:`infospec.analyze` and friends.

``infospec analyze [SOURCE]`` prints or writes a per-layer report; with no SOURCE it
analyses the built-in MiniLM-L6 example, weights and activations. ``infospec describe
SOURCE`` lists what would be analysed, instantly. Errors print one line naming the file,
layer or option in the command line's words (``--min-dim``, not ``min_dim``) and exit with
status 2; numeric options are checked before anything is read. Ctrl-C exits with 130 and
leaves no partial file. Skipped tensors are counted per reason (``--verbose`` names them);
``--progress`` shows progress even when stderr is not a terminal. Under torchrun
(``RANK`` and ``WORLD_SIZE`` set) ``analyze`` runs distributed and only rank 0 writes
(:mod:`infospec.analysis.distributed`).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from typing import Any

from ._checks import shown_str
from ._errors import InfospecError, InputError
from ._text import printable

__all__ = ["main"]


#: Subcommands defined in modules of their own: (command, module), in the order of
#: ``--help``. Each module defines ``add_parser(sub)`` (registering the subcommands it is
#: named for here, once) and ``run(args) -> int`` (running the one of ``args.command``),
#: and imports nothing heavy (torch) at module level, so ``infospec --help`` stays fast.
#: A new verb is one line here, not a new branch of :func:`main`.
_COMMAND_MODULES: tuple[tuple[str, str], ...] = (
    ("analyze", "infospec.cli_analyze"),
    ("describe", "infospec.cli_analyze"),
    ("compare", "infospec.cli_compare"),
    ("track", "infospec.cli_compare"),
    ("demo", "infospec.cli_compress"),
    ("compress", "infospec.cli_compress"),
    ("rope", "infospec.tools.rope_cli"),
    ("patches", "infospec.tools.patches_cli"),
    ("spectrum", "infospec.tools.spectrum_cli"),
)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="infospec", description="Measure deep networks through their spectra, in bits."
    )
    parser.add_argument("--version", action="version", version=f"infospec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in dict.fromkeys(module for _name, module in _COMMAND_MODULES):
        importlib.import_module(module).add_parser(sub)  # a module may add several verbs
    return parser


#: Numeric options checked before anything is loaded: (attribute, flag, kind, rule).
_NUMERIC = (
    ("max_texts", "--max-texts", "an int >= 1", lambda v: v >= 1),
    ("batch_size", "--batch-size", "an int >= 1", lambda v: v >= 1),
    ("max_tokens", "--max-tokens", "an int >= 1", lambda v: v >= 1),
    ("workers", "--workers", "an int >= 1", lambda v: v >= 1),
    ("min_dim", "--min-dim", "an int >= 1", lambda v: v >= 1),
    ("rel_distortion", "--rel-distortion", "a number in (0, 1]", lambda v: 0 < v <= 1),
    ("seeds", "--seeds", "an int >= 1", lambda v: v >= 1),
    ("k", "--k", "an int >= 0", lambda v: v >= 0),
    ("randomize", "--randomize", "a seed (an int >= 0)", lambda v: v >= 0),
)

#: Python parameter names of the library -> the flags that set them, for error messages.
_FLAGS = {
    "layers": "--layers",
    "activation_layers": "--activation-layers",
    "device": "--device",
    "conv": "--conv",
    "rel_distortion": "--rel-distortion",
    "min_dim": "--min-dim",
    "workers": "--workers",
    "max_tokens": "--max-tokens",
    "batch_size": "--batch-size",
    "max_texts": "--max-texts",
    "rename": "--rename",
    "k": "--k",
    "strict": "--strict",
    "bits": "--bits",
    "group_size": "--group-size",
    "allocation": "--allocation",
    "mp_edge": "--mp-edge",
    "weighting": "--weighting",
}


#: Library flags that are on/off switches in the CLI (``strict=True`` is ``--strict``).
_SWITCHES = frozenset({"strict"})


def _check_numbers(args: argparse.Namespace) -> None:
    """Every numeric option in range, or an error in the words of the command line.

    Raises
    ------
    InputError
        Naming the first option out of range, its rule and the value given.
    """
    for attr, flag, kind, rule in _NUMERIC:
        value = getattr(args, attr, None)
        if value is None:
            continue
        if not (value == value and rule(value)):  # value != value: NaN
            raise InputError(f"{flag} must be {kind}; got {shown_str(value)}.")


def _cli_words(message: str) -> str:
    """A library error message with its Python parameter names replaced by the CLI's flags.

    ``The 'min_dim' parameter of SafetensorsSource must be an int > 0. Got 0 instead.``
    becomes ``--min-dim must be an int > 0; got 0.``, and ``Use device='cpu'.`` becomes
    ``Use --device cpu.``; names that no flag sets are left as they are.

    Examples
    --------
    >>> _cli_words("The 'device' parameter of analyze is 'cuda' but no CUDA device is "
    ...            "available here. Use device='cpu'.")
    "--device is 'cuda' but no CUDA device is available here. Use --device cpu."
    """

    def parameter(m: re.Match) -> str:
        flag = _FLAGS.get(m[1])
        if flag is None:
            return m[0]
        return f"The {flag} pattern" if m[2] == "pattern" else flag

    text = re.sub(r"The '(\w+)' (parameter|argument|pattern)(?: of \w+)?", parameter, message)

    def setting(m: re.Match) -> str:
        flag = _FLAGS.get(m[1])
        if flag is None:
            return m[0]
        value = m[2] if m[2] is not None else m[3]
        if m[1] in _SWITCHES and value == "True":  # an on/off flag takes no value
            return flag
        return f"{flag} {value}"

    text = re.sub(r"\b(\w+)=(?:'([^']*)'|(\S+?))(?=[\s.,;)]|$)", setting, text)
    return re.sub(r"\. Got (.+?) instead\.", r"; got \1.", text)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as an interrupt so that it unwinds like Ctrl-C."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated


def _install_sigterm() -> Any:
    """Make SIGTERM raise :class:`_Terminated`; returns the previous handler (or None)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _on_sigterm)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``infospec`` command; returns the exit status.

    Errors print one ``infospec: error:`` line and return 2 (an operating-system error
    included, such as a read-only or full output filesystem). Ctrl-C, at any point after
    the command line starts (while torch or a model is imported and loaded too), prints
    one line and returns 130; SIGTERM does the same and returns 143 (128 + 15). Either
    way no output file is left, complete or partial: outputs are written to a temporary
    file renamed into place only when complete.
    """
    previous = None
    terminated = False
    try:
        previous = _install_sigterm()
        parser = build_parser()
        args = parser.parse_args(argv)
        _check_numbers(args)
        module = dict(_COMMAND_MODULES)[args.command]
        return int(importlib.import_module(module).run(args))
    except InfospecError as exc:
        print(f"infospec: error: {printable(_cli_words(str(exc)))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, _Terminated)
        what = "terminated (SIGTERM)" if terminated else "interrupted"
        print(f"infospec: {what}; no output file was written.", file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:  # the reader went away (`infospec describe | head`): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a file the system refused: one line, not a traceback
        where = f" '{exc.filename}'" if exc.filename else ""
        print(
            f"infospec: error: {printable(exc.strerror or exc)}{printable(where)}; check the "
            f"path and its permissions, or the free space.",
            file=sys.stderr,
        )
        return 2
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
