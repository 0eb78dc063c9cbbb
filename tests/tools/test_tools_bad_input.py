"""Bad input to the byte-patching tools: an InputError or SourceError naming it, never a
raw NumPy/Python error, a hang or a silent NaN."""

import json
import math

import numpy as np
import pytest
import torch

from infospec._errors import InputError, SourceError
from infospec.cli import main
from infospec.tools.ngram import ByteNgram, write_corpus_ngram
from infospec.tools.patching import entropy_patches
from infospec.tools.tokens import boundary_agreement, token_starts

H = [0.1, 2.0, 0.3, 0.2, 3.0, 2.9, 0.1, 1.6]
UNIFORM = np.full((3, 256), 1 / 256)


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        None,
        torch.tensor(1.0),
        np.array([1.0, 2.0]),
        pytest.param(10**5000, id="huge"),
        math.nan,
        True,
    ],
)
@pytest.mark.parametrize("name", ["threshold", "threshold_add"])
def test_thresholds_are_finite_reals(name, value):
    kwargs = {"mode": "both", "threshold_add": 1.0, name: value}
    if name == "threshold_add" and value is None:
        match = "needs 'threshold_add'"  # None is 'not given', which mode='both' refuses
    else:
        match = f"'{name}' parameter of entropy_patches must be a finite real number"
    with pytest.raises(InputError, match=match):
        entropy_patches(entropies=H, **kwargs)


def test_numpy_thresholds_pass():
    got = entropy_patches(entropies=H, threshold=np.float32(1.5))
    assert got.tolist() == [0, 1, 4, 5, 7]


@pytest.mark.parametrize("value", [10**30, 2**63, True, 0, 1.5, "4"])
def test_max_patch_length_is_an_int64(value):
    with pytest.raises(InputError, match=r"'max_patch_length' .* int in \[1, 9223372036854775807"):
        entropy_patches(entropies=H, max_patch_length=value)


def test_max_patch_length_up_to_int64_splits_nothing():
    assert entropy_patches(entropies=H, max_patch_length=2**63 - 1).tolist() == [0, 1, 4, 5, 7]


@pytest.mark.parametrize("mode", [np.array(["global"]), np.array(["global", "both"]), None])
def test_mode_must_be_a_string(mode):
    with pytest.raises(InputError, match="'mode' parameter of entropy_patches must be one of"):
        entropy_patches(entropies=H, mode=mode)


@pytest.mark.parametrize(
    ("entropies", "match"),
    [
        (["a", "b"], "array of strings"),
        ([1 + 2j], "array of complex numbers"),
        ({"a": 1}, "array of Python objects"),
        (torch.empty(3, device="meta"), "meta tensor"),
        ([True, False], "array of booleans"),
        ([[0.0], [0.0, 1.0]], "NumPy cannot read"),
        ([[1.0, 2.0]], r"1-D array .* shape \(1, 2\)"),
        (5.0, r"1-D array .* shape \(\)"),
    ],
)
def test_bad_entropies_are_named(entropies, match):
    with pytest.raises(InputError, match=f"'entropies' argument of entropy_patches.*{match}"):
        entropy_patches(entropies=entropies)


def test_tensor_entropies_pass():
    got = entropy_patches(entropies=torch.tensor(H, requires_grad=True), threshold=1.5)
    assert got.tolist() == [0, 1, 4, 5, 7]


@pytest.mark.parametrize("data", [5, [97, 98, 99], np.frombuffer(b"abc", np.uint8)])
@pytest.mark.parametrize("model", [None, lambda d: UNIFORM])
def test_data_is_bytes_or_str_for_every_model(data, model):
    with pytest.raises(InputError, match="'data' argument of entropy_patches must be bytes or str"):
        entropy_patches(data, model)


@pytest.mark.parametrize(
    ("probs", "match"),
    [
        (np.full((3, 256), np.nan), "finite and >= 0; row 0"),
        (np.full((3, 256), -1 / 256), "finite and >= 0; row 0"),
        (np.vstack([UNIFORM[:2], np.ones(256)]), "sum to 1 in each row .* row 2 sums to 256.0"),
        (np.full((3, 256), "a"), "'model\\(data\\)' argument .* array of strings"),
        (torch.empty(3, 256, device="meta"), "meta tensor"),
        (np.ones((3, 255)) / 255, r"shape \(3, 255\); entropy_patches expected \(3, 256\)"),
        (UNIFORM.T, r"shape \(256, 3\)"),
    ],
)
def test_callable_model_probabilities_are_checked(probs, match):
    with pytest.raises(InputError, match=match):
        entropy_patches(b"abc", lambda d: probs)


def test_callable_model_float32_softmax_passes():
    probs = torch.softmax(torch.randn(3, 256, generator=torch.Generator().manual_seed(0)), -1)
    h = -(probs.double() * probs.double().log()).sum(-1)
    got = entropy_patches(b"abc", lambda d: probs, threshold=float(h[1:].min()) - 1e-3)
    assert got.tolist() == [0, 1, 2]


def test_model_entropies_one_per_byte():
    class Short:
        def entropies(self, data):
            return np.zeros(2)

    with pytest.raises(InputError, match=r"returned shape \(2,\); .* expected \(3,\)"):
        entropy_patches(b"abc", Short())
    with pytest.raises(InputError, match=r"'model' argument .* Got int"):
        entropy_patches(b"abc", 5)


@pytest.mark.parametrize(
    "alpha", ["abc", None, [1.0], np.array([0.1, 0.2]), pytest.param(10**5000, id="huge")]
)
def test_alpha_must_be_a_float(alpha):
    with pytest.raises(InputError, match="'alpha' parameter of ByteNgram must be a float in"):
        ByteNgram(3, alpha=alpha)


@pytest.mark.parametrize("alpha", [math.inf, 1e308, 1e101, 5e-324, 1e-101, math.nan, 0, -1])
def test_alpha_outside_the_finite_range_is_refused(alpha):
    with pytest.raises(InputError, match=r"\[1e-100, 1e\+100\]"):
        ByteNgram(3, alpha=alpha)


@pytest.mark.parametrize("alpha", [1e-100, 1e100])
def test_alpha_at_the_bounds_gives_finite_entropies(alpha):
    m = ByteNgram(3, alpha=alpha).fit(b"abc" * 10)
    h, lp = m.entropies(b"abcaxy"), m.log_prob(b"abcaxy")
    assert np.all(np.isfinite(h)) and np.all(h >= 0) and np.all(np.isfinite(lp))
    if alpha > 1:  # smoothing swamps the counts: every distribution is uniform
        np.testing.assert_allclose(h, math.log(256), rtol=1e-12)
    else:  # the seen contexts are deterministic (entropy ~ 0), the unseen "ax" uniform
        assert np.all(h[:5] < 1e-90) and h[5] == pytest.approx(math.log(256))


@pytest.mark.parametrize("order", [True, 0, 5, 2.5, "3", 10**30])
def test_order_is_an_int_1_to_4(order):
    with pytest.raises(
        InputError, match=r"'order' parameter of ByteNgram must be an int in \[1, 4"
    ):
        ByteNgram(order)


@pytest.mark.parametrize("path", [None, 5, b"m.npz", ""])
def test_paths_must_be_paths(path, tmp_path):
    m = ByteNgram(2).fit(b"abc")
    with pytest.raises(InputError, match=r"'path' argument of ByteNgram\.save must be a file path"):
        m.save(path)
    with pytest.raises(InputError, match=r"'path' argument of ByteNgram\.load must be a file path"):
        ByteNgram.load(path)
    with pytest.raises(InputError, match="'path' argument of write_corpus_ngram"):
        write_corpus_ngram(path)


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ({"order": 5}, "has order=5, but the model's order is 2"),
        ({"alpha": 0.5}, "has alpha=0.5, but the model's alpha is 0.1"),
        ({"order": np.array([2, 2])}, r"has order=array\(\[2, 2\]\), but"),
        ({"order": True}, "has order=True, but the model's order is 2"),
        (5, "must be a dict with str keys or None"),
        ({1: "x"}, "must be a dict with str keys or None"),
        ({"x": object()}, "must hold JSON values only"),
        ({"x": math.nan}, "must hold JSON values only"),
    ],
)
def test_save_meta_is_checked(meta, match, tmp_path):
    with pytest.raises(InputError, match=f"'meta' argument of ByteNgram.save {match}"):
        ByteNgram(2).fit(b"abc").save(tmp_path / "m.npz", meta=meta)
    assert not (tmp_path / "m.npz").exists()


def test_a_loaded_models_meta_saves_again(tmp_path):
    m = ByteNgram(2, alpha=0.3).fit(b"abcabc")
    m.save(tmp_path / "a.npz", meta={"note": "x"})
    back = ByteNgram.load(tmp_path / "a.npz")
    back.save(tmp_path / "b.npz", meta=back.meta)  # holds order and alpha, equal to the model's
    assert ByteNgram.load(tmp_path / "b.npz").meta == {"order": 2, "alpha": 0.3, "note": "x"}


def _good():
    m = ByteNgram(2).fit(b"abcabc")
    header = json.dumps({"order": 2, "alpha": 0.1})
    return dict(pair_keys=m._pair_keys, pair_counts=m._pair_counts, header=np.array(header))


def _with(**arrays):
    return {**_good(), **{k: np.asarray(v) for k, v in arrays.items()}}


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        (_with(header="[1, 2]"), "not a JSON object with 'order' and 'alpha'"),
        (_with(header="{nope"), "header is not valid JSON"),
        (_with(header=np.array(["{}"])), "header is not one JSON string"),
        (_with(header='{"order": 2, "alpha": null}'), "header's 'alpha' must be a float"),
        (_with(header='{"order": 2, "alpha": [0.1]}'), "header's 'alpha' must be a float"),
        (_with(header='{"order": 2, "alpha": Infinity}'), "header's 'alpha' must be a float"),
        (_with(header='{"order": null, "alpha": 0.1}'), r"header's 'order' must be an int"),
        (_with(header='{"order": [2], "alpha": 0.1}'), r"header's 'order' must be an int"),
        (
            _with(pair_keys=_good()["pair_keys"][None], pair_counts=_good()["pair_counts"][None]),
            "not two 1-D arrays",
        ),
        (_with(pair_keys=5, pair_counts=1), "not two 1-D arrays"),
        (_with(pair_keys=_good()["pair_keys"][::-1]), "not sorted unique ids"),
        (_with(pair_keys=_good()["pair_keys"] + 256**2), r"ids in \[0, 256\*\*2\)"),
        (_with(pair_counts=np.full(4, "a")), "the counts are <U1, not integers"),
        (_with(pair_counts=np.full(4, np.nan)), "the counts are float64, not integers"),
        (_with(pair_counts=-_good()["pair_counts"]), "not ints >= 1"),
        (_with(pair_counts=np.full(4, 2**62)), r"total of at most 2\*\*53"),
        ({k: v for k, v in _good().items() if k != "header"}, "no array 'header'"),
    ],
)
def test_malformed_model_files_are_source_errors(arrays, match, tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, **arrays)
    with pytest.raises(SourceError, match=rf"'{path}' as a ByteNgram file .*{match}"):
        ByteNgram.load(path)


def test_files_that_are_not_npz_archives(tmp_path):
    zipped = tmp_path / "z.npz"
    zipped.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(SourceError, match=r"z\.npz' as a ByteNgram file.*BadZipFile"):
        ByteNgram.load(zipped)
    plain = tmp_path / "a.npy"
    np.save(plain, np.arange(3))
    with pytest.raises(SourceError, match=r"a\.npy' .* a single .npy array"):
        ByteNgram.load(plain)
    with pytest.raises(SourceError, match="No such file"):
        ByteNgram.load(tmp_path / "missing.npz")
    with pytest.raises(SourceError, match="is a folder"):
        ByteNgram.load(tmp_path)


@pytest.mark.parametrize("data", [None, 1.5, 10**30, 5, np.array([1, 2]), [104, 105]])
def test_token_starts_data_is_str_or_bytes(data):
    with pytest.raises(InputError, match="'data' argument of token_starts must be str or bytes"):
        token_starts(data)


@pytest.mark.parametrize("tokenizer", ["x", 5, object()])
def test_token_starts_tokenizer_is_checked(tokenizer):
    with pytest.raises(InputError, match="'tokenizer' argument of token_starts must be a"):
        token_starts("hi", tokenizer=tokenizer)


def test_token_starts_tokenizer_offsets_are_checked():
    class Wrong:
        def encode(self, text, add_special_tokens=False):
            return type("Enc", (), {"offsets": [(0, 1), (5, 9)]})()

    with pytest.raises(InputError, match=r"offsets in \[0, 2\]"):
        token_starts("hi", tokenizer=Wrong())


@pytest.mark.parametrize(
    "starts",
    [
        [0, math.nan],
        ["a"],
        None,
        [1e300],
        [10**30],
        [-1],
        [True],
        [1.7],
        [[1, 2]],
        5,
        torch.empty(2, device="meta"),
    ],
)
@pytest.mark.parametrize("which", [0, 1])
def test_boundary_agreement_takes_1d_byte_offsets(starts, which):
    args = [[0, 1], [0, 1]]
    args[which] = starts
    name = ("patch_starts", "starts_of_tokens")[which]
    with pytest.raises(InputError, match=f"'{name}' argument of boundary_agreement"):
        boundary_agreement(*args)


def test_boundary_agreement_whole_floats_and_tensors_pass():
    got = boundary_agreement(np.array([0.0, 3.0]), torch.tensor([0, 5]))
    assert got == {"patch_on_token": 0.5, "token_on_patch": 0.5}


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--max-patch-length", "99999999999999999999999"], "--max-patch-length must be an int"),
        (["--max-patch-length", "0"], "--max-patch-length must be an int"),
        (["--threshold", "nan"], "--threshold must be a finite number"),
        (["--mode", "both", "--threshold-add", "inf"], "--threshold-add must be a finite"),
        (["--mode", "both"], "--mode both needs --threshold-add"),
        (["--model", "file", "--order", "99999999999999999999"], r"--order must be an int in"),
    ],
)
def test_patches_cli_options_are_one_line_errors(tmp_path, capsys, argv, match):
    f = tmp_path / "t.txt"
    f.write_bytes(b"hello world " * 5)
    assert main(["patches", str(f), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err


def test_standardised_entropies_and_half_precision_probabilities_pass():
    """Found in review: z-scored entropies (negative values, threshold 0) and float16 softmax
    rows (summing to 0.9997) were refused."""
    h = np.asarray(H)
    scores = (h - h.mean()) / h.std()
    want = entropy_patches(entropies=h, threshold=float(h.mean())).tolist()
    assert entropy_patches(entropies=scores, threshold=0.0).tolist() == want
    logits = torch.randn(11, 256, generator=torch.Generator().manual_seed(0))
    half = torch.softmax(logits.half(), -1)
    got = entropy_patches(b"hello world", model=lambda d: half[: len(d)])
    assert got[0] == 0


def test_an_archive_that_unpacks_past_the_bound_is_refused(tmp_path, monkeypatch):
    from infospec import SourceError
    from infospec.tools import ngram

    model = ngram.ByteNgram(2).fit(b"abracadabra")
    path = tmp_path / "m.npz"
    model.save(path)
    assert ngram.ByteNgram.load(path).bits_per_byte(b"abra") == model.bits_per_byte(b"abra")
    monkeypatch.setattr(ngram, "MAX_UNPACKED", 100)  # the same check as a 2 GiB claim
    with pytest.raises(SourceError, match=r"unpack to \d+ bytes, over the 100 bytes"):
        ngram.ByteNgram.load(path)
