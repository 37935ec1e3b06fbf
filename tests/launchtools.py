"""Shared by tests/distributed, tests/slurm and tests/netns: a tiny real data set, the arguments of a
few-step CPU pretraining run, a clean environment for launchers, and the losses a run logged.

Every launcher test trains the same tiny run (2 data-parallel ranks, fp32 on CPU) so that their
per-step losses can be compared for exact equality with one torchrun reference run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TINY_CONFIG = REPO / "configs" / "pretrain" / "tiny.yaml"
STEPS = 6
VOCAB = 384

# Variables a launcher sets; a test must not inherit them from whatever runs pytest.
_LAUNCH_PREFIXES = ("SLURM_", "OMPI_", "PMI_", "PMIX_", "TORCHELASTIC_", "ACCELERATE_", "MPI_LOCAL")
_LAUNCH_VARS = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "GROUP_RANK", "ROLE_RANK", "CROSS_RANK", "CROSS_SIZE", "NNODES", "NPROC_PER_NODE", "MODE",
                "SLURM_CONF"}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment minus launcher variables, one thread per rank, CPU DeepSpeed."""
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS and not k.startswith(_LAUNCH_PREFIXES)}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DS_ACCELERATOR="cpu", PYTHONUNBUFFERED="1",
               TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
    env["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}"  # the venv's torchrun, accelerate, ...
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_checked(cmd: list[str], *, env: dict[str, str], timeout: float, cwd: Path = REPO) -> str:
    """Run a command to completion; on failure the assertion shows the end of its output."""
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}:\n{out[-6000:]}"
    return out


def write_data_config(root: Path, *, part_bytes: int = 60000) -> Path:
    """A two-source mixture from this interpreter's own standard library (real text, offline)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    cfg = root / "data.yaml"
    cfg.write_text(f"""\
tokenizer:
  path: {root / "tokenizer"}
  vocab_size: {VOCAB}
  sample_sentences: 1000
  sample_chars: 150000
output_dir: {root / "shards"}
shard_tokens: 20000
part_bytes: {part_bytes}
validation_fraction: 0.3
seed: 7
sources:
  - name: json
    path: {stdlib / "json"}
    weight: 0.5
  - name: email
    path: {stdlib / "email"}/*.py
    weight: 0.5
""")
    return cfg


def prepare_data(root: Path) -> Path:
    """Tokenizer + shards + manifest for the tiny runs (a few seconds); returns the data config."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = write_data_config(root)
    run_checked([PYTHON, "-m", "llmtrain", "prepare", "--config", str(cfg)], env=clean_env(), timeout=300)
    return cfg


def train_args(data_config: Path, ckpt_dir: Path, run_name: str, *, steps: int = STEPS, every: int = 0,
               extra: tuple[str, ...] = ()) -> list[str]:
    """`llmtrain train ...` arguments of the tiny CPU run every launcher test trains."""
    sets = {
        "data.config": str(data_config), "model.vocab_size": VOCAB, "model.n_layers": 2,
        "train.seq_len": 64, "train.micro_batch_size": 2, "train.global_batch_size": 8,
        "train.max_steps": steps, "train.eval_every": 0, "train.eval_batches": 1, "train.device": "cpu",
        "train.precision": "fp32", "train.run_name": run_name, "train.collective_timeout_s": 120,
        "optim.warmup_steps": 2, "checkpoint.dir": str(ckpt_dir), "checkpoint.every": every,
        "logging.log_every": 1, "logging.tensorboard": "false", "logging.plot": "false",
    }
    args = ["train", "--config", str(TINY_CONFIG)]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args + list(extra)


def overrides(args: list[str]) -> list[str]:
    """The KEY=VALUE parts of the ``--set`` options in ``args`` (for OVERRIDES= of slurm/*.sbatch)."""
    return [args[i + 1] for i, a in enumerate(args) if a == "--set"]


def read_losses(run_dir: Path) -> dict[int, float]:
    """Per-step training loss from <run dir>/metrics.jsonl (a resumed step overwrites its earlier line)."""
    losses: dict[int, float] = {}
    path = run_dir / "metrics.jsonl"
    assert path.is_file(), f"{path} missing: the run logged no metrics"
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "train":
            losses[int(rec["step"])] = float(rec["loss"])
    return losses


_reference: dict[tuple[str, int], dict[int, float]] = {}


def reference_losses(data_config: Path, workdir: Path, *, steps: int = STEPS) -> dict[int, float]:
    """Losses of `torchrun --nproc_per_node 2` on the tiny run: what every launcher must reproduce."""
    key = (str(data_config), steps)
    if key not in _reference:
        ckpt = workdir / f"reference-{steps}"
        cmd = ["torchrun", "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "llmtrain",
               *train_args(data_config, ckpt, "ref", steps=steps)]
        run_checked(cmd, env=clean_env(), timeout=300)
        losses = read_losses(ckpt / "ref")
        assert sorted(losses) == list(range(1, steps + 1)), losses
        _reference[key] = losses
    return _reference[key]


def cache_dir() -> Path:
    return Path(os.environ.get("LLMTRAIN_CACHE", Path.home() / ".cache" / "llmtrain"))


_apt_updated = False


def apt_install(packages: list[str], binaries: list[str]) -> str | None:
    """Install Debian packages unless ``binaries`` are already on PATH; None, or why it cannot.

    The .deb files are kept under $LLMTRAIN_CACHE/apt so that a second machine or an offline rerun
    installs from the cache; `apt-get update` runs at most once per session, only when needed.
    """
    global _apt_updated
    if all(shutil.which(b) for b in binaries):
        return None
    if os.geteuid() != 0:
        return f"{', '.join(packages)} not installed and not root (apt-get install {' '.join(packages)})"
    if not shutil.which("apt-get"):
        return f"{', '.join(packages)} not installed and no apt-get on this machine"
    archives = cache_dir() / "apt"
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    cmd = ["apt-get", "install", "-y", "-qq", "-o", f"Dir::Cache::archives={archives}",
           "-o", "APT::Keep-Downloaded-Packages=true", *packages]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in range(2):
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if p.returncode == 0 and all(shutil.which(b) for b in binaries):
            return None
        if attempt == 1 or _apt_updated:
            break
        _apt_updated = True  # package lists missing or stale: refresh once, then retry
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
    return f"apt-get install {' '.join(packages)} failed: {(p.stderr or p.stdout).strip()[-400:]}"


_data: dict[str, Path] = {}


def session_data(root: Path) -> Path:
    """The prepared tiny data set, made once per test session under ``root``."""
    if "cfg" not in _data:
        _data["cfg"] = prepare_data(root)
    return _data["cfg"]


def slurm_env(slurm: dict[str, str], **extra: str) -> dict[str, str]:
    """The environment of a job submitted to the local test cluster."""
    return clean_env(**slurm, PYTHON=PYTHON, **extra)


def sbatch(args: list[str], env: dict[str, str]) -> str:
    """Submit with ``sbatch --parsable`` from the repository root; the job id."""
    p = subprocess.run(["sbatch", "--parsable", *args], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().split(";")[0]
