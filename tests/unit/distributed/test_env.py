"""Rank discovery from each launcher's variables, and the errors for half-set environments."""

from __future__ import annotations

import pytest

from llmtrain.distributed import env as envmod
from llmtrain.distributed.env import (
    DistEnv,
    discover,
    expand_nodelist,
    process_rank,
    slurm_port,
    tasks_per_node,
)
from llmtrain.errors import UserError

TORCHRUN = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29400", "TORCHELASTIC_RUN_ID": "abc"}


def test_torchrun():
    assert discover(TORCHRUN) == DistEnv(3, 4, 1, 2, "10.0.0.5", 29400, "torchrun")


def test_accelerate_is_named_even_though_it_runs_torchrun():
    assert discover({**TORCHRUN, "ACCELERATE_MIXED_PRECISION": "no"}).launcher == "accelerate"


def test_deepspeed_launcher_local_size():
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_SIZE": "2", "CROSS_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert discover(env) == DistEnv(1, 2, 1, 2, "127.0.0.1", 29500, "deepspeed")


def test_torch_vars_win_over_slurm_when_torchrun_runs_inside_srun():
    env = {**TORCHRUN, "SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}
    assert discover(env).rank == 3


def test_srun_one_task_per_rank(monkeypatch):
    monkeypatch.setattr(envmod.shutil, "which", lambda name: None)  # parse the node list ourselves
    env = {"SLURM_STEP_ID": "0", "SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_NTASKS": "16",
           "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
           "SLURM_STEP_NODELIST": "gpu[007-008]", "SLURM_JOB_NODELIST": "gpu[001-009]", "SLURM_JOB_ID": "123456"}
    assert discover(env) == DistEnv(5, 8, 1, 4, "gpu007", 20000 + 123456 % 20000, "srun")


def test_srun_master_from_environment_wins():
    env = {"SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_LOCALID": "1",
           "SLURM_JOB_NODELIST": "n1", "MASTER_ADDR": "10.1.1.1", "MASTER_PORT": "1234"}
    got = discover(env)
    assert (got.master_addr, got.master_port, got.local_world_size) == ("10.1.1.1", 1234, 2)


def test_slurm_batch_shell_is_a_single_process():
    # sbatch's shell has SLURM_PROCID=0 and SLURM_NTASKS but no job step: not rank 0 of 4.
    got = discover({"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n1"})
    assert (got.rank, got.world_size, got.launcher) == (0, 1, "single")


def test_openmpi_single_host_uses_loopback_and_default_port():
    env = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
    assert discover(env) == DistEnv(1, 2, 1, 2, "127.0.0.1", 29500, "mpirun")


def test_pmi_mpich_with_exported_master():
    env = {"PMI_RANK": "2", "PMI_SIZE": "4", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "2",
           "MASTER_ADDR": "h1", "MASTER_PORT": "4000"}
    assert discover(env) == DistEnv(2, 4, 0, 2, "h1", 4000, "mpirun")


def test_multi_host_mpirun_broadcasts_rank0_address(monkeypatch):
    monkeypatch.setattr(envmod, "_mpi_bcast_rank0_address", lambda: "10.9.9.9")
    env = {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
    assert discover(env).master_addr == "10.9.9.9"


def test_no_launcher_is_one_process_on_a_free_port():
    got = discover({})
    assert (got.rank, got.world_size, got.local_rank, got.master_addr, got.launcher) == (0, 1, 0, "127.0.0.1", "single")
    assert 0 < got.master_port < 65536


def test_world_of_one_without_master_is_fine():
    got = discover({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})
    assert (got.world_size, got.master_addr) == (1, "127.0.0.1")


@pytest.mark.parametrize("env, words", [
    ({"RANK": "0"}, ["RANK=0", "WORLD_SIZE is not", "torchrun"]),
    ({"WORLD_SIZE": "2"}, ["WORLD_SIZE=2", "RANK is not"]),
    ({"LOCAL_RANK": "0"}, ["LOCAL_RANK=0", "RANK and WORLD_SIZE is not"]),
    ({"RANK": "1", "WORLD_SIZE": "2"}, ["LOCAL_RANK is not"]),
    ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, ["RANK=2 is outside 0..1", "WORLD_SIZE=2"]),
    ({"RANK": "0", "WORLD_SIZE": "0", "LOCAL_RANK": "0"}, ["WORLD_SIZE=0"]),
    ({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, ["RANK='x' is not an integer"]),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, ["MASTER_ADDR and MASTER_PORT are not set", "Export MASTER_ADDR=<host of rank 0>"]),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h"}, ["MASTER_PORT is not set"]),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "h",
      "MASTER_PORT": "1"}, ["LOCAL_RANK=2 is outside 0..1"]),
    ({"SLURM_STEP_ID": "0", "SLURM_PROCID": "0"}, ["SLURM_NTASKS", "srun"]),
    ({"SLURM_STEP_ID": "0", "SLURM_PROCID": "4", "SLURM_NTASKS": "4"}, ["SLURM_PROCID=4 is outside 0..3"]),
    ({"OMPI_COMM_WORLD_RANK": "0"}, ["OMPI_COMM_WORLD_SIZE missing", "mpirun -n"]),
    ({"PMI_SIZE": "2"}, ["PMI_RANK missing"]),
])
def test_half_set_environment_names_the_variables_and_the_fix(env, words):
    with pytest.raises(UserError) as e:
        discover(env)
    for w in words:
        assert w in str(e.value)


def test_process_rank_needs_no_validation():
    assert process_rank({"RANK": "3"}) == 3
    assert process_rank({"SLURM_PROCID": "2", "SLURM_STEP_ID": "0"}) == 2
    assert process_rank({"SLURM_PROCID": "2"}) == 0  # batch shell: no step
    assert process_rank({"OMPI_COMM_WORLD_RANK": "1"}) == 1
    assert process_rank({}) == 0


def test_slurm_helpers():
    assert tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert tasks_per_node("8") == [8]
    assert expand_nodelist("gpu[003-005,9],cpu1,a[1-2]b") == ["gpu003", "gpu004", "gpu005", "gpu9", "cpu1", "a1b", "a2b"]
    assert slurm_port("4242") == 24242 and slurm_port("54242_7") == 20000 + 542427 % 20000
    with pytest.raises(UserError, match="tasks-per-node"):
        tasks_per_node("two")


def test_as_environ_round_trips():
    env = DistEnv(1, 2, 1, 2, "h", 99, "srun")
    assert discover(env.as_environ()) == DistEnv(1, 2, 1, 2, "h", 99, "env")
