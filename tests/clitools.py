"""Helpers for tests that drive the real CLI: runners for `python -m llmtrain` and launchers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BIN = Path(PY).parent
# `llmtrain` with the test-only fault injector (tests/faultinject.py) installed through the callback seam
FAULT_ENTRY = str(ROOT / "tests" / "fault_entry.py")


def entry(env: dict[str, str] | None) -> list[str]:
    """How to start `llmtrain` as a script argument of python or a launcher: ``-m llmtrain``, or the
    fault-injecting entry when ``LLMTRAIN_FAULT`` is set in ``env``."""
    return [FAULT_ENTRY] if env and env.get("LLMTRAIN_FAULT") else ["-m", "llmtrain"]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_",
                                                                     "SLURM_", "OMPI_", "PMI_"))}
    env.update({"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "DS_ACCELERATOR": "cpu",
                "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "",
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
    env.update(extra)
    return env


def run_cli(args: list[str], *, cwd: Path | None = None, timeout: float = 600, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m llmtrain ARGS`` (or a launcher command when ARGS[0] is a path) and capture output."""
    cmd = args if args and (args[0].startswith("/") or args[0] in ("torchrun", "deepspeed", "accelerate", "mpirun", "bash")) \
        else [PY, *entry(env), *args]
    if env and env.get("LLMTRAIN_FAULT") and "-m" in cmd and cmd[cmd.index("-m") + 1:][:1] == ["llmtrain"]:
        i = cmd.index("-m")
        cmd = [*cmd[:i], FAULT_ENTRY, *cmd[i + 2:]]
    if cmd[0] in ("torchrun", "deepspeed", "accelerate"):
        cmd = [str(BIN / cmd[0]), *cmd[1:]]
    proc = subprocess.run(cmd, cwd=cwd or ROOT, env=env or cli_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
                             f"--- stderr\n{proc.stderr[-4000:]}")
    return proc


def torchrun(nproc: int, args: list[str], **kw) -> subprocess.CompletedProcess:
    return run_cli(["torchrun", "--nproc_per_node", str(nproc), "--master_port", str(free_port()), "-m", "llmtrain", *args], **kw)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_train_metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == "train"]


def losses_by_step(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_train_metrics(run_dir)}


TINY_DATA_YAML = """\
tokenizer:
  path: {root}/tokenizer
  vocab_size: 1024
  sample_sentences: 20000
  sample_chars: 1200000
output_dir: {root}/shards
shard_tokens: 150000
validation_fraction: 0.05
min_chars: 20
seed: 7
sources:
  - name: shakespeare
    starter: shakespeare
    weight: 0.6
    max_chars: 1200000
  - name: code
    starter: python_stdlib
    weight: 0.4
    max_chars: 800000
    validation_fraction: 0.15
"""


def tiny_train_args(data_cfg: Path, ckpt_dir: Path, *extra: str, run_name: str = "t") -> list[str]:
    """`llmtrain train` arguments for a seconds-long fp32 CPU run on ``tiny_data``."""
    sets = ["model.vocab_size=1024", "model.dim=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2",
            "model.max_seq_len=128", "model.tie_embeddings=false", "model.attention_backend=sdpa",
            f"data.config={data_cfg}", "train.seq_len=64", "train.micro_batch_size=2", "train.global_batch_size=8",
            "train.max_steps=8", "train.precision=fp32", "train.eval_batches=2", f"train.run_name={run_name}",
            "optim.warmup_steps=2", "optim.lr=3e-3", f"checkpoint.dir={ckpt_dir}", "logging.log_every=1",
            "logging.tensorboard=false", "logging.plot=false", *extra]
    out = ["train", "--config", str(ROOT / "configs" / "pretrain" / "tiny.yaml")]
    for s in sets:
        out += ["--set", s]
    return out
