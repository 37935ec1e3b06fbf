"""Every other causal LM: the transformers ``*ForCausalLM`` module itself, trained like our Transformer.

A Hugging Face directory whose ``model_type`` is not a native family (Gemma 2/3, Phi-3, OLMo-2, ...),
or any directory when ``finetune.hf_module`` asks for it, is built with transformers (offline, from
the local files; no remote code) and wrapped in :class:`HFCausalLM`, which shows what the objectives
and the generator use of our Transformer: ``forward(tokens, doc_ids=, kv_cache=, return_hidden=)``,
``output`` (the output projection, for the chunked loss that never builds the batch's fp32 logits),
``tok_embeddings`` (a classifier reads the width), ``cfg`` (a :class:`ModelConfig` that describes the
shapes, for FLOPs, the resume check and the KV cache length) and ``logit_softcap`` (Gemma 2's
``final_logit_softcapping``, which the loss applies to each chunk of logits).

The wrapper registers the transformers module's own children under their own names, so its state
dict is the module's (``model.layers.0.self_attn.q_proj.weight``, ``lm_head.weight``): checkpoints hold
those names in ``model.safetensors`` beside ``hf_config.json`` (the source config) and
:data:`HF_MODULE_FILE`, which tells :func:`llmtrain.modelio.load.load_model` to come back here.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmtrain.errors import CheckpointError
from llmtrain.model.config import ModelConfig
from llmtrain.model.kv_cache import KVCache
from llmtrain.model.rope import positions_from_doc_ids
from llmtrain.modelio.layout import HF_CONFIG_FILE, STATE

HF_MODULE_FILE = "hf_module.json"  # marks weights with the transformers module's own names
_MOE_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


def refuse(field: str, value: Any, why: str) -> CheckpointError:
    return CheckpointError(f"cannot train this Hugging Face model: config.json {field}={value!r}: {why}")


def model_class(hf: dict[str, Any]) -> type:
    """The transformers ``*ForCausalLM`` class of ``config.json``, or CheckpointError naming the field."""
    import transformers

    if hf.get("is_encoder_decoder"):
        raise refuse("is_encoder_decoder", True, "encoder-decoder models need a sequence-to-sequence objective "
                     "(labels on the decoder, inputs on the encoder); only decoder-only causal LMs are trained")
    for key in ("vision_config", "audio_config"):
        if hf.get(key):
            raise refuse(key, "{...}", "vision/audio-language models need their image or audio inputs in the "
                         "batches; only text causal LMs are trained (a text-only checkpoint of the family works)")
    for key in _MOE_FIELDS:
        if (hf.get(key) or 0) > 1:
            raise refuse(key, hf[key], "mixture-of-experts models need the router's auxiliary loss and expert "
                         "parallelism, which llmtrain does not implement")
    archs = hf.get("architectures") or []
    causal = [a for a in archs if a.endswith("ForCausalLM")]
    if not causal:
        raise refuse("architectures", archs, "no *ForCausalLM class is named; llmtrain trains decoder-only causal "
                     "LMs (save the model with its *ForCausalLM class)")
    cls = getattr(transformers, causal[0], None)
    if cls is None:
        raise refuse("architectures", causal[0], f"transformers {transformers.__version__} does not define it; "
                     "models that need trust_remote_code are not loaded (install a transformers that has the class)")
    return cls


def describe(config: Any, name: str) -> ModelConfig:
    """A ModelConfig with the module's shapes: for FLOPs, the resume check and the KV cache (not its function)."""
    dim, heads = int(config.hidden_size), int(config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or dim // heads
    return ModelConfig(
        name=name, vocab_size=int(config.vocab_size), dim=dim, n_layers=int(config.num_hidden_layers), n_heads=heads,
        n_kv_heads=getattr(config, "num_key_value_heads", None) or heads, head_dim=int(head_dim),
        ffn_hidden_dim=int(getattr(config, "intermediate_size", None) or 4 * dim),
        max_seq_len=int(getattr(config, "max_position_embeddings", None) or 2048),
        tie_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        sliding_window=getattr(config, "sliding_window", None) or None)


class HFCausalLM(nn.Module):
    """A transformers ``*ForCausalLM`` with the surface of :class:`llmtrain.model.transformer.Transformer`."""

    def __init__(self, hf_model: nn.Module, cfg: ModelConfig):
        super().__init__()
        if any(True for _ in hf_model.named_parameters(recurse=False)):
            raise CheckpointError(f"{type(hf_model).__name__} holds parameters outside its submodules; not supported")
        for child_name, child in hf_model.named_children():
            self.add_module(child_name, child)
        object.__setattr__(self, "hf", hf_model)  # not a child: the state dict keeps the module's own names
        self.cfg = cfg
        self.logit_softcap = getattr(hf_model.config, "final_logit_softcapping", None)
        # transformers 5.x renamed the forward's cache argument (past_key_values -> cache)
        params = inspect.signature(self.base.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @property
    def base(self) -> nn.Module:
        """The decoder stack without the output projection (``model`` in most families)."""
        return getattr(self.hf, self.hf.base_model_prefix)

    @property
    def output(self) -> nn.Module:
        return self.hf.get_output_embeddings()

    @property
    def tok_embeddings(self) -> nn.Module:
        return self.hf.get_input_embeddings()

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        z = self.output(hidden)
        if self.logit_softcap:
            z = torch.tanh(z / self.logit_softcap) * self.logit_softcap
        return z

    def forward(self, tokens: torch.Tensor, *, doc_ids: torch.Tensor | None = None, kv_cache: KVCache | None = None,
                return_hidden: bool = False) -> torch.Tensor:
        """Logits [B, T, vocab] or final hidden states; packed rows (``doc_ids``) attend within documents.

        Positions restart at each document and no cache is passed, which is how transformers' masks
        detect packed sequences (full and sliding-window layers alike).
        """
        if doc_ids is not None:
            if kv_cache is not None:
                raise ValueError("doc_ids and kv_cache cannot be combined; decode one document per row")
            out = self.base(input_ids=tokens, position_ids=positions_from_doc_ids(doc_ids), use_cache=False)
        elif kv_cache is not None:
            from transformers import DynamicCache

            past = kv_cache.__dict__.setdefault("hf_cache", DynamicCache(config=self.hf.config))
            start, T = kv_cache.length, tokens.shape[1]
            positions = torch.arange(start, start + T, device=tokens.device).expand(tokens.shape[0], T)
            out = self.base(input_ids=tokens, position_ids=positions, use_cache=True, **{self._cache_arg: past})
            kv_cache.advance(T)
        else:
            out = self.base(input_ids=tokens, use_cache=False)
        hidden = out[0]
        return hidden if return_hidden else self.logits(hidden)


def is_native(hf: dict[str, Any]) -> bool:
    from llmtrain.modelio.hf.families import FAMILIES

    return hf.get("model_type") in FAMILIES


def hf_module_source(path: Path, *, force: bool = False) -> bool:
    """Whether ``path`` loads as a transformers module: our marker file, or a non-native HF directory."""
    from llmtrain.modelio.layout import is_checkpoint, resolve_checkpoint

    if (path / "config.json").is_file() and not (path / STATE).is_file():
        return force or not is_native(_read_json(path / "config.json"))
    if is_checkpoint(path):
        path = resolve_checkpoint(path)
    return (path / HF_MODULE_FILE).is_file()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is unreadable ({e}); restore it from the Hugging Face model directory") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object (a transformers config), got {type(data).__name__}")
    return data


def build_from_dir(hf_dir: Path) -> nn.Module:
    """``from_pretrained`` of a local directory in fp32 (one copy of the weights, nothing downloaded)."""
    cls = model_class(_read_json(hf_dir / "config.json"))
    return cls.from_pretrained(str(hf_dir), dtype=torch.float32, local_files_only=True)


def module_config(hf: dict[str, Any]) -> Any:
    """The transformers config object of ``config.json``'s fields."""
    from transformers import AutoConfig

    fields = {k: v for k, v in hf.items() if k not in ("model_type", "transformers_version")}
    return AutoConfig.for_model(hf["model_type"], **fields)


def build_from_state(hf: dict[str, Any], state: dict[str, torch.Tensor], source: Path) -> nn.Module:
    """The module of config ``hf`` with ``state`` (its own names; a tied output weight may be absent)."""
    cls = model_class(hf)
    model = cls._from_config(module_config(hf), dtype=torch.float32)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        shapes = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
        raise CheckpointError(f"weights in {source} do not fit {HF_CONFIG_FILE} ({'; '.join(shapes[:3])})") from None
    model.tie_weights()
    tied = {k for k in missing if model.get_parameter(k) is model.get_input_embeddings().weight}
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise CheckpointError(f"weights in {source} do not fit {cls.__name__}: missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]} (LoRA checkpoints must be saved merged)")
    return model


def check_forward(model: HFCausalLM, source: Path) -> None:
    """Refuse a module whose ``forward`` computes more than ``softcap(output(base(x)))`` (one short forward)."""
    tokens = torch.arange(1, 5, device=model.tok_embeddings.weight.device)[None] % model.cfg.vocab_size
    with torch.no_grad():
        ours, theirs = model(tokens), model.hf(input_ids=tokens, use_cache=False).logits
    if not torch.allclose(ours.float(), theirs.float(), rtol=1e-4, atol=1e-4 * float(theirs.abs().max()) + 1e-6):
        raise CheckpointError(f"{source}: {type(model.hf).__name__}.forward computes its logits with more than the "
                              f"output projection of the final hidden states (and final_logit_softcapping); llmtrain's "
                              f"loss cannot reproduce it, so this model is not trained")


def load_hf_module(path: Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                   state_dict: dict[str, torch.Tensor] | None = None, runtime: Any = None,
                   partitioning: Any = None) -> Any:
    """:class:`~llmtrain.modelio.load.LoadedModel` of a HF directory or of a checkpoint :func:`hf_module_source` accepts.

    With ``partitioning`` (ZeRO-3) the module is created partitioned and filled layer by layer
    (:mod:`.generic_partitioned`); otherwise it is built whole on ``device`` in ``dtype``.
    """
    from llmtrain.data.tokenizer import is_tokenizer_dir, load_tokenizer
    from llmtrain.model.heads import SequenceClassifier
    from llmtrain.modelio.layout import (
        TOKENIZER_SUBDIR,
        is_checkpoint,
        read_chat_template,
        read_head,
        resolve_checkpoint,
    )
    from llmtrain.modelio.load import CLASSIFICATION, LoadedModel

    head: dict[str, Any] = {}
    score: dict[str, torch.Tensor] = {}
    hf_dir = (path / "config.json").is_file() and not (path / STATE).is_file()
    meta = path if hf_dir or not is_checkpoint(path) else resolve_checkpoint(path)
    tok_dir = meta if hf_dir else meta / TOKENIZER_SUBDIR
    if not hf_dir:
        hf, head = _read_json(meta / HF_CONFIG_FILE), read_head(meta)
    classifier = head.get("task") == CLASSIFICATION
    if partitioning is not None and state_dict is None:
        from llmtrain.modelio.hf.generic_partitioned import build_partitioned
        from llmtrain.modelio.partitioned import _hf_files
        from llmtrain.modelio.weights import TensorReader, open_weights

        if hf_dir:
            hf = _read_json(path / "config.json")
        reader = TensorReader.of_files(_hf_files(path)) if hf_dir else open_weights(meta)
        module, score = build_partitioned(hf, reader, partitioning, path, classifier=classifier)
    elif hf_dir:
        hf = _read_json(path / "config.json")
        module = build_from_dir(path)
    else:
        if state_dict is None:
            from llmtrain.modelio.weights import open_weights

            reader = open_weights(meta)  # refuses a missing file, naming the opt-in for DeepSpeed's states
            state_dict = {k: reader.get(k) for k in reader.names()}
        score = {k.removeprefix("score."): v for k, v in state_dict.items() if classifier and k.startswith("score.")}
        body = {k.removeprefix("backbone."): v for k, v in state_dict.items() if not k.startswith("score.")}
        module = build_from_state(hf, body, meta)
    cfg = describe(module.config, str(hf.get("_name_or_path") or path.name))
    model = HFCausalLM(module, cfg)
    if partitioning is None:  # partitioned parameters already have the engine's device and dtype
        model.to(device=device, dtype=dtype)
        check_forward(model.eval(), path)
    model.eval()
    if runtime is not None:
        from llmtrain.modelio.hf.generic_tuning import apply_hf_runtime

        apply_hf_runtime(model, runtime)
    tokenizer = load_tokenizer(tok_dir) if is_tokenizer_dir(tok_dir) else None
    loaded = LoadedModel(model, cfg, tokenizer, path, hf_config=hf,
                         chat_template=read_chat_template(meta) or read_chat_template(tok_dir))
    if score:
        num_labels = score["weight"].shape[0]
        pad_id = head.get("pad_id", tokenizer.pad_id if tokenizer else 0)
        clf = SequenceClassifier(model, num_labels, pooling=head.get("pooling", "last"), pad_id=pad_id,
                                 bias="bias" in score)
        clf.score.load_state_dict(score)
        loaded.classifier = (clf if partitioning is not None else clf.to(device=device, dtype=dtype)).eval()
        names = head.get("label_names") or head.get("labels") or [str(i) for i in range(num_labels)]
        loaded.head = {"num_labels": num_labels, **head, "label_names": names}
    return loaded

