"""Bad input: each case is a clear error (exit 2, one paragraph, no traceback) before any compute,
and nothing already written is touched.

Every relaunch targets a finished 2-step run (its step_000002 would be resumed if the input were
good); its files (sizes, modification times and sha256) must be unchanged afterwards, and no step
runs. Bad inputs of ``llmtrain prepare`` leave every file that existed before (inputs, tokenizer)
byte-identical.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from clitools import cli_env, run_cli, tiny_train_args, torchrun
from faultkit import snapshot

BASE = ("train.zero_stage=1",)


def relaunch(data_cfg: Path, ckpt: Path, *sets: str, resume: str | None = None, nproc: int = 1):
    """Continue the base run to step 4 with some bad input; must fail without touching ``ckpt``."""
    args = tiny_train_args(data_cfg, ckpt, *BASE, "train.max_steps=4", *sets)
    if resume:
        args += ["--resume", resume]
    before = snapshot(ckpt)
    proc = torchrun(nproc, args, check=False) if nproc > 1 else run_cli(args, check=False)
    assert proc.returncode != 0
    assert proc.returncode == 2 or nproc > 1
    assert "Traceback" not in proc.stderr or nproc > 1, proc.stderr[-3000:]
    assert "step      1" not in proc.stdout and "step      3" not in proc.stdout  # no compute
    assert snapshot(ckpt) == before
    return proc


# ---- config ------------------------------------------------------------------------------------
def test_config_problems_are_all_reported_at_once(tiny_data, tmp_path):
    args = tiny_train_args(tiny_data, tmp_path, "train.max_step=3", "train.seed=abc", "model.n_layers=0",
                           "model.vocab_size=-5", "model.n_heads=6", "model.n_kv_heads=4", "model.attention_backend=flash2")
    proc = run_cli(args, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    for text in ("train.max_step: unknown key (did you mean 'max_steps'?)",
                 "train.seed: expected an integer, got str 'abc'",
                 "model.n_layers: must be >= 1, got 0",
                 "model.vocab_size: must be >= 1, got -5",
                 "model.n_heads: 6 does not divide dim 64",
                 "model.n_kv_heads: 4 must be >= 1 and divide n_heads 6",
                 "model.attention_backend: 'flash2' is not one of 'auto', 'flash_attn', 'sdpa', 'eager' (did you mean 'flash_attn'?)"):
        assert text in proc.stderr, text
    assert not (tmp_path / "t").exists()


def test_batch_arithmetic(tiny_data, base_run):
    one = run_cli(tiny_train_args(tiny_data, base_run, "train.global_batch_size=10", "train.micro_batch_size=4"), check=False)
    assert one.returncode == 2
    assert "train.global_batch_size: 10 is not divisible by micro_batch_size x data-parallel ranks = 4 x 1 = 4" in one.stderr
    # 8 = 2 x 4 divides on one rank; with 2 ranks the micro batches x ranks (2 x 4 = 8) do not divide 12
    two = relaunch(tiny_data, base_run, "train.global_batch_size=12", "train.micro_batch_size=4", nproc=2)
    assert "global_batch_size: 12 is not divisible by micro_batch_size x data-parallel ranks = 4 x 2 = 8" in two.stderr


# ---- data --------------------------------------------------------------------------------------
@pytest.fixture
def data_copy(tiny_data, tmp_path) -> Path:
    """A private copy of the prepared corpus (shards, manifest, tokenizer) to damage."""
    src = tiny_data.parent
    dst = tmp_path / "data"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("parts"))
    (dst / "data.yaml").write_text(tiny_data.read_text().replace(str(src), str(dst)))
    return dst / "data.yaml"


def first_shard(data_cfg: Path) -> Path:
    manifest = json.loads((data_cfg.parent / "shards" / "manifest.json").read_text())
    return data_cfg.parent / "shards" / manifest["shards"][0]["file"]


def _truncate(cfg: Path) -> tuple[list[str], str]:
    shard = first_shard(cfg)
    os.truncate(shard, shard.stat().st_size - 2)
    return [], f"shard {shard} has {shard.stat().st_size} bytes but the manifest says"


def _alter(cfg: Path) -> tuple[list[str], str]:
    shard = first_shard(cfg)
    with open(shard, "r+b") as f:  # same size, other content: only the sha256 sees it
        f.seek(100)
        f.write(b"\x01\x02\x03\x04")
    return ["data.verify=true"], f"shard {shard} has sha256"


def _missing_file(cfg: Path) -> tuple[list[str], str]:
    shard = first_shard(cfg)
    shard.unlink()
    return [], f"shard file {shard} is missing but listed in"


def _manifest_counts(cfg: Path) -> tuple[list[str], str]:
    path = cfg.parent / "shards" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["shards"][0]["tokens"] += 1000
    path.write_text(json.dumps(manifest))
    return [], "but the manifest says"


def _other_tokenizer(cfg: Path) -> tuple[list[str], str]:
    """The same shards relabelled with another tokenizer fingerprint: resuming must refuse. (The data
    config names no tokenizer directory here, so the manifest's is used.)"""
    path = cfg.parent / "shards" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["tokenizer_fingerprint"] = "f" * 64
    for s in manifest["shards"]:
        s["tokenizer_fingerprint"] = "f" * 64
    path.write_text(json.dumps(manifest))
    cfg.write_text(cfg.read_text().replace(f"path: {cfg.parent}/tokenizer", f"path: {cfg.parent}/moved_tokenizer"))
    return [], "the data now uses ffffffffffff. Re-prepare the data with the original tokenizer or start a new run"


def _config_names_another_tokenizer(cfg: Path) -> tuple[list[str], str]:
    """The data config's tokenizer.path is another tokenizer than the shards': refused before compute
    (training on one and saving the other into checkpoints would be silently wrong)."""
    from data_prep.tokenizer import train_tokenizer

    other = cfg.parent / "other_tokenizer"
    train_tokenizer([f"line {i} of another corpus\n" for i in range(300)], other, vocab_size=300, threads=1)
    cfg.write_text(cfg.read_text().replace(f"path: {cfg.parent}/tokenizer", f"path: {other}"))
    return [], f"the data config names tokenizer {other} (fingerprint"


def _nan_learning_rate(cfg: Path) -> tuple[list[str], str]:
    return ["optim.lr=nan"], "optim.lr: must be a finite number, got nan"


def _deepspeed_auto(cfg: Path) -> tuple[list[str], str]:
    return ["deepspeed.train_micro_batch_size_per_gpu=auto"], \
        "deepspeed.train_micro_batch_size_per_gpu: 'auto' is a Hugging Face Trainer placeholder that DeepSpeed does not resolve"


def _absurd_vocab_size(cfg: Path) -> tuple[list[str], str]:
    return ["model.vocab_size=1000000000000"], "model.vocab_size: must be <= 4194304, got 1000000000000"


def _vocab_too_large(cfg: Path) -> tuple[list[str], str]:
    return ["model.vocab_size=512"], "use a tokenizer with 1024 ids but model.vocab_size is 512; set model.vocab_size=1024"


def _empty_mixture(cfg: Path) -> tuple[list[str], str]:
    text = cfg.read_text()
    cfg.write_text(text[: text.index("sources:")] + "sources: []\n")
    return [], "sources: the mixture is empty"


def _negative_weight(cfg: Path) -> tuple[list[str], str]:
    return ["data.weights={shakespeare: -1.0, code: 1.0}"], "data.weights: {'shakespeare': -1.0} must be finite and >= 0"


def _zero_weights(cfg: Path) -> tuple[list[str], str]:
    return ["data.weights={shakespeare: 0, code: 0}"], "no prepared source has a positive weight"


def _no_such_path(cfg: Path) -> tuple[list[str], str]:
    return [f"data.config={cfg.parent / 'nowhere.yaml'}"], f"config file {cfg.parent / 'nowhere.yaml'} does not exist"


@pytest.mark.parametrize("damage", [_truncate, _alter, _missing_file, _manifest_counts, _other_tokenizer, _vocab_too_large,
                                    _empty_mixture, _negative_weight, _zero_weights, _no_such_path,
                                    _config_names_another_tokenizer, _nan_learning_rate, _deepspeed_auto, _absurd_vocab_size],
                         ids=lambda f: f.__name__.strip("_"))
def test_bad_data(base_run, data_copy, damage: Callable[[Path], tuple[list[str], str]]):
    sets, expected = damage(data_copy)
    proc = relaunch(data_copy, base_run, *sets)
    assert expected in proc.stderr, proc.stderr[-3000:]


def test_sha256_verification_is_on_demand(data_copy):
    """Sizes are always checked; the sha256 pass (a full read) only with verify (data.verify=true)."""
    from llmtrain.data.loader import PretrainLoader
    from llmtrain.errors import DataError

    _alter(data_copy)
    shape = {"seq_len": 64, "micro_batch_size": 2, "global_batch_size": 8, "dp_rank": 0, "dp_size": 1, "seed": 1}
    PretrainLoader(str(data_copy), **shape)  # the altered shard has the right size
    with pytest.raises(DataError, match="its content changed"):
        PretrainLoader(str(data_copy), **shape, verify=True)


# ---- checkpoints -------------------------------------------------------------------------------
@pytest.fixture
def run_copy(base_run, tmp_path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(base_run, dst)
    return dst


def test_truncated_deepspeed_states(tiny_data, run_copy):
    step = run_copy / "t" / "step_000002"
    optim = next(step.glob("*optim_states.pt"))
    os.truncate(optim, optim.stat().st_size // 2)
    proc = relaunch(tiny_data, run_copy)
    assert f"cannot load checkpoint {step}: its files are truncated or damaged" in proc.stderr
    assert "no earlier checkpoint exists; start a new run (another train.run_name)" in proc.stderr


def test_truncated_trainer_state(tiny_data, run_copy):
    state = run_copy / "t" / "step_000002" / "trainer_state.json"
    state.write_text(state.read_text()[:40])
    proc = relaunch(tiny_data, run_copy)
    assert f"{state} is unreadable" in proc.stderr and "the checkpoint is damaged" in proc.stderr


def test_resume_from_a_directory_without_latest(tiny_data, base_run, tmp_path):
    empty = tmp_path / "not_a_checkpoint"
    empty.mkdir()
    proc = relaunch(tiny_data, base_run, resume=str(empty))
    assert f"{empty} is neither a step directory (no trainer_state.json) nor a run directory (no `latest` file)" in proc.stderr


def test_run_directory_whose_latest_was_deleted_is_not_overwritten(tiny_data, run_copy):
    (run_copy / "t" / "latest").unlink()
    proc = relaunch(tiny_data, run_copy)
    assert f"{run_copy / 't'} holds step_000002 but no `latest` file" in proc.stderr
    assert f"--resume {run_copy / 't' / 'step_000002'}" in proc.stderr


def test_resume_with_another_architecture_names_the_fields(tiny_data, base_run):
    proc = relaunch(tiny_data, base_run, "model.dim=32", "model.n_layers=3")
    assert "the model config differs (model.dim: checkpoint 64 vs config 32; model.n_layers: checkpoint 2 vs config 3)" in proc.stderr


def test_finetune_init_with_mismatched_or_damaged_weights(base_run, tmp_path):
    """Fine-tuning builds the model from the checkpoint's model.yaml: weights that do not fit it, or a
    truncated model.safetensors, are CheckpointErrors naming the file."""
    from llmtrain.errors import CheckpointError
    from llmtrain.modelio.load import load_model

    step = tmp_path / "step"
    shutil.copytree(base_run / "t" / "step_000002", step)
    yaml_path = step / "model.yaml"
    original = yaml_path.read_text()
    yaml_path.write_text(original.replace("dim: 64", "dim: 32"))
    with pytest.raises(CheckpointError, match=r"weights in .* do not fit its model config \(size mismatch for"):
        load_model(step)
    yaml_path.write_text(original)
    weights = step / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    with pytest.raises(CheckpointError, match="model.safetensors is truncated or damaged"):
        load_model(step)


# ---- run directory -----------------------------------------------------------------------------
def test_a_run_directory_held_by_a_live_process_is_refused(tiny_data, run_copy):
    """The lock names a live process (this test's) on this host: the relaunch is a second writer."""
    from llmtrain.training.run_lock import LOCK_FILE, RunLock

    holder = RunLock(run_copy / "t")
    holder.acquire()
    try:
        proc = relaunch(tiny_data, run_copy)
    finally:
        holder.release()
    assert f"{run_copy / 't'} is being written by another run: pid {os.getpid()} on {os.uname().nodename}" in proc.stderr
    assert f"holds {run_copy / 't' / LOCK_FILE}" in proc.stderr


def test_a_checkpoint_dir_that_is_a_file(tiny_data, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.write_text("a file, not a directory")
    proc = run_cli(tiny_train_args(tiny_data, ckpt, *BASE, "train.max_steps=2"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"llmtrain train: error: {ckpt} is a file, not a directory, so the run directory {ckpt / 't'}" in proc.stderr
    assert ckpt.read_text() == "a file, not a directory"


def test_debug_shows_the_traceback_of_a_user_error(tiny_data, tmp_path):
    args = tiny_train_args(tiny_data, tmp_path, "optim.lr=nan")
    for proc in (run_cli(args, check=False, env=cli_env(LLMTRAIN_DEBUG="1")), run_cli([*args, "--debug"], check=False)):
        assert proc.returncode == 2
        assert "Traceback (most recent call last)" in proc.stderr and "ConfigError" in proc.stderr
        assert "llmtrain train: error: invalid configuration" in proc.stderr.splitlines()[-2] + proc.stderr.splitlines()[-1]


# ---- prepare inputs ----------------------------------------------------------------------------
def _bad_gzip(root: Path) -> tuple[dict, str]:
    data = gzip.compress("".join(json.dumps({"text": f"document {i} " * 50}) + "\n" for i in range(200)).encode())
    (root / "docs.jsonl.gz").write_bytes(data[: len(data) // 2])
    return {"path": str(root / "docs.jsonl.gz")}, f"cannot read {root / 'docs.jsonl.gz'} as compressed input after"


def _bad_parquet(root: Path) -> tuple[dict, str]:
    (root / "docs.parquet").write_bytes(b"PAR1" + os.urandom(200))
    return {"path": str(root / "docs.parquet")}, f"cannot read {root / 'docs.parquet'} as parquet input"


def _cp1252_csv(root: Path) -> tuple[dict, str]:
    rows = "".join(f'"caf\u00e9 r\u00e9sum\u00e9 number {i}, a na\u00efve document"\n' for i in range(50))
    (root / "docs.csv").write_bytes(("text\n" + rows).encode("cp1252"))
    return {"path": str(root / "docs.csv"), "format": "hf_files"}, \
        f"{root / 'docs.csv'} is not UTF-8 text (byte 0xe9 at position"


def _empty_source(root: Path) -> tuple[dict, str]:
    (root / "empty").mkdir()
    (root / "empty/a.txt").write_text("")
    (root / "empty/b.txt").write_text("\n\n")
    return {"path": str(root / "empty")}, "source s has no document (2 file(s), 2 empty, 0 document(s) read"


def _output_inside_source(root: Path) -> tuple[dict, str]:
    (root / "docs").mkdir()
    (root / "docs/a.txt").write_text("a long enough document about nothing in particular\n" * 20)
    return {"path": str(root / "docs"), "output_dir": str(root / "docs/shards")}, \
        f"source s: input {root / 'docs'} contains output_dir {root / 'docs/shards'}"


@pytest.mark.parametrize("make", [_bad_gzip, _bad_parquet, _cp1252_csv, _empty_source, _output_inside_source],
                         ids=lambda f: f.__name__.strip("_"))
def test_bad_prepare_inputs(tiny_data, tmp_path, make):
    """One `llmtrain prepare: error:` paragraph naming the file; inputs and tokenizer untouched."""
    source, expected = make(tmp_path)
    out = source.pop("output_dir", str(tmp_path / "out"))
    tokenizer = tiny_data.parent / "tokenizer"
    cfg = tmp_path / "data.yaml"
    cfg.write_text(json.dumps({"tokenizer": {"path": str(tokenizer)}, "output_dir": out,
                               "sources": [{"name": "s", **source}]}))
    before, tok_before = snapshot(tmp_path), snapshot(tokenizer)
    proc = run_cli(["prepare", "--config", str(cfg), "--workers", "1"], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "llmtrain prepare: error: " in proc.stderr and expected in proc.stderr, proc.stderr[-3000:]
    after = snapshot(tmp_path)
    assert {k: after.get(k) for k in before} == before and snapshot(tokenizer) == tok_before
    assert not (Path(out) / "manifest.json").exists()
