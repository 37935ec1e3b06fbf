import torch

from llmtrain.model.config import ModelConfig
from llmtrain.model.heads import SequenceClassifier
from llmtrain.model.runtime import ModelRuntime, apply_runtime
from llmtrain.model.transformer import Transformer

CFG = ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, multiple_of=16, max_seq_len=32)
PAD = 0


def _clf(pooling: str) -> SequenceClassifier:
    torch.manual_seed(0)
    clf = SequenceClassifier(Transformer(CFG), 3, pooling=pooling, pad_id=PAD)
    return apply_runtime(clf, ModelRuntime(attention_backend="eager")).eval()


def test_last_pooling_reads_the_final_real_token_and_ignores_right_padding():
    clf = _clf("last")
    short = torch.tensor([[5, 6, 7]])
    padded = torch.tensor([[5, 6, 7, PAD, PAD], [9, 8, 7, 6, 5]])
    with torch.no_grad():
        hidden = clf.backbone(short, return_hidden=True)
        expected = clf.score(hidden[:, -1])
        got = clf(padded)
    torch.testing.assert_close(got[:1], expected, rtol=1e-5, atol=1e-6)
    assert got.shape == (2, 3)


def test_mean_pooling_averages_real_tokens_only():
    clf = _clf("mean")
    with torch.no_grad():
        hidden = clf.backbone(torch.tensor([[5, 6, 7]]), return_hidden=True)
        expected = clf.score(hidden.mean(1))
        got = clf(torch.tensor([[5, 6, 7, PAD]]))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_head_survives_save_and_load(tmp_path):
    clf = _clf("last")
    with torch.no_grad():
        clf.score.weight.normal_()
    torch.save(clf.state_dict(), tmp_path / "clf.pt")
    sd = torch.load(tmp_path / "clf.pt")
    assert "score.weight" in sd and "score.bias" not in sd  # bias-free, like HF's *ForSequenceClassification
    assert sd["score.weight"].shape == (3, 32)
    torch.manual_seed(5)
    other = SequenceClassifier(Transformer(CFG), 3, pooling="last", pad_id=PAD).eval()
    other.load_state_dict(sd)
    tokens = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(other(tokens), clf(tokens))
    assert set(clf.head_state_dict()) == {"score.weight"}
    old = SequenceClassifier(Transformer(CFG), 3, bias=True)  # how heads were built before
    assert set(old.head_state_dict()) == {"score.weight", "score.bias"} and not old.score.bias.any()
