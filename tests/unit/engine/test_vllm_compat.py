"""vLLM's offline API, as tutorials use it: their code runs with only the import swapped.

The tiny model is stored under the tutorial's model name, so the scripts below are the
tutorial's lines (tutorial 002: `LLM(model="facebook/opt-125m")`) with `vllm` -> `tunelab`.
"""

from __future__ import annotations

import runpy

import pytest
import torch

from tunelab.engine import LLM, SamplingParams
from tunelab.errors import ConfigError, InvalidRequest, MissingExtra

TUTORIAL_002 = '''
from tunelab import LLM, SamplingParams
llm = LLM(model="facebook/opt-125m")

prompts = [
    "Hello, my name is",
    "The president of the United States is",
    "The capital of France is",
    "The future of AI is",
]
sampling_params = SamplingParams(temperature=0.8, top_p=0.95)

outputs = llm.generate(prompts, sampling_params)


for output in outputs:
    prompt = output.prompt
    generated_text = output.outputs[0].text
    print(f"Prompt: {prompt!r}, Generated text: {generated_text!r}")
'''

LORA_SCRIPT = '''
from tunelab import LLM, SamplingParams, LoRARequest

llm = LLM(model="facebook/opt-125m", enable_lora=True, max_model_len=256, gpu_memory_utilization=0.9,
          tensor_parallel_size=1, trust_remote_code=True, dtype="float32")
tokenizer = llm.get_tokenizer()
prompts = ["Hello, my name is", "The capital of France is"]
params = [SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),
          SamplingParams(temperature=0.8, top_p=0.95, seed=1, logprobs=1)]
outputs = llm.generate(prompts, sampling_params=params, use_tqdm=False,
                       lora_request=LoRARequest("sql_adapter", 1, ADAPTER))
for output in outputs:
    print(output.prompt, len(output.prompt_token_ids), output.outputs[0].finish_reason,
          output.outputs[0].cumulative_logprob)
'''


@pytest.fixture(scope="module")
def tutorial_model(tiny_models):
    """The tiny qwen2 model in the store under the tutorial's model name."""
    from tunelab.store.pull import pull

    pull(str(tiny_models["qwen2"]), name="facebook/opt-125m")
    return "facebook/opt-125m"


@pytest.fixture(scope="module")
def adapter_dir(tiny_models, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    out = tmp_path_factory.mktemp("vllm_lora") / "sql"
    base = AutoModelForCausalLM.from_pretrained(tiny_models["qwen2"], dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, cfg).save_pretrained(out)
    return out


def test_tutorial_002_runs_unchanged_with_a_progress_bar(tutorial_model, capsys):
    scope = runpy.run_path(_script(TUTORIAL_002), run_name="__main__")
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("Prompt: 'Hello, my name is', Generated text: '")
    assert "Processed prompts" in err and "4/4" in err  # use_tqdm defaults on, as in vLLM
    first = scope["outputs"][0]
    assert first.prompt_token_ids == scope["llm"].get_tokenizer().encode("Hello, my name is")
    assert len(first.outputs[0].token_ids) <= 16  # vLLM's default max_tokens
    assert first.outputs[0].cumulative_logprob is None  # as in vLLM: only with logprobs


def test_lora_request_per_call_and_params_per_prompt(tutorial_model, adapter_dir, capsys):
    scope = runpy.run_path(_script(LORA_SCRIPT.replace("ADAPTER", repr(str(adapter_dir)))))
    greedy, sampled = scope["outputs"]
    assert greedy.outputs[0].finish_reason == "length" and len(greedy.outputs[0].token_ids) == 8
    lp = sampled.outputs[0].logprobs
    assert sampled.outputs[0].cumulative_logprob == pytest.approx(sum(t.logprob for t in lp))
    llm = scope["llm"]
    tuned = llm.generate(["Hello, my name is"], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),
                         use_tqdm=False, adapter="sql_adapter")
    base = llm.generate(["Hello, my name is"], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),
                        use_tqdm=False)
    assert tuned[0].token_ids == greedy.token_ids != base[0].token_ids
    assert capsys.readouterr().err == ""  # use_tqdm=False: no bar


def test_prompt_dicts_as_in_vllm(tutorial_model):
    llm = LLM(tutorial_model, dtype="fp32", max_model_len=128)
    ids = llm.get_tokenizer().encode("The capital of France is")
    greedy = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    by_text, by_ids = llm.generate([{"prompt": "The capital of France is"}, {"prompt_token_ids": ids}], greedy,
                                   use_tqdm=False)
    assert by_text.prompt == "The capital of France is" and by_ids.prompt is None
    assert by_text.token_ids == by_ids.token_ids and by_ids.prompt_token_ids == ids
    with pytest.raises(InvalidRequest, match="prompt_token_ids"):
        llm.generate({"text": "x"}, use_tqdm=False)


def test_chat_fills_prompt_with_the_rendered_text(tutorial_model):
    llm = LLM(tutorial_model, dtype="fp32", max_model_len=128)
    conv = [{"role": "user", "content": "hi"}]
    out = llm.chat(conv, sampling_params=SamplingParams(max_tokens=3), use_tqdm=False)[0]
    assert out.prompt == llm.template().render(conv, add_generation_prompt=True)


def test_llm_seed_makes_unseeded_sampling_repeat(tutorial_model):
    params = SamplingParams(temperature=1.0, max_tokens=6, ignore_eos=True)
    first = LLM(tutorial_model, dtype="fp32", max_model_len=64, seed=7).generate("Hi", params, use_tqdm=False)
    again = LLM(tutorial_model, dtype="fp32", max_model_len=64, seed=7).generate("Hi", params, use_tqdm=False)
    assert first[0].token_ids == again[0].token_ids


def test_lora_request_needs_enable_lora(tutorial_model, adapter_dir):
    from tunelab import LoRARequest

    llm = LLM(tutorial_model, dtype="fp32", max_model_len=64)
    with pytest.raises(InvalidRequest, match="enable_lora=True"):
        llm.generate(["hi"], lora_request=LoRARequest("a", 1, str(adapter_dir)), use_tqdm=False)


def test_unknown_kwargs_and_tensor_parallel_are_errors_naming_them(tutorial_model):
    with pytest.raises(ConfigError, match="unknown argument 'max_model_length'; did you mean 'max_model_len'"):
        LLM(tutorial_model, max_model_length=64)
    with pytest.raises(ConfigError, match="tensor_parallel_size=2.*--backend vllm"):
        LLM(tutorial_model, tensor_parallel_size=2)


def test_sampling_params_defaults_are_vllms():
    p = SamplingParams()
    assert (p.max_tokens, p.temperature, p.top_p, p.top_k, p.n) == (16, 1.0, 1.0, -1, 1)


@pytest.mark.parametrize("var", ["VLLM_USE_MODELSCOPE", "TUNELAB_USE_MODELSCOPE"])
def test_modelscope_switch_resolves_hub_ids_on_modelscope(var, monkeypatch):
    from tunelab.store.pull import parse_source
    from tunelab.store.resolve import resolve_model

    assert parse_source("Qwen/Qwen3-0.6B").kind == "hf"
    monkeypatch.setenv(var, "1")
    assert parse_source("Qwen/Qwen3-0.6B").kind == "modelscope"
    with pytest.raises(MissingExtra, match="modelscope"):  # the ModelScope path, without the package here
        resolve_model("Qwen/Qwen3-0.6B")


def _script(text: str) -> str:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(text)
    return f.name
