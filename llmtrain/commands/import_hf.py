"""`llmtrain import-hf`: convert a local Hugging Face Llama directory into an llmtrain model directory."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import-hf", help="convert a local Hugging Face Llama/Mistral directory to an llmtrain model directory",
        description="Read config.json + safetensors (or pytorch_model.bin) from a local Hugging Face "
                    "Llama-family directory, refuse architectures llmtrain cannot represent, and write "
                    "OUT/model.safetensors, OUT/model.yaml and OUT/tokenizer/.")
    p.add_argument("--hf-dir", required=True, help="local Hugging Face model directory (no hub access)")
    p.add_argument("--out", required=True, help="output llmtrain model directory")
    p.add_argument("--dtype", choices=("keep", "fp32", "bf16", "fp16"), default="keep",
                   help="cast the weights (default: keep the stored dtype)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from llmtrain.model.flops import num_params
    from llmtrain.modelio.hf import hf_tokenizer_files, import_hf
    from llmtrain.modelio.model_dir import save_model_dir

    cfg, sd = import_hf(args.hf_dir)
    if args.dtype != "keep":
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
        sd = {k: v.to(dtype) for k, v in sd.items()}
    tokenizer = hf_tokenizer_files(args.hf_dir)
    out = save_model_dir(args.out, cfg, sd, tokenizer_files=tokenizer)
    print(f"imported {args.hf_dir}: {num_params(cfg) / 1e6:.1f}M parameters, {cfg.n_layers} layers, "
          f"dim {cfg.dim}, {cfg.n_heads} heads ({cfg.kv_heads} kv), vocab {cfg.vocab_size} -> {out} "
          f"(tokenizer files: {len(tokenizer)})")
    return 0
