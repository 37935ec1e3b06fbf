"""A real single-node Slurm (Debian slurm-wlm + munge) for the sbatch tests, started once per session.

Skips every `slurm` test, with the reason, where it cannot be started: not root, no apt, the
packages cannot be installed, or another slurmctld already holds the port.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import launchtools
import pytest

CLUSTER = Path(__file__).with_name("cluster")




def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def slurm(tmp_path_factory) -> dict[str, str]:
    """Environment (SLURM_CONF) of a running local cluster; daemons stopped at the end."""
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld/slurmd/munged needs root")
    reason = launchtools.apt_install(["slurm-wlm"], ["slurmctld", "slurmd", "sbatch"])
    if reason:
        pytest.skip(f"Slurm unavailable: {reason}")
    if _port_busy(6817):
        pytest.skip("port 6817 is taken (another slurmctld runs here); stop it to run the slurm tests")
    state = tmp_path_factory.mktemp("slurm")
    p = subprocess.run(["bash", str(CLUSTER / "start.sh"), str(state)], capture_output=True, text=True, timeout=600)
    env = {"SLURM_CONF": str(state / "slurm.conf")}
    up = subprocess.run(["sinfo", "-h", "-o", "%T"], env={**os.environ, **env}, capture_output=True, text=True)
    if p.returncode or "idle" not in up.stdout:
        subprocess.run(["bash", str(CLUSTER / "stop.sh"), str(state)], capture_output=True, timeout=120)
        pytest.skip(f"local Slurm did not start: {(p.stdout + p.stderr)[-800:]}")
    yield env
    subprocess.run(["scancel", "--user", "root"], env={**os.environ, **env}, capture_output=True, timeout=60)
    subprocess.run(["bash", str(CLUSTER / "stop.sh"), str(state)], capture_output=True, timeout=120)
