"""The sections of a run configuration: one dataclass per section, each field documented.

Sections are shared by the per-command roots in :mod:`llmtrain.config.roots` (``model``, ``data``,
``train``, ``optim``, ``checkpoint``, ``logging``, ``finetune``, ``eval``; ``deepspeed`` is a raw
mapping merged over the generated DeepSpeed JSON). Cross-field rules live in ``check()`` methods so
that every problem is reported together.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmtrain.config.base import field
from llmtrain.model.config import LoraConfig, ModelConfig
from llmtrain.model.runtime import ModelRuntime, runtime_field

PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "linear", "constant", "wsd")


@dataclass
class ModelSection(ModelConfig):
    """The run config's ``model:`` section: the architecture plus how this run executes it.

    The run-time keys stay in the same YAML section users already write; code splits them with
    :meth:`architecture` (what a checkpoint records) and :meth:`runtime` (what ``apply_runtime`` sets).
    """

    attention_backend: str = runtime_field("attention_backend")
    activation_checkpointing: str = runtime_field("activation_checkpointing")
    compile: bool = runtime_field("compile")

    def architecture(self) -> ModelConfig:
        return ModelConfig(**self.architecture_dict())

    def runtime(self) -> ModelRuntime:
        return ModelRuntime(**{k: getattr(self, k) for k in ModelRuntime.__dataclass_fields__})

    @classmethod
    def of(cls, architecture: ModelConfig, runtime: ModelRuntime) -> ModelSection:
        """A section from an architecture (e.g. a checkpoint's) and this run's runtime switches."""
        return cls(**architecture.architecture_dict(), **{k: getattr(runtime, k) for k in ModelRuntime.__dataclass_fields__})


@dataclass
class TrainDataConfig:
    config: str | None = field(None, help="path of a data config (configs/data/*.yaml) whose prepared shards to train on")
    weights: dict[str, float] | None = field(None, help="override source weights of the data config: {source: weight}")
    document_masking: bool = field(True, help="attention does not cross document boundaries inside a packed sequence")
    num_workers: int = field(0, help="batches a background thread keeps ready ahead of the training loop (0 = none)", min=0)
    verify: bool = field(False, help="check every training shard's sha256 against the manifest before training "
                                     "(reads the data once; sizes are always checked)")

    def check(self) -> list[str]:
        bad = {k: v for k, v in (self.weights or {}).items() if not (isinstance(v, (int, float)) and 0 <= v < float("inf"))}
        if bad:
            return [f"weights: {bad} must be finite and >= 0 (0 = prepared but not sampled); fix data.weights"]
        return []


@dataclass
class TrainConfig:
    run_name: str = field("run", help="name of the run; checkpoints go to <checkpoint.dir>/<run_name>")
    seq_len: int = field(512, help="tokens per training sequence (<= model.max_seq_len)", min=1)
    micro_batch_size: int = field(4, help="sequences per rank per forward/backward", min=1)
    global_batch_size: int = field(32, help="sequences per optimizer step; = micro x accumulation x data-parallel ranks", min=1)
    max_steps: int = field(1000, help="optimizer steps to train", min=1)
    epochs: float = field(0.0, help="fine-tuning only: passes over the training examples instead of max_steps; "
                                    "steps = ceil(epochs x examples / global_batch_size) (0 = off, use max_steps)", min=0)
    seed: int = field(1234, help="seed for init, data order and dropout")
    precision: str = field("bf16", help="fp32, bf16 or fp16 (fp16 only on GPU, with loss scaling)", choices=PRECISIONS)
    zero_stage: int = field(1, help="DeepSpeed ZeRO stage 0-3", choices=(0, 1, 2, 3))
    offload_optimizer: bool = field(False, help="keep optimizer states in CPU memory (ZeRO 1-3)")
    offload_params: bool = field(False, help="keep parameters in CPU memory (ZeRO 3 only)")
    zero_hpz_partition_size: int = field(1, help="ZeRO++ hierarchical partitioning (ZeRO 3 only): also keep a secondary "
                                                 "copy of the parameters partitioned over groups of this many ranks "
                                                 "(the GPUs of one node), so the backward pass gathers inside a node "
                                                 "instead of across nodes; must divide the world size (1 = off)", min=1)
    grad_clip: float = field(1.0, help="clip the global gradient norm to this (0 = off)", min=0)
    eval_every: int = field(0, help="run validation every N steps (0 = only at the end)", min=0)
    eval_batches: int = field(8, help="micro-batches per source for validation", min=1)
    max_consecutive_nonfinite: int = field(5, help="stop after this many steps in a row with non-finite loss or gradients", min=1)
    spike_zscore: float = field(0.0, help="log a loss spike when loss is this many std above the recent mean (0 = off)", min=0)
    skip_spikes: bool = field(False, help="skip the optimizer step on a detected loss spike")
    collective_timeout_s: int = field(600, help="seconds before a blocked collective (a dead rank) aborts the job", min=1)
    stall_timeout_s: float = field(300.0, help="a rank waiting this long for a rank that makes no progress stops the job "
                                              "at once with exit code 3, naming the stalled rank, host, step and phase "
                                              "(keep it below collective_timeout_s; 0 = off)", min=0)
    exit_after_steps: int = field(0, help="stop (with a checkpoint) after this many steps in this invocation; 0 = off", min=0)
    exit_after_minutes: float = field(0.0, help="stop (with a checkpoint) after this many minutes of wall time; 0 = off", min=0)
    device: str = field("auto", help="auto (cuda if available, else cpu), cuda or cpu", choices=("auto", "cuda", "cpu"))

    def check(self) -> list[str]:
        out = []
        if self.offload_params and self.zero_stage != 3:
            out.append("offload_params: parameter offload needs zero_stage 3; set train.zero_stage=3 or offload_params=false")
        if self.zero_hpz_partition_size > 1 and self.zero_stage != 3:
            out.append(f"zero_hpz_partition_size: {self.zero_hpz_partition_size} needs zero_stage 3 (hierarchical "
                       f"partitioning splits ZeRO-3's parameter partitions); set train.zero_stage=3 or "
                       f"zero_hpz_partition_size=1")
        if self.offload_optimizer and self.zero_stage == 0:
            out.append("offload_optimizer: optimizer offload needs zero_stage 1, 2 or 3")
        return out


# fine-tuning caps optim.warmup_steps at this fraction of the run's steps (a recipe's pretraining-sized
# warmup would otherwise spend most of a short fine-tune below the peak learning rate)
FINETUNE_WARMUP_FRACTION = 0.1


@dataclass
class OptimConfig:
    lr: float = field(3e-4, help="peak learning rate", gt=0)
    min_lr: float = field(3e-5, help="final learning rate of cosine/linear/wsd decay", min=0)
    weight_decay: float = field(0.1, help="AdamW decoupled weight decay", min=0)
    decay_norms_and_embeddings: bool = field(False, help="also decay norm weights, biases and embeddings")
    beta1: float = field(0.9, help="Adam beta1", min=0)
    beta2: float = field(0.95, help="Adam beta2", min=0)
    eps: float = field(1e-8, help="Adam epsilon", gt=0)
    schedule: str = field("cosine", help="cosine, linear, constant or wsd (warmup-stable-decay)", choices=SCHEDULES)
    warmup_steps: int = field(100, help=f"linear warmup steps (fine-tuning clips it to {FINETUNE_WARMUP_FRACTION:.0%} of the run, with a notice)", min=0)
    decay_fraction: float = field(0.2, help="wsd: fraction of steps in the final decay", min=0)

    def check(self) -> list[str]:
        out = []
        if self.min_lr > self.lr:
            out.append(f"min_lr: {self.min_lr} is above lr {self.lr}; set min_lr <= lr")
        for name in ("beta1", "beta2"):
            if getattr(self, name) >= 1:
                out.append(f"{name}: must be < 1, got {getattr(self, name)}")
        if self.decay_fraction > 1:
            out.append(f"decay_fraction: must be <= 1, got {self.decay_fraction}")
        return out


@dataclass
class CheckpointConfig:
    dir: str = field("checkpoints", help="root directory; a run writes <dir>/<run_name>/step_<N>/")
    every: int = field(0, help="save every N steps (0 = only at the end)", min=0)
    keep_last: int = field(3, help="keep this many most recent checkpoints (0 = keep all)", min=0)
    resume: str = field("auto", help="auto (from <run dir>/latest if present), never, or a checkpoint path")
    consolidate: str = field("auto", help="when to also write consolidated weights (model.safetensors, streamed layer "
                                          "by layer) beside the engine's states: every save, final (the save at "
                                          "train.max_steps), never (`llmtrain export` consolidates from the states), "
                                          "or auto (every up to 2B parameters, else final)",
                             choices=("auto", "every", "final", "never"))
    trust_pickle: bool = field(False, help="read DeepSpeed's *.pt states with full pickle on resume (default: torch's "
                                           "restricted unpickler); only for checkpoints you trust")


@dataclass
class LoggingConfig:
    log_every: int = field(10, help="print and record metrics every N steps", min=1)
    tensorboard: bool = field(True, help="write TensorBoard event files to <run dir>/tensorboard")
    jsonl: bool = field(True, help="write metrics to <run dir>/metrics.jsonl")
    wandb: bool = field(False, help="log to Weights & Biases (set WANDB_MODE=offline without network)")
    plot: bool = field(True, help="write <run dir>/loss.png at the end")
    peak_tflops: float | None = field(None, help="peak bf16 TFLOP/s per device for MFU (null = from the device name)")
    progress_bar: bool = field(True, help="on a terminal, a progress bar under the periodic lines; in logs, "
                                          "Slurm output and pipes only the lines (false = lines everywhere)")


@dataclass
class FinetuneConfig:
    task: str = field("sft", help="the fine-tuning objective, a module of llmtrain/objectives: sft (loss on "
                                  "assistant/response tokens) or classification")
    init: str | None = field(None, help="llmtrain checkpoint (run dir or step dir) or a local Hugging Face causal-LM directory")
    dataset: str = field("", help="a named set (sft: chatterbot; classification: rotten_tomatoes), a .jsonl/.json/.csv/"
                                  ".parquet/.arrow file, a save_to_disk directory, or a directory of train/validation/"
                                  "test files in those formats")
    record_format: str = field("auto", help="sft: row layout: prompt_response, messages (OpenAI role/content), sharegpt "
                                            "(conversations of from/value), alpaca (instruction/input/output); auto "
                                            "picks per row from the fields present",
                               choices=("auto", "prompt_response", "messages", "sharegpt", "alpaca"))
    prompt_field: str = field("prompt", help="sft: column with the prompt of prompt/response rows")
    response_field: str = field("response", help="sft: column with the response of prompt/response rows")
    messages_field: str | None = field(None, help="sft: column with the conversation (null = messages for OpenAI "
                                                  "rows, conversations for ShareGPT rows)")
    csv_encoding: str = field("utf-8", help="text encoding of .csv files (e.g. utf-8-sig, latin-1, cp1252)")
    text_field: str = field("text", help="classification: column with the text")
    label_field: str = field("label", help="classification: column with the label")
    labels: list[str] | None = field(None, help="classification: label names in index order (null = sorted distinct labels)")
    pooling: str = field("last", help="classification: last (final non-pad token) or mean", choices=("last", "mean"))
    packing: bool = field(False, help="sft: pack several examples per sequence with document masking")
    chat_template: str = field("<|user|>\n{prompt}\n<|assistant|>\n", help="sft: prompt format used when the tokenizer "
                               "has no Jinja chat template of its own; {prompt} is replaced by the user's text")
    validation_fraction: float = field(0.1, help="held-out fraction when the dataset has no split", min=0)
    lora: LoraConfig = field(default_factory=LoraConfig, help="low-rank adaptation settings")
    hf_module: bool = field(False, help="train a Hugging Face directory of a native family (Llama, Mistral, Qwen2, "
                                        "Qwen3) as the transformers module itself, as every other causal LM is")


@dataclass
class EvalConfig:
    perplexity: bool = field(True, help="perplexity per source on the held-out shards")
    batches: int = field(16, help="micro-batches per source for perplexity", min=1)
    tasks: list[str] = field(default_factory=list, help="what `llmtrain eval` runs when --tasks is not given: perplexity, "
                                                        "samples, classification, sft (empty = all that apply)")
    prompts: list[str] = field(default_factory=list, help="prompts to generate samples for")
    max_new_tokens: int = field(64, help="tokens to generate per prompt", min=1)
    repetition_penalty: float = field(1.0, help="greedy samples: > 1 lowers the logits of tokens already in the text, "
                                                "as transformers' repetition_penalty (1 = off)", gt=0)
    lm_eval_tasks: list[str] = field(default_factory=list, help="lm-eval-harness tasks from configs/eval/ to run via HF export")
