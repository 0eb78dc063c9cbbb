"""Tensors of a checkpoint file in model order (along depth), from their names alone.

A file does not keep a model's order: a safetensors header is sorted alphabetically
(``layer.10`` before ``layer.2``, ``key`` before ``query``), and a sharded index lists
names as its writer chose. :func:`sort_model_order` rebuilds the order of the model's
``state_dict()`` as well as names allow, so that per-layer measures read along depth.

The rule, applied to the dotted names as a tree (siblings are the components that follow
one common prefix, compared one level at a time, so a whole block stays together):

1. Components are ranked in groups, first to last:

   * embeddings (a component containing ``embed``, and ``wte``, ``wpe``, ``cls_token``,
     ``stem``, ``shared``...), token embeddings before position embeddings before
     token-type embeddings;
   * the norm before attention (``input_layernorm``, ``ln_1``, ``norm1``,
     ``attention_norm``, ``layernorm_before``);
   * attention (``attention``, ``attn``, ``self_attn``, BERT's ``self``...) and inside
     it the query, key and value projections, in that order (``q_proj``, ``query``,
     ``q``, ``wq``; then ``k...``; then ``v...``; fused ``qkv``, ``c_attn``,
     ``query_key_value``, ``in_proj`` with them);
   * the norm after attention (``post_attention_layernorm``, ``ln_2``, ``norm2``,
     ``ffn_norm``, ``layernorm_after``, OPT's ``self_attn_layer_norm``);
   * the MLP (``mlp``, ``feed_forward``, ``ffn``, BERT's ``intermediate``...) and inside
     it the gate before the up projection (``gate_proj``, ``w1``; ``up_proj``, ``w3``,
     ``fc1``, ``c_fc``, ``dense_h_to_4h``...);
   * output projections (``o_proj``, ``out_proj``, ``output``, ``c_proj``, ``wo``,
     ``down_proj``, ``w2``, ``fc2``, ``dense_4h_to_h``...);
   * everything else: layer indices and unknown components (see 2), with ``encoder``
     first and ``decoder`` last among them, and ``weight`` before ``bias``;
   * final norms and heads (``norm``, ``ln_f``, ``final_layer_norm``, a bare
     ``LayerNorm``, ``head``, ``lm_head``, ``pooler``, ``classifier``, ``score``, ``fc``...).

   Names are matched whole, case-insensitively.
2. Within a group, a component that is a number (a layer index) or ends in one
   (``layer10``) is ordered by that number among those of the same stem; otherwise,
   components keep the order in which they first appear in the input (the file's or
   the index's order): where nothing is known, nothing is reordered.
3. A name that is a prefix of another comes first.

The sort is stable and linear in the total length of the names (plus the sort itself):
about 4 microseconds a name. Above :data:`MODEL_ORDER_LIMIT` names (no model's file
comes near: DeepSeek-V3's index lists 91,000 tensors) the names are kept in the order
given, and :func:`order_note` says so for the source's description, so that a hostile
header of a million names lists in seconds. In-memory sources (a module, a state dict)
keep their own order, which is already the model's.

Examples
--------
>>> sort_model_order(["h.10.mlp.c_fc.weight", "h.2.attn.c_attn.weight", "ln_f.weight",
...                   "wte.weight", "h.2.mlp.c_fc.weight"])  # doctest: +NORMALIZE_WHITESPACE
['wte.weight', 'h.2.attn.c_attn.weight', 'h.2.mlp.c_fc.weight', 'h.10.mlp.c_fc.weight',
 'ln_f.weight']
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["MODEL_ORDER_LIMIT", "model_order_indices", "order_note", "sort_model_order"]

#: Above this many names, :func:`sort_model_order` keeps the order given.
MODEL_ORDER_LIMIT = 200_000

# (group, patterns in order); a pattern matches a whole component, case-insensitively
_GROUPS: tuple[tuple[str, ...], ...] = (
    # 0 embeddings
    (
        r"(word|tok|token)_?embed\w*|embed_tokens|wte|embed_in|shared|cls_token",
        r"(pos|position)\w*embed\w*|wpe|pos_embed\w*",
        r"(token_type|segment)\w*embed\w*",
        r"\w*embed\w*|stem|conv_stem",
    ),
    # 1 the norm before attention
    (r"input_layernorm|ln_?1|norm_?1|attention_norm|attn_norm|layernorm_before",),
    # 2 attention, then q, k, v inside it
    (
        r"attention|attn|self_attn|self_attention|selfattention|self|mha|multi_head_attention",
        r"encdecattention|cross_attn|crossattention|encoder_attn",
        r"q_proj|query|q|wq|q_lin|to_q|query_proj|qkv|qkv_proj|c_attn|query_key_value|wqkv"
        r"|in_proj|in_proj_weight|in_proj_bias",
        r"k_proj|key|k|wk|k_lin|to_k|key_proj",
        r"v_proj|value|v|wv|v_lin|to_v|value_proj",
    ),
    # 3 the norm after attention
    (r"post_attention_layernorm|ln_?2|norm_?2|ffn_norm|layernorm_after|self_attn_layer_norm",),
    # 4 the MLP, then its gate and up projections
    (
        r"mlp|feed_forward|feedforward|ffn|ff|intermediate|densereludense|moe"
        r"|block_sparse_moe|experts",
        r"gate|gate_proj|w1|wi_0|router",
        r"up_proj|w3|wi_1|wi|fc1|c_fc|lin1|fc_in|dense_h_to_4h",
    ),
    # 5 output projections
    (
        r"o_proj|out_proj|o|wo|out_lin|output|c_proj|proj|to_out|dense_4h_to_h|down_proj|w2"
        r"|fc2|lin2|fc_out",
    ),
    # 6 everything else (see _MIDDLE)
    (),
    # 7 final norms and heads
    (
        r"norm|ln_f|norm_f|final_norm|final_layer_norm|final_layernorm|layernorm|layer_norm"
        r"|fc_norm|post_layernorm",
        r"pooler|pre_classifier|pre_logits",
        r"head|lm_head|classifier|score|cls|fc|predictions|qa_outputs|output_layer|logits",
    ),
)
_MIDDLE_GROUP = 6
# ranks inside the middle group: unknown components and numbers get rank 1
_MIDDLE = {"encoder": 0, "weight": 0, "bias": 1, "decoder": 2}

# one alternation, tried in order: the name of the group that matched gives the rank
_RANKED = re.compile(
    "|".join(
        f"(?P<g{group}_{rank}>{pattern})"
        for group, patterns in enumerate(_GROUPS)
        for rank, pattern in enumerate(patterns)
    ),
    re.IGNORECASE,
)
_TRAILING_DIGITS = re.compile(r"^(.*?)(\d+)$")


def _component(component: str) -> tuple[int, str, int]:
    """(rank code, stem, trailing number or -1) of one name component."""
    if component.isdigit():
        return (_MIDDLE_GROUP * 16 + 1, "", int(component[:18]))
    m = _RANKED.fullmatch(component) if len(component) <= 64 else None
    if m is not None:
        group, rank = m.lastgroup[1:].split("_")
        code = int(group) * 16 + int(rank)
    else:
        code = _MIDDLE_GROUP * 16 + _MIDDLE.get(component.lower(), 1)
    if len(component) > 40:  # not a layer name; do not run the regex on long strings
        return (code, component, -1)
    d = _TRAILING_DIGITS.match(component)
    if d is None:
        return (code, component, -1)
    return (code, d.group(1), int(d.group(2)[:18]))


def sort_model_order(names: Iterable[str]) -> list[str]:
    """The names in model order (see the module docstring for the rule).

    Parameters
    ----------
    names : iterable of str
        Full dotted tensor names, in the file's or the index's order (the order kept
        where the rule knows nothing).

    Returns
    -------
    list of str
        The same names, each once per occurrence, in model order; in the order given
        when there are more than :data:`MODEL_ORDER_LIMIT`.
    """
    names = list(names)
    order = model_order_indices(names)
    return names if order is None else [names[i] for i in order]


def model_order_indices(names: list[str]) -> list[int] | None:
    """The positions of ``names`` in model order, or None above :data:`MODEL_ORDER_LIMIT`.

    Parameters
    ----------
    names : list of str
        Full dotted tensor names, in the file's or the index's order.

    Returns
    -------
    list of int or None
        ``[names[i] for i in model_order_indices(names)]`` is :func:`sort_model_order`'s
        result; None when there are more than :data:`MODEL_ORDER_LIMIT` names (keep the
        order given).
    """
    if len(names) > MODEL_ORDER_LIMIT:
        return None
    components: dict[str, tuple[int, str, int]] = {}
    # node id of (parent node, component); first position of (parent node, stem)
    nodes: dict[tuple[int, str], int] = {}
    first_seen: dict[tuple[int, str], int] = {}
    # node id and key of each parent prefix met so far
    prefixes: dict[str, tuple[int, tuple[int, ...]]] = {}

    def step(node: int, component: str, position: int) -> tuple[int, int, int]:
        info = components.get(component)
        if info is None:
            info = components[component] = _component(component)
        code, stem, number = info
        return (code, first_seen.setdefault((node, stem), position), number)

    def walk(node: int, key: tuple[int, ...], component: str, position: int):
        key = key + step(node, component, position)
        child = nodes.get((node, component))
        if child is None:
            child = nodes[(node, component)] = len(nodes) + 1
        return child, key

    def prefix(parent: str, position: int) -> tuple[int, tuple[int, ...]]:
        """Node and key of a parent prefix, from its longest known ancestor."""
        tails: list[str] = []
        head = parent
        while head not in prefixes and len(tails) < 64:
            head, dot, tail = head.rpartition(".")
            tails.append(tail)
            if not dot:
                break
        if head in prefixes:
            node, key = prefixes[head]
        else:  # no known ancestor within 64 levels: walk from the root
            node, key = 0, ()
            rest = head.split(".") if head else []
            for component in rest:
                node, key = walk(node, key, component, position)
            if rest:
                prefixes[head] = (node, key)
        for tail in reversed(tails):
            node, key = walk(node, key, tail, position)
            head = f"{head}.{tail}" if head else tail
            prefixes[head] = (node, key)
        return node, key

    keys = []
    for position, name in enumerate(names):
        parent, dot, leaf = name.rpartition(".")
        node, key = (prefixes.get(parent) or prefix(parent, position)) if dot else (0, ())
        keys.append(key + step(node, leaf, position))
    return sorted(range(len(names)), key=keys.__getitem__)


def order_note(count: int) -> str | None:
    """What a source's description says of its order when :func:`sort_model_order` kept it."""
    if count <= MODEL_ORDER_LIMIT:
        return None
    return f"in file order: model order is rebuilt for at most {MODEL_ORDER_LIMIT} tensors"
