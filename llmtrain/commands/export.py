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
    p.add_argument("--from-deepspeed-states", action="store_true",
                   help="for a checkpoint without model.safetensors: consolidate DeepSpeed's *.pt states instead. "
                        "ZeRO 1-3 states are read with DeepSpeed's zero_to_fp32, which unpickles them (a "
                        "tampered file can run code): use it only for checkpoints you trust")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from llmtrain.errors import UserError
    from llmtrain.modelio.hf import export_hf
    from llmtrain.modelio.layout import WEIGHTS, resolve_checkpoint, write_chat_template
    from llmtrain.modelio.load import load_model

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; export refuses to overwrite it. Choose another --out "
                        f"or remove the directory first")
    state = None
    if args.from_deepspeed_states:
        step = resolve_checkpoint(args.checkpoint)
        if not (step / WEIGHTS).is_file():
            from llmtrain.engine.states import consolidate_deepspeed

            state = consolidate_deepspeed(step, allow_unpickle=True)
    loaded = load_model(args.checkpoint, state_dict=state)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    sd = {k: v for k, v in loaded.model.state_dict().items() if not k.startswith("rope.")}
    tok_dir = loaded.tokenizer.directory if loaded.tokenizer is not None else None
    export_hf(sd, loaded.config, out, tokenizer_dir=tok_dir, dtype=dtype, max_shard_size=args.max_shard_size)
    if loaded.chat_template:
        write_chat_template(out, loaded.chat_template)
    note = " (classification head not exported: the backbone is a LlamaForCausalLM)" if loaded.classifier is not None else ""
    print(f"[llmtrain] exported {loaded.source} -> {out} ({args.dtype}){note}")
    return 0
