"""The shipped launcher files parse: accelerate configs load with accelerate's own reader, every
shell script is valid bash, and the sbatch scripts ask for the preemption signal and requeue."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = sorted([*REPO.glob("slurm/*.sbatch"), REPO / "slurm" / "common.sh", REPO / "launch" / "torchrun.sh"])


@pytest.mark.parametrize("name, kind, procs, cpu", [
    ("single_gpu", "NO", 1, False), ("multi_gpu", "MULTI_GPU", 8, False), ("cpu_2proc", "MULTI_GPU", 2, True)])
def test_accelerate_configs_load(name, kind, procs, cpu):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(REPO / "launch" / "accelerate" / f"{name}.yaml"))
    assert (cfg.distributed_type.value, cfg.num_processes, cfg.use_cpu) == (kind, procs, cpu)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_are_valid_bash(script):
    p = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("name", ["pretrain", "finetune"])
def test_training_jobs_request_warning_signal_and_requeue(name):
    text = (REPO / "slurm" / f"{name}.sbatch").read_text()
    for line in ("#SBATCH --signal=B:USR1@", "#SBATCH --requeue", "#SBATCH --open-mode=append", "--resume auto"):
        assert line in text
