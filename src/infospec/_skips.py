"""Skip reasons counted by class: the same reason for many tensors, said once.

A skip reason names one tensor's details (``smaller side 4 < min_dim=10 (matrix 4 x 64)``);
:func:`skip_reason_class` drops them so that the terminal, the HTML page and ``infospec
describe`` count the skipped tensors per class instead of listing them line by line. This
module imports nothing heavy: ``describe`` uses it without torch or pandas.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["skip_reason_class", "skipped_by_reason"]

#: Skip reasons whose text carries names or numbers, mapped to one class each:
#: (pattern matched at the start of the reason, the class's text; ``\\1`` refers to a group).
_REASON_CLASSES = (
    (r"smaller side \d+ < min_dim=(\d+)", r"smaller side < min_dim=\1"),
    (r"same tensor as '", "same tensor as another name (tied weights)"),
    (r"empty tensor", "empty tensor"),
    (r"non-floating dtype", "non-floating dtype (an index, mask or quantized buffer)"),
    (r"dtype \S+ cannot be read", "dtype that torch cannot read"),
    (r"\d+-D tensor with no known matrix layout", "tensor with no known matrix layout"),
)


def skip_reason_class(reason: str) -> str:
    """The class of a skip reason: its text without the numbers and names of one tensor.

    Known reasons map to a fixed text (``smaller side 4 < min_dim=10 (matrix 4 x 64)`` ->
    ``smaller side < min_dim=10``, ``same tensor as 'a.weight' (tied weights)`` -> ``same
    tensor as another name (tied weights)``); any other reason loses its parenthesised
    details that hold digits and its quoted names, so that reasons differing only in a
    shape or a name are counted together.

    Examples
    --------
    >>> skip_reason_class("smaller side 4 < min_dim=10 (matrix 4 x 64)")
    'smaller side < min_dim=10'
    >>> skip_reason_class("1-D tensor (bias or norm scale)")
    '1-D tensor (bias or norm scale)'
    >>> skip_reason_class("same tensor as 'embed.weight' (tied weights)")
    'same tensor as another name (tied weights)'
    """
    text = str(reason).strip()
    for pattern, label in _REASON_CLASSES:
        m = re.match(pattern, text)
        if m:  # not m.expand: Python 3.11 parses the template anew on every call
            return label.replace(r"\1", m.group(1)) if m.re.groups else label
    text = re.sub(r"\s*\([^()]*\d[^()]*\)", "", text)
    text = re.sub(r"'[^']*'", "'…'", text)
    return text.strip() or "no reason given"


def skipped_by_reason(skipped: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The skipped records grouped by :func:`skip_reason_class`, the largest group first.

    Returns
    -------
    list of (str, list of dict)
        Each reason class with its records in report order; classes of equal size in
        alphabetical order.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    classes: dict[str, str] = {}  # reasons repeat: each one's class computed once
    for r in skipped:
        reason = r.get("reason", "")
        key = classes.get(reason) if isinstance(reason, str) else None
        if key is None:
            key = skip_reason_class(reason)
            if isinstance(reason, str):
                classes[reason] = key
        groups.setdefault(key, []).append(r)
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
