"""The LLM API on tiny models: batching invariance, seeds, bad input, memory failures, chat."""

from __future__ import annotations

import pytest

from tunelab.engine import LLM, SamplingParams
from tunelab.errors import InvalidRequest

PROMPTS = [[5 + i, 40 + 3 * i, 77, 200 + i] * (1 + i % 3) for i in range(6)]


@pytest.fixture(scope="module")
def llm(tiny_models) -> LLM:
    return LLM(tiny_models["qwen2"], dtype="fp32", max_model_len=128, block_size=4, num_blocks=256)


def test_greedy_continuous_batching_equals_one_at_a_time(llm):
    lengths = [3, 9, 5, 12, 7, 4]  # requests finish at different steps, others join and leave
    params = [SamplingParams(max_tokens=n, temperature=0, ignore_eos=True) for n in lengths]
    together = llm.generate(PROMPTS, params)
    alone = [llm.generate([p], q)[0] for p, q in zip(PROMPTS, params)]
    assert [o.token_ids for o in together] == [o.token_ids for o in alone]
    assert [len(o.token_ids) for o in together] == lengths
    assert all(o.finish_reason == "length" for o in together)


def test_chunked_prefill_and_prefix_cache_do_not_change_output(tiny_models):
    small = LLM(tiny_models["qwen2"], dtype="fp32", max_model_len=128, block_size=4, num_blocks=256,
                max_num_batched_tokens=8)  # prompts prefill in chunks of <= 8 tokens
    prompt = PROMPTS[5] * 2
    params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
    first = small.generate([prompt], params)[0].token_ids
    again = small.generate([prompt], params)[0].token_ids  # served from cached prefix blocks
    assert small.engine.scheduler.block_manager._cached  # the prefix cache was populated
    big = LLM(tiny_models["qwen2"], dtype="fp32", max_model_len=128, enable_prefix_caching=False)
    assert first == again == big.generate([prompt], params)[0].token_ids


def test_seeded_sampling_is_reproducible(llm):
    params = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, seed=123, ignore_eos=True)
    a = llm.generate(PROMPTS[:3], params)
    b = llm.generate(PROMPTS[:3][::-1], params)[::-1]  # other batch order, same seeds
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    other = llm.generate(PROMPTS[:1], SamplingParams(max_tokens=12, temperature=1.0, seed=7, ignore_eos=True))
    assert other[0].token_ids != a[0].token_ids


def test_n_completions_and_logprobs(llm):
    out = llm.generate([PROMPTS[0]], SamplingParams(max_tokens=5, n=3, seed=1, logprobs=2, ignore_eos=True))[0]
    assert len(out.outputs) == 3 and len({tuple(o.token_ids) for o in out.outputs}) > 1
    assert len(out.logprobs) == 5 and len(out.logprobs[0].top) == 2
    assert out.usage == {"prompt_tokens": 4, "completion_tokens": 15, "total_tokens": 19}


def test_prompt_longer_than_max_model_len_fails_before_any_work(llm):
    before = llm.engine.total_generated_tokens
    with pytest.raises(InvalidRequest, match="maximum model length"):
        llm.generate([PROMPTS[0], list(range(5, 200))], SamplingParams(max_tokens=4))
    assert llm.engine.total_generated_tokens == before and not llm.engine.has_unfinished()


def test_request_that_cannot_get_memory_fails_alone(tiny_models):
    small = LLM(tiny_models["llama"], dtype="fp32", max_model_len=64, block_size=4, num_blocks=6)  # 24 token slots
    params = [SamplingParams(max_tokens=4, temperature=0, ignore_eos=True),
              SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)]
    ok, starved = small.generate([[5, 6, 7], [8, 9, 10, 11, 12]], params)
    assert ok.finish_reason == "length" and len(ok.token_ids) == 4
    assert starved.finish_reason == "abort" and "KV cache" in starved.outputs[0].error


def test_chat_uses_template_and_stops_at_end_of_turn(llm):
    template = llm.template()
    conv = [{"role": "user", "content": "hi"}]
    out = llm.chat([conv], SamplingParams(max_tokens=4, temperature=0))[0]
    from tunelab.data.templates import encode_prompt

    assert out.prompt_token_ids == encode_prompt(template, llm.tokenizer, conv)
    stops = template.stop_token_ids(llm.tokenizer)
    forced = llm.chat([conv], SamplingParams(max_tokens=4, temperature=0, stop_token_ids=[out.token_ids[0]]))[0]
    assert forced.token_ids == out.token_ids[:1] and forced.finish_reason == "stop"
    from tunelab.engine.llm import with_template_stops

    merged = with_template_stops(SamplingParams(stop_token_ids=[42]), template, llm.tokenizer)
    assert stops and merged.stop_token_ids == [42, *stops]  # the template's end-of-turn ids are added


def test_bad_params_name_the_field(llm):
    with pytest.raises(InvalidRequest, match="adapter"):
        llm.generate([PROMPTS[0]], SamplingParams(max_tokens=2), adapter="nope")
    with pytest.raises(InvalidRequest, match="max_tokens"):
        SamplingParams(max_tokens=0)


def test_ignore_eos_drops_the_templates_stops_but_keeps_the_callers(llm):
    from tunelab.engine.llm import with_template_stops

    params = SamplingParams(ignore_eos=True, stop_token_ids=[42])  # fixed-length output, as the server does
    assert with_template_stops(params, llm.template(), llm.tokenizer).stop_token_ids == [42]


def _adapter_with_template(base, out, system: str):
    """A tiny PEFT adapter with a saved chat template whose default system prompt is `system`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunelab.data.templates import ChatTemplate

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(out)
    ChatTemplate.builtin("chatml", system=system).save(out)
    return out


def test_chat_template_is_chosen_once_per_adapter_dir(tiny_models, tmp_path):
    """Chosen on first use and reused: a template file changed on disk later changes no prompt; an adapter
    name loaded from another directory gets that directory's template."""
    import shutil

    model = shutil.copytree(tiny_models["qwen2"], tmp_path / "model")
    llm = LLM(model, dtype="fp32", max_model_len=128)
    conv, params = [{"role": "user", "content": "hi"}], SamplingParams(max_tokens=1, temperature=0)
    first = llm.chat([conv], params)[0].prompt
    assert llm.template() is llm.template()
    (model / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert llm.chat([conv], params)[0].prompt == first
    llm.engine.add_adapter("x", _adapter_with_template(model, tmp_path / "a", "Be A."))
    assert "Be A." in llm.chat([conv], params, adapter="x")[0].prompt
    llm.engine.add_adapter("x", _adapter_with_template(model, tmp_path / "b", "Be B."))
    assert "Be B." in llm.chat([conv], params, adapter="x")[0].prompt
