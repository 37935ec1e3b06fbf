"""Rank discovery: who am I, how many are we, where is rank 0 — from whatever launcher started us.

Launchers only start processes; this module reads the variables each one sets and turns them into
one `DistEnv`, so that the training entry point works unchanged under torchrun, ``accelerate
launch``, the ``deepspeed`` launcher, ``srun`` (one task per rank) and ``mpirun``.

Precedence (first match wins), which matters when launchers nest (torchrun inside an srun task):

1. ``RANK``/``WORLD_SIZE`` (+ ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): torchrun,
   accelerate (which runs torchrun's agent), the deepspeed launcher, or a user who set them.
2. Slurm job step (``SLURM_STEP_ID`` present): ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``
   (``SLURM_NTASKS``), ``SLURM_LOCALID``; master = first host of the step's node list.
   The batch shell itself has ``SLURM_PROCID=0`` and ``SLURM_NTASKS`` but no step: it counts as a
   single process, not as rank 0 of a world that would never arrive.
3. OpenMPI (``OMPI_COMM_WORLD_*``) or MPICH/Intel MPI/PMI (``PMI_RANK``/``PMI_SIZE``).
4. Otherwise one process on 127.0.0.1 and a free port.

Anything half set (rank without world size, rank >= world, a multi-process world with no master
address) raises `UserError` naming the variables and the fix before any collective can hang.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from llmtrain.errors import UserError

TORCH_DEFAULT_PORT = 29500


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job, as discovered from the launcher's environment."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int
    launcher: str  # torchrun | accelerate | deepspeed | env | srun | mpirun | single

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def as_environ(self) -> dict[str, str]:
        """The torch/DeepSpeed ``env://`` variables that describe this process."""
        return {
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(self.local_rank),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }


def discover(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Read rank, world size and rendezvous address from the launcher's environment variables."""
    env = os.environ if environ is None else environ
    if any(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return _from_torch_env(env)
    if "SLURM_STEP_ID" in env and "SLURM_PROCID" in env:
        return _from_slurm(env)
    if "OMPI_COMM_WORLD_RANK" in env or "OMPI_COMM_WORLD_SIZE" in env:
        return _from_mpi(env, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                         "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE")
    if "PMI_RANK" in env or "PMI_SIZE" in env:
        return _from_mpi(env, "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS")
    port = _int(env, "MASTER_PORT") if "MASTER_PORT" in env else free_port()
    return DistEnv(0, 1, 0, 1, env.get("MASTER_ADDR", "127.0.0.1"), port, "single")


def process_rank(environ: Mapping[str, str] | None = None) -> int:
    """This process's global rank from the environment alone (no validation, no host lookups).

    For logging before the process group exists; `discover` is the authority.
    """
    env = os.environ if environ is None else environ
    keys = ["RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"]
    if "SLURM_STEP_ID" in env:
        keys.insert(1, "SLURM_PROCID")
    for key in keys:
        if env.get(key, "").isdigit():
            return int(env[key])
    return 0


def _from_torch_env(env: Mapping[str, str]) -> DistEnv:
    missing = [k for k in ("RANK", "WORLD_SIZE") if k not in env]
    if missing:
        present = ", ".join(f"{k}={env[k]}" for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if k in env)
        raise UserError(
            f"half-set launcher environment: {present} is set but {' and '.join(missing)} is not. "
            "Start the job with a launcher that sets all of them (torchrun, accelerate launch, deepspeed), "
            "or export RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT together; "
            "for a single process unset RANK, WORLD_SIZE and LOCAL_RANK.")
    rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
    _check_rank(rank, world, "RANK", "WORLD_SIZE")
    local_rank = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else (rank if world == 1 else None)
    if local_rank is None:
        raise UserError(f"half-set launcher environment: RANK={rank} and WORLD_SIZE={world} are set but LOCAL_RANK "
                        "is not, so the device for this process is unknown. Export LOCAL_RANK (the rank on this "
                        "node) too, or start the job with torchrun / accelerate launch / deepspeed.")
    local_world = _first_int(env, "LOCAL_WORLD_SIZE", "LOCAL_SIZE")
    if local_world is None:  # only a lower bound is known; nothing here depends on the exact value
        local_world = local_rank + 1
    _check_rank(local_rank, local_world, "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    if world > 1:
        absent = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
        if absent:
            raise UserError(
                f"half-set launcher environment: WORLD_SIZE={world} (RANK={rank}) but {' and '.join(absent)} "
                f"{'is' if len(absent) == 1 else 'are'} not set, so the ranks cannot meet. Export "
                "MASTER_ADDR=<host of rank 0> and MASTER_PORT=<free port, e.g. 29500> on every rank, or start "
                "the job with torchrun / accelerate launch / deepspeed, which set them.")
        addr, port = env["MASTER_ADDR"], _int(env, "MASTER_PORT")
    else:
        addr = env.get("MASTER_ADDR") or "127.0.0.1"
        port = _int(env, "MASTER_PORT") if env.get("MASTER_PORT") else free_port()
    return DistEnv(rank, world, local_rank, local_world, addr, port, _torch_launcher_name(env))


# `accelerate launch --mixed_precision X` (or its config file) exports X to the workers; "no" is also
# what it exports when neither names a precision, so it cannot be told from "not set" and means nothing.
ACCELERATE_PRECISIONS = {"bf16": "bf16", "fp16": "fp16"}


def launcher_precision(environ: Mapping[str, str] | None = None) -> str | None:
    """train.precision asked for by the launcher (accelerate's ``mixed_precision``), None if none was."""
    value = (os.environ if environ is None else environ).get("ACCELERATE_MIXED_PRECISION", "").strip().lower()
    if value in ("", "no"):
        return None
    if value not in ACCELERATE_PRECISIONS:
        raise UserError(f"accelerate launch set mixed_precision={value} (ACCELERATE_MIXED_PRECISION), which llmtrain "
                        f"does not train in; precision is train.precision (fp32, bf16 or fp16): launch with "
                        f"--mixed_precision no (or bf16/fp16) and set --set train.precision=bf16")
    return ACCELERATE_PRECISIONS[value]


def _torch_launcher_name(env: Mapping[str, str]) -> str:
    if any(k.startswith("ACCELERATE_") for k in env):
        return "accelerate"
    if "TORCHELASTIC_RUN_ID" in env:
        return "torchrun"
    if "CROSS_RANK" in env and "LOCAL_SIZE" in env:
        return "deepspeed"
    return "env"


def _from_slurm(env: Mapping[str, str]) -> DistEnv:
    size_key = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS"
    if size_key not in env:
        raise UserError("half-set Slurm environment: SLURM_PROCID is set but neither SLURM_STEP_NUM_TASKS nor "
                        "SLURM_NTASKS is. Start each rank with `srun` inside an allocation (sbatch/salloc).")
    rank, world = _int(env, "SLURM_PROCID"), _int(env, size_key)
    _check_rank(rank, world, "SLURM_PROCID", size_key)
    local_rank = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
    per_node = tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or str(world))
    node_id = _int(env, "SLURM_NODEID") if "SLURM_NODEID" in env else 0
    local_world = per_node[node_id] if node_id < len(per_node) else local_rank + 1
    addr = env.get("MASTER_ADDR") or first_host(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "")
    if not addr:
        if world > 1:
            raise UserError("Slurm environment without SLURM_JOB_NODELIST: cannot find the first node for the "
                            "rendezvous. Export MASTER_ADDR=<first node> before srun.")
        addr = "127.0.0.1"
    if env.get("MASTER_PORT"):
        port = _int(env, "MASTER_PORT")
    elif world == 1:
        port = free_port()
    else:
        port = slurm_port(env.get("SLURM_JOB_ID", "0"))
    return DistEnv(rank, world, local_rank, local_world, addr, port, "srun")


def _from_mpi(env: Mapping[str, str], rank_key: str, size_key: str, lrank_key: str, lsize_key: str) -> DistEnv:
    missing = [k for k in (rank_key, size_key) if k not in env]
    if missing:
        raise UserError(f"half-set MPI environment: {' and '.join(missing)} missing. Start the processes with "
                        "`mpirun -n N python -m llmtrain ...` so the MPI launcher sets rank and size together.")
    rank, world = _int(env, rank_key), _int(env, size_key)
    _check_rank(rank, world, rank_key, size_key)
    local_rank = _int(env, lrank_key) if lrank_key in env else (rank if world == 1 else 0)
    local_world = _int(env, lsize_key) if lsize_key in env else (world if world == 1 else local_rank + 1)
    if env.get("MASTER_ADDR"):
        addr = env["MASTER_ADDR"]
    elif local_world == world:  # every rank on this host
        addr = "127.0.0.1"
    else:
        addr = _mpi_bcast_rank0_address()
    if env.get("MASTER_PORT"):
        port = _int(env, "MASTER_PORT")
    else:
        port = free_port() if world == 1 else TORCH_DEFAULT_PORT
    return DistEnv(rank, world, local_rank, local_world, addr, port, "mpirun")


def _mpi_bcast_rank0_address() -> str:
    """Rank 0's IP address, broadcast over MPI: mpirun sets no MASTER_ADDR across hosts."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise UserError("mpirun across several hosts needs MASTER_ADDR: install mpi4py (pip install "
                        "'llmtrain[mpi]') or pass `-x MASTER_ADDR=<host of rank 0> -x MASTER_PORT=29500` "
                        "to mpirun.") from e
    comm = MPI.COMM_WORLD
    addr = socket.gethostbyname(socket.gethostname()) if comm.Get_rank() == 0 else None
    return str(comm.bcast(addr, root=0))


def tasks_per_node(spec: str) -> list[int]:
    """Expand Slurm's compressed tasks-per-node list: ``"2(x3),1"`` -> ``[2, 2, 2, 1]``."""
    out: list[int] = []
    for part in filter(None, spec.split(",")):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            raise UserError(f"cannot parse Slurm tasks-per-node list {spec!r} (expected e.g. '2(x3),1')")
        out += [int(m.group(1))] * int(m.group(2) or 1)
    return out


def first_host(nodelist: str) -> str:
    """First host of a Slurm node list (``"gpu[003-005,9],cpu1"`` -> ``"gpu003"``).

    Asks ``scontrol show hostnames`` when it exists (it knows every syntax Slurm accepts), else
    expands the common bracket syntax here.
    """
    if not nodelist:
        return ""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.split()
            if out:
                return out[0]
        except (subprocess.SubprocessError, OSError):
            pass
    return expand_nodelist(nodelist)[0]


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand ``"n[01-03,7]x,m5"`` into host names (one bracket group per name, zero-padding kept)."""
    hosts: list[str] = []
    for name in re.findall(r"[^,\[]+(?:\[[^\]]*\][^,\[]*)?", nodelist):
        m = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", name)
        if not m:
            hosts.append(name)
            continue
        prefix, ranges, suffix = m.groups()
        for r in ranges.split(","):
            lo, _, hi = r.partition("-")
            width = len(lo)
            for i in range(int(lo), int(hi or lo) + 1):
                hosts.append(f"{prefix}{i:0{width}d}{suffix}")
    return hosts


def slurm_port(job_id: str) -> int:
    """A port derived from the job id: every task of the job computes the same one, jobs sharing a
    node differ."""
    digits = re.sub(r"\D", "", job_id) or "0"
    return 20000 + int(digits) % 20000


def free_port() -> int:
    """An unused TCP port on this host (for single-process runs, which still need a process group)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check_rank(rank: int, world: int, rank_key: str, world_key: str) -> None:
    if world < 1:
        raise UserError(f"{world_key}={world}: the number of processes must be at least 1.")
    if not 0 <= rank < world:
        raise UserError(f"{rank_key}={rank} is outside 0..{world - 1} ({world_key}={world}): each process needs a "
                        f"distinct rank below the world size. Check the launcher's process count against "
                        f"{world_key}, or unset both to run a single process.")


def _int(env: Mapping[str, str], key: str) -> int:
    value = env[key]
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{key}={value!r} is not an integer; the launcher environment is corrupt. "
                        f"Unset {key} or set it to a whole number.") from None


def _first_int(env: Mapping[str, str], *keys: str) -> int | None:
    for k in keys:
        if env.get(k):
            return _int(env, k)
    return None
