"""slurm/pretrain.sbatch after a rank dies: the step is killed at once (--kill-on-bad-exit), the job
restarts the step by itself from `latest`, and the per-step losses equal an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import launchtools as S
import pytest

pytestmark = pytest.mark.slurm


def _wait_done(job: str, env: dict[str, str], log: Path, timeout: float) -> None:
    deadline, info = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        out = subprocess.run(["scontrol", "show", "job", "-o", job], env=env, capture_output=True, text=True,
                             timeout=30).stdout
        info = dict(re.findall(r"(\w+)=(\S*)", out.splitlines()[0] if out else ""))
        if info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"):
            break
        time.sleep(0.5)
    text = log.read_text()[-6000:] if log.exists() else ""
    assert info.get("JobState") == "COMPLETED", f"job {job}: {info}\n{text}"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    return S.session_data(base / "launch-data"), base / "launch-runs"


def _fault_python(tmp_path: Path) -> Path:
    """An interpreter stand-in that runs `-m llmtrain` through tests/fault_entry.py (the injector)."""
    wrapper = tmp_path / "python-with-faults"
    wrapper.write_text("#!/bin/bash\n"
                       f'if [ "$1" = -m ] && [ "$2" = llmtrain ]; then shift 2; '
                       f'exec {S.PYTHON} {S.REPO}/tests/fault_entry.py "$@"; fi\n'
                       f'exec {S.PYTHON} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def test_rank_killed_mid_run_restarts_in_the_allocation_and_resumes_exactly(slurm, data, tmp_path):
    data_cfg, runs = data
    reference = S.reference_losses(data_cfg, runs)
    log, logs = tmp_path / "job.out", tmp_path / "logs"
    args = S.train_args(data_cfg, tmp_path, "killed", every=3)[1:]
    env = S.slurm_env(slurm, MODE="per-task", LOG_DIR=str(logs), MAX_RESTARTS="2",
               LLMTRAIN_FAULT="kill_at_step=3,rank=1")
    env["PYTHON"] = str(_fault_python(tmp_path))
    job = S.sbatch(["--ntasks-per-node=2", "--output", str(log), "slurm/pretrain.sbatch", *args], env)
    _wait_done(job, env, log, timeout=400)
    text = log.read_text()
    assert "restarting it in this allocation from the last checkpoint" in text, text[-4000:]
    assert "failure 1/2" in text and (logs / "failures").read_text().strip() == "1"
    assert S.read_losses(tmp_path / "killed") == reference
    # per-rank logs, and per-rank timing in the metrics
    assert {p.name for p in logs.glob("rank-*.out")} == {"rank-0.out", "rank-1.out"}
    assert "Killed" in text or "task 1" in (logs / "srun-0.0.err").read_text()
    ranks = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
             if json.loads(x).get("kind") == "ranks"]
    assert ranks and all(r["ranks"] == 2 and len(r["busy_s_per_rank"]) == 2 for r in ranks)
    assert os.environ.get("LLMTRAIN_FAULT") is None  # the fault stayed inside the job
