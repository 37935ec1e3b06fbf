"""llmtrain: pretrain and fine-tune decoder-only language models under DeepSpeed ZeRO."""

__version__ = "0.1.0"
