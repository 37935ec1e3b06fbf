"""A pickled payload (a ``__reduce__`` that touches a marker file) planted in each kind of ``*.pt`` file a
checkpoint holds never runs, through every command that reads checkpoints.

DeepSpeed's files are read with torch's restricted unpickler plus an allow-list of DeepSpeed's own
types (llmtrain/engine/safe_load.py): resume, resume on another data-parallel size (the universal
conversion, in a child process, and the converted folder's files), and ``export
--from-deepspeed-states``. ``eval``, ``generate`` and ``finetune --init`` read only safetensors.
Each refusal is one error naming the file, the refused type and the opt-in; normal resumes through
the restricted reader give the same losses as full pickle (here, and in every resume test).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from clitools import PY, ROOT, cli_env, free_port, run_cli, tiny_train_args
from faultkit import snapshot
from payload import plant

TYPE = "holds a pickled posix.system, which is not among the types DeepSpeed's checkpoint files contain"
RESUME_OPT_IN = "resume with --set checkpoint.trust_pickle=true"


def test_every_deepspeed_state_file_is_read_without_running_code(tmp_path):
    """Engine level: ZeRO-1 and ZeRO-3 model and optimizer states on resume, ZeRO-1 optimizer states in the
    universal conversion, and the universal folder's optimizer_state.pt, fp32.pt and exp_avg_sq.pt (what a
    resume on another data-parallel size reads)."""
    script = Path(__file__).with_name("pickle_engine_check.py")
    proc = run_cli([PY, str(script), str(tmp_path)], env=cli_env(CHECK_PORT=str(free_port())), timeout=600)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    clean = {r["case"]: r["losses"] for r in results if "losses" in r}
    assert clean["z1-clean"]["restricted-False"] == clean["z1-clean"]["trusted-False"]  # same restored state
    assert clean["z1-clean"]["restricted-True"] == clean["z1-clean"]["trusted-True"]
    assert clean["z3-clean"]["restricted-False"] == clean["z3-clean"]["trusted-False"]
    cases = [r for r in results if "file" in r]
    assert {r["case"] for r in cases} == {
        "z1-model_states-resume", "z1-optim_states-resume", "z1-optim_states-convert",
        "z1-universal_optimizer_state", "z1-universal_fp32", "z1-universal_exp_avg_sq",
        "z3-model_states-resume", "z3-optim_states-resume"}
    for r in cases:
        assert r["error"] is not None and r["error"].startswith(f"{r['file']} {TYPE}"), r
        assert r["error"].endswith(RESUME_OPT_IN) or r["error"].endswith(f"{RESUME_OPT_IN}; nothing was kept"), r
        assert not r["marker"], r
        if r["case"].endswith("-convert"):  # a refused conversion leaves no folder behind
            assert not [n for n in r["left"] if "_universal" in n], r


@pytest.fixture
def run_copy(base_run, tmp_path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(base_run, dst)
    return dst


def _refused_relaunch(tiny_data, ckpt: Path, target: Path):
    marker = ckpt / "pwned"
    plant(target, marker)
    before = snapshot(ckpt)
    args = tiny_train_args(tiny_data, ckpt, "train.zero_stage=1", "train.max_steps=4")
    proc = run_cli(args, check=False)
    assert proc.returncode == 2 and not marker.exists() and "Traceback" not in proc.stderr
    assert f"llmtrain train: error: {target} {TYPE}" in proc.stderr, proc.stderr[-3000:]
    assert RESUME_OPT_IN in proc.stderr
    assert snapshot(ckpt) == before  # nothing written, no universal folder left


def test_resume_refuses_a_payload_in_the_optimizer_states(tiny_data, run_copy):
    step = run_copy / "t" / "step_000002"
    _refused_relaunch(tiny_data, run_copy, next(step.glob("*optim_states.pt")))


def test_export_consolidates_with_the_restricted_reader_and_refuses_payloads(base_run, tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file

    from llmtrain.cli import main

    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    step = tmp_path / "run" / "step_000002"
    shutil.copytree(base_run / "t" / "step_000002", step)
    saved = load_file(str(step / "model.safetensors"))
    (step / "model.safetensors").unlink()
    out = tmp_path / "hf"
    assert main(["export", "--checkpoint", str(step), "--out", str(out), "--dtype", "fp32", "--from-deepspeed-states"]) == 0
    exported = load_file(str(out / "model.safetensors"))  # ZeRO-1 states merged by zero_to_fp32, no opt-in needed
    assert torch.equal(exported["model.embed_tokens.weight"], saved["tok_embeddings.weight"])
    assert torch.equal(exported["lm_head.weight"], saved["output.weight"])
    capsys.readouterr()
    for target in (next(step.glob("*optim_states.pt")), step / "mp_rank_00_model_states.pt"):
        clean = target.read_bytes()
        plant(target, tmp_path / "pwned")
        before = snapshot(tmp_path / "run")
        assert main(["export", "--checkpoint", str(step), "--out", str(tmp_path / "refused"),
                     "--from-deepspeed-states"]) == 2
        err = capsys.readouterr().err
        assert f"llmtrain export: error: {target} {TYPE}" in err
        assert f"`llmtrain export --checkpoint {step} --out DIR --from-deepspeed-states --trust-pickle`" in err
        assert not (tmp_path / "pwned").exists() and not (tmp_path / "refused").exists()
        assert snapshot(tmp_path / "run") == before
        target.write_bytes(clean)


def test_eval_generate_and_finetune_read_no_pickle(base_run, tmp_path, capsys):
    """Payloads in every .pt file of the checkpoint (DeepSpeed's states and the RNG files): generate uses
    model.safetensors and never opens them; without model.safetensors every command refuses by name."""
    from llmtrain.cli import main

    run = tmp_path / "run"
    shutil.copytree(base_run / "t", run)
    step = run / "step_000002"
    marker = tmp_path / "pwned"
    planted = sorted(step.glob("*.pt"))
    assert len(planted) >= 3
    for f in planted:
        plant(f, marker)
    assert main(["generate", "--checkpoint", str(run), "--prompt", "To be", "--max-new-tokens", "4"]) == 0
    assert "### completion" in capsys.readouterr().out
    (step / "model.safetensors").unlink()
    before = snapshot(run)
    missing = f"{step / 'model.safetensors'} is missing; {step} holds only DeepSpeed's states"
    for argv in (["generate", "--checkpoint", str(run), "--prompt", "To be"],
                 ["eval", "--checkpoint", str(run), "--prompt", "To be"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert missing in err and "--from-deepspeed-states" in err, err
    proc = run_cli(["finetune", "--config", str(ROOT / "configs" / "finetune" / "sft.yaml"), "--init", str(run),
                    "--set", f"checkpoint.dir={tmp_path / 'ft'}"], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert missing in proc.stderr
    assert not marker.exists() and snapshot(run) == before
