import json

import torch

from llmtrain.config.roots import EvalRunConfig
from llmtrain.config.schema import EvalConfig, FinetuneConfig, TrainConfig
from llmtrain.eval.suite import objective_name, run_evaluation
from llmtrain.model.heads import SequenceClassifier
from llmtrain.modelio.layout import write_chat_template
from llmtrain.modelio.load import load_model
from llmtrain.modelio.model_dir import save_model_dir


def _save(model, out, tok_dir, extra_sd=None):
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("rope.")}
    save_model_dir(out, model.cfg, {**sd, **(extra_sd or {})}, tokenizer_files=sorted(p for p in tok_dir.iterdir() if p.is_file()))
    return out


def test_sft_model_report_with_loss_samples_and_template(tiny_model, sp_tokenizer_dir, tmp_path):
    model = tiny_model()
    rows = [{"prompt": f"what is {i}?", "response": f"it is {i}."} for i in range(30)]
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    mdir = _save(model, tmp_path / "m", sp_tokenizer_dir)
    write_chat_template(mdir, "U: {prompt}\nA:")
    loaded = load_model(mdir)
    assert loaded.chat_template == "U: {prompt}\nA:" and loaded.classifier is None
    cfg = EvalRunConfig(train=TrainConfig(seq_len=64, micro_batch_size=4),
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
    cfg = EvalRunConfig(train=TrainConfig(seq_len=48, micro_batch_size=64),
                    finetune=FinetuneConfig(task="classification", dataset="rotten_tomatoes"))
    res = run_evaluation(loaded, cfg, tmp_path / "eval")
    assert set(res["classification"]) == {"fine-tuned", "majority", "tfidf_logreg"}
    n = res["classification"]["majority"]["n"]
    assert res["classification"]["fine-tuned"]["n"] == n > 800
    assert (tmp_path / "eval" / "classification.png").is_file()



def test_the_objective_is_the_heads_for_a_classifier_else_the_configs():
    class Loaded:  # the two fields objective_name reads
        classifier, head = None, {}

    cfg = EvalRunConfig(finetune=FinetuneConfig(task="sft"))
    assert objective_name(Loaded(), cfg) == "sft"
    Loaded.classifier, Loaded.head = object(), {"task": "classification"}
    assert objective_name(Loaded(), cfg) == "classification"
    Loaded.head = {}  # head.json written before it named its task
    assert objective_name(Loaded(), cfg) == "classification"
