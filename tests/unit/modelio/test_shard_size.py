"""``--max-shard-size``: the forms users type are read as they mean them; anything else is one
``llmtrain export: error:`` paragraph naming the flag and the accepted forms (no traceback)."""

from __future__ import annotations

import pytest

from llmtrain.cli import main
from llmtrain.modelio.hf import parse_size


@pytest.mark.parametrize(("text", "expected"), [
    ("5G", 5 * 10**9), ("5GB", 5 * 10**9), ("5gb", 5 * 10**9), ("2.5GB", 2_500_000_000), ("500M", 500 * 10**6),
    ("500MB", 500 * 10**6), ("5GiB", 5 * 2**30), ("3 KiB", 3 * 2**10), ("1T", 10**12), ("1024", 1024),
    ("1024B", 1024), (7, 7),
])
def test_accepted_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["5X", "nan", "inf", "-5G", "0", "0GB", "", "GB", "5 G B", "five GB"])
def test_bad_sizes_are_one_error_naming_the_flag(text, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["export", "--checkpoint", str(tmp_path), "--out", str(out), f"--max-shard-size={text}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"llmtrain export: error: argument --max-shard-size: {text!r}" in err
    assert "KiB/MiB/GiB/TiB" in err and "Traceback" not in err
    assert not out.exists()


def test_a_shard_limit_in_gigabytes_splits_where_hugging_face_would(tmp_path):
    """5G and 5GB are the same limit (powers of 1000, like transformers' max_shard_size)."""
    import torch

    from llmtrain.modelio.hf import save_safetensors

    sd = {f"w{i}": torch.zeros(250, dtype=torch.float32) for i in range(4)}  # 1000 bytes each
    assert len(save_safetensors(sd, _mk(tmp_path / "a"), "2K")) == 2
    assert len(save_safetensors(sd, _mk(tmp_path / "b"), "2KiB")) == 2
    assert len(save_safetensors(sd, _mk(tmp_path / "c"), "1999")) == 4


def _mk(p):
    p.mkdir()
    return p
