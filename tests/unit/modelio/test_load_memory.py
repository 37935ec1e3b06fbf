"""Loading a model directory (ours or Hugging Face's) holds one copy of the weights, not two.

The model is built without storage and takes the loaded tensors themselves; before, a randomly
initialised model existed beside the loaded state dict (two full copies per rank at ZeRO 0-2).
Measured in a fresh process: the peak increase of the resident set while ``load_model`` runs,
sampled every millisecond, with glibc returning freed large blocks at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmtrain.model.config import ModelConfig
from llmtrain.model.transformer import Transformer
from llmtrain.modelio.hf import export_hf
from llmtrain.modelio.model_dir import save_model_dir

MEASURE = r"""
import json, os, sys, threading, time
import torch
from llmtrain.modelio.load import load_model
PAGE = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE
peak = base = rss()
stop = False
def sample():
    global peak
    while not stop:
        peak = max(peak, rss())
        time.sleep(0.001)
t = threading.Thread(target=sample, daemon=True)
t.start()
loaded = load_model(sys.argv[1])
stop = True
t.join()
peak = max(peak, rss())
m = loaded.model
print(json.dumps({"peak": peak - base, "tied": m.output.weight is m.tok_embeddings.weight,
                  "params": sum(p.numel() for p in m.parameters()), "dtype": str(m.output.weight.dtype)}))
"""

CFG = ModelConfig(vocab_size=8192, dim=512, n_layers=8, n_heads=8, n_kv_heads=4, max_seq_len=256,
                  tie_embeddings=False)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    root = tmp_path_factory.mktemp("load_memory")
    torch.manual_seed(0)
    sd = Transformer(CFG).state_dict()
    save_model_dir(root / "ours", CFG, sd)
    export_hf(sd, CFG, root / "hf")
    return root / "ours", root / "hf", sd


@pytest.mark.parametrize("kind", ["ours", "hf"])
def test_loading_holds_one_copy_of_the_weights(model_dirs, kind):
    ours, hf, sd = model_dirs
    weights = sum(v.numel() * v.element_size() for v in sd.values())
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", MEASURE, str(ours if kind == "ours" else hf)], env=env,
                         capture_output=True, text=True, check=True, timeout=300)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["params"] == sum(v.numel() for v in sd.values())
    assert report["dtype"] == "torch.float32"
    # one copy plus transient per-tensor work; two copies (the old way) would be >= 2x
    assert report["peak"] < 1.4 * weights, (report["peak"] / 2**20, weights / 2**20)


def test_tied_embeddings_stay_one_parameter(tmp_path):
    cfg = ModelConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64, tie_embeddings=True)
    torch.manual_seed(0)
    model = Transformer(cfg)
    save_model_dir(tmp_path / "m", cfg, model.state_dict())
    from llmtrain.modelio.load import load_model

    loaded = load_model(tmp_path / "m").model
    assert loaded.output.weight is loaded.tok_embeddings.weight
    assert len(list(loaded.parameters())) == len(list(model.parameters()))
    x = torch.randint(0, 512, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    assert json.dumps(sorted(loaded.state_dict())) == json.dumps(sorted(model.state_dict()))
