"""Model I/O: weights on disk, directory layouts, ``load_model`` and the Hugging Face adapters.

- :mod:`~llmtrain.modelio.layout`: every file name, finding and reading checkpoint directories
- :mod:`~llmtrain.modelio.weights`: the one safetensors reader/writer (tied embeddings handled there)
- :mod:`~llmtrain.modelio.model_dir`: llmtrain model directories (``llmtrain import-hf`` output)
- :mod:`~llmtrain.modelio.hf`: Hugging Face directories, one module per family (config + key maps)
- :mod:`~llmtrain.modelio.load`: ``load_model`` from any of those, with tokenizer, template and head

Imports only the model, config, errors, fsutil and the tokenizer; submodules are imported explicitly
so that reading a file name does not import torch.
"""
