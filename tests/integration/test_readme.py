"""Every command in README.md runs: extracted from its ```bash blocks and executed on tiny CPU settings.

The commands run in a scratch directory laid out like the checkout (configs/, launch/, slurm/ linked),
in README order, so later commands use what earlier ones wrote (data, checkpoints). Each command is
changed only where a CPU test must: `--set` overrides append a few steps and fp32, GPU launch shapes
become 2 CPU processes, and paths that are placeholders in the README (a corpus, a Hugging Face
model directory) are made first from real files. sbatch lines run in tests/slurm/test_readme_sbatch.py.
A README line this file does not know how to run fails the test, so the README cannot rot.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
from clitools import BIN, PY, ROOT, cli_env, free_port, run_cli

from data_prep.starter import starter_path

TINY_TRAIN = ["train.max_steps=3", "train.device=cpu", "train.precision=fp32", "train.eval_every=0",
              "train.eval_batches=1", "train.seq_len=64", "train.micro_batch_size=2", "train.global_batch_size=4",
              "checkpoint.every=0", "logging.log_every=1", "logging.tensorboard=false"]
TINY_FINETUNE = [*TINY_TRAIN, "eval.lm_eval_tasks=[]", "finetune.validation_fraction=0.1"]
CHAT_MODEL = "/models/SmolLM2-360M-Instruct"  # the README's chat model directory: tests/chattools.py's stand-in
GPU_TO_CPU_CONFIG = {"configs/pretrain/125m.yaml": "configs/pretrain/tiny.yaml",
                     "configs/pretrain/1b.yaml": "configs/pretrain/tiny.yaml"}


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                cmds.append(line)
    return cmds


def readme_python(ws: Workspace) -> list[str]:
    """The README's ```python snippets, with its chat model directory replaced by the workspace's."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [code.replace(CHAT_MODEL, str(ws.chat_dir)) for code in blocks]


def sets(items: list[str]) -> list[str]:
    return [x for item in items for x in ("--set", item)]


class Workspace:
    """A scratch copy of the checkout's layout where README commands run in order."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for name in ("configs", "launch", "slurm", "scripts"):
            (root / name).symlink_to(ROOT / name)
        corpus = root / "corpus"
        corpus.mkdir()
        rows = [json.loads(x)["text"] for x in starter_path("shakespeare").read_text().splitlines()[:40]]
        (corpus / "plays.txt").write_text("\n".join(rows[:20]))
        (corpus / "more.txt").write_text("\n".join(rows[20:]))
        self.hf_dir: Path | None = None
        # a chat model directory as save_pretrained writes it (ChatML template) and the user's chats.jsonl
        from chattools import MESSAGES, save_chat_model

        self.chat_dir = save_chat_model(root / "chat_model")
        chats = [MESSAGES, MESSAGES[1:3], [MESSAGES[0], *MESSAGES[3:]]] * 8
        (root / "chats.jsonl").write_text("".join(json.dumps({"messages": m}) + "\n" for m in chats))

    def env(self, **extra: str) -> dict[str, str]:
        return cli_env(**extra)

    def run(self, args: list[str], **kw):
        return run_cli(args, cwd=self.root, env=kw.pop("env", self.env()), **kw)


def _train_args(args: list[str], finetune: bool = False, run_name: str | None = None) -> list[str]:
    """Tiny CPU settings; GPU recipes become the tiny one (under their own run name, so they train)."""
    gpu_recipe = next((a for a in args if a in GPU_TO_CPU_CONFIG), None)
    args = [GPU_TO_CPU_CONFIG.get(a, a) for a in args]
    extra = [f"train.run_name={run_name or Path(gpu_recipe).stem}"] if (run_name or gpu_recipe) else []
    return [*args, *sets(TINY_FINETUNE if finetune else TINY_TRAIN), *sets(extra)]


def translate(cmd: str, ws: Workspace) -> list[str] | None:
    """The argv that runs README line ``cmd`` in the workspace (None: covered elsewhere, with a reason)."""
    argv = shlex.split(cmd)
    if "=" in argv[0] and "slurm/" in cmd:
        return None  # CONFIG=... bash slurm/prepare.sbatch: tests/slurm/test_sbatch.py (prepare array)
    head = argv[0]
    if head == "bash":
        return None  # scripts/*.sh: test_quickstart_script and .ci/run (checked below)
    if head == "sbatch":
        return None  # tests/slurm/test_readme_sbatch.py runs these on a real local Slurm
    if head == "llmtrain":
        if CHAT_MODEL in argv:  # the chat walk-through: its own run name, set in the README line
            argv = [str(ws.chat_dir) if a == CHAT_MODEL else a for a in argv]
            return ["llmtrain", argv[1], *_train_args(argv[2:], finetune=True)] if argv[1] == "finetune" else argv
        if any(a.startswith("/models/") for a in argv):  # the README's local HF Llama directory
            assert ws.hf_dir is not None
            argv = [str(ws.hf_dir) if a.startswith("/models/") else a for a in argv]
            if argv[1] == "finetune":
                return ["llmtrain", "finetune", *_train_args(argv[2:], finetune=True, run_name="from-hf")]
        sub, rest = argv[1], argv[2:]
        if sub in ("train", "finetune"):
            return ["llmtrain", sub, *_train_args(rest, finetune=sub == "finetune")]
        if sub == "prepare":
            return ["llmtrain", "prepare", *["2" if a == "8" else a for a in rest]]
        if sub == "tokenizer":
            rest = [str(p) for a in rest for p in (sorted(ws.root.glob(a)) if "*" in a else [a])]
            rest = ["1000" if a == "32000" else a for a in rest]
            return ["llmtrain", "tokenizer", *rest]
        if sub == "eval":
            return ["llmtrain", *argv[1:], "--set", "eval.batches=2", "--lm-eval-limit", "20"] if "--lm-eval" in argv \
                else ["llmtrain", *argv[1:], "--set", "eval.batches=2"]
        if sub in ("mixture", "export", "generate", "bigbench", "import-hf", "plan", "config"):
            return ["llmtrain", *argv[1:]]
        raise AssertionError(f"README command not handled by the README test: {cmd}")
    port = str(free_port())
    if head == "torchrun":
        i = argv.index("-m")
        return [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", port, *argv[i:i + 2],
                *_train_args(argv[i + 2:])]
    if head == "accelerate":
        i = argv.index("-m")
        return [str(BIN / "accelerate"), "launch", "--config_file", "launch/accelerate/cpu_2proc.yaml",
                "--main_process_port", port, *argv[i:i + 2], *_train_args(argv[i + 2:], run_name="accelerate")]
    if head == "deepspeed":
        i = argv.index("--module")
        return [str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", port, "--module", argv[i + 1],
                *_train_args(argv[i + 2:], run_name="deepspeed")]
    if head == "mpirun":
        return None  # tests/distributed/test_launchers.py runs `mpirun -n 2 python -m llmtrain train` on tiny data
    raise AssertionError(f"README command not handled by the README test: {cmd}")


@pytest.mark.timeout(1800)  # every README command in turn: over 15 minutes on 2 busy CPU cores
def test_readme_commands_run(tmp_path):
    ws = Workspace(tmp_path)
    env_cpu = {"ACCELERATE_USE_CPU": "1", "DS_ACCELERATOR": "cpu"}
    ran, covered = [], []
    for cmd in readme_commands():
        if ("import-hf" in cmd or "/models/" in cmd) and ws.hf_dir is None:
            # the README's local Hugging Face Llama directory: our tiny run, exported
            ws.hf_dir = tmp_path / "hf_llama"
            ws.run(["export", "--checkpoint", "checkpoints/tiny", "--out", str(ws.hf_dir), "--dtype", "fp32"])
        argv = translate(cmd, ws)
        if argv is None:
            covered.append(cmd)
            continue
        if argv[0] == "llmtrain":
            argv = [PY, "-m", "llmtrain", *argv[1:]]
        ws.run(argv, env=ws.env(**env_cpu), timeout=900)
        ran.append(cmd)
    for code in readme_python(ws):  # the chat walk-through's transformers + peft snippet
        out = ws.run([PY, "-c", code], timeout=300).stdout  # two prints: merged export, then PEFT adapter
        half = len(out) // 2  # a random tiny model's text may hold line breaks: compare the halves
        assert out and out.endswith("\n") and out[:half] == out[half:], out  # the same greedy text
    assert (tmp_path / "checkpoints" / "tiny" / "latest").is_file()
    assert (tmp_path / "hf" / "tiny" / "config.json").is_file()
    assert (tmp_path / "tokenizers" / "mine" / "tokenizer.model").is_file()
    assert (tmp_path / "models" / "llama1b" / "model.safetensors").is_file()
    assert (tmp_path / "checkpoints" / "from-hf" / "latest").is_file()
    assert (tmp_path / "hf" / "chat-lora" / "adapter" / "adapter_config.json").is_file()
    assert len(ran) >= 15, ran
    assert all(c.startswith(("bash ", "sbatch ", "mpirun ", "CONFIG=")) for c in covered), covered


def test_test_command_is_what_ci_runs():
    cmds = readme_commands()
    assert "bash scripts/test.sh" in cmds and "bash scripts/quickstart.sh" in cmds
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^bash scripts/test\.sh\s*$", ci, re.M), ci


@pytest.mark.slow
def test_quickstart_script_runs_end_to_end(tmp_path):
    """`bash scripts/quickstart.sh` (set-up is a no-op here) on a shortened schedule, then a rerun skips all."""
    work = tmp_path / "qs"
    env = cli_env(LLMTRAIN_VENV=str(Path(PY).parents[1]))
    out = run_cli(["bash", str(ROOT / "scripts" / "quickstart.sh"), "--workdir", str(work), "--steps", "4",
                   "--finetune-steps", "4"], env=env, timeout=1500)
    assert "[quickstart] all stages done" in out.stdout
    report = (work / "report.md").read_text()
    for section in ("Stage timings", "Data mixture", "Pretraining", "perplexity", "fine-tuned", "majority",
                    "tfidf_logreg", "from-scratch", "what pretraining buys", "LlamaForCausalLM"):
        assert section in report, section
    for fig in ("mixture.png", "pretrain_loss.png"):
        assert (work / "figures" / fig).is_file()
    again = run_cli(["bash", str(ROOT / "scripts" / "quickstart.sh"), "--workdir", str(work), "--steps", "4",
                     "--finetune-steps", "4"], env=env, timeout=600)
    assert again.stdout.count("already done, skipped") == 9, again.stdout
    assert os.path.getsize(work / "report.md") > 1000
