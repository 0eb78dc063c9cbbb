"""One rule for the packages' lazy attributes (:pep:`562`): import the home module on first use.

``infospec``, ``infospec.sources`` and ``infospec.spectra`` name, for each attribute that
would pull in torch, the submodule that defines it; their module ``__getattr__`` calls
:func:`lazy_attribute`, which imports that submodule, caches the value in the package's
namespace (later look-ups skip ``__getattr__``) and returns it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

__all__ = ["lazy_attribute"]


def lazy_attribute(
    package: str, namespace: dict[str, Any], homes: Mapping[str, str], name: str
) -> Any:
    """``name`` from the submodule ``homes[name]`` of ``package``, cached in ``namespace``.

    Raises
    ------
    AttributeError
        If ``name`` has no home, as for any missing module attribute.
    """
    if name not in homes:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{homes[name]}", package), name)
    namespace[name] = value
    return value
