"""Every launcher runs the same `llmtrain train` on 2 CPU processes and gets the same losses.

torchrun is the reference; accelerate, the deepspeed launcher and mpirun must reproduce its per-step
losses exactly (same config, same seed, fp32, one thread per rank).
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import launchtools as S
import pytest


@pytest.fixture(scope="module")
def data_config(tmp_path_factory) -> Path:
    return S.session_data(tmp_path_factory.getbasetemp() / "launch-data")


@pytest.fixture(scope="module")
def reference(data_config, tmp_path_factory) -> dict[int, float]:
    return S.reference_losses(data_config, tmp_path_factory.getbasetemp() / "launch-runs")


def test_smoke_collectives_under_torchrun():
    out = S.run_checked(["torchrun", "--nproc_per_node", "2", "--master_port", str(S.free_port()),
                         str(Path(__file__).with_name("_smoke_entry.py"))], env=S.clean_env(), timeout=120)
    for r in (0, 1):
        assert (f"SMOKE rank={r} world=2 local_rank={r} launcher=torchrun sum=3 bcast=rank0-secret "
                f"gathered=[0, 10]") in out
    assert out.count("SMOKE-LOG rank0 only (is_rank0=True)") == 1


def test_torchrun_reference(reference):
    assert sorted(reference) == list(range(1, S.STEPS + 1))
    # An untrained model predicts close to uniformly over the vocabulary, then learns.
    assert abs(reference[1] - math.log(S.VOCAB)) < 0.3, reference
    assert reference[S.STEPS] < reference[1] - 0.1, reference


def _accelerate(port: int) -> tuple[list[str], dict[str, str]]:
    return (["accelerate", "launch", "--config_file", "launch/accelerate/cpu_2proc.yaml", "--multi_gpu",
             "--num_processes", "2", "--main_process_port", str(port), "-m", "llmtrain"],
            {"ACCELERATE_USE_CPU": "1"})


def _deepspeed(port: int) -> tuple[list[str], dict[str, str]]:
    return ["deepspeed", "--num_gpus", "2", "--master_port", str(port), "--module", "llmtrain"], {}


def _mpirun(port: int) -> tuple[list[str], dict[str, str]]:
    reason = S.apt_install(["openmpi-bin", "libopenmpi-dev"], ["mpirun"])
    if reason:
        pytest.skip(f"OpenMPI unavailable: {reason}")
    # Root needs explicit consent from OpenMPI; oversubscribe lets 2 ranks run on a 1-core runner.
    return (["mpirun", "-n", "2", "--oversubscribe", "--bind-to", "none", "-x", f"MASTER_PORT={port}", S.PYTHON, "-m", "llmtrain"],
            {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})


@pytest.mark.parametrize("launcher", [
    pytest.param(_accelerate, id="accelerate"),
    pytest.param(_deepspeed, id="deepspeed"),
    pytest.param(_mpirun, id="mpirun", marks=pytest.mark.mpi),
])
def test_launcher_reproduces_torchrun_losses(launcher, data_config, reference, tmp_path):
    prefix, extra_env = launcher(S.free_port())
    S.run_checked([*prefix, *S.train_args(data_config, tmp_path, "run")], env=S.clean_env(**extra_env), timeout=300)
    assert S.read_losses(tmp_path / "run") == reference


def test_half_set_environment_fails_before_compute(tmp_path):
    cmd = [S.PYTHON, "-m", "llmtrain", *S.train_args(tmp_path / "data.yaml", tmp_path, "x")]
    p = subprocess.run(cmd, cwd=S.REPO, env=S.clean_env(RANK="0"), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr[-3000:]
    assert "RANK=0 is set but WORLD_SIZE is not" in p.stderr
    assert not (tmp_path / "x").exists()
