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
