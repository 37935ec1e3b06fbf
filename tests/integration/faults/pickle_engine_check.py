"""Run by test_pickle_payloads.py in a process of its own (DeepSpeed's process group and accelerator are
global): real ZeRO checkpoints of a tiny model, each kind of ``*.pt`` file DeepSpeed reads on resume
given a pickled payload, loaded through ``DeepSpeedEngine.load``. Prints one JSON line per case.

usage: python pickle_engine_check.py WORK_DIR
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import torch

from llmtrain.config.loader import load_run_config
from llmtrain.config.roots import PretrainRunConfig
from llmtrain.distributed.env import discover
from llmtrain.engine import build_engine, init_process_group
from llmtrain.errors import CheckpointError
from llmtrain.model.config import ModelConfig
from llmtrain.model.transformer import Transformer
from llmtrain.training.optim import build_optimizer, build_scheduler

sys.path.insert(0, str(Path(__file__).parent))
from payload import plant  # noqa: E402

TAG = "step_000002"


def loss_fn(model, batch):
    logits = model(batch[:, :-1])
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)), batch.numel()


def engine(stage: int, *, reshard: bool = False, trust: bool = False):
    cfg = load_run_config(None, [f"train.zero_stage={stage}", "train.precision=fp32", "train.global_batch_size=2",
                                 "train.micro_batch_size=2", "model.vocab_size=64", "model.dim=32", "model.n_layers=1",
                                 "model.n_heads=4", "model.max_seq_len=16", "train.seq_len=8",
                                 f"checkpoint.trust_pickle={str(trust).lower()}"], PretrainRunConfig)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=64, dim=32, n_layers=1, n_heads=4, multiple_of=16, max_seq_len=16))
    return build_engine(cfg, model, loss_fn, world_size=1, on_gpu=False, reshard=reshard,
                        make_optimizer=lambda m: build_optimizer(m, cfg.optim),
                        make_scheduler=lambda o: build_scheduler(o, cfg.optim, 10))


def step_loss(eng) -> float:
    batch = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1))
    loss, _ = eng.forward(batch)
    eng.backward(loss)
    eng.optimizer_step()
    return float(eng.forward(batch)[0])


def case(name: str, step_dir: Path, target: Path, *, stage: int, reshard: bool) -> dict:
    marker = step_dir.parent / f"pwned_{name}"
    plant(target, marker)
    result = {"case": name, "file": str(target)}
    try:
        engine(stage, reshard=reshard).load(step_dir, reshard=reshard)
        result["error"] = None
    except CheckpointError as e:
        result["error"] = str(e)
    result["marker"] = marker.exists()
    result["left"] = sorted(p.name for p in step_dir.parent.iterdir())
    return result


def main(work: Path) -> None:
    os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": os.environ.get("CHECK_PORT", "29541")})
    init_process_group(discover(), device="cpu", timeout_s=60)
    out = []
    for stage in (1, 3):
        clean = work / f"z{stage}" / "clean"
        eng = engine(stage)
        step_loss(eng)
        eng.save(clean, TAG)
        step = clean / TAG
        # the same next-step loss through the restricted reader as with full pickle (ZeRO-1 also resharded:
        # conversions start a DeepSpeed process each, so ZeRO-3's universal path is left to the resume tests)
        reshards = (False, True) if stage == 1 else (False,)
        losses = {f"{mode}-{reshard}": step_loss(_loaded(stage, step, reshard, mode == "trusted"))
                  for mode in ("restricted", "trusted") for reshard in reshards}
        out.append({"case": f"z{stage}-clean", "losses": losses})
        kinds = {"model_states": next(step.glob("*model_states.pt")).name, "optim_states": next(step.glob("*optim_states.pt")).name}
        for kind, name in kinds.items():
            # True: the universal conversion (a child process) reads it
            for reshard in (False, True) if kind == "optim_states" and stage == 1 else (False,):
                d = work / f"z{stage}" / f"{kind}-{reshard}"
                shutil.copytree(clean, d, ignore=shutil.ignore_patterns("*_universal"))
                out.append(case(f"z{stage}-{kind}-{'convert' if reshard else 'resume'}", d / TAG, d / TAG / name,
                                stage=stage, reshard=reshard))
        universal = clean / f"{TAG}_universal"
        if not universal.is_dir():
            continue
        params = sorted(p for p in (universal / "zero").iterdir() if p.is_dir())
        for kind, rel in (("universal_optimizer_state", "zero/optimizer_state.pt"),
                          ("universal_fp32", f"zero/{params[0].name}/fp32.pt"),
                          ("universal_exp_avg_sq", f"zero/{params[-1].name}/exp_avg_sq.pt")):
            d = work / f"z{stage}" / kind
            shutil.copytree(clean, d)
            out.append(case(f"z{stage}-{kind}", d / TAG, d / f"{TAG}_universal" / rel, stage=stage, reshard=True))
    for r in out:
        print(json.dumps(r), flush=True)


def _loaded(stage: int, step: Path, reshard: bool, trust: bool):
    eng = engine(stage, reshard=reshard, trust=trust)
    eng.load(step, reshard=reshard)
    return eng


if __name__ == "__main__":
    main(Path(sys.argv[1]))
