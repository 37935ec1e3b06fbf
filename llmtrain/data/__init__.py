"""Training-side data: the shard format (shards.py), tokenizers, mixtures/blending, the pretraining loader.

Import submodules directly (``from llmtrain.data.loader import PretrainLoader``); this package
imports nothing heavy so that ``llmtrain --help`` stays fast.
"""
