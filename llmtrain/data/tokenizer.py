"""One tokenizer interface over our SentencePiece directories and existing Hugging Face ones.

Our directories (written by ``llmtrain tokenizer train``) hold ``tokenizer.model`` plus an equivalent
``tokenizer.json`` for Hugging Face and ``llmtrain_tokenizer.json``; we encode with SentencePiece
itself (the reference). Any other directory is loaded with ``AutoTokenizer.from_pretrained``.
The fingerprint (sha256 of the model file) is what manifests and checkpoints record.

BOS policy (one rule for pretraining shards, SFT, classification, generation and the export):
every sequence starts with :attr:`Tokenizer.bos_prefix`. Our SentencePiece tokenizers prepend BOS.
A Hugging Face tokenizer keeps its own default: BOS when ``tokenizer("x")`` starts with it
(Llama, Mistral), nothing when it has no BOS token (Qwen) or does not add it (GPT-2, SmolLM),
so a model fine-tuned here sees exactly what ``AutoTokenizer`` gives its users.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from llmtrain.errors import DataError

META_FILE = "llmtrain_tokenizer.json"
SP_MODEL = "tokenizer.model"
# What travels with a tokenizer (checkpoints' tokenizer/, import-hf, exports): the tokenizer itself,
# its chat template and the base model's generation_config.json (the end-of-turn ids and decoding
# defaults that belong with this vocabulary). Never weights or a model's config.json.
_TOKENIZER_PREFIXES = ("tokenizer", "special_tokens_map", "added_tokens", "chat_template", "vocab", "merges",
                       "generation_config")
_TOKENIZER_SUFFIXES = (".model", ".tiktoken")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx")
_BOS_PROBE = "a"


def tokenizer_files(directory: str | Path) -> list[Path]:
    """The files of ``directory`` that belong to its tokenizer (a HF model directory also holds weights)."""
    out = []
    for f in sorted(Path(directory).iterdir()):
        name = f.name
        if not f.is_file() or name.endswith(_WEIGHT_SUFFIXES) or ".safetensors" in name:
            continue
        if name == META_FILE or name.startswith(_TOKENIZER_PREFIXES) or name.endswith(_TOKENIZER_SUFFIXES):
            out.append(f)
    return out


def fingerprint_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


class Tokenizer:
    """encode/decode plus the ids and identity the rest of the system needs."""

    def __init__(self, directory: Path, backend: Any, kind: str, fingerprint: str):
        self.directory, self._backend, self.kind, self.fingerprint = Path(directory), backend, kind, fingerprint
        if kind == "sentencepiece":
            sp = backend
            self.vocab_size = sp.get_piece_size()
            self.bos_id, self.eos_id, self.pad_id = sp.bos_id(), sp.eos_id(), sp.pad_id()
        else:
            hf = backend
            self.vocab_size = len(hf)
            self.bos_id = hf.bos_token_id if hf.bos_token_id is not None else -1
            self.eos_id = hf.eos_token_id if hf.eos_token_id is not None else -1
            self.pad_id = hf.pad_token_id if hf.pad_token_id is not None else self.eos_id
        self.add_bos = self.bos_id >= 0 and (kind == "sentencepiece" or _hf_adds_bos(backend, self.bos_id))

    @property
    def bos_prefix(self) -> list[int]:
        """``[bos_id]`` when sequences start with BOS under this tokenizer's policy, else ``[]``."""
        return [self.bos_id] if self.add_bos else []

    def encode_sequence(self, text: str) -> list[int]:
        """``text`` as the start of a sequence: what training saw and the export's tokenizer gives by default."""
        return self.bos_prefix + self.encode(text)

    def encode(self, text: str) -> list[int]:
        if self.kind == "sentencepiece":
            return self._backend.encode(text)
        return self._backend.encode(text, add_special_tokens=False)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self.kind == "sentencepiece":
            return self._backend.encode(texts)
        return self._backend(texts, add_special_tokens=False)["input_ids"]

    @property
    def chat_template(self) -> str | None:
        """A Hugging Face tokenizer's Jinja chat template (None without one, and for SentencePiece)."""
        return getattr(self._backend, "chat_template", None) if self.kind == "hf" else None

    def apply_chat_template(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = False) -> list[int]:
        """The ids of ``messages`` rendered with :attr:`chat_template`, exactly as transformers gives them."""
        out = self._backend.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt,
                                                return_dict=False)
        return [int(i) for i in out]

    def decode(self, ids: list[int]) -> str:
        ids = [int(i) for i in ids]
        if self.kind == "sentencepiece":
            return self._backend.decode(ids)
        return self._backend.decode(ids)

    def token_to_id(self, token: str) -> int:
        if self.kind == "sentencepiece":
            i = self._backend.piece_to_id(token)
            return i if i != self._backend.unk_id() or token == "<unk>" else -1
        i = self._backend.convert_tokens_to_ids(token)
        return -1 if i is None or i == self._backend.unk_token_id else i

    def save(self, out_dir: str | Path) -> Path:
        """Copy the tokenizer files into ``out_dir`` (checkpoints and exports carry the tokenizer)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if out.resolve() == self.directory.resolve():
            return out
        for f in tokenizer_files(self.directory):
            shutil.copy2(f, out / f.name)
        return out

    def __repr__(self) -> str:
        return f"Tokenizer({self.directory}, {self.kind}, vocab={self.vocab_size}, fp={self.fingerprint[:12]})"


def _hf_adds_bos(hf: Any, bos_id: int) -> bool:
    """Whether a Hugging Face tokenizer's default encoding (``add_special_tokens=True``) starts with BOS."""
    with_special = hf.encode(_BOS_PROBE)
    return bool(with_special) and with_special[0] == bos_id and hf.encode(_BOS_PROBE, add_special_tokens=False)[:1] != [bos_id]


def is_tokenizer_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / META_FILE).is_file() or (p / "tokenizer.json").is_file() or (p / "tokenizer_config.json").is_file()


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load our SentencePiece tokenizer dir or any Hugging Face tokenizer dir."""
    p = Path(path)
    if not p.is_dir() or not is_tokenizer_dir(p):
        raise DataError(f"{p} is not a tokenizer directory (expected {META_FILE} + {SP_MODEL}, or a Hugging Face "
                        f"tokenizer.json/tokenizer_config.json); train one with `llmtrain tokenizer train "
                        f"--input FILES --vocab-size 8192 --out {p}` or point at an existing one")
    if (p / META_FILE).is_file():
        import sentencepiece as spm

        model = p / SP_MODEL
        if not model.is_file():
            raise DataError(f"{model} is missing; retrain with `llmtrain tokenizer train ... --out {p}`")
        try:
            sp = spm.SentencePieceProcessor(model_file=str(model))
        except (RuntimeError, OSError) as e:  # sentencepiece: "could not parse ModelProto from ..."
            raise DataError(f"{model} is not a readable SentencePiece model ({str(e).strip()}); the tokenizer in {p} "
                            f"is damaged: restore it from the data's tokenizer directory (the manifest names it)") from None
        return Tokenizer(p, sp, "sentencepiece", fingerprint_files([model]))
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(str(p))
    except Exception as e:  # noqa: BLE001 (the tokenizers library raises a bare Exception for a damaged tokenizer.json)
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise DataError(f"cannot load the Hugging Face tokenizer in {p} ({type(e).__name__}: {first}); its files "
                        f"are damaged or incomplete: restore them from the original model directory") from None
    files = [p / n for n in ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt")
             if (p / n).is_file()]
    return Tokenizer(p, hf, "hf", fingerprint_files(files or sorted(p.glob("*.json"))))


def read_meta(path: str | Path) -> dict[str, Any]:
    f = Path(path) / META_FILE
    return json.loads(f.read_text()) if f.is_file() else {}
