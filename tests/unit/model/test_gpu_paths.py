"""The GPU fast paths: flex_attention document masking, the fused linear cross-entropy, the compile
switch, SDPA's fast kernels, and the GPU benchmark script.

The math of each fast path is checked on CPU (flex_attention runs uncompiled there; the fused
cross-entropy is plain autograd code); the ``gpu``-marked tests check the compiled kernels on CUDA and
skip cleanly without it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llmtrain.model.attention import attention, build_layout, flash_attn_available, flex_attention_available
from llmtrain.model.config import ModelConfig
from llmtrain.model.runtime import ModelRuntime, apply_runtime
from llmtrain.model.transformer import Transformer
from llmtrain.objectives.losses import (
    IGNORE_INDEX,
    chunked_cross_entropy_sum,
    fused_linear_cross_entropy_sum,
)

ROOT = Path(__file__).resolve().parents[3]
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
needs_flex = pytest.mark.skipif(not flex_attention_available(), reason="torch has no flex_attention")

DOCS = torch.tensor([[0] * 10 + [1] * 30 + [2] * 24, [0] * 64])


def _qkv(hkv: int, *, device: str = "cpu", dtype=torch.float32, T: int = 64, hq: int = 4, D: int = 16):
    g = torch.Generator(device=device).manual_seed(0)
    return [torch.randn(2, T, h, D, generator=g, device=device, dtype=dtype).requires_grad_()
            for h in (hq, hkv, hkv)]


def _grads(out: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    weight = torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out).to(out.dtype)
    return list(torch.autograd.grad((out * weight).sum(), inputs))


# ---------------------------------------------------------------------------- flex_attention (CPU math)

@needs_flex
@pytest.mark.parametrize("hkv", [4, 2])
def test_flex_document_masking_matches_the_eager_mask(hkv):
    """Forward only: flex has no CPU backward (the GPU test below checks gradients)."""
    q, k, v = (t.detach() for t in _qkv(hkv))
    ref = attention(q, k, v, backend="eager", doc_ids=DOCS)
    layout = build_layout(DOCS, "sdpa", use_flex=True)
    assert layout.block_mask is not None and layout.mask is None
    out = attention(q, k, v, backend="sdpa", layout=layout)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@needs_flex
def test_a_flex_layout_still_serves_other_kernels_and_non_causal_calls():
    q, k, v = (t.detach() for t in _qkv(2))
    layout = build_layout(DOCS, "sdpa", use_flex=True)
    torch.testing.assert_close(attention(q, k, v, backend="eager", layout=layout),
                               attention(q, k, v, backend="eager", doc_ids=DOCS))
    same_doc = attention(q, k, v, backend="sdpa", causal=False, layout=layout)
    torch.testing.assert_close(same_doc, attention(q, k, v, backend="eager", causal=False, doc_ids=DOCS),
                               rtol=1e-5, atol=1e-5)


def test_cpu_layouts_keep_the_boolean_mask_and_odd_head_dims_never_use_flex():
    layout = build_layout(DOCS, "sdpa")
    assert layout.block_mask is None and layout.mask.shape == (2, 1, 64, 64)
    assert int(layout.mask[0, 0, 10].sum()) == 1  # first token of document 1 sees only itself
    odd = build_layout(DOCS.cuda() if CUDA else DOCS, "sdpa", head_dim=24)
    assert odd.block_mask is None


# ---------------------------------------------------------------------------- fused linear cross-entropy

@pytest.mark.parametrize("weight_grad", [True, False])
def test_fused_linear_cross_entropy_matches_autograd(weight_grad):
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=weight_grad)
    labels = torch.randint(0, 50, (37,))
    got = fused_linear_cross_entropy_sum(hidden, weight, labels, chunk_tokens=5)
    ref = F.cross_entropy(hidden @ weight.t(), labels, reduction="sum")
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-4)
    inputs = [hidden, weight] if weight_grad else [hidden]
    g_got = torch.autograd.grad(got * 0.5, inputs)  # the upstream gradient scales the stored ones
    g_ref = torch.autograd.grad(ref * 0.5, inputs)
    for a, b in zip(g_got, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_chunked_loss_on_cpu_keeps_the_checkpointed_path_and_agrees_with_the_fused_one():
    torch.manual_seed(1)
    out = torch.nn.Linear(8, 30, bias=False)
    hidden = torch.randn(20, 8, requires_grad=True)
    labels = torch.randint(0, 30, (20,))
    labels[::3] = IGNORE_INDEX
    keep = labels.ne(IGNORE_INDEX)
    a = chunked_cross_entropy_sum(hidden, out, labels, chunk_tokens=6)
    b = fused_linear_cross_entropy_sum(hidden[keep], out.weight, labels[keep], chunk_tokens=6)
    assert a.grad_fn.name() != b.grad_fn.name()  # CPU does not take the fused (CUDA-only) path
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-5)


# ---------------------------------------------------------------------------- compile switch

def _tiny() -> ModelConfig:
    return ModelConfig(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32, max_seq_len=64)


def test_compile_switch_is_a_no_op_on_cpu():
    torch.manual_seed(0)
    plain = Transformer(_tiny())
    torch.manual_seed(0)
    compiled = apply_runtime(Transformer(_tiny()), ModelRuntime(compile=True))
    tokens = torch.randint(0, 256, (2, 32))
    torch.testing.assert_close(compiled(tokens, doc_ids=DOCS[:, :32]), plain(tokens, doc_ids=DOCS[:, :32]),
                               rtol=0, atol=0)
    assert compiled._compiled is False


# ---------------------------------------------------------------------------- the benchmark script

def _run_bench(args: list[str], out: Path, timeout: int) -> list[dict]:
    env = dict(os.environ, OUT=str(out), OMP_NUM_THREADS="2",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "bench_gpu.json").read_text())


@pytest.mark.slow
def test_bench_gpu_cpu_smoke_runs_ours_and_the_hf_baseline(tmp_path):
    results = _run_bench(["--cpu-smoke", "--variants", "ours,hf"], tmp_path, timeout=240)
    by = {r["variant"]: r for r in results}
    assert set(by) == {"ours", "hf"}
    for r in by.values():
        assert r["preset"] == "tiny" and r["seq_len"] == 64 and len(r["step_times_s"]) == 2
        assert r["tokens_per_s_per_gpu"] == pytest.approx(2 * 64 / r["step_time_s"])
        assert r["mfu"] is None and r["device"] == "cpu"  # no peak FLOP/s for a CPU
    assert by["ours"]["optimizer"] == "GuardedAdamW"
    assert by["hf"]["deepspeed_engine"] == "DeepSpeedEngine"  # the baseline really runs under DeepSpeed
    first = by["ours"]["losses"][0]
    assert abs(first - math.log(8192)) < 0.2  # random tokens: about ln(vocab) at init


# ---------------------------------------------------------------------------- on the GPU

@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("hkv", [8, 2])
def test_sdpa_causal_runs_on_a_fast_kernel(hkv):
    """No doc mask -> is_causal without a mask -> flash/cuDNN accept the call (no fallback to math)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = _qkv(hkv, device="cuda", dtype=torch.bfloat16, T=512, hq=8, D=64)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
        out = attention(q, k, v, backend="sdpa")
        out.float().sum().backward()
    ref = attention(q.float(), k.float(), v.float(), backend="eager")
    assert (out.float() - ref).abs().max().item() < 2e-2


@pytest.mark.gpu
@needs_cuda
@needs_flex
@pytest.mark.parametrize("hkv", [8, 2])
def test_compiled_flex_document_masking_matches_the_sdpa_mask_on_gpu(hkv):
    q, k, v = _qkv(hkv, device="cuda", dtype=torch.bfloat16, T=512, hq=8, D=64)
    lengths = [[100, 300, 112], [512]]
    doc_ids = torch.stack([torch.cat([torch.full((n,), i) for i, n in enumerate(r)]) for r in lengths]).cuda()
    layout = build_layout(doc_ids, "sdpa", head_dim=64)
    assert layout.block_mask is not None  # the default on CUDA
    ref_in = [t.detach().float().requires_grad_() for t in (q, k, v)]
    ref = attention(*ref_in, backend="sdpa", layout=build_layout(doc_ids, "sdpa", use_flex=False))
    out = attention(q, k, v, backend="sdpa", layout=layout)
    assert (out.float() - ref).abs().max().item() < 2e-2
    for g, r in zip(_grads(out, [q, k, v]), _grads(ref, ref_in), strict=True):
        assert (g.float() - r).abs().max().item() < 5e-2 * max(1.0, r.abs().max().item())


@pytest.mark.gpu
@needs_cuda
def test_compiled_model_matches_eager_on_gpu_in_bf16():
    tokens = torch.randint(0, 256, (2, 64), device="cuda")
    doc_ids = torch.cat([torch.zeros(2, 20), torch.ones(2, 44)], 1).long().cuda()
    outs = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        model = apply_runtime(Transformer(_tiny()), ModelRuntime(attention_backend="sdpa", compile=compile_))
        model = model.cuda().to(torch.bfloat16)
        outs.append([model(tokens).float(), model(tokens, doc_ids=doc_ids).float()])
        assert model._compiled is compile_
    for a, b in zip(*outs, strict=True):
        assert (a - b).abs().max().item() < 5e-2


@pytest.mark.gpu
@needs_cuda
def test_fused_cross_entropy_on_gpu_matches_fp32_reference():
    torch.manual_seed(0)
    out = torch.nn.Linear(256, 1000, bias=False).cuda().to(torch.bfloat16)
    hidden = torch.randn(3000, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, 1000, (3000,), device="cuda")
    got = chunked_cross_entropy_sum(hidden, out, labels, chunk_tokens=1024)
    assert "Fused" in got.grad_fn.next_functions[1][0].name() or "Fused" in got.grad_fn.name()
    g_h, g_w = torch.autograd.grad(got / 3000, [hidden, out.weight])
    h32, w32 = hidden.detach().float().requires_grad_(), out.weight.detach().float().requires_grad_()
    ref = F.cross_entropy(h32 @ w32.t(), labels, reduction="sum")
    r_h, r_w = torch.autograd.grad(ref / 3000, [h32, w32])
    assert abs(got.item() - ref.item()) / ref.item() < 1e-2
    assert (g_h.float() - r_h).norm() / r_h.norm() < 2e-2
    assert (g_w.float() - r_w).norm() / r_w.norm() < 2e-2


@pytest.mark.gpu
@needs_cuda
def test_trainer_bf16_steps_on_gpu_with_compile_and_document_masking(tmp_path):
    """The real Trainer + DeepSpeed ZeRO-1 engine in bf16 on the GPU (through bench_gpu's worker)."""
    results = _run_bench(["--presets", "tiny", "--variants", "ours-docs", "--warmup", "1", "--steps", "3",
                          "--seq-len", "256", "--micro-batch", "4", "--doc-len", "64"], tmp_path, timeout=400)
    for r in results:
        assert "error" not in r, r
        assert r["compile"] and r["peak_memory_gib"] > 0 and len(r["losses"]) == 4
        assert all(math.isfinite(x) for x in r["losses"]) and abs(r["losses"][0] - math.log(8192)) < 0.3


@pytest.mark.gpu
@needs_cuda
@needs_flex
@pytest.mark.parametrize("with_docs", [False, True])
def test_compiled_flex_sliding_window_matches_the_sdpa_mask_on_gpu(with_docs):
    """The window folded into flex's block mask equals the boolean window mask (with and without documents)."""
    q, k, v = _qkv(2, device="cuda", dtype=torch.bfloat16, T=512, hq=8, D=64)
    doc_ids = torch.zeros(2, 512, dtype=torch.long, device="cuda")
    if with_docs:
        doc_ids[:, 200:] = 1
    layout = build_layout(doc_ids, "sdpa", head_dim=64, window=96)
    assert layout.block_mask is not None
    ref = attention(q.float(), k.float(), v.float(), backend="sdpa", window=96,
                    layout=build_layout(doc_ids, "sdpa", use_flex=False, window=96))
    out = attention(q, k, v, backend="sdpa", layout=layout, window=96)
    assert (out.float() - ref).abs().max().item() < 2e-2


@pytest.mark.gpu
@needs_cuda
@pytest.mark.skipif(not CUDA or not flash_attn_available(), reason="needs flash-attn")
@pytest.mark.parametrize("with_docs", [False, True])
def test_flash_attn_window_matches_the_sdpa_mask_on_gpu(with_docs):
    """flash-attn's window_size=(W-1, 0) keeps the same keys as the boolean mask, varlen included."""
    q, k, v = _qkv(2, device="cuda", dtype=torch.bfloat16, T=512, hq=8, D=64)
    doc_ids = torch.zeros(2, 512, dtype=torch.long, device="cuda")
    if with_docs:
        doc_ids[:, 300:] = 1
    ref = attention(q.float(), k.float(), v.float(), backend="sdpa", window=96,
                    layout=build_layout(doc_ids, "sdpa", use_flex=False, window=96))
    layout = build_layout(doc_ids, "flash_attn", window=96) if with_docs else None
    out = attention(q, k, v, backend="flash_attn", layout=layout, window=96)
    assert (out.float() - ref).abs().max().item() < 2e-2
