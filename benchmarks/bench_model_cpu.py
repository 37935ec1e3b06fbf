"""CPU step time of llmtrain's Transformer vs transformers.LlamaForCausalLM of the same config.

Both models get the same weights (ours converted with ``to_hf_state_dict``), the same batch, the same
loss (cross-entropy on the logits, computed outside the model) and their own AdamW. A third row is
the step as llmtrain's trainer runs it: our model, the objectives' causal-LM loss (from the final
hidden states, chunked only where the logits would be large) and the trainer's optimizer (AdamW with
decay groups and the non-finite guard). Steps alternate between the variants so that load from other
processes on a shared machine hits all alike.

    python benchmarks/bench_model_cpu.py [--dim 256 --layers 4 --seq 256 --batch 4 --steps 10]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=256, help="hidden size")
    p.add_argument("--layers", type=int, default=4, help="transformer blocks")
    p.add_argument("--heads", type=int, default=8, help="query heads")
    p.add_argument("--kv-heads", type=int, default=4, help="key/value heads (GQA)")
    p.add_argument("--vocab", type=int, default=8192, help="vocabulary size")
    p.add_argument("--seq", type=int, default=256, help="tokens per sequence")
    p.add_argument("--batch", type=int, default=4, help="sequences per step")
    p.add_argument("--steps", type=int, default=10, help="timed steps per model (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--backend", default="sdpa", choices=("sdpa", "eager"), help="attention for both models")
    return p.parse_args()


def build_models(args: argparse.Namespace):
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmtrain.model.config import ModelConfig
    from llmtrain.model.runtime import ModelRuntime, apply_runtime
    from llmtrain.model.transformer import Transformer
    from llmtrain.modelio.hf import hf_config, to_hf_state_dict

    cfg = ModelConfig(vocab_size=args.vocab, dim=args.dim, n_layers=args.layers, n_heads=args.heads,
                      n_kv_heads=args.kv_heads, max_seq_len=args.seq)
    torch.manual_seed(0)
    ours = apply_runtime(Transformer(cfg), ModelRuntime(attention_backend=args.backend))
    fields = {k: v for k, v in hf_config(cfg, torch.float32).items()
              if k not in ("architectures", "model_type", "torch_dtype", "dtype")}
    hf = LlamaForCausalLM(LlamaConfig(**fields, attn_implementation=args.backend))
    hf.load_state_dict(to_hf_state_dict(ours.state_dict(), cfg))
    return cfg, ours, hf


def make_step(model, logits_of, lr: float = 1e-4):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)

    def step(tokens: torch.Tensor) -> float:
        t0 = time.perf_counter()
        logits = logits_of(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    return step


def make_trainer_step(model, lr: float = 1e-4):
    """The step of llmtrain's loop without DeepSpeed: objectives' loss + the trainer's optimizer."""
    from llmtrain.config.schema import OptimConfig
    from llmtrain.objectives.losses import causal_lm_loss
    from llmtrain.training.optim import build_optimizer

    opt = build_optimizer(model, OptimConfig(lr=lr, weight_decay=0.1))

    def step(tokens: torch.Tensor) -> float:
        t0 = time.perf_counter()
        loss, _ = causal_lm_loss(model, {"input_ids": tokens[:, :-1], "labels": tokens[:, 1:]})
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    return step


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    cfg, ours, hf = build_models(args)
    ours.train()
    hf.train()
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (ours(tokens[:, :-1]) - hf(tokens[:, :-1]).logits).abs().max().item()
    trainer_model = copy.deepcopy(ours)
    steps = {"llmtrain": make_step(ours, lambda x: ours(x)),
             "hf_llama": make_step(hf, lambda x: hf(x).logits),
             "trainer": make_trainer_step(trainer_model)}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(args.warmup + args.steps):
        for name, step in steps.items():
            dt = step(tokens)
            if i >= args.warmup:
                times[name].append(dt)
    n = sum(p.numel() for p in ours.parameters())
    print(f"model: {n / 1e6:.1f}M params, dim {cfg.dim}, {cfg.n_layers} layers, {cfg.n_heads}/{cfg.kv_heads} heads, "
          f"vocab {cfg.vocab_size}; batch {args.batch}x{args.seq}; attention {args.backend}; "
          f"{args.threads} threads; initial max |logit diff| {diff:.1e}")
    med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    for name, ms in med.items():
        tok_s = args.batch * args.seq / (ms / 1e3)
        print(f"{name:10s} fwd+bwd+AdamW: {ms:8.1f} ms/step (median of {args.steps})  {tok_s:8.0f} tokens/s")
    print(f"ratio llmtrain/hf_llama step time: {med['llmtrain'] / med['hf_llama']:.3f} (< 1 = llmtrain faster)")
    print(f"ratio trainer step/hf_llama (HF model + plain cross-entropy + torch AdamW): "
          f"{med['trainer'] / med['hf_llama']:.3f} (target <= 1.0)")


if __name__ == "__main__":
    main()
