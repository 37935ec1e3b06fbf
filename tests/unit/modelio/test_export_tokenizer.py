"""The exported tokenizer encodes exactly as training did; generation_config.json carries the special ids."""

import json

import pytest
import torch
from transformers import AutoTokenizer

from llmtrain.data.classification import encode_classification
from llmtrain.data.sft import encode_example
from llmtrain.data.tokenizer import load_tokenizer
from llmtrain.errors import CheckpointError
from llmtrain.modelio.hf import export_hf

TEXTS = ["ROMEO:", "JULIET: O Romeo, Romeo! wherefore art thou Romeo?", "  def f(x):\n    return x + 1\n",
         "<s>not a BOS</s>", "digits 12345 and é 日本", ""]
WORDS = ["<unk>", "<|endoftext|>", "<|im_end|>", "hello", "world", "ROMEO", ":", "a", "b", "good", "bad"]


@pytest.fixture(scope="module")
def sp_dir(tmp_path_factory):
    from data_prep.tokenizer import train_tokenizer

    lines = [f"ROMEO: line {i} of the play, with JULIET and Romeo; def f(x): return x + {i}" for i in range(300)]
    out = tmp_path_factory.mktemp("sp")
    train_tokenizer(lines, out, vocab_size=320, threads=1)
    return out


def qwen_like(out, generation_config=None):
    """A BOS-less word-level tokenizer (like Qwen's: eos and pad, no bos_token)."""
    from tokenizers import Tokenizer as FastTokenizer
    from tokenizers import models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    fast = FastTokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    fast.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=fast, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                            unk_token="<unk>").save_pretrained(str(out))
    if generation_config is not None:
        (out / "generation_config.json").write_text(json.dumps(generation_config))
    return out


def _export(make_model, tokenizer_dir, out, vocab_size):
    model = make_model(vocab_size=vocab_size)
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("rope.")}
    return export_hf(sd, model.cfg, out, tokenizer_dir=tokenizer_dir), model


def test_exported_sentencepiece_tokenizer_encodes_like_training(sp_dir, tmp_path, make_model):
    from data_prep.prepare import _encode, _init_worker

    tok = load_tokenizer(sp_dir)
    out, _ = _export(make_model, sp_dir, tmp_path / "hf", tok.vocab_size)
    hf = AutoTokenizer.from_pretrained(out)
    _init_worker(str(sp_dir))
    shard_docs = _encode(TEXTS, "int64")  # what pretraining shards hold: BOS text EOS
    for text, doc in zip(TEXTS, shard_docs, strict=True):
        ids = hf(text).input_ids
        assert ids == doc.tolist()[:-1] == tok.encode_sequence(text), text
        assert ids[0] == 1 and hf.decode(ids, skip_special_tokens=True) == text
    assert hf(TEXTS[:2]).input_ids == [hf(t).input_ids for t in TEXTS[:2]]
    # SFT prompts and classification texts start the same way
    sft = encode_example(tok, "ROMEO:", " hi", seq_len=32)
    assert sft["input_ids"][:len(hf("ROMEO:").input_ids)] == hf("ROMEO:").input_ids
    cls = encode_classification([{"text": TEXTS[1], "label": "a"}], tok, ["a", "b"], text_field="text",
                                label_field="label", seq_len=64)
    assert cls[0]["input_ids"] == hf(TEXTS[1]).input_ids + [2]
    config = json.loads((out / "config.json").read_text())
    gen = json.loads((out / "generation_config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 3)
    assert (gen["bos_token_id"], gen["eos_token_id"], gen["pad_token_id"]) == (1, 2, 3)
    # the export is a tokenizer directory in its own right, with the same policy (a fine-tune can start from it)
    again = load_tokenizer(out)
    assert again.add_bos and all(again.encode_sequence(t) == tok.encode_sequence(t) for t in TEXTS)
    # the source tokenizer directory is left as it was (inputs are read-only)
    assert AutoTokenizer.from_pretrained(sp_dir)("ROMEO:").input_ids == tok.encode("ROMEO:")


def test_bosless_tokenizer_exports_and_encodes_without_bos(tmp_path, make_model):
    tok_dir = qwen_like(tmp_path / "qwen", generation_config={"eos_token_id": [2, 1], "temperature": 0.7,
                                                               "do_sample": True, "bos_token_id": 1,
                                                               "transformers_version": "4.40.0"})
    tok = load_tokenizer(tok_dir)
    assert tok.bos_id == -1 and tok.bos_prefix == [] and tok.eos_id == tok.pad_id == 1
    out, _ = _export(make_model, tok_dir, tmp_path / "hf", 16)
    hf = AutoTokenizer.from_pretrained(out)
    for text in ("ROMEO : hello", "a b good", "bad"):
        assert hf(text).input_ids == tok.encode_sequence(text) == tok.encode(text)
    config = json.loads((out / "config.json").read_text())
    assert "bos_token_id" not in config and (config["eos_token_id"], config["pad_token_id"]) == (1, 1)
    gen = json.loads((out / "generation_config.json").read_text())
    # the base model's decoding defaults and end-of-turn list are kept; training's eos (1) is in it
    assert gen == {"eos_token_id": [2, 1], "temperature": 0.7, "do_sample": True, "bos_token_id": 1,
                   "pad_token_id": 1}
    # nothing prepends a BOS id (-1 used to reach the embedding as an index)
    ex = encode_example(tok, "hello", "world", seq_len=8)
    assert ex == {"input_ids": [3, 4], "labels": [4, 1]}
    cls = encode_classification([{"text": "good a", "label": 1}], tok, ["neg", "pos"], text_field="text",
                                label_field="label", seq_len=8)
    assert cls[0]["input_ids"] == [9, 7, 1]
    # an empty prompt: the first response token is context only, ids and labels stay aligned
    assert encode_example(tok, "", "good bad", seq_len=8) == {"input_ids": [9, 10], "labels": [10, 1]}
    assert encode_example(tok, "a b", "good bad good bad good bad", seq_len=4) == \
        {"input_ids": [7, 8, 9, 10], "labels": [-100, 9, 10, 9]}


def test_bosless_fine_tune_takes_a_step(tmp_path, make_model):
    from llmtrain import objectives
    from llmtrain.config.roots import FinetuneRunConfig
    from llmtrain.config.schema import FinetuneConfig, TrainConfig
    from llmtrain.distributed.env import DistEnv

    hf_dir, _ = _export(make_model, qwen_like(tmp_path / "qwen"), tmp_path / "hf", len(WORDS))
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": "hello a", "response": "good b"}) + "\n" for _ in range(12)))
    cfg = FinetuneRunConfig(train=TrainConfig(seq_len=16, micro_batch_size=2, global_batch_size=2),
                            finetune=FinetuneConfig(task="sft", init=str(hf_dir), dataset=str(data),
                                                    chat_template="{prompt}"))
    env = DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, master_addr="127.0.0.1",
                  master_port=29500, launcher="single")
    task = objectives.get("sft").build_task(cfg, env, torch.device("cpu"))
    batch = task.train_loader.next_batch()
    assert batch["input_ids"][0, :4].tolist() == [3, 7, 9, 8]  # hello a good b: no BOS
    loss, n = task.loss_fn(task.model, batch)
    loss.backward()
    assert torch.isfinite(loss) and int(n) == 2 * 3


def test_a_tokenizer_that_disagrees_with_training_is_refused(sp_dir, tmp_path, monkeypatch):
    from llmtrain.modelio.hf import tokenizer as hf_tokenizer

    monkeypatch.setattr(hf_tokenizer, "_set_template", lambda out, tok, append_eos: None)  # an export that forgets BOS
    (tmp_path / "hf").mkdir()
    with pytest.raises(CheckpointError, match=r"encodes 'ROMEO:' as \[.*\], but training used \[1, "):
        hf_tokenizer.export_tokenizer(sp_dir, tmp_path / "hf")


def test_checkpoint_of_a_fine_tune_from_an_hf_dir_copies_no_weights(sp_dir, tmp_path, make_model):
    """tokenizer/ of every checkpoint holds the tokenizer files, not the base model's (sharded) weights."""
    from llmtrain import objectives
    from llmtrain.config.roots import FinetuneRunConfig
    from llmtrain.config.schema import FinetuneConfig, TrainConfig
    from llmtrain.distributed.env import DistEnv
    from llmtrain.training.checkpointing import CheckpointManager, Progress

    tok = load_tokenizer(sp_dir)
    model = make_model(vocab_size=tok.vocab_size)
    hf_dir = export_hf(model.state_dict(), model.cfg, tmp_path / "hf", tokenizer_dir=sp_dir, max_shard_size="60KB")
    assert len(list(hf_dir.glob("model-*.safetensors"))) > 1
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": "ROMEO:", "response": f" line {i}"}) + "\n" for i in range(8)))
    cfg = FinetuneRunConfig(train=TrainConfig(seq_len=16, micro_batch_size=2, global_batch_size=2),
                            finetune=FinetuneConfig(task="sft", init=str(hf_dir), dataset=str(data)))
    env = DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, master_addr="127.0.0.1",
                  master_port=29500, launcher="single")
    task = objectives.get("sft").build_task(cfg, env, torch.device("cpu"))

    class StatesOnDisk:  # the engine's part of a save: its own state files and the full weights
        config = {"engine": "test"}

        def save(self, run_dir, tag):
            (run_dir / tag).mkdir(parents=True, exist_ok=True)

        def full_state_dict(self):
            return task.model.state_dict()

    manager = CheckpointManager(tmp_path / "run", resume="never", keep_last=2, rank=0, world_size=1)
    step = manager.save(StatesOnDisk(), Progress(step=1), task, run_config=cfg, global_batch_size=2, zero_stage=0,
                        precision="fp32")
    saved = sorted(p.name for p in (step / "tokenizer").iterdir())
    assert saved == sorted(p.name for p in hf_dir.iterdir() if p.name.startswith(("tokenizer", "llmtrain_", "generation")))
    assert not any(n.endswith((".safetensors", ".bin", ".json.index")) or n == "config.json" for n in saved)
    weights = sum(p.stat().st_size for p in hf_dir.glob("model-*.safetensors"))
    assert sum(p.stat().st_size for p in (step / "tokenizer").iterdir()) < weights / 4
    assert load_tokenizer(step / "tokenizer").encode_sequence("ROMEO:") == tok.encode_sequence("ROMEO:")
