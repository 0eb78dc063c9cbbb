"""How weight tensors become matrices: checked against what the layers compute."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from infospec import InputError
from infospec.sources import WeightEntry
from infospec.spectra.conventions import (
    CONV_MODES,
    KINDS,
    MatrixLayout,
    as_matrices,
    matrix_layout,
)

torch.manual_seed(0)


def test_linear_is_the_weight_itself():
    lin = nn.Linear(7, 5)
    ((label, w),) = as_matrices("linear", lin.weight, name="fc")
    assert label == "fc" and w is lin.weight
    x = torch.randn(7)
    torch.testing.assert_close(w @ x + lin.bias, lin(x))


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_flattened_conv_matrix_maps_the_unfolded_patch(dims):
    """conv output at every position == W_flat @ (flattened input patch)."""
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims](3, 6, kernel_size=2, bias=False)
    conv = conv.double()
    x = torch.randn((1, 3) + (4,) * dims, dtype=torch.float64)
    ((label, w),) = as_matrices(f"conv{dims}d", conv.weight.detach(), name="c")
    assert label == "c" and w.shape == (6, 3 * 2**dims)
    # patches in (channel, kernel axes) order, built by hand
    out = conv(x).detach()
    for pos in np.ndindex(*out.shape[2:]):
        sl = (0, slice(None), *(slice(p, p + 2) for p in pos))
        patch = x[sl].reshape(-1)
        torch.testing.assert_close(w @ patch, out[(0, slice(None), *pos)])


def test_flattened_conv2d_matches_unfold():
    conv = nn.Conv2d(4, 8, kernel_size=(3, 2), bias=False).double()
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64)
    ((_, w),) = as_matrices("conv2d", conv.weight.detach())
    cols = F.unfold(x, kernel_size=(3, 2))  # (batch, 4*3*2, L)
    torch.testing.assert_close((w @ cols).reshape(conv(x).shape), conv(x).detach())


def test_per_position_slices_are_the_kernel_taps():
    k = torch.randn(8, 4, 3, 2)
    pairs = as_matrices("conv2d", k, name="c", conv="per_position")
    assert [label for label, _ in pairs] == [f"c[{i},{j}]" for i in range(3) for j in range(2)]
    for label, m in pairs:
        i, j = map(int, label[2:-1].split(","))
        assert m.shape == (8, 4) and torch.equal(m, k[:, :, i, j])
    # a 1x1 convolution is a linear map: its only slice is that map
    conv = nn.Conv2d(5, 12, 1, bias=False)
    ((label, m),) = as_matrices("conv2d", conv.weight.detach(), name="p", conv="per_position")
    x = torch.randn(1, 5, 3, 3)
    assert label == "p[0,0]"
    torch.testing.assert_close(torch.einsum("oi,bihw->bohw", m, x), conv(x).detach())
    labels = [lb for lb, _ in as_matrices("conv1d", torch.randn(6, 2, 3), conv="per_position")]
    assert labels == ["W[0]", "W[1]", "W[2]"]
    labels = [
        lb for lb, _ in as_matrices("conv3d", torch.randn(6, 2, 1, 2, 1), conv="per_position")
    ]
    assert labels == ["W[0,0,0]", "W[0,1,0]"]


def test_transposed_conv_is_read_out_x_in():
    deconv = nn.ConvTranspose2d(6, 10, kernel_size=1, bias=False)
    ((_, m),) = as_matrices("conv_transpose2d", deconv.weight.detach())
    assert m.shape == (10, 6)
    x = torch.randn(1, 6, 2, 2)
    torch.testing.assert_close(torch.einsum("oi,bihw->bohw", m, x), deconv(x).detach())
    k = torch.randn(6, 10, 3, 3)
    assert as_matrices("conv_transpose2d", k)[0][1].shape == (10, 54)
    slices = as_matrices("conv_transpose2d", k, conv="per_position")
    assert torch.equal(slices[4][1], k[:, :, 1, 1].T)


def test_gpt2_conv1d_is_transposed_to_out_x_in():
    w = torch.randn(6, 9)  # Conv1D(nf=9, nx=6): y = x @ w
    ((_, m),) = as_matrices("conv1d_transposed", w)
    x = torch.randn(6)
    assert m.shape == (9, 6)
    torch.testing.assert_close(m @ x, x @ w)


def test_in_proj_split_gives_the_query_key_value_projections():
    mha = nn.MultiheadAttention(embed_dim=12, num_heads=3, bias=False)
    w = mha.in_proj_weight.detach()
    pairs = as_matrices("in_proj", w, name="attn.in_proj_weight")
    assert [label for label, _ in pairs] == [
        "attn.in_proj_weight[q]",
        "attn.in_proj_weight[k]",
        "attn.in_proj_weight[v]",
    ]
    # q, k, v as torch computes them (F._in_projection_packed splits the same way)
    x = torch.randn(5, 12)
    q, k, v = (x @ w.T).chunk(3, dim=-1)
    for (_, m), ref in zip(pairs, (q, k, v), strict=True):
        assert m.shape == (12, 12)
        torch.testing.assert_close(x @ m.T, ref)
    ((label, whole),) = as_matrices("in_proj", w, name="a", split_in_proj=False)
    assert label == "a" and whole.shape == (36, 12)


def test_embedding_and_matrix_are_as_stored():
    e = torch.randn(100, 16)
    assert as_matrices("embedding", e)[0][1] is e
    pos = torch.randn(1, 1, 20, 16)
    ((_, m),) = as_matrices("matrix", pos)
    assert m.shape == (20, 16) and torch.equal(m, pos[0, 0])


def test_entry_gives_kind_and_name_and_numpy_works():
    entry = WeightEntry("blocks.0.conv.weight", (8, 4, 3, 3), "float32", "conv2d")
    pairs = as_matrices(entry, np.ones((8, 4, 3, 3), np.float32), conv="per_position")
    assert pairs[0][0] == "blocks.0.conv.weight[0,0]" and len(pairs) == 9
    assert isinstance(pairs[0][1], torch.Tensor) and pairs[0][1].dtype == torch.float32
    assert as_matrices(entry, torch.ones(8, 4, 3, 3), name="x")[0][0] == "x"


def test_dtype_device_kept_and_views_not_copies():
    k = torch.randn(8, 4, 3, 3, dtype=torch.bfloat16)
    ((_, m),) = as_matrices("conv2d", k)
    assert m.dtype == torch.bfloat16 and m.data_ptr() == k.data_ptr()


KIND_SHAPES = {
    "linear": (7, 5),
    "conv1d": (6, 3, 4),
    "conv2d": (6, 3, 2, 4),
    "conv3d": (6, 3, 2, 2, 3),
    "conv_transpose1d": (3, 6, 4),
    "conv_transpose2d": (3, 6, 2, 4),
    "conv_transpose3d": (3, 6, 2, 2, 3),
    "conv1d_transposed": (5, 7),
    "in_proj": (12, 4),
    "embedding": (30, 4),
    "matrix": (1, 7, 5),
    "experts": (3, 7, 5),
    "experts_transposed": (3, 5, 7),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("conv", CONV_MODES)
@pytest.mark.parametrize("split", [True, False])
def test_layout_predicts_the_matrices_and_energy_is_kept(kind, conv, split):
    """Table: for every kind and option, matrix_layout == what as_matrices returns, and
    the matrices hold exactly the tensor's entries (equal sum of squares). A pooled
    convolution is one stack of ``count`` matrices."""
    t = torch.randn(KIND_SHAPES[kind], dtype=torch.float64)
    pairs = as_matrices(kind, t, conv=conv, split_in_proj=split)
    layout = matrix_layout(kind, t.shape, conv=conv, split_in_proj=split)
    assert isinstance(layout, MatrixLayout)
    if conv == "pooled" and kind.startswith("conv") and kind != "conv1d_transposed":
        ((_, stack),) = pairs
        assert stack.shape == (layout.count, layout.rows, layout.cols)
        pairs = [(f"{i}", m) for i, m in enumerate(stack)]
    assert len(pairs) == layout.count
    assert all(m.shape == (layout.rows, layout.cols) for _, m in pairs)
    total = sum(float((m**2).sum()) for _, m in pairs)
    assert math.isclose(total, float((t**2).sum()), rel_tol=1e-12)
    assert len({label for label, _ in pairs}) == len(pairs)


@settings(max_examples=60, deadline=None)
@given(
    out=st.integers(1, 6),
    inp=st.integers(1, 6),
    k=st.lists(st.integers(1, 3), min_size=1, max_size=3),
)
def test_flatten_and_per_position_share_the_entries(out, inp, k):
    """Flattened columns (channel-major) regroup into the per-position slices."""
    kind = f"conv{len(k)}d"
    t = torch.randn(out, inp, *k, dtype=torch.float64)
    ((_, flat),) = as_matrices(kind, t)
    slices = as_matrices(kind, t, conv="per_position")
    n_pos = math.prod(k)
    assert len(slices) == n_pos
    for p, (_, m) in enumerate(slices):
        assert torch.equal(flat[:, p::n_pos], m)


@settings(max_examples=40, deadline=None)
@given(
    out=st.integers(1, 7),
    inp=st.integers(1, 7),
    k=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    transpose=st.booleans(),
)
def test_pooled_is_the_stack_of_per_position_slices(out, inp, k, transpose):
    """Pooled = the per-position slices stacked in the same order (one label), so its
    batched singular values are the per-position spectra concatenated."""
    kind = f"conv_transpose{len(k)}d" if transpose else f"conv{len(k)}d"
    t = torch.randn(out, inp, *k, dtype=torch.float64)
    ((label, stack),) = as_matrices(kind, t, name="c", conv="pooled")
    slices = as_matrices(kind, t, name="c", conv="per_position")
    assert label == "c" and stack.shape[0] == len(slices) == math.prod(k)
    for p, (_, m) in enumerate(slices):
        assert torch.equal(stack[p], m)
    pooled = torch.linalg.svdvals(stack).flatten()
    concatenated = torch.cat([torch.linalg.svdvals(m) for _, m in slices])
    torch.testing.assert_close(pooled, concatenated, rtol=1e-12, atol=1e-12)


def test_pooled_spectrum_ignores_the_order_of_kernel_positions():
    g = torch.Generator().manual_seed(3)
    k = torch.randn(12, 10, 3, 3, generator=g, dtype=torch.float64)
    shuffled = k.flatten(2)[:, :, torch.randperm(9, generator=g)].reshape(12, 10, 3, 3)
    assert not torch.equal(shuffled, k)

    def pooled(kernel):
        ((_, stack),) = as_matrices("conv2d", kernel, conv="pooled")
        return torch.linalg.svdvals(stack).flatten().sort().values

    torch.testing.assert_close(pooled(shuffled), pooled(k), rtol=1e-12, atol=0)
    # transposing each position's matrix (in x out instead of out x in) changes nothing
    torch.testing.assert_close(pooled(k.transpose(0, 1)), pooled(k), rtol=1e-12, atol=0)


def test_pooled_layout_of_a_crepe_first_conv():
    """CREPE's first conv (1024, 1, 512, 1): 512 matrices 1024 x 1, one value each."""
    layout = matrix_layout("conv2d", (1024, 1, 512, 1), conv="pooled")
    assert layout == MatrixLayout(512, 1024, 1)
    assert matrix_layout("conv2d", (1024, 1, 512, 1)) == MatrixLayout(1, 1024, 512)


@pytest.mark.parametrize("conv", CONV_MODES)
def test_fused_experts_give_one_out_x_in_matrix_per_expert(conv):
    """Mixtral's layout ``(E, out, in)``, expert e computing ``F.linear(x, T[e])``, and
    gpt-oss's ``(E, in, out)``, computing ``x @ T[e]``: the matrix of ``name[e]`` maps x
    to the expert's output in both, whatever ``conv`` is."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(11, 6, generator=g, dtype=torch.float64)  # in = 6
    plain = torch.randn(4, 9, 6, generator=g, dtype=torch.float64)  # (E, out, in)
    flipped = torch.randn(4, 6, 9, generator=g, dtype=torch.float64)  # (E, in, out)
    for kind, t, ref in (
        ("experts", plain, lambda e: F.linear(x, plain[e])),
        ("experts_transposed", flipped, lambda e: x @ flipped[e]),
    ):
        pairs = as_matrices(kind, t, name="mlp.experts.gate_up_proj", conv=conv)
        assert [label for label, _ in pairs] == [f"mlp.experts.gate_up_proj[{e}]" for e in range(4)]
        assert matrix_layout(kind, t.shape, conv=conv) == MatrixLayout(4, 9, 6)
        for e, (_, w) in enumerate(pairs):
            assert w.shape == (9, 6)
            torch.testing.assert_close(x @ w.T, ref(e), rtol=1e-12, atol=1e-12)
            assert w.data_ptr() == t[e].data_ptr()  # a view


def test_experts_size_rule_is_per_expert_matrix():
    from infospec.sources.entry import size_skip_reason, skip_reason_for

    assert size_skip_reason("experts", (64, 8, 512), min_dim=10) == (
        "smaller side 8 < min_dim=10 (64 expert matrices 8 x 512)"
    )
    assert size_skip_reason("experts_transposed", (2, 32, 96), min_dim=10) is None
    reason = skip_reason_for("other", (4, 32, 96), "float32", min_dim=10)
    assert reason == "3-D tensor with no known matrix layout"


def test_fused_experts_orientation_from_the_module_s_shapes():
    from infospec.sources.entry import experts_transposed, fused_experts_kinds, infer_kind

    mixtral = {"gate_up_proj": (4, 96, 32), "down_proj": (4, 32, 48)}  # (E, out, in)
    qwen_square = {"gate_up_proj": (4, 32, 32), "down_proj": (4, 32, 16)}  # 2I == H
    gpt_oss = {"gate_up_proj": (4, 32, 96), "down_proj": (4, 48, 32)}  # (E, in, out)
    assert experts_transposed(mixtral) is False
    assert experts_transposed(qwen_square) is False
    assert experts_transposed(gpt_oss) is True
    assert experts_transposed({"down_proj": (4, 32, 48)}) is None
    assert experts_transposed({"gate_proj": (4, 48, 32), "down_proj": (4, 32, 48)}) is None
    shapes = {f"a.experts.{k}": v for k, v in mixtral.items()}
    shapes |= {f"b.experts.{k}": v for k, v in gpt_oss.items()}
    shapes |= {"b.experts.down_proj_bias": (4, 32), "c.experts.down_proj": (4, 48, 32)}
    assert fused_experts_kinds(shapes) == {
        "a.experts.gate_up_proj": "experts",
        "a.experts.down_proj": "experts",
        "b.experts.gate_up_proj": "experts_transposed",
        "b.experts.down_proj": "experts_transposed",
        "c.experts.down_proj": "experts_transposed",  # alone: the checkpoints' layout
    }
    # one tensor's name and shape do not decide its orientation: the caller passes it
    assert infer_kind("model.layers.0.mlp.experts.down_proj", (4, 48, 32)) == "other"
    assert infer_kind("m.experts.down_proj", (4, 48, 32), experts_kind="experts") == "experts"
    assert infer_kind("m.experts.down_proj", (48, 32)) == "matrix"
    assert infer_kind("m.experts.down_proj_bias", (1, 4, 32)) == "matrix"
    assert infer_kind("m.mlp.down_proj", (4, 48, 32)) == "other"


def test_singular_values_do_not_depend_on_orientation():
    w = torch.randn(9, 6, dtype=torch.float64)
    s_t = torch.linalg.svdvals(as_matrices("conv1d_transposed", w)[0][1])
    s = torch.linalg.svdvals(w)
    torch.testing.assert_close(s_t, s)
    np.testing.assert_allclose(s.numpy(), np.linalg.svd(w.numpy(), compute_uv=False))


@pytest.mark.parametrize(
    ("kind", "shape", "match"),
    [
        ("conv2d", (3, 4), r"layout \(out, in, kh, kw\) for kind 'conv2d'; got shape \(3, 4\)"),
        ("linear", (3, 4, 5), r"layout \(out, in\) for kind 'linear'; got shape \(3, 4, 5\)"),
        ("matrix", (2, 3, 4), r"leading axes of size 1 for kind 'matrix'"),
        ("matrix", (5,), "for kind 'matrix'; got shape"),
        ("in_proj", (10, 4), r"rows divisible by 3 for kind 'in_proj'.*got shape \(10, 4\)"),
        ("experts", (3, 4), r"layout \(E, out, in\) for kind 'experts'; got shape \(3, 4\)"),
        ("experts_transposed", (2, 3, 4, 5), r"layout \(E, in, out\) for kind 'experts_trans"),
    ],
)
def test_shape_errors(kind, shape, match):
    with pytest.raises(InputError, match=match):
        as_matrices(kind, torch.zeros(shape))
    with pytest.raises(InputError, match=match.split(";")[0]):
        matrix_layout(kind, shape)


def test_option_and_type_errors():
    with pytest.raises(
        InputError,
        match=r"'kind' parameter of as_matrices must be one of "
        r"'linear', 'conv1d'.* Got 'dense' instead",
    ):
        as_matrices("dense", torch.zeros(3, 3))
    with pytest.raises(
        InputError,
        match=r"'conv' parameter of as_matrices must be one of "
        r"'pooled', 'flatten', 'per_position'\. Got 'im2col' instead",
    ):
        as_matrices("conv2d", torch.zeros(3, 3, 2, 2), conv="im2col")
    with pytest.raises(InputError, match="'conv' parameter of matrix_layout"):
        matrix_layout("conv2d", (3, 3, 2, 2), conv="x")
    with pytest.raises(
        InputError,
        match="'tensor' argument of as_matrices must be a torch tensor or NumPy array; got list",
    ):
        as_matrices("linear", [[1.0, 2.0]])
    with pytest.raises(
        InputError,
        match="'entry_or_kind' argument of as_matrices must be a WeightEntry or a kind string",
    ):
        as_matrices(3, torch.zeros(3, 3))
    with pytest.raises(InputError, match=r"must not be empty; got shape \(0, 4\)"):
        as_matrices("linear", torch.zeros(0, 4))
    with pytest.raises(InputError, match="'shape' argument of matrix_layout must be a sequence"):
        matrix_layout("linear", None)
    bias = WeightEntry("fc.bias", (4,), "float32", "other", "1-D tensor (bias or norm scale)")
    with pytest.raises(InputError, match=r"'fc.bias' has no matrix convention: 1-D tensor"):
        as_matrices(bias, torch.zeros(4))
