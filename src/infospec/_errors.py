"""Exceptions and warnings of infospec.

Every error the package raises on purpose derives from :class:`InfospecError`.
Errors caused by the caller's input also derive from :class:`ValueError`, so
``except ValueError`` keeps working for code that does not know about infospec.
"""

from __future__ import annotations

__all__ = ["InfospecError", "InfospecWarning", "InputError", "SourceError"]


class InfospecError(Exception):
    """Base class of every exception raised by infospec."""


class InputError(InfospecError, ValueError):
    """An argument has the wrong shape, dtype, range or value.

    The message names the argument, what was received (shape, dtype or value)
    and what is expected.
    """


class SourceError(InfospecError, ValueError):
    """A model source (file, folder, module) is missing, unreadable or malformed.

    The message names the file or layer and the problem.
    """


class InfospecWarning(UserWarning):
    """A recoverable numerical issue (for example round-off negative eigenvalues clipped)."""
