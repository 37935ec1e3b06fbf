import torch

from llmtrain.eval.generate import SamplingConfig, filter_logits, generate_ids


def test_greedy_equals_transformers_generate_on_the_export(tiny_model, tmp_path):
    from transformers import LlamaForCausalLM

    from llmtrain.modelio.hf import export_hf

    model = tiny_model(vocab_size=97, seed=3)
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("rope.")}
    export_hf(sd, model.cfg, tmp_path, extra_config={"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0})
    hf = LlamaForCausalLM.from_pretrained(tmp_path, torch_dtype=torch.float32).eval()
    prompt = [1, 17, 42, 5, 77, 9]
    ours = generate_ids(model, prompt, SamplingConfig(max_new_tokens=24))
    with torch.no_grad():
        ref = hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=24, eos_token_id=None,
                          pad_token_id=0, attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
    assert ours == ref[0, len(prompt):].tolist()
    assert len(ours) == 24
    # a repetition penalty as transformers applies it: the same continuation, different from plain greedy
    penalised = generate_ids(model, prompt, SamplingConfig(max_new_tokens=24, repetition_penalty=1.8))
    with torch.no_grad():
        ref = hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=24, eos_token_id=None,
                          pad_token_id=0, attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          repetition_penalty=1.8)
    assert penalised == ref[0, len(prompt):].tolist()
    assert penalised != ours
    assert generate_ids(model, prompt, SamplingConfig(max_new_tokens=24, repetition_penalty=1.8),
                        use_cache=False) == penalised


def test_kv_cache_matches_full_recompute_and_eos_stops(tiny_model):
    model = tiny_model(seed=1)
    prompt = [1, 50, 60, 70]
    cached = generate_ids(model, prompt, SamplingConfig(max_new_tokens=12))
    full = generate_ids(model, prompt, SamplingConfig(max_new_tokens=12), use_cache=False)
    assert cached == full
    stop = cached[4]
    first = cached.index(stop)
    assert generate_ids(model, prompt, SamplingConfig(max_new_tokens=12), eos_id=stop) == cached[:first + 1]


def test_sampling_is_seeded_and_top_k_1_is_greedy(tiny_model):
    model = tiny_model(seed=2)
    prompt = [1, 11, 12]
    hot = SamplingConfig(max_new_tokens=10, temperature=1.5, seed=7)
    assert generate_ids(model, prompt, hot) == generate_ids(model, prompt, hot)
    assert generate_ids(model, prompt, SamplingConfig(max_new_tokens=10, temperature=0.8, top_k=1, seed=1)) == \
        generate_ids(model, prompt, SamplingConfig(max_new_tokens=10))


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    # mass before token 3 is 0.95 >= 0.9 -> dropped; token 2 has 0.8 before it -> kept
    assert torch.isinf(filter_logits(logits, top_p=0.9)).tolist() == [[False, False, False, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.5)).tolist() == [[False, True, True, True]]


def _export_with_tokenizer(tiny_model, tokenizer_dir, out):
    from llmtrain.data.tokenizer import load_tokenizer
    from llmtrain.modelio.hf import export_hf

    tok = load_tokenizer(tokenizer_dir)
    model = tiny_model(vocab_size=tok.vocab_size, seed=5)
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("rope.")}
    export_hf(sd, model.cfg, out, tokenizer_dir=tokenizer_dir)
    return model, tok


def test_transformers_greedy_on_an_export_equals_llmtrain_generate(tiny_model, sp_tokenizer_dir, tmp_path):
    """The export's own tokenizer + generation_config reproduce `llmtrain generate` (BOS included)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmtrain.eval.generate import generate_text

    model, tok = _export_with_tokenizer(tiny_model, sp_tokenizer_dir, tmp_path)
    hf_tok = AutoTokenizer.from_pretrained(tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    for prompt in ("ROMEO:", "The movie is", "a film that"):
        ids = hf_tok(prompt, return_tensors="pt")
        assert ids.input_ids[0].tolist() == tok.encode_sequence(prompt) and ids.input_ids[0, 0] == tok.bos_id
        with torch.no_grad():
            out = hf.generate(**ids, do_sample=False, max_new_tokens=20)  # eos/pad from generation_config.json
        theirs = out[0, ids.input_ids.shape[1]:].tolist()
        ours = generate_ids(model, tok.encode_sequence(prompt), SamplingConfig(max_new_tokens=20), eos_id=tok.eos_id)
        assert ours == theirs
        text = generate_text(model, tok, prompt, SamplingConfig(max_new_tokens=20))
        assert text == tok.decode(ours[:-1] if ours[-1] == tok.eos_id else ours)


def test_lm_eval_hflm_log_likelihoods_equal_ours_on_an_export(tiny_model, sp_tokenizer_dir, tmp_path, monkeypatch):
    import pytest

    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = _export_with_tokenizer(tiny_model, sp_tokenizer_dir, tmp_path)
    pairs = [("ROMEO:", " But soft"), ("The movie was", " great fun."), ("a", " b c d"), ("Review: dull", " and slow")]
    lm = HFLM(pretrained=str(tmp_path), device="cpu", dtype="float32", batch_size=2)
    got = lm.loglikelihood([Instance(request_type="loglikelihood", doc={}, arguments=p, idx=i)
                            for i, p in enumerate(pairs)], disable_tqdm=True)
    for (context, continuation), (logprob, greedy) in zip(pairs, got, strict=True):
        ctx = tok.encode_sequence(context)
        cont = tok.encode_sequence(context + continuation)[len(ctx):]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ctx + cont]))[0].double(), -1)
        steps = logp[len(ctx) - 1:-1]
        ours = float(steps.gather(-1, torch.tensor(cont)[:, None]).sum())
        assert abs(logprob - ours) < 1e-4, (context, logprob, ours)
        assert greedy == (steps.argmax(-1).tolist() == cont)


def test_generate_renders_the_prompt_with_the_tokenizers_chat_template(tmp_path):
    """A chat model's own template (as SFT used it) frames the prompt; --raw (no template) does not."""
    from chattools import save_chat_model

    from llmtrain.eval.generate import generate_text
    from llmtrain.modelio.load import load_model

    loaded = load_model(save_chat_model(tmp_path / "chat"))
    tok, cfg = loaded.tokenizer, SamplingConfig(max_new_tokens=3)
    seen: list[list[int]] = []

    def recording(model, ids, sampling, eos_id=None):
        seen.append(list(ids))
        return []

    import llmtrain.eval.generate as gen

    original, gen.generate_ids = gen.generate_ids, recording
    try:
        generate_text(loaded.model, tok, "hi there", cfg, tokenizer_template=True)
        generate_text(loaded.model, tok, "hi there", cfg, tokenizer_template=False)
    finally:
        gen.generate_ids = original
    want = tok.apply_chat_template([{"role": "user", "content": "hi there"}], add_generation_prompt=True)
    assert seen[0] == want and tok.decode(seen[0]).endswith("<|im_start|>assistant\n")
    assert seen[1] == tok.encode_sequence("hi there")
