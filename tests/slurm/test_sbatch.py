"""slurm/*.sbatch on a real (local, single-node) Slurm: training shapes, preemption + requeue, the
prepare array. Each compares with a run outside Slurm: same losses, same manifest."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import launchtools as S
import pytest

pytestmark = pytest.mark.slurm




PREEMPT_STEPS = 24
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL")


def _job(job: str, env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job], env=env, capture_output=True, text=True,
                         timeout=30).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out.splitlines()[0] if out else ""))


def _states(job: str, env: dict[str, str]) -> list[str]:
    """JobState of every task of a (possibly array) job."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job], env=env, capture_output=True, text=True,
                         timeout=30).stdout
    return re.findall(r"JobState=(\S+)", out)


def _wait(job: str, env: dict[str, str], until, what: str, log: Path | None = None, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = _job(job, env)
        if until(info):
            return info
        if info.get("JobState") in FINAL or info.get("Reason") == "DependencyNeverSatisfied":
            break
        time.sleep(0.2)
    text = log.read_text()[-6000:] if log and log.exists() else ""
    raise AssertionError(f"job {job}: waited for {what}, state {_job(job, env)}\n{text}")


def _done(info: dict) -> bool:
    return info.get("JobState") == "COMPLETED"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    return S.session_data(base / "launch-data"), base / "launch-runs"


def test_pretrain_per_task_two_ranks_matches_torchrun(slurm, data, tmp_path):
    data_cfg, runs = data
    reference = S.reference_losses(data_cfg, runs)
    log = tmp_path / "job.out"
    args = S.train_args(data_cfg, tmp_path, "slurm")[1:]  # pretrain.sbatch adds the `train` command
    env = S.slurm_env(slurm, MODE="per-task")
    job = S.sbatch(["--ntasks-per-node=2", "--output", str(log), "slurm/pretrain.sbatch", *args], env)
    _wait(job, env, _done, "completion", log)
    text = log.read_text()
    assert "[slurm] per-task: 2 rank(s)" in text and "launcher   srun, world size 2 on cpu" in text, text[-3000:]
    assert S.read_losses(tmp_path / "slurm") == reference


def _wait_for_step(run_dir: Path, beyond: int, job: str, env, log: Path) -> int:
    """Block until the run has logged a step > ``beyond`` (signals before training starts are moot)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if (run_dir / "metrics.jsonl").exists():
            done = [s for s in S.read_losses(run_dir) if s > beyond]
            if done:
                return max(done)
        if _job(job, env).get("JobState") in FINAL:
            break
        time.sleep(0.05)
    raise AssertionError(f"no training step after {beyond}: {_job(job, env)}\n{log.read_text()[-4000:]}")


def _preempt(job: str, env, run_dir: Path, log: Path, restarts: int, *, batch: bool) -> int:
    """Signal USR1 once this incarnation of the job trains, and wait for its requeue; returns the
    last step logged before the signal."""
    logged = S.read_losses(run_dir) if (run_dir / "metrics.jsonl").exists() else {}
    step = _wait_for_step(run_dir, max(logged, default=0), job, env, log)
    # scancel retries ("job can not be altered now") while the job is being requeued; it is
    # stopped once the requeue is seen so that it cannot reach the next incarnation.
    sig = subprocess.Popen(["scancel", *(["--batch"] if batch else []), "--signal=USR1", job], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The job restarts by itself after cred_expire (see cluster/slurm.conf.in).
        _wait(job, env, lambda i: i.get("Restarts") == str(restarts), f"requeue #{restarts}", log)
    finally:
        sig.terminate()
        sig.wait(timeout=30)
    return step


def test_preemption_checkpoints_requeues_and_resumes_exactly(slurm, data, tmp_path):
    """Per-node shape (torchrun under srun). First USR1 straight to the job step (`scancel
    --signal=USR1`), then to the batch shell (`--batch`, the path of `#SBATCH --signal=B:USR1@N`);
    each time: checkpoint, exit code, requeue, resume; per-step losses equal an uninterrupted run."""
    data_cfg, runs = data
    reference = S.reference_losses(data_cfg, runs, steps=PREEMPT_STEPS)
    log, run_dir = tmp_path / "job.out", tmp_path / "preempt"
    args = S.train_args(data_cfg, tmp_path, "preempt", steps=PREEMPT_STEPS)[1:]
    env = S.slurm_env(slurm, MODE="per-node", NPROC_PER_NODE="2")
    job = S.sbatch(["--cpus-per-task=2", "--output", str(log), "slurm/pretrain.sbatch", *args], env)

    _preempt(job, env, run_dir, log, 1, batch=False)
    second = _preempt(job, env, run_dir, log, 2, batch=True)
    _wait(job, env, _done, "completion", log)

    text = log.read_text()
    assert text.count("requeueing job") == 2 and text.count("SIGUSR1 received: checkpoint") == 2, text[-4000:]
    assert "[slurm] USR1: asking the step to checkpoint" in text and "restart 2" in text
    assert second < PREEMPT_STEPS
    assert S.read_losses(run_dir) == reference


def _manifest(out: Path) -> dict:
    m = json.loads((out / "manifest.json").read_text())
    m.pop("tokenizer_dir", None)  # absolute path of the run's own tokenizer copy
    return m


def test_prepare_array_matches_single_process(slurm, tmp_path):
    single, array = tmp_path / "single", tmp_path / "array"
    for root in (single, array):
        root.mkdir()
        S.write_data_config(root, part_bytes=30000)
    S.run_checked([S.PYTHON, "-m", "llmtrain", "prepare", "--config", str(single / "data.yaml")],
                  env=S.clean_env(), timeout=300)
    # The same tokenizer for both (the array's tokenizer stage then finds it and skips training).
    shutil.copytree(single / "tokenizer", array / "tokenizer")
    env = S.slurm_env(slurm, CONFIG=str(array / "data.yaml"), NUM_SHARDS="3", CPUS_PER_TASK="1",
               SBATCH_ARGS=f"--output={array}/%x-%A_%a.out")
    p = subprocess.run(["bash", "slurm/prepare.sbatch"], cwd=S.REPO, env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    ids = re.search(r"tokenizer (\d+), shards (\d+) \(array 0-2\), merge (\d+)", p.stdout)
    assert ids, p.stdout
    tok, shards, merge = ids.groups()
    _wait(merge, env, _done, "the merge job", timeout=300)
    logs = "\n".join(f.read_text() for f in sorted(array.glob("*.out")))[-6000:]
    assert _states(tok, env) == ["COMPLETED"] and _states(shards, env) == ["COMPLETED"] * 3, logs
    assert _manifest(array / "shards") == _manifest(single / "shards"), logs


def test_finetune_and_eval_sbatch(slurm, tiny_data, tmp_path):
    """The README's `sbatch slurm/finetune.sbatch ...` and `sbatch slurm/eval.sbatch --checkpoint ...`:
    SFT from a pretraining checkpoint as a Slurm job, then its evaluation as another."""
    from clitools import run_cli, tiny_train_args

    run_cli(tiny_train_args(tiny_data, tmp_path / "pre", "train.max_steps=2"))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Count to {i}.", "response": " ".join(map(str, range(i)))}) + "\n"
                             for i in range(2, 40)))
    sets = (f"checkpoint.dir={tmp_path / 'ft'} finetune.dataset={pairs} train.max_steps=2 train.device=cpu "
            "train.seq_len=64 train.micro_batch_size=2 train.global_batch_size=4 eval.lm_eval_tasks=[]")
    log = tmp_path / "ft.out"
    env = S.slurm_env(slurm, OVERRIDES=sets, NPROC_PER_NODE="1")
    job = S.sbatch(["--output", str(log), "slurm/finetune.sbatch", "--config", "configs/finetune/sft.yaml",
                   "--init", str(tmp_path / "pre" / "t")], env)
    _wait(job, env, _done, "fine-tuning", log)
    run_dir = tmp_path / "ft" / "sft-tiny"
    assert (run_dir / "latest").read_text().strip() == "step_000002", log.read_text()[-3000:]
    log = tmp_path / "ev.out"
    job = S.sbatch(["--output", str(log), "slurm/eval.sbatch", "--checkpoint", str(run_dir), "--tasks", "sft",
                   "--out", str(tmp_path / "ev")], S.slurm_env(slurm))
    _wait(job, S.slurm_env(slurm), _done, "evaluation", log)
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert result["sft"]["validation"]["loss"] > 0, log.read_text()[-3000:]
