"""The tokenizer side of a Hugging Face export: files, BOS policy, special ids, ``generation_config.json``.

The contract (tested): ``AutoTokenizer.from_pretrained(export)(text).input_ids`` equals the ids the
model was trained on, ``Tokenizer.encode_sequence(text)`` (:mod:`llmtrain.data.tokenizer`).

- Our SentencePiece tokenizers prepend BOS in training, but the ``tokenizer.json`` that
  ``llmtrain tokenizer train`` writes beside them encodes text only (the data pipeline adds BOS
  itself). The export therefore rewrites the copy: a ``TemplateProcessing`` post-processor
  ``<s> $A`` in ``tokenizer.json`` (honoured by every transformers version) and
  ``add_bos_token: true`` in ``tokenizer_config.json``.
- A Hugging Face tokenizer (a fine-tune of a HF model) is copied unchanged: training followed its own
  default, BOS or none (Qwen has no BOS token; nothing is prepended anywhere).
- ``generation_config.json`` carries bos/eos/pad ids; a base model's own file (copied into
  checkpoints with the tokenizer) is kept with its decoding defaults and end-of-turn ids, our eos
  id added when it is missing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from llmtrain.data.chat import JINJA_TEMPLATE_FILE
from llmtrain.data.tokenizer import SP_MODEL, Tokenizer, is_tokenizer_dir, load_tokenizer, tokenizer_files
from llmtrain.distributed.logging import get_logger
from llmtrain.errors import CheckpointError

log = get_logger(__name__)

GENERATION_CONFIG = "generation_config.json"
# Texts the export is checked on: a quickstart prompt, leading/inner whitespace, a control token
# written as text (must stay text), digits and non-ASCII.
PROBE_TEXTS = ("ROMEO:", " leading space\n  and indentation", "<s> is text here 12345", "é日本")


def hf_tokenizer_files(hf_dir: str | Path) -> list[Path]:
    """The tokenizer files of a Hugging Face model directory (never its weights or config.json)."""
    return tokenizer_files(hf_dir)


def special_token_ids(tokenizer_dir: str | Path | None) -> dict[str, int]:
    """``bos_token_id``/``eos_token_id``/``pad_token_id`` of the tokenizer in ``tokenizer_dir``.

    A token the tokenizer does not have is left out (a Qwen tokenizer has no BOS). A bare
    SentencePiece ``tokenizer.model`` without our metadata is read with SentencePiece.
    """
    if tokenizer_dir is None:
        return {}
    d = Path(tokenizer_dir)
    if is_tokenizer_dir(d):
        tok = load_tokenizer(d)
        ids = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}
    elif (d / SP_MODEL).is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(d / SP_MODEL))
        ids = {"bos_token_id": sp.bos_id(), "eos_token_id": sp.eos_id(), "pad_token_id": sp.pad_id()}
    else:
        return {}
    return {k: v for k, v in ids.items() if v is not None and v >= 0}


def export_tokenizer(tokenizer_dir: str | Path, out_dir: str | Path, *, append_eos: bool = False) -> list[str]:
    """Copy the tokenizer into ``out_dir`` so that its default encoding is the training encoding.

    ``append_eos``: the model was trained on ``[BOS] text EOS`` (a classifier), so the export's
    tokenizer appends EOS too. Returns the names written; ``generation_config.json`` is not copied
    (see :func:`write_generation_config`). Raises CheckpointError when transformers would encode
    one of :data:`PROBE_TEXTS` differently from training with one of our own tokenizers.
    """
    src, out = Path(tokenizer_dir), Path(out_dir)
    names = []
    for f in tokenizer_files(src):
        if f.name != GENERATION_CONFIG:
            shutil.copy2(f, out / f.name)
            names.append(f.name)
    if not is_tokenizer_dir(src):
        return names  # a bare tokenizer.model: nothing we can load to check against
    tok = load_tokenizer(src)
    if (out / "tokenizer.json").is_file() and (append_eos or (tok.kind == "sentencepiece" and tok.add_bos)):
        _set_template(out, tok, append_eos=append_eos)
    check_export_encoding(tok, out, append_eos=append_eos)
    return names


def _set_template(out: Path, tok: Tokenizer, *, append_eos: bool) -> None:
    """Make the exported tokenizer add BOS (and EOS) around a text exactly as training did."""
    from tokenizers import Tokenizer as FastTokenizer
    from tokenizers import processors

    fast = FastTokenizer.from_file(str(out / "tokenizer.json"))
    specials = {"bos": tok.bos_id if tok.add_bos else -1, "eos": tok.eos_id if append_eos else -1}
    names = {k: fast.id_to_token(i) for k, i in specials.items() if i >= 0}
    missing = [k for k, i in specials.items() if i >= 0 and names[k] is None]
    if missing:
        raise CheckpointError(f"{out / 'tokenizer.json'} has no token for the {'/'.join(missing)} id of "
                              f"{tok.directory}; the tokenizer files do not belong together")
    single = " ".join(([names["bos"]] if "bos" in names else []) + ["$A"] + ([names["eos"]] if "eos" in names else []))
    template = processors.TemplateProcessing(single=single, pair=f"{single} {single.replace('$A', '$B')}",
                                             special_tokens=[(n, specials[k]) for k, n in names.items()])
    current = fast.post_processor
    keep = current is not None and type(current).__name__ not in ("TemplateProcessing", "Sequence")
    fast.post_processor = processors.Sequence([current, template]) if keep else template  # e.g. ByteLevel offsets
    fast.save(str(out / "tokenizer.json"))
    config_path = out / "tokenizer_config.json"
    config: dict[str, Any] = json.loads(config_path.read_text()) if config_path.is_file() else {}
    config.update(add_bos_token="bos" in names, add_eos_token=append_eos)
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def check_export_encoding(tok: Tokenizer, out: Path, *, append_eos: bool = False) -> None:
    """Compare ``AutoTokenizer.from_pretrained(out)`` with training's encoding on :data:`PROBE_TEXTS`.

    Our own tokenizers must agree exactly (else CheckpointError); a Hugging Face tokenizer is the
    user's, so a difference its own files cause (e.g. it also appends EOS) is logged, not refused.
    """
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(out))
    for text in PROBE_TEXTS:
        want = tok.encode_sequence(text) + ([tok.eos_id] if append_eos else [])
        got = list(hf(text)["input_ids"])
        if want == got:
            continue
        msg = (f"the exported tokenizer in {out} encodes {text!r} as {got}, but training used {want} "
               f"(BOS {'prepended' if tok.add_bos else 'not prepended'}, tokenizer from {tok.directory})")
        if tok.kind == "sentencepiece":
            raise CheckpointError(msg + "; this is a bug in llmtrain's export, please report it")
        log.warning("%s; users of the export should encode as training did", msg)
        return


def write_generation_config(out_dir: str | Path, ids: dict[str, int], tokenizer_dir: str | Path | None) -> Path:
    """``generation_config.json`` with ``ids``; a base model's file beside the tokenizer is kept and updated."""
    out = Path(out_dir) / GENERATION_CONFIG
    base_path = Path(tokenizer_dir) / GENERATION_CONFIG if tokenizer_dir is not None else None
    gen: dict[str, Any] = {"_from_model_config": True}
    if base_path is not None and base_path.is_file():
        try:
            gen = {k: v for k, v in json.loads(base_path.read_text()).items() if k != "transformers_version"}
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{base_path} is not valid JSON ({e}); fix or delete it and export again") from None
    for key in ("bos_token_id", "pad_token_id"):
        if key in ids:
            gen[key] = ids[key]
    if "eos_token_id" in ids:
        gen["eos_token_id"] = _with_eos(gen.get("eos_token_id"), ids["eos_token_id"])
    out.write_text(json.dumps(gen, indent=2) + "\n")
    return out


def _with_eos(base: int | list[int] | None, eos: int) -> int | list[int]:
    """The base model's end ids (an end-of-turn list in chat models) with training's ``eos`` in them."""
    if base is None or base == eos:
        return eos
    ends = base if isinstance(base, list) else [base]
    return ends if eos in ends else [eos, *ends]


def carry_chat_template(meta_dir: str | Path, out_dir: str | Path) -> bool:
    """Give the export the Jinja chat template training used, when its tokenizer has none of its own.

    A fine-tune of a template-less tokenizer trained on ``finetune.chat_template`` and saved that
    format as ``chat_template.jinja`` beside the weights; without it here, transformers'
    ``apply_chat_template`` on the export would fail or render a different prompt. Written both as the
    ``chat_template.jinja`` file (what recent transformers reads first) and ``tokenizer_config.json``'s
    ``chat_template`` (what older versions read). Returns whether it wrote one.
    """
    src, out = Path(meta_dir) / JINJA_TEMPLATE_FILE, Path(out_dir)
    config_path = out / "tokenizer_config.json"
    config: dict[str, Any] = json.loads(config_path.read_text()) if config_path.is_file() else {}
    if not src.is_file() or config.get("chat_template") or (out / JINJA_TEMPLATE_FILE).is_file():
        return False
    template = src.read_text(encoding="utf-8")
    (out / JINJA_TEMPLATE_FILE).write_text(template, encoding="utf-8")
    config["chat_template"] = template
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return True
