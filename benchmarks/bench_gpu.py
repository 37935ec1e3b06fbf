"""GPU training speed of llmtrain's Trainer vs the Hugging Face Trainer + DeepSpeed, same model and data.

For each preset (default 125m and 1b) at sequence 2048, bf16, ZeRO-1 on one GPU it runs, each in its
own process (clean memory peaks, one crash does not take the others down):

* ``ours``       llmtrain's :class:`~llmtrain.training.loop.Trainer` (the DeepSpeed engine, loop and
                 metrics of ``llmtrain train``) on an in-memory random-token loader, ``model.compile``
                 on (falls back to ``ours-eager`` if compilation fails);
* ``ours-eager`` the same without ``torch.compile``;
* ``ours-docs``  the same as ``ours`` with packed documents and document masking (flex_attention);
* ``hf``         ``transformers.Trainer`` + DeepSpeed (the same ZeRO section) training
                 ``LlamaForCausalLM`` of the identical shape with ``attn_implementation="sdpa"``.

Each run does ``--warmup`` untimed and ``--steps`` timed optimizer steps; a step's time is the wall
time between the ends of consecutive steps (CUDA synchronised), so it includes data, loss, backward,
the optimizer and each trainer's own bookkeeping. Reported: tokens/s/GPU, MFU (``flops_per_token``
of llmtrain.model.flops x tokens/s / the device's peak bf16 FLOP/s from
llmtrain.training.metrics.peak_tflops), and ``torch.cuda.max_memory_allocated``.

    python benchmarks/bench_gpu.py                        # 125m and 1b, ours + hf, JSON to $OUT
    python benchmarks/bench_gpu.py --presets 1b --variants ours,ours-docs,hf --steps 20
    python benchmarks/bench_gpu.py --cpu-smoke            # tiny model, seq 64, 2 steps, on CPU

Results: a table on stdout and ``$OUT/bench_gpu.json`` (``OUT`` defaults to ./bench_out).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("ours", "ours-eager", "ours-docs", "hf")
DEFAULT_MICRO = {"125m": 16, "1b": 8}


# ---------------------------------------------------------------------------- shared set-up

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="125m,1b", help="comma-separated model presets (configs/model/*.yaml)")
    p.add_argument("--variants", default="ours,hf", help=f"comma-separated, any of {', '.join(VARIANTS)}")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps per run")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation, allocator, cuDNN plans)")
    p.add_argument("--micro-batch", type=int, default=None,
                   help=f"sequences per step (default per preset: {DEFAULT_MICRO}, else 8)")
    p.add_argument("--seq-len", type=int, default=2048, help="tokens per sequence")
    p.add_argument("--zero-stage", type=int, default=1, choices=(0, 1, 2, 3), help="DeepSpeed ZeRO stage for both")
    p.add_argument("--doc-len", type=int, default=512, help="ours-docs: mean document length in a packed row")
    p.add_argument("--skip-hf", action="store_true", help="leave out the Hugging Face baseline")
    p.add_argument("--quick", action="store_true", help="3 warmup + 5 timed steps")
    p.add_argument("--profile", action="store_true",
                   help="ours: profile 3 extra steps after the timed ones; table to <out>/profile_<preset>.txt")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="tiny preset, seq 64, 1 warmup + 2 steps, on CPU: checks the script end to end")
    p.add_argument("--timeout", type=int, default=420, help="seconds per run before it is killed")
    p.add_argument("--out", default=os.environ.get("OUT", "bench_out"), help="output folder (default $OUT)")
    # internal: one run in this process
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--preset", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.warmup, args.steps = 3, 5
    if args.cpu_smoke:
        args.presets, args.seq_len, args.warmup, args.steps = "tiny", 64, 1, 2
        args.micro_batch = args.micro_batch or 2
    return args


def micro_batch(args: argparse.Namespace, preset: str) -> int:
    return args.micro_batch or DEFAULT_MICRO.get(preset, 8)


def run_config(args: argparse.Namespace, preset: str, variant: str, workdir: Path):
    """The run config both systems train under (the HF side reuses its model and DeepSpeed sections)."""
    from llmtrain.config.base import build
    from llmtrain.config.loader import read_yaml
    from llmtrain.config.roots import PretrainRunConfig

    on_gpu = not args.cpu_smoke
    model = read_yaml(ROOT / "configs" / "model" / f"{preset}.yaml")
    model.update(max_seq_len=max(model.get("max_seq_len", 0), args.seq_len), attention_backend="auto",
                 compile=on_gpu and variant in ("ours", "ours-docs"), activation_checkpointing="none")
    mb = micro_batch(args, preset)
    return build(PretrainRunConfig, {
        "model": model,
        "data": {"document_masking": variant == "ours-docs"},
        "train": {"run_name": f"{preset}-{variant}", "seq_len": args.seq_len, "micro_batch_size": mb,
                  "global_batch_size": mb, "max_steps": args.warmup + args.steps + _profile_steps(args, variant),
                  "precision": "bf16",
                  "zero_stage": args.zero_stage, "device": "cuda" if on_gpu else "cpu", "seed": 1234},
        "optim": {"lr": 3e-4, "min_lr": 3e-5, "warmup_steps": args.warmup, "weight_decay": 0.1},
        "checkpoint": {"dir": str(workdir), "resume": "never"},
        "logging": {"log_every": 1, "tensorboard": False, "jsonl": True, "plot": False},
    })


def _profile_steps(args: argparse.Namespace, variant: str) -> int:
    """Steps added after the timed ones for the profiler (1 warm-up + 3 recorded), so timing is unaffected."""
    return 4 if args.profile and variant == "ours" else 0


def token_rows(vocab: int, seq_len: int, start: int, count: int, *, seed: int = 1234) -> torch.Tensor:
    """Rows ``start .. start+count-1`` of the fixed random corpus: [count, seq_len + 1] int64."""
    rows = []
    for i in range(start, start + count):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        rows.append(torch.randint(0, vocab, (seq_len + 1,), generator=g))
    return torch.stack(rows)


def doc_ids_for(rows: int, seq_len: int, mean_len: int, step: int) -> torch.Tensor:
    """Packed-row document ids: documents of lengths drawn around ``mean_len``, fixed per step."""
    g = torch.Generator().manual_seed(step)
    out = torch.empty(rows, seq_len, dtype=torch.long)
    for r in range(rows):
        lengths = torch.randint(max(1, mean_len // 4), 2 * mean_len, (seq_len,), generator=g)
        bounds = torch.cumsum(lengths, 0)
        out[r] = torch.searchsorted(bounds, torch.arange(seq_len), right=True)
    return out


class RandomTokenLoader:
    """In-memory :class:`~llmtrain.training.task.BatchSource` over :func:`token_rows`."""

    micro_steps_per_step = 1

    def __init__(self, vocab: int, seq_len: int, micro_batch: int, doc_len: int | None = None) -> None:
        self.vocab, self.seq_len, self.micro_batch, self.doc_len = vocab, seq_len, micro_batch, doc_len
        self.position = 0

    def next_batch(self) -> dict[str, torch.Tensor]:
        rows = token_rows(self.vocab, self.seq_len, self.position, self.micro_batch)
        batch = {"input_ids": rows[:, :-1].contiguous(), "labels": rows[:, 1:].contiguous()}
        if self.doc_len:
            batch["doc_ids"] = doc_ids_for(self.micro_batch, self.seq_len, self.doc_len, self.position)
        self.position += self.micro_batch
        return {k: v.pin_memory() if torch.cuda.is_available() else v for k, v in batch.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summarize(step_times: list[float], tokens_per_step: int, flops_tok: float, peak: float | None) -> dict[str, Any]:
    step = statistics.median(step_times)
    tps = tokens_per_step / step
    return {"step_time_s": step, "step_times_s": step_times, "tokens_per_s_per_gpu": tps,
            "mfu": tps * flops_tok / (peak * 1e12) if peak else None, "model_tflops_per_gpu": tps * flops_tok / 1e12}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------- ours

def run_ours(args: argparse.Namespace, preset: str, variant: str, workdir: Path) -> dict[str, Any]:
    from llmtrain.model.flops import flops_per_token, num_params
    from llmtrain.model.runtime import apply_runtime
    from llmtrain.model.transformer import Transformer
    from llmtrain.objectives.losses import causal_lm_loss
    from llmtrain.training.callbacks import Callback
    from llmtrain.training.loop import Trainer
    from llmtrain.training.metrics import peak_tflops, read_metrics
    from llmtrain.training.runtime import start
    from llmtrain.training.task import TrainingTask

    cfg = run_config(args, preset, variant, workdir)
    env, device = start(cfg)
    profiler = _Profiler(args, preset, device) if args.profile and variant == "ours" else None

    class BenchTrainer(Trainer):
        """The real Trainer; checkpoint writes (GBs for 1b, not training speed) are skipped."""

        def save(self) -> Path:
            return self.run_dir

    class ProfilerSteps(Callback):
        def on_step_end(self, state, outcome) -> None:
            if profiler is not None:
                profiler.step()

    torch.manual_seed(cfg.train.seed)
    with torch.device(device):  # init on the GPU: seconds instead of a minute for 1b on the CPU
        model = apply_runtime(Transformer(cfg.model.architecture()), cfg.model.runtime())
    loader = RandomTokenLoader(cfg.model.vocab_size, cfg.train.seq_len, cfg.train.micro_batch_size,
                               args.doc_len if variant == "ours-docs" else None)

    def loss_fn(m, batch):
        if not cfg.data.document_masking:
            batch = {k: v for k, v in batch.items() if k != "doc_ids"}
        return causal_lm_loss(m, batch)

    task = TrainingTask(model=model, model_config=cfg.model.architecture(), loss_fn=loss_fn, train_loader=loader,
                        tokens_per_sample=cfg.train.seq_len)
    trainer = BenchTrainer(cfg, task, env, device)
    trainer.callbacks.append(ProfilerSteps())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if profiler is not None:
        profiler.start()
    trainer.fit()
    if profiler is not None:
        profiler.stop()
    records = [r for r in read_metrics(trainer.run_dir / "metrics.jsonl") if r.get("kind") == "train"]
    times = [r["step_time_s"] for r in records if args.warmup < r["step"] <= args.warmup + args.steps]
    peak = peak_tflops(device)
    out = summarize(times, cfg.train.micro_batch_size * cfg.train.seq_len,
                    flops_per_token(cfg.model, cfg.train.seq_len), peak)
    out.update(params=num_params(cfg.model), losses=[r["loss"] for r in records][:args.warmup + args.steps],
               attention_backend=_backend_name(cfg, device, variant), compile=cfg.model.compile,
               optimizer=type(trainer.engine.optimizer).__name__)
    return out


def _backend_name(cfg, device: torch.device, variant: str) -> str:
    from llmtrain.model.attention import flex_attention_available, resolve_backend

    name = resolve_backend(cfg.model.attention_backend, device, torch.bfloat16)
    if variant == "ours-docs" and name == "sdpa":
        return "sdpa+flex_attention" if device.type == "cuda" and flex_attention_available() else "sdpa+mask"
    return name


class _Profiler:
    """torch.profiler over 3 steps after the timed ones; writes the top CUDA-time table to $OUT."""

    def __init__(self, args: argparse.Namespace, preset: str, device: torch.device) -> None:
        from torch.profiler import ProfilerActivity, profile, schedule

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        self.path = Path(args.out) / f"profile_{preset}.txt"
        self.sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        self.prof = profile(activities=acts, schedule=schedule(wait=args.warmup + args.steps, warmup=1, active=3))

    def start(self) -> None:
        self.prof.__enter__()

    def step(self) -> None:
        self.prof.step()

    def stop(self) -> None:
        self.prof.__exit__(None, None, None)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(self.prof.key_averages().table(sort_by=self.sort, row_limit=40))


# ---------------------------------------------------------------------------- Hugging Face baseline

def run_hf(args: argparse.Namespace, preset: str, workdir: Path) -> dict[str, Any]:
    from torch.utils.data import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from llmtrain.engine.ds_config import build_ds_config
    from llmtrain.model.flops import flops_per_token, num_params
    from llmtrain.modelio.hf import hf_config
    from llmtrain.training.metrics import peak_tflops

    cfg = run_config(args, preset, "hf", workdir)
    on_gpu = cfg.train.device == "cuda"
    device = torch.device("cuda", 0) if on_gpu else torch.device("cpu")
    fields = {k: v for k, v in hf_config(cfg.model, torch.float32).items()
              if k not in ("architectures", "model_type", "torch_dtype", "dtype")}
    fields["use_cache"] = False
    torch.manual_seed(cfg.train.seed)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**fields, attn_implementation="sdpa"))
    t = cfg.train

    class Rows(Dataset):
        def __len__(self) -> int:
            return (args.warmup + args.steps + 2) * t.micro_batch_size

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            row = token_rows(cfg.model.vocab_size, t.seq_len, i, 1)[0, :-1]
            return {"input_ids": row, "labels": row}  # HF shifts labels inside the model

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_begin(self, *a, **kw):
            _sync(device)
            self.ends.append(time.perf_counter())

        def on_step_end(self, *a, **kw):
            _sync(device)
            self.ends.append(time.perf_counter())

    # The same DeepSpeed section as ours (ZeRO settings, bf16, clipping); HF builds its own AdamW.
    ds = build_ds_config(cfg, 1, on_gpu=on_gpu)
    ds.pop("checkpoint", None)
    ds["bf16"]["enabled"] = on_gpu  # transformers refuses bf16 on a CPU; the smoke test runs fp32 there
    targs = TrainingArguments(
        output_dir=str(workdir / "hf"), per_device_train_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=1, max_steps=t.max_steps, learning_rate=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay, adam_beta1=cfg.optim.beta1, adam_beta2=cfg.optim.beta2,
        adam_epsilon=cfg.optim.eps, warmup_steps=cfg.optim.warmup_steps, lr_scheduler_type="cosine",
        max_grad_norm=t.grad_clip, bf16=on_gpu, optim="adamw_torch", save_strategy="no", report_to="none",
        logging_strategy="no", dataloader_num_workers=0, dataloader_pin_memory=on_gpu, disable_tqdm=True,
        seed=t.seed, deepspeed=ds)
    clock = StepClock()
    trainer = Trainer(model=model, args=targs, train_dataset=Rows(), callbacks=[clock])
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    trainer.train()
    times = [b - a for a, b in zip(clock.ends[:-1], clock.ends[1:], strict=True)][args.warmup:]
    out = summarize(times, t.micro_batch_size * t.seq_len, flops_per_token(cfg.model, t.seq_len),
                    peak_tflops(device))
    import transformers

    out.update(params=num_params(cfg.model), attention_backend="sdpa (transformers)", compile=False,
               optimizer=type(trainer.optimizer).__name__, transformers=transformers.__version__,
               deepspeed_engine=type(trainer.model_wrapped).__name__)
    return out


# ---------------------------------------------------------------------------- worker and driver

def worker(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    started = time.perf_counter()
    if args.worker == "hf":
        result = run_hf(args, args.preset, workdir)
    else:
        result = run_ours(args, args.preset, args.worker, workdir)
    import deepspeed

    device = torch.device("cuda", 0) if torch.cuda.is_available() and not args.cpu_smoke else torch.device("cpu")
    result.update(
        preset=args.preset, variant=args.worker, seq_len=args.seq_len, micro_batch=micro_batch(args, args.preset),
        zero_stage=args.zero_stage, warmup=args.warmup, steps=args.steps, wall_s=time.perf_counter() - started,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        peak_memory_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        torch=torch.__version__, deepspeed=deepspeed.__version__)
    Path(args.result).write_text(json.dumps(result, indent=2))


def launch(args: argparse.Namespace, preset: str, variant: str, argv: list[str]) -> dict[str, Any]:
    """Run one (preset, variant) in a fresh single-rank process; returns its result or the error."""
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        env = dict(os.environ, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        if args.cpu_smoke:
            env.update(DS_ACCELERATOR="cpu", CUDA_VISIBLE_DEVICES="")
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", variant, "--preset", preset,
               "--result", str(result_path)]
        log = Path(args.out) / f"log_{preset}_{variant}.txt"
        print(f"[bench_gpu] {preset} {variant}: running (log {log})", flush=True)
        try:
            with open(log, "w") as fh:
                rc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        if rc == 0 and result_path.is_file():
            return json.loads(result_path.read_text())
        tail = log.read_text().splitlines()[-15:] if log.is_file() else []
        print(f"[bench_gpu] {preset} {variant} failed ({rc}); last lines:\n  " + "\n  ".join(tail), flush=True)
        return {"preset": preset, "variant": variant, "error": f"exit {rc}", "log_tail": tail}


def driver_argv(argv: list[str]) -> list[str]:
    """The command-line flags to hand down to workers (without the driver-only ones)."""
    return [a for a in argv if a not in ("--skip-hf",)]


def fmt(value: float | None, spec: str) -> str:
    """``format(value, spec)``, or "-" when there is no value; a trailing % in ``spec`` is literal."""
    if value is None:
        return "-"
    return format(value, spec.rstrip("%")) + ("%" if spec.endswith("%") else "")


def print_table(results: list[dict[str, Any]]) -> None:
    head = f"{'preset':<6} {'system':<11} {'tok/s/GPU':>11} {'MFU':>6} {'step ms':>8} {'peak GiB':>9}  attention"
    print("\n" + head + "\n" + "-" * len(head))
    for r in results:
        if "error" in r:
            print(f"{r['preset']:<6} {r['variant']:<11} FAILED: {r['error']}")
            continue
        print(f"{r['preset']:<6} {r['variant']:<11} {r['tokens_per_s_per_gpu']:>11,.0f} "
              f"{fmt(r['mfu'] and r['mfu'] * 100, '.1f%'):>6} {r['step_time_s'] * 1000:>8.1f} "
              f"{fmt(r['peak_memory_gib'], '.2f'):>9}  {r['attention_backend']}{' +compile' if r['compile'] else ''}")
    for preset in dict.fromkeys(r["preset"] for r in results):
        by = {r["variant"]: r for r in results if r["preset"] == preset and "error" not in r}
        ours = by.get("ours") or by.get("ours-eager")
        if ours and "hf" in by:
            print(f"{preset}: ours ({ours['variant']}) / hf tokens/s = "
                  f"{ours['tokens_per_s_per_gpu'] / by['hf']['tokens_per_s_per_gpu']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    variants = [v for v in args.variants.split(",") if v and not (args.skip_hf and v == "hf")]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    results = []
    for preset in args.presets.split(","):
        for variant in variants:
            res = launch(args, preset, variant, driver_argv(argv))
            if variant == "ours" and "error" in res and not args.cpu_smoke:
                print(f"[bench_gpu] retrying {preset} without torch.compile", flush=True)
                res = launch(args, preset, "ours-eager", driver_argv(argv))
            results.append(res)
            (Path(args.out) / "bench_gpu.json").write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nresults: {Path(args.out) / 'bench_gpu.json'}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
