"""Data preparation: tokenizer training, sources, parallel tokenize-to-shards, mixture planning."""
