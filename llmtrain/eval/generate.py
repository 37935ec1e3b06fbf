"""Text generation with a KV cache: greedy or sampled (temperature, top-k, top-p), stop at EOS.

``repetition_penalty`` > 1 lowers the logits of every token already in the sequence (prompt
included) as ``transformers``' ``repetition_penalty`` does (positive logits divided by it, negative
ones multiplied), so greedy decoding of a small model stops looping and still matches ``generate(
do_sample=False, repetition_penalty=...)`` token for token.

The prompt is run once (prefill) to fill the cache; each new token then costs one forward over a
single position. Greedy decoding picks the argmax exactly like ``transformers``' ``generate(
do_sample=False)``, so the two agree token for token on an exported model (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llmtrain.model.kv_cache import KVCache


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int | None = None
    repetition_penalty: float = 1.0  # 1 = off


def penalize_repetition(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """``logits`` [B, V] with the entries of token ids ``seen`` [B, L] penalised (transformers' rule)."""
    if penalty == 1.0:
        return logits
    score = torch.gather(logits, 1, seen)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return logits.scatter(1, seen, score)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k and outside the top-p nucleus to -inf ([B, V], already scaled)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the mass before it already reaches top_p (the top token always stays)
        drop = probs.cumsum(-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def next_token(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """[B, V] logits of the last position -> [B] token ids."""
    if cfg.temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(filter_logits(logits.float() / cfg.temperature, cfg.top_k, cfg.top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate_ids(model: nn.Module, prompt_ids: list[int], cfg: SamplingConfig, *, eos_id: int | None = None,
                 use_cache: bool = True) -> list[int]:
    """New token ids after ``prompt_ids`` (EOS included when it ends the text)."""
    if not prompt_ids:
        raise ValueError("generation needs at least one prompt token (e.g. BOS)")
    mcfg = model.cfg
    device = next(model.parameters()).device
    max_len = min(len(prompt_ids) + cfg.max_new_tokens, mcfg.max_seq_len)
    if len(prompt_ids) >= mcfg.max_seq_len:
        raise ValueError(f"the prompt has {len(prompt_ids)} tokens; the model accepts at most {mcfg.max_seq_len}")
    generator = None
    if cfg.seed is not None:
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
    dtype = next(model.parameters()).dtype
    cache = KVCache.for_model(mcfg, 1, max_len, dtype=dtype, device=device) if use_cache else None
    tokens = torch.tensor([prompt_ids], device=device)
    out: list[int] = []
    step_input = tokens
    while len(prompt_ids) + len(out) < max_len:
        logits = model(step_input if use_cache else tokens, kv_cache=cache)[:, -1]
        tok = next_token(penalize_repetition(logits, tokens, cfg.repetition_penalty), cfg, generator)
        out.append(int(tok))
        if eos_id is not None and int(tok) == eos_id:
            break
        step_input = tok.view(1, 1)
        tokens = torch.cat([tokens, step_input], dim=1)
    return out


def format_prompt(prompt: str, chat_template: str | None) -> str:
    """The prompt as the model saw prompts in training: through its chat template if it has one."""
    return chat_template.replace("{prompt}", prompt) if chat_template else prompt


def generate_text(model: nn.Module, tokenizer, prompt: str, cfg: SamplingConfig, *,
                  chat_template: str | None = None, tokenizer_template: bool = False) -> str:
    """Decode the continuation of ``prompt`` (BOS prepended as in training, if the tokenizer has one; EOS stripped).

    ``chat_template`` is a training format string (``{prompt}``); with ``tokenizer_template`` and a
    tokenizer that carries its own chat template, the prompt is a user message rendered with it and
    the generation prompt appended, as SFT rendered conversations for such tokenizers.
    """
    ids = prompt_ids(model.cfg, tokenizer, prompt, chat_template=chat_template, tokenizer_template=tokenizer_template)
    new = generate_ids(model, ids, cfg, eos_id=tokenizer.eos_id if tokenizer.eos_id >= 0 else None)
    if new and new[-1] == tokenizer.eos_id:
        new = new[:-1]
    return tokenizer.decode(new)


def prompt_ids(model_cfg, tokenizer, prompt: str, *, chat_template: str | None = None,
               tokenizer_template: bool = False) -> list[int]:
    """The ids the model sees for ``prompt`` (as :func:`generate_text` renders it); UserError if they do not fit.

    A prompt of ``model_cfg.max_seq_len`` tokens or more is refused with both lengths rather than cut:
    dropping its start silently would usually drop the instruction (transformers and LitGPT refuse too).
    """
    if tokenizer_template and not chat_template and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
    else:
        ids = tokenizer.encode_sequence(format_prompt(prompt, chat_template))
    if len(ids) >= model_cfg.max_seq_len:
        from llmtrain.errors import UserError

        shown = prompt if len(prompt) <= 40 else prompt[:40] + "..."
        raise UserError(
            f"the prompt {shown!r} is {len(ids)} tokens (with BOS and any chat template) but the model accepts at "
            f"most {model_cfg.max_seq_len} tokens in all (its max_seq_len), prompt plus at least one new token; "
            f"shorten the prompt to at most {model_cfg.max_seq_len - 1} tokens (it is not cut silently)")
    return ids
