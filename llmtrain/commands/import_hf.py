"""`llmtrain import-hf`: convert a local Hugging Face directory of a native family (Llama, Mistral, Qwen2,
Qwen3) into an llmtrain model directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import-hf", help="convert a local Hugging Face Llama/Mistral/Qwen2/Qwen3 directory to an llmtrain "
                          "model directory",
        description="Read config.json + safetensors (or pytorch_model.bin) from a local Hugging Face "
                    "directory of a native family (Llama 2/3.x, SmolLM, Mistral, Qwen2/2.5, Qwen3), refuse "
                    "architectures llmtrain cannot represent, and write OUT/model.safetensors, OUT/model.yaml, "
                    "OUT/hf_config.json (the source config, so that export writes the same class) and "
                    "OUT/tokenizer/.")
    p.add_argument("--hf-dir", required=True, help="local Hugging Face model directory (no hub access)")
    p.add_argument("--out", required=True, help="output llmtrain model directory")
    p.add_argument("--dtype", choices=("keep", "fp32", "bf16", "fp16"), default="keep",
                   help="cast the weights (default: keep the stored dtype)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the model files of an existing --out (model.safetensors, model.yaml, tokenizer/)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from llmtrain.model.flops import num_params
    from llmtrain.modelio.hf import hf_tokenizer_files, import_hf, read_source_config
    from llmtrain.modelio.model_dir import save_model_dir

    check_out(Path(args.out), Path(args.hf_dir), args.overwrite)
    cfg, sd = import_hf(args.hf_dir)
    if args.dtype != "keep":
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
        sd = {k: v.to(dtype) for k, v in sd.items()}
    tokenizer = hf_tokenizer_files(args.hf_dir)
    old_tokenizer = Path(args.out) / "tokenizer"
    if args.overwrite and old_tokenizer.is_dir():  # after the import succeeded: the new set replaces the old
        import shutil

        shutil.rmtree(old_tokenizer)
    out = save_model_dir(args.out, cfg, sd, tokenizer_files=tokenizer, hf_config=read_source_config(args.hf_dir))
    print(f"imported {args.hf_dir}: {num_params(cfg) / 1e6:.1f}M parameters, {cfg.n_layers} layers, "
          f"dim {cfg.dim}, {cfg.n_heads} heads ({cfg.kv_heads} kv), vocab {cfg.vocab_size} -> {out} "
          f"(tokenizer files: {len(tokenizer)})")
    return 0


def check_out(out: Path, hf_dir: Path, overwrite: bool) -> None:
    """Refuse an --out that overlaps the Hugging Face directory, or holds a model (unless --overwrite)."""
    from llmtrain.errors import UserError
    from llmtrain.modelio.layout import MODEL_YAML, TOKENIZER_SUBDIR, WEIGHTS

    target, source = out.resolve(), hf_dir.resolve()
    if target == source or source in target.parents or target in source.parents:
        raise UserError(f"--out {out} overlaps --hf-dir {hf_dir}; the Hugging Face directory is never written: "
                        f"pick an --out outside it")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory; pick another --out")
    existing = [name for name in (WEIGHTS, MODEL_YAML, TOKENIZER_SUBDIR) if (out / name).exists()]
    if existing and not overwrite:
        raise UserError(f"--out {out} already holds a model ({', '.join(existing)}); pick another --out, or pass "
                        f"--overwrite to replace it")
