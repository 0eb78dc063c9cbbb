"""The built-in example's batches: by length, and results independent of the batching."""

import importlib.util

import numpy as np
import pytest
import torch

from infospec import InputError, SourceError
from infospec.sources.example import minilm_path


def _installed():
    try:
        minilm_path()
    except SourceError:
        return False
    return importlib.util.find_spec("transformers") is not None


pytestmark = [
    pytest.mark.example,
    pytest.mark.skipif(not _installed(), reason="the MiniLM example is not installed"),
]


@pytest.fixture(scope="module")
def minilm():
    from infospec.example import load_minilm

    return load_minilm()


def _tokens(batches):
    """Each text's real token ids, whatever its batch and padding."""
    out = []
    for b in batches:
        for ids, mask in zip(b["input_ids"], b["attention_mask"], strict=True):
            out.append(tuple(ids[mask.bool()].tolist()))
    return out


def test_batches_by_length_hold_the_same_texts_with_less_padding(minilm):
    from infospec.example import example_batches, example_corpus

    _, tokenizer = minilm
    texts = example_corpus(256)
    plain = example_batches(tokenizer, texts, batch_size=32, by_length=False)
    by_length = example_batches(tokenizer, texts, batch_size=32)
    assert sorted(_tokens(plain)) == sorted(_tokens(by_length))
    lengths = [len(t) for t in _tokens(by_length)]
    assert lengths == sorted(lengths, reverse=True)  # longest first
    assert [len(t) for t in _tokens(plain)] != lengths  # the corpus order is not by length

    def real(batches):
        return sum(int(b["attention_mask"].sum()) for b in batches) / sum(
            b["attention_mask"].numel() for b in batches
        )

    assert real(plain) < 0.4 and real(by_length) > 0.75  # 35 % and 79 % measured
    assert [b["input_ids"].shape[0] for b in by_length] == [32] * 8


def test_activation_report_does_not_depend_on_the_batching(minilm):
    from infospec import analyze
    from infospec.example import example_batches, example_corpus

    model, tokenizer = minilm
    texts = example_corpus(96)
    reports = [
        analyze(
            model,
            example_batches(tokenizer, texts, **kw),
            layers=r"layer\.0\.|embeddings",
            progress=False,
        )
        for kw in ({"batch_size": 32, "by_length": False}, {"batch_size": 20})
    ]
    a, b = (r.activations for r in reports)
    assert [r["name"] for r in a] == [r["name"] for r in b] and len(a) == 8
    for ra, rb in zip(a, b, strict=True):
        assert ra["status"] == rb["status"] == "ok"
        assert (ra["samples"], ra["rank"]) == (rb["samples"], rb["rank"]), ra["name"]
        for key in ("flatness", "effective_rank", "entropy_bits_per_dim"):
            # the forward pass's float32 round-off changes with the batch's shape
            assert rb[key] == pytest.approx(ra[key], rel=1e-6), (ra["name"], key)
        name = f"activations/{ra['name']}"
        np.testing.assert_allclose(
            reports[1].spectra[name],
            reports[0].spectra[name],
            rtol=1e-5,
            atol=1e-9 * reports[0].spectra[name][0],
        )
    # position embeddings count one row per real token, like every other layer
    pos = next(r for r in a if r["name"] == "embeddings.position_embeddings")
    assert pos["samples"] == a[-1]["samples"]


def test_minilm_defaults_match_the_float64_output_path(minilm):
    """analyze's defaults (float64 Grams of float32 activations, linear layers through their
    inputs) against the old path (every output, float64): same rank on every layer, the
    measures within 1e-4 (measured: 4e-6 for flatness, 2e-6 for entropy at 256 texts)."""
    from infospec.analysis.activations import activation_record
    from infospec.analysis.analyze import _forward, _observed_modules
    from infospec.example import example_batches, example_corpus
    from infospec.sources import open_source
    from infospec.spectra.activations import ActivationCovariances

    model, tokenizer = minilm
    batches = example_batches(tokenizer, example_corpus(64), batch_size=32)
    names = [e.name for e in open_source(minilm_path()).select(None) if not e.skipped]
    modules = _observed_modules(model, names, None)

    def run(**kwargs):
        with ActivationCovariances(modules, **kwargs) as acts, torch.no_grad():
            for i, batch in enumerate(batches):
                _forward(model, batch, None, acts, i)
        return acts.accumulators

    fast, old = run(linear_inputs=True), run(precision="float64")
    assert len(fast) == len(old) == 39
    for name, acc in old.items():
        a = activation_record(acc.eigenvalues(), acc.count, input_dtype=torch.float32)
        b = activation_record(fast[name].eigenvalues(), acc.count, input_dtype=torch.float32)
        assert fast[name].count == acc.count
        assert a["rank"] == b["rank"], name
        for key in ("effective_rank", "flatness", "entropy_bits_per_dim"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), (name, key)


def test_batch_size_must_be_positive(minilm):
    from infospec.example import example_batches

    with pytest.raises(InputError, match="'batch_size' parameter of example_batches"):
        example_batches(minilm[1], ["a text."], batch_size=0)


def test_small_corpus_keeps_its_order(minilm):
    from infospec.example import example_batches

    texts = ["A long sentence of several words here.", "Short."]
    (batch,) = example_batches(minilm[1], texts, batch_size=4)
    assert batch["attention_mask"].sum(1).tolist()[0] > batch["attention_mask"].sum(1).tolist()[1]
    assert torch.equal(
        batch["input_ids"], example_batches(minilm[1], texts, by_length=False)[0]["input_ids"]
    )
