"""`llmtrain config explain`, `--print-config`, and accelerate's mixed_precision mapped to train.precision or refused."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from llmtrain.cli import build_parser, main
from llmtrain.config.roots import ROOTS

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "configs" / "pretrain" / "tiny.yaml")


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_explain_lists_sections_with_the_commands_that_read_them(capsys):
    code, out, _ = _run(capsys, "config", "explain")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert set(rows) == {f.name for root in ROOTS for f in dataclasses.fields(root)}
    assert rows["train"].endswith("[train, finetune, eval]") and rows["data"].endswith("[train, eval]")
    assert rows["finetune"].endswith("[finetune, eval]")


def test_explain_a_section_shows_type_default_rules_and_help_of_every_key(capsys):
    code, out, _ = _run(capsys, "config", "explain", "train")
    assert code == 0
    assert out.splitlines()[0] == "train: batching, precision, ZeRO  [read by: train, finetune, eval]"
    assert "  train.precision  (str; default bf16; one of fp32, bf16, fp16)\n" \
           "      fp32, bf16 or fp16 (fp16 only on GPU, with loss scaling)\n" in out
    assert "  train.micro_batch_size  (int; default 4; >= 1)\n" in out
    from llmtrain.config.schema import TrainConfig

    assert all(f"  train.{f.name}  (" in out for f in dataclasses.fields(TrainConfig))
    _, nested, _ = _run(capsys, "config", "explain", "finetune.lora")
    assert "  finetune.lora.rank  (int; default 8; >= 1)" in nested
    _, parent, _ = _run(capsys, "config", "explain", "finetune")
    assert "  finetune.lora  (section; default (section))" in parent and "`llmtrain config explain finetune.lora`" in parent


def test_explain_a_key(capsys):
    code, out, _ = _run(capsys, "config", "explain", "train.precision")
    assert code == 0
    assert out.splitlines() == [
        "train.precision  (str; default bf16; one of fp32, bf16, fp16)",
        "    fp32, bf16 or fp16 (fp16 only on GPU, with loss scaling)",
        "    read by: train, finetune, eval (section train: `llmtrain config explain train`)",
        "    set with: --set train.precision=bf16  (or `precision:` under `train:` in the YAML)"]
    _, opt, _ = _run(capsys, "config", "explain", "model.rope_scaling.factor")
    assert opt.startswith("model.rope_scaling.factor  (float; default 8.0; > 0)")


def test_every_key_of_every_section_can_be_explained(capsys):
    from llmtrain.commands.config import data_config_keys, resolve, section_type, sections

    for name, (tp, _help, _users) in sections().items():
        cls = section_type(tp)
        hints = typing.get_type_hints(cls) if cls else {}
        for f in dataclasses.fields(cls) if cls else []:
            lines = resolve(f"{name}.{f.name}")
            if section_type(hints[f.name]):  # a nested section (model.rope_scaling): its keys
                assert lines[0].startswith(f"{name}.{f.name}: ") and f"  {name}.{f.name}." in lines[2]
            else:
                assert lines[0].startswith(f"{name}.{f.name}  (") and lines[-1].startswith("    set with: --set ")
    for name, (_f, tp) in data_config_keys().items():
        keys = [f"{name}.{f.name}" for f in dataclasses.fields(section_type(tp))] if section_type(tp) else [name]
        for key in keys:
            assert resolve(key, data_config=True)[0].startswith(f"{key}  (")


def test_explain_the_data_config_of_prepare_and_mixture(capsys):
    code, out, _ = _run(capsys, "config", "explain", "--data-config")
    assert code == 0 and "  sources  (list of sections; default (required))" in out
    assert "  tokenizer  (section or null; default null)" in out
    code, out, _ = _run(capsys, "config", "explain", "--data-config", "sources.weight")
    assert out.splitlines() == [
        "sources.weight  (float; default 1.0; >= 0)",
        "    mixture weight (normalized over sources); 0 = prepared but not sampled",
        "    read by: prepare, mixture (section sources: `llmtrain config explain --data-config sources`)",
        "    set with: --set sources.0.weight=1.0  (or `weight:` under `sources:` in the YAML)"]
    # the override the explainer suggests is one the data config loader accepts
    from llmtrain.config.data import load_data_config

    cfg = load_data_config(ROOT / "configs/data/starter.yaml", ["sources.0.weight=1.0"])
    assert cfg.sources[0].weight == 1.0
    code, _, err = _run(capsys, "config", "explain", "--data-config", "sourcs")
    assert code == 2 and "no data config key 'sourcs' (did you mean 'sources'?)" in err


@pytest.mark.parametrize(("target", "message"), [
    ("trian", "no config section 'trian' (did you mean 'train'?)"),
    ("train.precisoin", "no key 'precisoin' in section train (did you mean 'precision'?)"),
    ("train.precision.x", "train.precision is a str key, not a section"),
])
def test_explain_names_the_closest_valid_name(capsys, target, message):
    code, _, err = _run(capsys, "config", "explain", target)
    assert code == 2 and err.startswith("llmtrain config: error: ") and message in err


def test_help_of_each_run_command_points_to_the_explainer():
    parser = build_parser()
    assert "llmtrain config explain" in parser.format_help()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("train", "finetune"):
        text = sub[name].format_help()
        assert "llmtrain config explain" in text and "--print-config" in text
    assert "llmtrain config explain" in sub["eval"].format_help()
    for name in ("prepare", "mixture"):
        assert "llmtrain config explain --data-config" in " ".join(sub[name].format_help().split())


def test_print_config_prints_the_resolved_config_and_exits(capsys, tmp_path):
    code, out, err = _run(capsys, "train", "--config", TINY, "--print-config", "--set", "train.max_steps=7",
                          "--set", f"checkpoint.dir={tmp_path}")
    assert code == 0 and err == ""
    cfg = yaml.safe_load(out)
    assert cfg["train"]["max_steps"] == 7 and cfg["train"]["precision"] == "fp32" and cfg["model"]["name"] == "tiny"
    assert set(cfg) == {"model", "data", "train", "optim", "checkpoint", "logging", "deepspeed"}
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written
    code, out, _ = _run(capsys, "finetune", "--config", str(ROOT / "configs/finetune/sentiment.yaml"),
                        "--init", "/runs/tiny", "--print-config")
    assert code == 0 and yaml.safe_load(out)["finetune"]["init"] == "/runs/tiny"
    assert out.startswith("# the model section's architecture keys are replaced by those of finetune.init (/runs/tiny)")


def _no_precision_config(tmp_path: Path) -> str:
    raw = yaml.safe_load(Path(TINY).read_text())
    del raw["train"]["precision"]
    raw["model"]["base"] = str(ROOT / "configs" / "model" / "tiny.yaml")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_accelerate_mixed_precision_fills_an_unset_train_precision(capsys, tmp_path, monkeypatch):
    config = _no_precision_config(tmp_path)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    code, out, _ = _run(capsys, "train", "--config", config, "--print-config")
    assert code == 0
    notice, text = out.split("\n", 1)
    assert notice == ("[llmtrain] train.precision=fp16 from accelerate's mixed_precision (the config leaves "
                      "train.precision at its default, bf16)")
    assert yaml.safe_load(text)["train"]["precision"] == "fp16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # accelerate's value when nothing was chosen
    code, out, _ = _run(capsys, "train", "--config", config, "--print-config")
    assert code == 0 and yaml.safe_load(out)["train"]["precision"] == "bf16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # agrees with an explicit --set: silent
    code, out, _ = _run(capsys, "train", "--config", config, "--print-config", "--set", "train.precision=bf16")
    assert code == 0 and not out.startswith("[llmtrain]")


def test_accelerate_mixed_precision_that_contradicts_the_config_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    code, out, err = _run(capsys, "train", "--config", TINY, "--print-config")  # tiny.yaml says fp32
    assert code == 2 and out == ""
    assert "train.precision: the config sets fp32 but accelerate launch set mixed_precision=bf16" in err
    assert "--set train.precision=bf16" in err and "--mixed_precision no" in err
    code, out, err = _run(capsys, "train", "--config", _no_precision_config(tmp_path), "--print-config",
                          "--set", "train.precision=fp32")  # an explicit --set counts as the config's choice
    assert code == 2 and "the config sets fp32 but accelerate launch set mixed_precision=bf16" in err
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp8")
    code, _, err = _run(capsys, "train", "--config", TINY, "--print-config")
    assert code == 2 and "mixed_precision=fp8" in err and "train.precision" in err
