"""`llmtrain quickstart`: the whole pipeline on real text, stage by stage, each skipped when done.

Every stage runs the same public command a user would type (as a subprocess, so the pretraining
stage really is a 2-process DeepSpeed job), and the last stage writes ``report.md``. Stages:
fetch sources, prepare (tokenizer + shards), mixture plan, pretrain, evaluate, fine-tune for
sentiment from the pretrained weights, the same fine-tune from random weights (what pretraining
buys), evaluate both beside the baselines, export to Hugging Face and reload it with transformers,
report.

The pretraining mixture (configs/data/quickstart.yaml) adds in-domain text to the starter corpora:
the unlabeled snippets and plot summaries of the sentiment set's training movies only, so the test
split the report scores is never seen before evaluation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from llmtrain.distributed.logging import get_logger
from llmtrain.errors import UserError
from llmtrain.modelio.layout import read_latest, read_state

log = get_logger(__name__)

PROMPTS = ["ROMEO:", "def main(", "The history of", "This movie is"]
# greedy samples of a 1.8M-parameter model loop without it; the same value on both sides (llmtrain eval
# and transformers' generate) keeps the two continuations comparable token for token
REPETITION_PENALTY = 1.3
DATA_CONFIG = "quickstart.yaml"  # configs/data/: the starter corpora + the training split's movie text
PRETRAIN_CONFIG = "quickstart.yaml"  # configs/pretrain/: the tiny model on that mixture
SCRATCH_SUFFIX = "-scratch"  # run name of the same fine-tune started from random weights


def repo_configs() -> Path:
    """The shipped configs/ directory (next to the package in a checkout, else in the CWD)."""
    for base in (Path(__file__).resolve().parents[1], Path.cwd()):
        if (base / "configs" / "pretrain" / "tiny.yaml").is_file():
            return base / "configs"
    raise UserError("cannot find the shipped configs/ directory; run the quickstart from the llmtrain checkout")


@dataclass
class Stage:
    name: str
    what: str
    done: Callable[[], bool]
    run: Callable[[], None]


class Quickstart:
    def __init__(self, workdir: Path, *, gpu: bool, nproc: int, steps: int | None, finetune_steps: int | None) -> None:
        self.work = workdir.resolve()
        self.configs = repo_configs()
        self.gpu, self.nproc = gpu, nproc
        self.steps, self.finetune_steps = steps, finetune_steps
        self.data_cfg = self.work / "data.yaml"
        self.ckpt = self.work / "checkpoints"
        self.timings: dict[str, float] = {}  # wall seconds per stage
        self.cpu: dict[str, float] = {}  # CPU seconds per stage (all processes)
        self.state_file = self.work / "quickstart.json"

    # ---- helpers ------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        if not self.gpu:
            env["DS_ACCELERATOR"] = "cpu"
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // self.nproc)))
        return env

    def _sh(self, args: list[str], launcher: bool = False) -> None:
        if launcher and self.nproc > 1:
            torchrun = Path(sys.executable).with_name("torchrun")
            cmd = [str(torchrun) if torchrun.exists() else "torchrun", "--nproc_per_node", str(self.nproc),
                   "-m", "llmtrain", *args]
        else:
            cmd = [sys.executable, "-m", "llmtrain", *args]
        log.info(f"$ {' '.join(cmd[2:] if cmd[0] == sys.executable else cmd)}")
        proc = subprocess.run(cmd, env=self._env(), cwd=self.configs.parent)
        if proc.returncode != 0:
            raise UserError(f"quickstart stage failed: `{' '.join(cmd)}` exited with {proc.returncode}; fix the "
                            f"problem printed above and run the quickstart again (finished stages are skipped)")

    def _precision_sets(self) -> list[str]:
        if self.gpu:
            return ["--set", "train.precision=bf16", "--set", "train.device=cuda", "--set", "model.attention_backend=auto"]
        return ["--set", "train.device=cpu"]

    @staticmethod
    def _finished(run_dir: Path, config: Path, steps: int | None) -> bool:
        step_dir = read_latest(run_dir)
        if step_dir is None:
            return False
        state = read_state(step_dir)
        want = steps or yaml.safe_load(config.read_text())["train"]["max_steps"]
        return state["step"] >= want

    # ---- stages -------------------------------------------------------------------------------
    def write_data_config(self) -> None:
        cfg = yaml.safe_load((self.configs / "data" / DATA_CONFIG).read_text())
        cfg["output_dir"] = str(self.work / "data" / "shards")
        cfg["tokenizer"]["path"] = str(self.work / "data" / "tokenizer")
        self.work.mkdir(parents=True, exist_ok=True)
        self.data_cfg.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def fetch(self) -> None:
        from data_prep.starter import starter_path

        cfg = yaml.safe_load(self.data_cfg.read_text())
        for src in cfg["sources"]:
            t0 = time.time()
            path = starter_path(src["starter"])
            log.info(f"  {src['name']:<14} {path}  ({path.stat().st_size / 2**20:.1f} MiB, {time.time() - t0:.1f} s)")

    def sources_fetched(self) -> bool:
        from data_prep.starter import cached_path

        cfg = yaml.safe_load(self.data_cfg.read_text())
        return all(cached_path(s["starter"]).is_file() for s in cfg["sources"])

    def pretrain_tokens(self) -> int:
        t = yaml.safe_load((self.configs / "pretrain" / PRETRAIN_CONFIG).read_text())["train"]
        return (self.steps or t["max_steps"]) * t["global_batch_size"] * t["seq_len"]

    def _run_names(self) -> tuple[Path, Path, Path]:
        """Run directories: pretraining, fine-tuning from it, and the same fine-tune from random weights."""
        pre = yaml.safe_load((self.configs / "pretrain" / PRETRAIN_CONFIG).read_text())["train"]["run_name"]
        name = yaml.safe_load((self.configs / "finetune" / "sentiment.yaml").read_text())["train"]["run_name"]
        return self.ckpt / pre, self.ckpt / name, self.ckpt / (name + SCRATCH_SUFFIX)

    def stages(self) -> list[Stage]:
        tiny = self.configs / "pretrain" / PRETRAIN_CONFIG
        sentiment = self.configs / "finetune" / "sentiment.yaml"
        pre_run, ft_run, scratch_run = self._run_names()
        steps = ["--set", f"train.max_steps={self.steps}"] if self.steps else []
        ft_steps = ["--set", f"train.max_steps={self.finetune_steps}"] if self.finetune_steps else []
        ckdir = ["--set", f"checkpoint.dir={self.ckpt}"]

        def finetune(init: Path, run: Path) -> None:
            self._sh(["finetune", "--config", str(sentiment), "--init", str(init), "--set", f"train.run_name={run.name}",
                      *ckdir, *ft_steps, *self._precision_sets()], launcher=True)

        def evaluate_sentiment() -> None:
            for run, out in ((ft_run, "eval_sentiment"), (scratch_run, "eval_sentiment_scratch")):
                self._sh(["eval", "--checkpoint", str(run), "--tasks", "classification", "--out", str(self.work / out)])

        return [
            Stage("fetch", "fetch the corpora (Shakespeare, stdlib code, Wikipedia, news, training-split movie reviews)",
                  self.sources_fetched, self.fetch),
            Stage("prepare", "train the tokenizer and tokenize into shards (2 workers)",
                  lambda: (self.work / "data" / "shards" / "manifest.json").is_file(),
                  lambda: self._sh(["prepare", "--config", str(self.data_cfg), "--workers", "2"])),
            Stage("mixture", "plan the mixture for the pretraining token budget",
                  lambda: (self.work / "mixture" / "mixture.png").is_file(),
                  lambda: self._sh(["mixture", "--config", str(self.data_cfg), "--tokens", str(self.pretrain_tokens()),
                                    "--out", str(self.work / "mixture")])),
            Stage("pretrain", f"pretrain the tiny model, {self.nproc} process(es), DeepSpeed ZeRO-2",
                  lambda: self._finished(pre_run, tiny, self.steps),
                  lambda: self._sh(["train", "--config", str(tiny), "--set", f"data.config={self.data_cfg}",
                                    *ckdir, *steps, *self._precision_sets()], launcher=True)),
            Stage("evaluate", "perplexity per source on held-out shards, and samples",
                  lambda: (self.work / "eval_pretrain" / "eval.json").is_file(),
                  lambda: self._sh(["eval", "--checkpoint", str(pre_run), "--tasks", "perplexity", "samples",
                                    *sum((["--prompt", p] for p in PROMPTS), []), "--set", "eval.max_new_tokens=40", "--set", "eval.batches=8",
                                    "--set", f"eval.repetition_penalty={REPETITION_PENALTY}",
                                    "--out", str(self.work / "eval_pretrain")])),
            Stage("finetune", "fine-tune for sentiment (Rotten Tomatoes) from the pretrained checkpoint",
                  lambda: self._finished(ft_run, sentiment, self.finetune_steps), lambda: finetune(pre_run, ft_run)),
            Stage("finetune-scratch", "the same fine-tune from random weights (no pretraining), for comparison",
                  lambda: self._finished(scratch_run, sentiment, self.finetune_steps),
                  lambda: finetune(self.random_init(pre_run), scratch_run)),
            Stage("evaluate-finetuned", "sentiment accuracy of both beside majority and TF-IDF baselines",
                  lambda: all((self.work / d / "eval.json").is_file() for d in ("eval_sentiment", "eval_sentiment_scratch")),
                  evaluate_sentiment),
            Stage("export", "export to Hugging Face format, reload with transformers, generate",
                  lambda: (self.work / "hf" / "generation.json").is_file(), self.export_and_reload),
            Stage("report", "write report.md", lambda: False, self.write_report),
        ]

    def random_init(self, pre_run: Path) -> Path:
        """A model directory with the pretrained run's architecture and tokenizer but its step-0 weights.

        Seeded as pretraining seeds its model, so the from-scratch fine-tune starts exactly where
        pretraining started: the two fine-tunes differ only by the pretraining in between.
        """
        import torch

        from llmtrain.model.transformer import Transformer
        from llmtrain.modelio.layout import CONFIG_YAML, TOKENIZER_SUBDIR, read_model_config
        from llmtrain.modelio.model_dir import save_model_dir

        step = read_latest(pre_run)
        if step is None:
            raise UserError(f"{pre_run} has no finished checkpoint; run the pretrain stage first")
        cfg = read_model_config(step)
        torch.manual_seed(yaml.safe_load((step / CONFIG_YAML).read_text())["train"]["seed"])
        model = Transformer(cfg)
        out = self.work / "random_init"
        if out.exists():
            shutil.rmtree(out)
        tok_files = sorted(p for p in (step / TOKENIZER_SUBDIR).iterdir() if p.is_file())
        save_model_dir(out, cfg, model.state_dict(), tokenizer_files=tok_files)
        log.info(f"  {out}: {sum(p.numel() for p in model.parameters()):,} parameters initialised with seed "
                 f"{torch.initial_seed()}, tokenizer of {step}")
        return out

    def export_and_reload(self) -> None:
        hf = self.work / "hf"
        if hf.exists():
            shutil.rmtree(hf)
        self._sh(["export", "--checkpoint", str(self._run_names()[0]), "--out", str(hf), "--dtype", "fp32"])
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(hf, torch_dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(hf)
        samples = []
        for prompt in PROMPTS:
            ids = tok(prompt, return_tensors="pt").input_ids
            out = model.generate(ids, max_new_tokens=40, do_sample=False, pad_token_id=tok.pad_token_id,
                                 repetition_penalty=REPETITION_PENALTY)
            samples.append({"prompt": prompt, "text": tok.decode(out[0], skip_special_tokens=True)})
            log.info(f"  transformers {type(model).__name__} greedy sample: {samples[-1]['text']!r}")
        (hf / "generation.json").write_text(json.dumps({"class": type(model).__name__, "samples": samples}, indent=2))

    def write_report(self) -> None:
        from llmtrain.report import write_quickstart_report

        pre_run, ft_run, _ = self._run_names()
        path = write_quickstart_report(self.work, pre_run, ft_run, self.timings, self.cpu)
        log.info(f"  report: {path}")

    # ---- driver -------------------------------------------------------------------------------
    def run(self, only: list[str] | None = None, force: list[str] | None = None) -> int:
        self.write_data_config()
        if self.state_file.is_file():
            state = json.loads(self.state_file.read_text())
            self.timings, self.cpu = state.get("timings", {}), state.get("cpu", {})
        stages = self.stages()
        t_all = time.time()
        for i, st in enumerate(stages, 1):
            if only and st.name not in only and st.name != "report":
                continue
            head = f"[quickstart {i}/{len(stages)}] {st.name}: {st.what}"
            if st.done() and st.name not in (force or []):
                log.info(f"{head} -- already done, skipped")
                continue
            log.info(head)
            t0, c0 = time.time(), cpu_seconds()
            st.run()
            self.timings[st.name], self.cpu[st.name] = round(time.time() - t0, 1), round(cpu_seconds() - c0, 1)
            order = [s.name for s in stages]  # stage order, whichever ran in this invocation
            self.timings = {k: self.timings[k] for k in sorted(self.timings, key=lambda k: order.index(k) if k in order else len(order))}
            self.state_file.write_text(json.dumps({"timings": self.timings, "cpu": self.cpu}, indent=2))
            log.info(f"[quickstart {i}/{len(stages)}] {st.name} finished in {self.timings[st.name]:.1f} s "
                     f"({self.cpu[st.name]:.1f} CPU s)")
        log.info(f"[quickstart] all stages done in {time.time() - t_all:.0f} s; see {self.work / 'report.md'}")
        return 0


def cpu_seconds() -> float:
    """User + system CPU time of this process and its waited-for descendants (the stages' subprocesses).

    Beside wall time it tells the work a stage did apart from other load on the machine.
    """
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
