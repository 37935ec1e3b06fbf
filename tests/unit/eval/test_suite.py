import json

import torch

from llmtrain.config.schema import EvalConfig, FinetuneConfig, RunConfig, TrainConfig
from llmtrain.data.sft import save_chat_template
from llmtrain.eval.load import load_model
from llmtrain.eval.suite import finetune_evaluator, run_evaluation
from llmtrain.model.heads import SequenceClassifier
from llmtrain.model.model_dir import save_model_dir


def _save(model, out, tok_dir, extra_sd=None):
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("rope.")}
    save_model_dir(out, model.cfg, {**sd, **(extra_sd or {})}, tokenizer_files=sorted(p for p in tok_dir.iterdir() if p.is_file()))
    return out


def test_sft_model_report_with_loss_samples_and_template(tiny_model, sp_tokenizer_dir, tmp_path):
    model = tiny_model()
    rows = [{"prompt": f"what is {i}?", "response": f"it is {i}."} for i in range(30)]
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    mdir = _save(model, tmp_path / "m", sp_tokenizer_dir)
    save_chat_template("U: {prompt}\nA:", mdir)
    loaded = load_model(mdir)
    assert loaded.chat_template == "U: {prompt}\nA:" and loaded.classifier is None
    cfg = RunConfig(train=TrainConfig(seq_len=64, micro_batch_size=4),
                    finetune=FinetuneConfig(task="sft", dataset=str(tmp_path / "chat.jsonl"), validation_fraction=0.3),
                    eval=EvalConfig(prompts=["what is 3?"], max_new_tokens=5))
    res = run_evaluation(loaded, cfg, tmp_path / "eval", plots=False)
    val = res["sft"]["validation"]
    # an untrained model over 512 pieces: loss near ln(512) = 6.24
    assert 5.5 < val["loss"] < 7.0 and val["tokens"] > 20
    assert len(res["samples"]) == 1 and isinstance(res["samples"][0]["completion"], str)
    assert (tmp_path / "eval" / "eval.md").read_text().count("## ") == 2


def test_classifier_checkpoint_is_evaluated_beside_baselines(tiny_model, sp_tokenizer_dir, tmp_path):
    torch.manual_seed(0)
    clf = SequenceClassifier(tiny_model(), 2, pooling="last", pad_id=3)
    mdir = _save(clf.backbone, tmp_path / "clf", sp_tokenizer_dir, {f"score.{k}": v for k, v in clf.score.state_dict().items()})
    (mdir / "head.json").write_text(json.dumps({"label_names": ["rotten", "fresh"], "pooling": "last", "pad_id": 3}))
    loaded = load_model(mdir)
    assert loaded.classifier is not None and loaded.head["num_labels"] == 2
    tokens = torch.tensor([[1, 40, 50, 2]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.classifier(tokens), clf.eval()(tokens))
    cfg = RunConfig(train=TrainConfig(seq_len=48, micro_batch_size=64),
                    finetune=FinetuneConfig(task="classification", dataset="rotten_tomatoes"))
    res = run_evaluation(loaded, cfg, tmp_path / "eval")
    assert set(res["classification"]) == {"fine-tuned", "majority", "tfidf_logreg"}
    n = res["classification"]["majority"]["n"]
    assert res["classification"]["fine-tuned"]["n"] == n > 800
    assert (tmp_path / "eval" / "classification.png").is_file()


def test_finetune_evaluator_reads_through_wrappers(tiny_model):
    from llmtrain.data.finetune_data import FinetuneData

    class Wrapper(torch.nn.Module):  # stands in for the trainer's LossModule inside an engine
        def __init__(self, model):
            super().__init__()
            self.model, self.loss_fn = model, None

    model = tiny_model()
    ex = [{"input_ids": [1, 5, 6], "labels": [-100, 6, 2]}, {"input_ids": [1, 7], "labels": [7, 2]}]
    data = FinetuneData("sft", {"train": ex, "validation": ex, "test": []}, {})
    evaluate = finetune_evaluator(data, micro_batch_size=2, pad_id=3, device=torch.device("cpu"))
    out = evaluate(Wrapper(model))
    assert set(out) == {"val/loss", "val/ppl"} and out["val/loss"] > 0
