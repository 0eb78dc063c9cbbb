"""Where weight tensors come from, read lazily.

:func:`open_source` turns a ``torch.nn.Module``, a state dict, a ``.safetensors`` file, a
``torch.save`` checkpoint, a TorchScript archive, a sharded checkpoint index or a model
folder into a :class:`WeightSource`, whose
:meth:`~WeightSource.entries` list every tensor as a :class:`WeightEntry` (full dotted
name, shape, dtype, kind, skip reason) without reading tensor data; ``entry.load()``
reads one tensor. :func:`select` picks layers by regular expression. How each kind
becomes matrices is stated in :mod:`infospec.spectra.conventions`.

Examples
--------
>>> import torch
>>> from infospec.sources import open_source
>>> from infospec.spectra.conventions import as_matrices
>>> attn = torch.nn.MultiheadAttention(embed_dim=16, num_heads=2)
>>> for e in open_source(attn).entries():
...     print(e.name, e.shape, e.kind, e.skip_reason)
in_proj_weight (48, 16) in_proj None
in_proj_bias (48,) other 1-D tensor (bias or norm scale)
out_proj.weight (16, 16) linear None
out_proj.bias (16,) other 1-D tensor (bias or norm scale)
>>> entry = open_source(attn).entries()[0]
>>> [(label, tuple(m.shape)) for label, m in as_matrices(entry, entry.load())]
[('in_proj_weight[q]', (16, 16)), ('in_proj_weight[k]', (16, 16)), ('in_proj_weight[v]', (16, 16))]
"""

from typing import Any

from .._lazy import lazy_attribute
from .base import WeightSource, select
from .dispatch import open_source
from .entry import DEFAULT_MIN_DIM, ENTRY_KINDS, WeightEntry, infer_kind
from .example import minilm_path
from .peft_source import PeftSource
from .pickle_source import PickleSource
from .safetensors_format import SafetensorsHeader, TensorInfo
from .safetensors_header import read_safetensors_header
from .safetensors_source import SafetensorsSource

#: Sources that need torch to be listed: imported on first use, so that listing a file's
#: header (``infospec describe``) does not pay for importing torch.
_LAZY = {
    "ModuleSource": "torch_sources",
    "StateDictSource": "torch_sources",
    "TorchScriptSource": "torchscript_source",
}

__all__ = [
    "DEFAULT_MIN_DIM",
    "ENTRY_KINDS",
    "ModuleSource",
    "PeftSource",
    "PickleSource",
    "SafetensorsHeader",
    "SafetensorsSource",
    "StateDictSource",
    "TensorInfo",
    "TorchScriptSource",
    "WeightEntry",
    "WeightSource",
    "infer_kind",
    "minilm_path",
    "open_source",
    "read_safetensors_header",
    "select",
]


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, globals(), _LAZY, name)
