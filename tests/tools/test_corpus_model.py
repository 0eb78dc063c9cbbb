import hashlib

import numpy as np
import pytest

from infospec._errors import InputError, SourceError
from infospec.cli import main
from infospec.tools.ngram import ByteNgram, corpus_bytes, corpus_ngram, write_corpus_ngram
from infospec.tools.patching import entropy_patches
from infospec.tools.tokens import boundary_agreement, token_starts

from .test_patching import _direct_bpb


def test_save_load_round_trip(tmp_path):
    m = ByteNgram(3, alpha=0.25).fit(b"abracadabra, abracadabra!")
    m.save(tmp_path / "m.npz", meta={"note": "x"})
    back = ByteNgram.load(tmp_path / "m.npz")
    assert (back.order, back.alpha, back.meta["note"]) == (3, 0.25, "x")
    probe = b"cadabra abra?"
    np.testing.assert_array_equal(back.log_prob(probe), m.log_prob(probe))
    np.testing.assert_array_equal(back.entropies(probe), m.entropies(probe))
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # atomic: no temporary left
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(SourceError, match=r"bad\.npz"):
        ByteNgram.load(tmp_path / "bad.npz")


def test_shipped_corpus_model():
    m = corpus_ngram()
    assert (m.order, m.alpha) == (3, 0.1)
    assert m._pair_counts.sum() == m.meta["corpus_bytes"]
    data = corpus_bytes()
    if hashlib.sha256(data).hexdigest() != m.meta["corpus_sha256"]:
        pytest.skip(f"this Python's docstrings are not the corpus of Python {m.meta['python']}")
    # the shipped counts are those of the corpus: refitting reproduces them exactly, and the
    # in-sample bits per byte equal a direct count (first 3000 bytes, to keep the count quick)
    fresh = ByteNgram(3, alpha=0.1).fit(data)
    np.testing.assert_array_equal(fresh._pair_keys, m._pair_keys)
    np.testing.assert_array_equal(fresh._pair_counts, m._pair_counts)
    sample = data[:3000]
    assert m.bits_per_byte(sample) == pytest.approx(_direct_bpb(data, sample, 3, 0.1), rel=1e-12)


def test_write_corpus_ngram(tmp_path):
    m = write_corpus_ngram(tmp_path / "c.npz", order=2, alpha=0.5)
    back = ByteNgram.load(tmp_path / "c.npz")
    assert back.meta["corpus_sha256"] == hashlib.sha256(corpus_bytes()).hexdigest()
    assert (back.order, back.alpha) == (2, 0.5) and back.meta == m.meta


def test_default_model_is_the_shipped_one():
    text = b"Return the number of items in a container."
    ours = entropy_patches(text, threshold=3.0)
    np.testing.assert_array_equal(ours, entropy_patches(text, corpus_ngram(), threshold=3.0))


def test_token_starts_are_byte_offsets():
    # WordPiece (uncased): hello | world | , | token ##izer ##s | are | fun | !
    # "Héllo " is 7 bytes in UTF-8 and "wörld" 6, so the starts are 0, 7, 13, ...
    text = "Héllo wörld, tokenizers are fun!"
    starts = token_starts(text.encode())
    assert starts.tolist() == [0, 7, 13, 15, 20, 24, 26, 30, 33]
    np.testing.assert_array_equal(token_starts(text), starts)
    with pytest.raises(InputError, match="not UTF-8"):
        token_starts(b"abc\xff")


def test_boundary_agreement():
    got = boundary_agreement([0, 3, 5, 9], [0, 5, 7])
    assert got == {"patch_on_token": 0.5, "token_on_patch": pytest.approx(2 / 3)}
    assert np.isnan(boundary_agreement([], [1])["patch_on_token"])


def test_patches_cli_default_model_and_tokens(tmp_path, capsys):
    f = tmp_path / "t.txt"
    f.write_text("The number of items in a container is returned by this function. " * 20)
    assert main(["patches", str(f), "--threshold", "3"]) == 0
    out = capsys.readouterr().out
    assert "shipped corpus model" in out and "MiniLM tokens" in out
    assert main(["patches", str(f), "--model", "file", "--order", "2", "--no-tokens"]) == 0
    out = capsys.readouterr().out
    assert "fitted on FILE, order 2" in out and "MiniLM" not in out
    assert main(["patches", str(f), "--order", "2"]) == 2
    assert "--model file" in capsys.readouterr().err
    g = tmp_path / "b.bin"
    g.write_bytes(bytes(range(256)) * 4)
    assert main(["patches", str(g)]) == 0
    assert "MiniLM tokens: skipped" in capsys.readouterr().out
