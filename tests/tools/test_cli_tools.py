import json

import pytest

from infospec.cli import main


def test_rope_cli(tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps({"rope_theta": 1e6, "head_dim": 128, "max_position_embeddings": 4096})
    )
    assert main(["rope", str(cfg), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(r["passed"] for r in rows)
    assert main(["rope", str(cfg), "--context", "10000000"]) == 1


def test_rope_cli_error(tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"head_dim": 128, "max_position_embeddings": 4096}))
    assert main(["rope", str(cfg)]) == 2
    assert "rope_theta" in capsys.readouterr().err


def test_patches_cli_writes_boundaries(tmp_path, capsys):
    f = tmp_path / "t.txt"
    f.write_bytes(b"aaaa bbbb aaaa bbbb " * 20)
    out = tmp_path / "b.txt"
    assert main(["patches", str(f), "--threshold", "0.5", "--output", str(out)]) == 0
    starts = [int(x) for x in out.read_text().split()]
    assert starts[0] == 0 and starts == sorted(set(starts))
    assert f"patches {len(starts)}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["patches", str(f), "--mode", "local"])
