"""`llmtrain generate`: sample text from a checkpoint, an llmtrain model directory or a local HF directory."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate", help="generate text from a checkpoint or HF directory (greedy or sampling, KV cache)",
        description="Continue each --prompt with the model. Greedy by default (--temperature 0); with a "
                    "temperature > 0 tokens are sampled, optionally restricted to the top-k tokens and the "
                    "top-p nucleus. Stops at EOS or after --max-new-tokens. A chat-tuned model's saved "
                    "template (chat_template.txt, or the tokenizer's own chat template) is applied unless --raw.")
    p.add_argument("--checkpoint", required=True,
                   help="run dir (uses latest), step_* dir, llmtrain model dir, or local Hugging Face Llama dir")
    p.add_argument("--prompt", action="append", required=True, help="prompt text (repeat for several)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="most tokens to generate per prompt (default 64)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy; > 0 samples from softmax(logits/T)")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="> 1 lowers the logits of tokens already in the text, as transformers' repetition_penalty "
                        "(1 = off)")
    p.add_argument("--top-k", type=int, default=0, help="sample only among the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="sample only from the smallest set with this much mass (1 = off)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (reproducible outputs)")
    p.add_argument("--raw", action="store_true", help="do not apply the model's chat template")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run (auto = cuda if available)")
    p.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16"),
                   help="weights dtype (auto = bf16 on CUDA, fp32 on CPU)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from llmtrain.errors import UserError
    from llmtrain.eval.generate import SamplingConfig, generate_text, prompt_ids
    from llmtrain.modelio.load import load_model

    if args.max_new_tokens < 1 or args.temperature < 0 or args.top_k < 0 or not 0 < args.top_p <= 1 \
            or not args.repetition_penalty > 0:
        raise UserError("need --max-new-tokens >= 1, --temperature >= 0, --top-k >= 0, 0 < --top-p <= 1 and "
                        "--repetition-penalty > 0")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(
        args.dtype, torch.bfloat16 if device.type == "cuda" else torch.float32)
    loaded = load_model(args.checkpoint, device=device, dtype=dtype)
    if loaded.tokenizer is None:
        raise UserError(f"{args.checkpoint} has no tokenizer beside the weights; generation needs one "
                        f"(checkpoints keep it in tokenizer/, HF directories in tokenizer.json)")
    cfg = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                         top_p=args.top_p, seed=args.seed, repetition_penalty=args.repetition_penalty)
    template = None if args.raw else loaded.chat_template
    for prompt in args.prompt:  # every prompt fits the model, checked before the first is generated
        prompt_ids(loaded.model.cfg, loaded.tokenizer, prompt, chat_template=template, tokenizer_template=not args.raw)
    for prompt in args.prompt:
        text = generate_text(loaded.model, loaded.tokenizer, prompt, cfg, chat_template=template,
                             tokenizer_template=not args.raw)
        print(f"### prompt\n{prompt}\n### completion\n{text}\n", flush=True)
    return 0
