"""`llmtrain export`: a checkpoint as a Hugging Face `*ForCausalLM` directory (the family it was imported
from, else Llama for our own models; see llmtrain.modelio.hf.families)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from llmtrain.modelio.load import LoadedModel

ADAPTER_SUBDIR = "adapter"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to Hugging Face format (safetensors + tokenizer)",
                       description="Write config.json, (sharded) safetensors, generation_config.json and the "
                                   "tokenizer, loadable with transformers' from_pretrained: the class the model was imported "
                                   "from (Qwen2ForCausalLM, MistralForCausalLM, ...), LlamaForCausalLM for our own models.")
    p.add_argument("--checkpoint", required=True, help="run directory (uses `latest`) or step directory")
    p.add_argument("--out", required=True, help="output directory (must be empty or absent)")
    p.add_argument("--dtype", default="bf16", choices=("fp32", "bf16", "fp16"), help="weight dtype to write")
    p.add_argument("--max-shard-size", default="2GB", type=shard_size,
                   help="split safetensors above this size: 5GB or 5G (powers of 1000, as Hugging Face), 5GiB "
                        "(powers of 1024), or a byte count")
    p.add_argument("--from-deepspeed-states", action="store_true",
                   help="for a checkpoint without model.safetensors: consolidate DeepSpeed's *.pt states instead "
                        "(read with torch's restricted unpickler, which cannot run code)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="with --from-deepspeed-states: read DeepSpeed's ZeRO 1-3 states with full pickle (a tampered "
                        "file can run code); only for checkpoints you trust whose files the restricted reader refuses")
    p.add_argument("--backbone-only", action="store_true",
                   help="for a classifier: write only the causal-LM backbone (default: the family's "
                        "*ForSequenceClassification with the head, id2label and pad_token_id)")
    p.add_argument("--no-adapter", action="store_true",
                   help="for a LoRA fine-tune: skip the PEFT adapter (default: OUT/adapter/ holds adapter_config.json "
                        "+ adapter_model.safetensors for peft.PeftModel.from_pretrained(base model, OUT/adapter))")
    p.set_defaults(func=run)


def shard_size(text: str) -> int:
    """``--max-shard-size`` in bytes; argparse reports a bad value as one error naming the flag."""
    from llmtrain.modelio.hf import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).replace("max_shard_size ", "", 1)) from None


def run(args: argparse.Namespace) -> int:
    import torch

    from llmtrain.errors import UserError
    from llmtrain.modelio.hf import export_hf
    from llmtrain.modelio.layout import WEIGHTS, resolve_checkpoint, write_chat_template
    from llmtrain.modelio.load import load_model

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory; choose another --out (export creates the directory)")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; export refuses to overwrite it. Choose another --out "
                        f"or remove the directory first")
    state = None
    if args.from_deepspeed_states:
        step = resolve_checkpoint(args.checkpoint)
        if not (step / WEIGHTS).is_file():
            from llmtrain.engine.states import consolidate_deepspeed

            state = consolidate_deepspeed(step, allow_unpickle=args.trust_pickle)
    loaded = load_model(args.checkpoint, state_dict=state)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    sd = {k: v for k, v in loaded.model.state_dict().items() if not k.startswith("rope.")}
    tok = loaded.tokenizer
    tok_dir = tok.directory if tok is not None else None
    note = ""
    from llmtrain.modelio.hf.generic import HFCausalLM

    if isinstance(loaded.model, HFCausalLM):  # any other causal LM: save_pretrained of the transformers module
        from llmtrain.modelio.hf.generic_tuning import export_loaded

        note = export_loaded(loaded, out, dtype=dtype, max_shard_size=args.max_shard_size,
                             backbone_only=args.backbone_only)
    elif loaded.classifier is not None and not args.backbone_only:
        from llmtrain.modelio.hf.heads import export_sequence_classifier

        score = dict(loaded.classifier.score.state_dict())
        head = {**loaded.head, "pad_id": loaded.classifier.pad_id}
        eos = tok.eos_id if tok is not None and tok.eos_id >= 0 else None
        export_sequence_classifier(sd, loaded.config, score, head, out, eos_id=eos, tokenizer_dir=tok_dir, dtype=dtype,
                                   max_shard_size=args.max_shard_size, source_config=loaded.hf_config)
        note = f" as a sequence classifier ({len(loaded.head['label_names'])} labels)"
    else:
        export_hf(sd, loaded.config, out, tokenizer_dir=tok_dir, dtype=dtype, max_shard_size=args.max_shard_size,
                  source_config=loaded.hf_config)
        if loaded.classifier is not None:
            note = " (--backbone-only: the classification head stays in the checkpoint)"
    if loaded.chat_template:
        write_chat_template(out, loaded.chat_template)
    from llmtrain.modelio.hf.tokenizer import carry_chat_template
    from llmtrain.modelio.layout import is_checkpoint

    # the Jinja form of the fallback format SFT trained on, for tokenizers without a template of their own
    carry_chat_template(resolve_checkpoint(args.checkpoint) if is_checkpoint(args.checkpoint) else args.checkpoint, out)
    note += _adapter(args, loaded, out, dtype)
    print(f"[llmtrain] exported {loaded.source} -> {out} ({args.dtype}){note}")
    return 0


def _adapter(args: argparse.Namespace, loaded: LoadedModel, out: Path, dtype: torch.dtype) -> str:
    """Write OUT/adapter/ in PEFT's format when the checkpoint is a LoRA fine-tune; the note to print."""
    from llmtrain.modelio.layout import is_checkpoint, resolve_checkpoint
    from llmtrain.modelio.peft import export_peft_adapter, has_adapter, read_adapter

    if args.no_adapter or not is_checkpoint(loaded.source):
        return ""
    step = resolve_checkpoint(loaded.source)
    if not has_adapter(step):
        return ""
    if loaded.classifier is not None and not args.backbone_only:
        return "; LoRA adapter not exported for a classifier (its weights are merged into the export)"
    adapter, settings = read_adapter(step)
    from llmtrain.modelio.hf.generic import HFCausalLM

    if isinstance(loaded.model, HFCausalLM):  # the adapter tensors already carry the module's own names
        from llmtrain.modelio.hf.generic_tuning import export_peft_adapter as export_module_adapter

        export_module_adapter(adapter, settings, out / ADAPTER_SUBDIR, dtype=dtype)
    else:
        export_peft_adapter(adapter, settings, loaded.config, out / ADAPTER_SUBDIR, dtype=dtype)
    return f"; PEFT adapter -> {out / ADAPTER_SUBDIR} (base model: {settings.get('init')})"
