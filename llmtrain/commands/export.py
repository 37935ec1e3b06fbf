"""`llmtrain export`: a checkpoint as a Hugging Face `LlamaForCausalLM` directory."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to Hugging Face Llama format (safetensors + tokenizer)",
                       description="Write config.json, (sharded) safetensors, generation_config.json and the "
                                   "tokenizer, loadable with transformers' LlamaForCausalLM.from_pretrained.")
    p.add_argument("--checkpoint", required=True, help="run directory (uses `latest`) or step directory")
    p.add_argument("--out", required=True, help="output directory (must be empty or absent)")
    p.add_argument("--dtype", default="bf16", choices=("fp32", "bf16", "fp16"), help="weight dtype to write")
    p.add_argument("--max-shard-size", default="2GB", help="split safetensors above this size (e.g. 5GB)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from llmtrain.errors import UserError
    from llmtrain.eval.load import load_model
    from llmtrain.model.hf import export_hf

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; export refuses to overwrite it. Choose another --out "
                        f"or remove the directory first")
    loaded = load_model(args.checkpoint)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    sd = {k: v for k, v in loaded.model.state_dict().items() if not k.startswith("rope.")}
    tok_dir = loaded.tokenizer.directory if loaded.tokenizer is not None else None
    export_hf(sd, loaded.config, out, tokenizer_dir=tok_dir, dtype=dtype, max_shard_size=args.max_shard_size)
    if loaded.chat_template:
        from llmtrain.data.sft import save_chat_template

        save_chat_template(loaded.chat_template, out)
    note = " (classification head not exported: the backbone is a LlamaForCausalLM)" if loaded.classifier is not None else ""
    print(f"[llmtrain] exported {loaded.source} -> {out} ({args.dtype}){note}")
    return 0
