"""A Hugging Face *ForSequenceClassification directory loads as our classifier and exports back unchanged."""

import json

import pytest
import torch
import transformers

from llmtrain.cli import main
from llmtrain.errors import CheckpointError
from llmtrain.modelio.load import load_model

PAD = 0
CORE = dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=PAD,
            tie_word_embeddings=False, id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2})
FAMILIES = {"llama": ("LlamaConfig", "LlamaForSequenceClassification", {}),
            "qwen2": ("Qwen2Config", "Qwen2ForSequenceClassification", {})}


def _right_padded() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 101, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    for row, n in ((1, 7), (2, 4)):
        ids[row, n:], mask[row, n:] = PAD, 0
    return ids, mask


@pytest.fixture(params=list(FAMILIES))
def hf_classifier(request, tmp_path):
    conf, cls, over = FAMILIES[request.param]
    torch.manual_seed(0)
    model = getattr(transformers, cls)(getattr(transformers, conf)(**CORE, **over)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # norms and biases away from their init
    model.save_pretrained(tmp_path / "hf")
    return cls, model, tmp_path / "hf"


def test_hf_sequence_classifier_loads_with_equal_logits_and_exports_back(hf_classifier, tmp_path):
    cls, hf, path = hf_classifier
    loaded = load_model(path)
    assert loaded.classifier is not None and loaded.head["label_names"] == ["neg", "neu", "pos"]
    assert loaded.classifier.score.bias is None and loaded.classifier.pad_id == PAD
    assert loaded.hf_config["architectures"] == [cls.replace("ForSequenceClassification", "ForCausalLM")]
    assert "id2label" not in loaded.hf_config  # the backbone's config, should it be fine-tuned as a causal LM
    ids, mask = _right_padded()
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask).logits
        ours = loaded.classifier(ids, mask)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)

    out = tmp_path / "again"
    assert main(["export", "--checkpoint", str(path), "--out", str(out), "--dtype", "fp32"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [cls] and config["pad_token_id"] == PAD
    assert config["id2label"] == {"0": "neg", "1": "neu", "2": "pos"}
    back = getattr(transformers, cls).from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=ids, attention_mask=mask).logits, theirs, rtol=1e-5, atol=1e-5)


def test_a_classifier_config_with_other_score_weights_is_refused(hf_classifier):
    from safetensors.torch import load_file, save_file

    _, _, path = hf_classifier
    weights = load_file(str(path / "model.safetensors"))
    save_file({**weights, "score.bias": torch.zeros(3)}, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"holds? \['score.bias', 'score.weight'\] instead of one bias-free"):
        load_model(path)
