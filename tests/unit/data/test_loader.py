import numpy as np
import pytest
import torch

from llmtrain.config import ConfigError
from llmtrain.data.loader import PretrainLoader, describe_data, validation_batches
from llmtrain.errors import DataError

SEQ, MB, G = 16, 2, 8


def _loader(config, rank=0, dp=1, **kw):
    return PretrainLoader(config, seq_len=SEQ, micro_batch_size=MB, global_batch_size=G, dp_rank=rank, dp_size=dp,
                          seed=3, **kw)


def _global_batches(config, dp, steps, state=None):
    """Rows of each optimizer step, in global sample order, gathered over all ranks."""
    loaders = [_loader(config, r, dp) for r in range(dp)]
    if state:
        for ld in loaders:
            ld.load_state_dict(state)
    out = []
    for _ in range(steps):
        rows = [None] * G
        for m in range(loaders[0].micro_steps_per_step):
            for r, ld in enumerate(loaders):
                b = ld.next_batch()
                for i in range(MB):
                    rows[m * MB * dp + r * MB + i] = b["input_ids"][i]
        out.append(torch.stack(rows))
    return out, loaders[0].state_dict()


def test_batch_shapes_labels_and_doc_ids(prepared_corpus):
    ld = _loader(prepared_corpus)
    b = ld.next_batch()
    assert {k: tuple(v.shape) for k, v in b.items()} == {k: (MB, SEQ) for k in ("input_ids", "labels", "doc_ids")}
    assert all(v.dtype == torch.long for v in b.values())
    assert torch.equal(b["input_ids"][:, 1:], b["labels"][:, :-1])
    d = b["doc_ids"]
    assert (d[:, 0] == 0).all() and (d.diff(dim=1) >= 0).all() and (d.diff(dim=1) <= 1).all()
    # a new document starts exactly where a BOS (id 1) appears
    assert torch.equal((d.diff(dim=1) == 1), (b["input_ids"][:, 1:] == 1))
    assert ld.micro_steps_per_step == 4 and ld.vocab_size == 400 and ld.source_names == ["alpha", "beta", "gamma"]


def test_same_global_batches_for_any_dp_size_and_across_resume(prepared_corpus):
    dp1, _ = _global_batches(prepared_corpus, 1, 6)
    dp2, _ = _global_batches(prepared_corpus, 2, 6)
    assert all(torch.equal(a, b) for a, b in zip(dp1, dp2, strict=False))
    first, state = _global_batches(prepared_corpus, 2, 3)  # save at step 3 with 2 ranks ...
    assert state["consumed_samples"] == 3 * G
    rest, _ = _global_batches(prepared_corpus, 1, 3, state)  # ... resume with 1 rank
    assert all(torch.equal(a, b) for a, b in zip(first + rest, dp1, strict=False))


def test_no_sample_repeated_or_skipped(prepared_corpus):
    ld = _loader(prepared_corpus, 0, 2)
    n = 40 * G
    src, k = ld.blend.lookup(0, n)
    pairs = set(zip(src.tolist(), k.tolist(), strict=False))
    assert len(pairs) == n  # distinct samples
    for s in range(3):  # each source's samples 0..c-1 all used: nothing skipped
        assert sorted(k[src == s].tolist()) == list(range(int((src == s).sum())))
    # across ranks: every global position is served by exactly one (rank, micro-step)
    positions = [st * G + m * MB * 2 + r * MB + i for st in range(3) for m in range(2) for r in range(2) for i in range(MB)]
    assert sorted(positions) == list(range(3 * G))


def test_realized_proportions(prepared_corpus):
    ld = _loader(prepared_corpus)
    src = ld.sample_sources(0, 2000)
    assert (np.bincount(src, minlength=3) / 2000).round(3).tolist() == [0.5, 0.3, 0.2]
    ld = _loader(prepared_corpus, weights={"gamma": 0.0})
    assert set(ld.sample_sources(0, 500).tolist()) == {0, 1}


def test_epochs_reshuffle_and_cover_the_stream(prepared_corpus):
    ld = _loader(prepared_corpus, weights={"alpha": 0, "beta": 0, "gamma": 1})
    st = ld.streams[2]
    n = st.samples_per_epoch
    e0 = [tuple(st.window(k)[0].tolist()) for k in range(n)]
    e1 = [tuple(st.window(k)[0].tolist()) for k in range(n, 2 * n)]
    assert len(set(e0)) == n and e0 != e1  # all windows distinct; the next epoch is reshuffled
    assert sum(len(w) - 1 for w in e0) == n * SEQ <= st.tokens


def test_validation_batches_are_deterministic(prepared_corpus):
    a = validation_batches(prepared_corpus, "alpha", seq_len=SEQ, micro_batch_size=2, dp_rank=0, dp_size=2, max_batches=3)
    b = validation_batches(prepared_corpus, "alpha", seq_len=SEQ, micro_batch_size=2, dp_rank=0, dp_size=2, max_batches=3)
    c = validation_batches(prepared_corpus, "alpha", seq_len=SEQ, micro_batch_size=2, dp_rank=1, dp_size=2, max_batches=3)
    assert len(a) == 3 and all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b, strict=False))
    assert not torch.equal(a[0]["input_ids"], c[0]["input_ids"])
    assert validation_batches(prepared_corpus, "gamma", seq_len=4000, micro_batch_size=2, dp_rank=0, dp_size=2,
                              max_batches=3) == []  # too small for one round: nothing, on every rank
    with pytest.raises(DataError, match="no source 'nope'"):
        validation_batches(prepared_corpus, "nope", seq_len=SEQ, micro_batch_size=2, dp_rank=0, dp_size=1, max_batches=1)


def test_describe_data(prepared_corpus):
    d = describe_data(prepared_corpus)
    assert d["vocab_size"] == 400 and len(d["tokenizer_fingerprint"]) == 64
    assert set(d["sources"]) == {"alpha", "beta", "gamma"}
    assert all(v["train_tokens"] > v["validation_tokens"] > 0 for v in d["sources"].values())


def test_bad_shapes_and_resume_mismatch(prepared_corpus):
    with pytest.raises(ConfigError, match=r"global_batch_size: 10 is not divisible by micro_batch_size x "
                                          r"data-parallel ranks = 2 x 2 = 4; use train.global_batch_size=8 or 12"):
        PretrainLoader(prepared_corpus, seq_len=SEQ, micro_batch_size=2, global_batch_size=10, dp_rank=0, dp_size=2, seed=0)
    with pytest.raises(DataError, match="unknown source"):
        _loader(prepared_corpus, weights={"delta": 1.0})
    state = _loader(prepared_corpus).state_dict()
    other = PretrainLoader(prepared_corpus, seq_len=SEQ, micro_batch_size=MB, global_batch_size=G, dp_rank=0,
                           dp_size=1, seed=4)
    with pytest.raises(DataError, match="checkpoint's seed is 3"):
        other.load_state_dict(state)
    with pytest.raises(DataError, match="fewer than seq_len"):
        PretrainLoader(prepared_corpus, seq_len=100_000, micro_batch_size=1, global_batch_size=1, dp_rank=0,
                       dp_size=1, seed=0)



def test_prepared_directory_can_move(tmp_path):
    """After the prepared tree moves (another machine, another mount), the tokenizer is found through
    the data config instead of the absolute path recorded at prepare time."""
    import shutil
    from pathlib import Path

    import yaml
    from clitools import TINY_DATA_YAML, run_cli

    root, moved = tmp_path / "a", tmp_path / "b"
    root.mkdir()
    text = TINY_DATA_YAML.format(root=root).replace("1200000", "200000").replace("800000", "200000")
    (root / "data.yaml").write_text(text.replace("vocab_size: 1024", "vocab_size: 400"))
    run_cli(["prepare", "--config", str(root / "data.yaml"), "--workers", "1"])
    shutil.move(str(root), str(moved))
    data = yaml.safe_load((moved / "data.yaml").read_text())
    data["output_dir"], data["tokenizer"]["path"] = str(moved / "shards"), str(moved / "tokenizer")
    (moved / "data.yaml").write_text(yaml.safe_dump(data))
    assert describe_data(str(moved / "data.yaml"))["tokenizer_dir"] == str(Path(moved / "tokenizer").resolve())
