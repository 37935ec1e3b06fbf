"""Bad input to the commands that read checkpoints, model directories and configs: each case is one
`llmtrain <cmd>: error:` paragraph naming the culprit (exit 2, no traceback), and no file is written or
changed (sha256, size and mtime of every file under the test's directory, nothing new).

The commands run in this process (``llmtrain.cli.main``) on copies of the finished 2-step run of
conftest.py and of its Hugging Face export; the training cases fail in config validation, before
anything starts.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from clitools import ROOT, run_cli, tiny_train_args
from faultkit import snapshot
from payload import plant

LONG_PROMPT = "word " * 400  # ~800 tokens; the tiny model's max_seq_len is 128


@pytest.fixture(scope="module")
def hf_export(base_run, tmp_path_factory) -> Path:
    from llmtrain.cli import main

    out = tmp_path_factory.mktemp("hf") / "hf"
    assert main(["export", "--checkpoint", str(base_run / "t"), "--out", str(out), "--dtype", "fp32"]) == 0
    return out


class Ctx:
    def __init__(self, root: Path, base_run: Path, hf: Path, tiny_data: Path) -> None:
        self.root, self.data = root, tiny_data
        self.run = root / "run"
        shutil.copytree(base_run / "t", self.run)
        self.step = self.run / "step_000002"
        self.hf = root / "hf"
        shutil.copytree(hf, self.hf)

    def train(self, *sets: str) -> list[str]:
        return tiny_train_args(self.data, self.root / "ckpt", *sets)


Case = Callable[[Ctx], tuple[list[str], str]]


# ---- checkpoints and llmtrain model directories -----------------------------------------------
def _prompt_too_long_generate(c: Ctx):
    return ["generate", "--checkpoint", str(c.run), "--prompt", "hi", "--prompt", LONG_PROMPT], \
        "tokens (with BOS and any chat template) but the model accepts at most 128 tokens in all (its max_seq_len)"


def _prompt_too_long_eval(c: Ctx):
    return ["eval", "--checkpoint", str(c.run), "--prompt", LONG_PROMPT], "shorten the prompt to at most 127 tokens"


def _corrupt_tokenizer(c: Ctx):
    (c.step / "tokenizer" / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    return ["generate", "--checkpoint", str(c.run), "--prompt", "hi"], \
        f"{c.step / 'tokenizer' / 'tokenizer.model'} is not a readable SentencePiece model"


def _corrupt_tokenizer_export(c: Ctx):
    (c.step / "tokenizer" / "tokenizer.model").write_bytes(b"")
    return ["export", "--checkpoint", str(c.step), "--out", str(c.root / "out")], \
        f"{c.step / 'tokenizer' / 'tokenizer.model'} is not a readable SentencePiece model"


def _no_tokenizer(c: Ctx):
    shutil.rmtree(c.step / "tokenizer")
    return ["generate", "--checkpoint", str(c.step), "--prompt", "hi"], f"{c.step} has no tokenizer beside the weights"


def _model_yaml_invalid(c: Ctx):
    (c.step / "model.yaml").write_text("dim: [\n")
    return ["generate", "--checkpoint", str(c.step), "--prompt", "hi"], f"{c.step / 'model.yaml'} is not valid YAML"


def _model_yaml_missing(c: Ctx):
    (c.step / "model.yaml").unlink()
    return ["eval", "--checkpoint", str(c.step)], f"{c.step / 'model.yaml'} is missing"


def _weights_renamed(c: Ctx):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(c.step / "model.safetensors"))
    sd["x.tok_embeddings.weight"] = sd.pop("tok_embeddings.weight")
    save_file(sd, str(c.step / "model.safetensors"))
    return ["generate", "--checkpoint", str(c.step), "--prompt", "hi"], \
        "do not fit the model config: missing ['tok_embeddings.weight'], unexpected ['x.tok_embeddings.weight']"


def _weights_truncated(c: Ctx):
    os.truncate(c.step / "model.safetensors", 1000)
    return ["export", "--checkpoint", str(c.step), "--out", str(c.root / "out")], \
        f"{c.step / 'model.safetensors'} is truncated or damaged"


def _no_such_checkpoint(c: Ctx):
    return ["generate", "--checkpoint", str(c.root / "nowhere"), "--prompt", "hi"], f"{c.root / 'nowhere'} does not exist"


def _checkpoint_is_a_file(c: Ctx):
    return ["eval", "--checkpoint", str(c.step / "config.yaml")], \
        f"{c.step / 'config.yaml'} is neither a step directory (no trainer_state.json) nor a run directory"


def _latest_empty(c: Ctx):
    (c.run / "latest").write_text("\n")
    return ["generate", "--checkpoint", str(c.run), "--prompt", "hi"], \
        f"{c.run / 'latest'} holds '', not a step directory name (e.g. step_000100); it is damaged. Resume " \
        f"explicitly with --resume {c.step}"


def _latest_names_a_missing_step(c: Ctx):
    (c.run / "latest").write_text("step_000009")
    return ["export", "--checkpoint", str(c.run), "--out", str(c.root / "out")], \
        f"{c.run / 'latest'} names step_000009, but {c.run / 'step_000009' / 'trainer_state.json'} is missing"


def _export_out_not_empty(c: Ctx):
    return ["export", "--checkpoint", str(c.run), "--out", str(c.hf)], f"{c.hf} exists and is not empty"


def _export_out_is_a_file(c: Ctx):
    return ["export", "--checkpoint", str(c.run), "--out", str(c.step / "model.yaml")], \
        f"--out {c.step / 'model.yaml'} is a file, not a directory"


def _export_without_weights(c: Ctx):
    (c.step / "model.safetensors").unlink()
    return ["export", "--checkpoint", str(c.step), "--out", str(c.root / "out")], \
        f"{c.step / 'model.safetensors'} is missing; {c.step} holds only DeepSpeed's states"


def _generate_top_p(c: Ctx):
    return ["generate", "--checkpoint", str(c.run), "--prompt", "hi", "--top-p", "2"], "0 < --top-p <= 1"


def _generate_no_new_tokens(c: Ctx):
    return ["generate", "--checkpoint", str(c.run), "--prompt", "hi", "--max-new-tokens", "0"], "--max-new-tokens >= 1"


def _eval_unknown_task(c: Ctx):
    return ["eval", "--checkpoint", str(c.run), "--tasks", "perplexty"], \
        "--tasks / eval.tasks: unknown task(s) ['perplexty']; choose from"


# ---- Hugging Face directories -------------------------------------------------------------------
def _hf_config_invalid_json(c: Ctx):
    (c.hf / "config.json").write_text('{"model_type":')
    return ["import-hf", "--hf-dir", str(c.hf), "--out", str(c.root / "out")], f"{c.hf / 'config.json'} is unreadable"


def _hf_config_not_an_object(c: Ctx):
    (c.hf / "config.json").write_text("[1, 2]")
    return ["generate", "--checkpoint", str(c.hf), "--prompt", "hi"], \
        f"{c.hf / 'config.json'} must hold a JSON object (a transformers config), got list"


def _hf_unknown_family(c: Ctx):
    (c.hf / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    return ["import-hf", "--hf-dir", str(c.hf), "--out", str(c.root / "out")], "model_type='gpt_neox'"


def _hf_no_weights(c: Ctx):
    (c.hf / "model.safetensors").unlink()
    return ["import-hf", "--hf-dir", str(c.hf), "--out", str(c.root / "out")], \
        f"{c.hf} has no model.safetensors, sharded safetensors index or pytorch_model.bin"


def _hf_truncated_weights(c: Ctx):
    os.truncate(c.hf / "model.safetensors", 1000)
    return ["generate", "--checkpoint", str(c.hf), "--prompt", "hi"], \
        f"{c.hf / 'model.safetensors'} is truncated or damaged (SafetensorError"


def _hf_pickle_only_weights(c: Ctx):
    from safetensors.torch import load_file

    sd = load_file(str(c.hf / "model.safetensors"))
    (c.hf / "model.safetensors").unlink()
    torch.save(sd, c.hf / "pytorch_model.bin")
    plant(c.hf / "pytorch_model.bin", c.root / "pwned")  # never touched: the file is refused
    return ["import-hf", "--hf-dir", str(c.hf), "--out", str(c.root / "out")], \
        f"{c.hf / 'pytorch_model.bin'} holds pickled objects beyond tensors, which torch's restricted unpickler " \
        f"refuses (nothing in it ran; fully unpickling it could run code). Convert the model to safetensors"


def _hf_index_lists_a_missing_shard(c: Ctx):
    (c.hf / "model.safetensors").rename(c.hf / "model-00001-of-00002.safetensors")
    (c.hf / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    return ["import-hf", "--hf-dir", str(c.hf), "--out", str(c.root / "out")], \
        f"{c.hf / 'model.safetensors.index.json'} lists model-00002-of-00002.safetensors but {c.hf} lacks it"


def _hf_index_invalid(c: Ctx):
    (c.hf / "model.safetensors").rename(c.hf / "model-00001-of-00001.safetensors")
    (c.hf / "model.safetensors.index.json").write_text('{"metadata": {}}')
    return ["generate", "--checkpoint", str(c.hf), "--prompt", "hi"], \
        f"{c.hf / 'model.safetensors.index.json'} is unreadable or has no weight_map"


def _import_into_its_input(c: Ctx):
    return ["import-hf", "--hf-dir", str(c.hf), "--out", str(c.hf / "sub")], f"overlaps --hf-dir {c.hf}"


# ---- configs and --set (refused in validation, before any process starts) ----------------------
def _set_without_equals(c: Ctx):
    return [*c.train(), "--set", "train.seed"], "--set 'train.seed': expected KEY=VALUE"


def _set_empty_key(c: Ctx):
    return [*c.train(), "--set", "=3"], "--set '=3': the key is empty or has an empty part"


def _set_empty_key_part(c: Ctx):
    return [*c.train(), "--set", "train..seed=3"], "--set 'train..seed=3': the key is empty or has an empty part"


def _config_is_a_directory(c: Ctx):
    return ["train", "--config", str(c.root)], f"config file {c.root} is a directory; pass a YAML file"


def _config_invalid_yaml(c: Ctx):
    (c.root / "bad.yaml").write_text("train: [1\n")
    return ["train", "--config", str(c.root / "bad.yaml")], f"{c.root / 'bad.yaml'} is not valid YAML"


def _config_is_a_list(c: Ctx):
    (c.root / "list.yaml").write_text("- 1\n")
    return ["train", "--config", str(c.root / "list.yaml")], f"{c.root / 'list.yaml'} must hold a mapping of sections, got list"


def _negative_micro_batch(c: Ctx):
    return c.train("train.micro_batch_size=-2"), "train.micro_batch_size: must be >= 1, got -2"


def _zero_global_batch(c: Ctx):
    return c.train("train.global_batch_size=0"), "train.global_batch_size: must be >= 1, got 0"


def _zero_steps(c: Ctx):
    return c.train("train.max_steps=0"), "train.max_steps: must be >= 1, got 0"


def _unknown_precision(c: Ctx):
    return c.train("train.precision=fp64"), "train.precision: 'fp64' is not one of"


def _bool_as_text(c: Ctx):
    return c.train("checkpoint.trust_pickle=maybe"), "checkpoint.trust_pickle: expected true or false, got 'maybe'"


def _data_config_is_a_directory(c: Ctx):
    return c.train(f"data.config={c.root}"), f"config file {c.root} is a directory"


def _seq_len_above_model(c: Ctx):
    return c.train("train.seq_len=4096"), "train.seq_len: 4096 is above model.max_seq_len 128"


def _finetune_init_missing(c: Ctx):
    return ["finetune", "--config", str(ROOT / "configs" / "finetune" / "sft.yaml"), "--init", str(c.root / "nowhere"),
            "--set", f"checkpoint.dir={c.root / 'ft'}"], f"{c.root / 'nowhere'} does not exist"


CASES: list[Case] = [
    _prompt_too_long_generate, _prompt_too_long_eval, _corrupt_tokenizer, _corrupt_tokenizer_export, _no_tokenizer,
    _model_yaml_invalid, _model_yaml_missing, _weights_renamed, _weights_truncated, _no_such_checkpoint,
    _checkpoint_is_a_file, _latest_empty, _latest_names_a_missing_step, _export_out_not_empty, _export_out_is_a_file,
    _export_without_weights, _generate_top_p, _generate_no_new_tokens, _eval_unknown_task,
    _hf_config_invalid_json, _hf_config_not_an_object, _hf_unknown_family, _hf_no_weights, _hf_truncated_weights,
    _hf_pickle_only_weights, _hf_index_lists_a_missing_shard, _hf_index_invalid, _import_into_its_input,
    _set_without_equals, _set_empty_key, _set_empty_key_part, _config_is_a_directory, _config_invalid_yaml,
    _config_is_a_list, _negative_micro_batch, _zero_global_batch, _zero_steps, _unknown_precision, _bool_as_text,
    _seq_len_above_model,
]


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__.strip("_"))
def test_bad_files_and_arguments(make: Case, base_run, hf_export, tiny_data, tmp_path, capsys, monkeypatch):
    from llmtrain.cli import main

    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    ctx = Ctx(tmp_path, base_run, hf_export, tiny_data)
    argv, expected = make(ctx)
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert f"llmtrain {argv[0]}: error: " in err and expected in err, err
    assert snapshot(tmp_path) == before  # nothing changed, nothing new (no eval report, no --out)
    assert not (tmp_path / "pwned").exists()


def _trainer_state_lacks_keys(c: Ctx):
    (c.step / "trainer_state.json").write_text(json.dumps({"step": 2}))
    shutil.copytree(c.run, c.root / "ckpt" / "t")
    state = c.root / "ckpt" / "t" / "step_000002" / "trainer_state.json"
    return c.train("train.zero_stage=1", "train.max_steps=4"), \
        f"{state} lacks consumed_tokens, dp_size, loader; the checkpoint is damaged"


# these are found once the process group exists (in-process, the error exit would end the test process)
@pytest.mark.parametrize("make", [_data_config_is_a_directory, _finetune_init_missing, _trainer_state_lacks_keys],
                         ids=lambda f: f.__name__.strip("_"))
def test_bad_paths_found_after_start(make: Case, base_run, hf_export, tiny_data, tmp_path):
    ctx = Ctx(tmp_path, base_run, hf_export, tiny_data)
    argv, expected = make(ctx)
    before = snapshot(tmp_path)
    proc = run_cli(argv, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"llmtrain {argv[0]}: error: " in proc.stderr and expected in proc.stderr, proc.stderr[-3000:]
    assert snapshot(tmp_path) == before
