"""Adapters that trained token rows (peft trainable_token_indices, `lora.trainable_tokens`): served
unmerged, their embedding rows and tied output rows equal peft's, other rows of the batch untouched."""

from __future__ import annotations

import pytest
import torch

from tunelab.engine.kv_cache import KVCache
from tunelab.engine.lora import AdapterError, LoRAManager
from tunelab.engine.runner import ModelRunner
from tunelab.engine.scheduler import ScheduledItem
from tunelab.engine.sequence import Sequence
from tunelab.models.loader import load_model

TOKENS = [5, 17, 400]
PROMPT = [9, 5, 99, 17, 33, 8, 400, 12, 5]


def _make_adapter(base_dir, out):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], init_lora_weights=False,
                     trainable_token_indices=TOKENS)
    model = get_peft_model(base, cfg)
    delta = model.base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta["default"]
    with torch.no_grad():  # trained rows: far from the base's, so the output columns change too
        delta.copy_(torch.randn_like(delta) * 3 * delta.norm(dim=1, keepdim=True).mean())
    model.save_pretrained(out)
    return model.eval()


def _runner(model_dir, adapter_dir):
    model, _ = load_model(model_dir, torch.float32, torch.device("cpu"))
    lora = LoRAManager(model)
    lora.add("x", adapter_dir)
    kv = KVCache.allocate(model.spec, 16, 4, torch.float32, torch.device("cpu"))
    return ModelRunner(model, kv, torch.device("cpu"), lora)


def _items(prompts_adapters):
    items, block = [], 0
    for prompt, adapter in prompts_adapters:
        seq = Sequence(prompt, adapter=adapter)
        seq.block_table = list(range(block, block + 3))
        block += 3
        items.append(ScheduledItem(seq, 0, len(prompt), True))
    return items


@pytest.mark.parametrize("arch", ["qwen2", "gemma3"])  # gemma3: scaled embeddings
def test_token_rows_logits_equal_peft_and_leave_base_rows_alone(arch, tiny_models, tmp_path):
    peft_model = _make_adapter(tiny_models[arch], tmp_path / "a")
    with torch.no_grad():
        ref = peft_model(torch.tensor([PROMPT])).logits[0, -1]
        with peft_model.disable_adapter():
            base_ref = peft_model(torch.tensor([PROMPT])).logits[0, -1]
    runner = _runner(tiny_models[arch], tmp_path / "a")
    logits = runner.execute(_items([(PROMPT, None), (PROMPT, "x")]))  # one step, base and adapter rows
    torch.testing.assert_close(logits[1], ref, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(logits[0], base_ref, atol=2e-4, rtol=1e-4)
    assert (logits[1, TOKENS] - logits[0, TOKENS]).abs().min() > 1e-3  # the trained columns did move


def test_prompt_logprobs_of_a_token_rows_adapter_are_refused(tiny_models, tmp_path):
    from tunelab.engine import LLM, SamplingParams
    from tunelab.errors import InvalidRequest

    _make_adapter(tiny_models["qwen2"], tmp_path / "a")
    llm = LLM(tiny_models["qwen2"], dtype="fp32", adapters={"x": tmp_path / "a"}, max_model_len=64)
    with pytest.raises(InvalidRequest, match="prompt_logprobs.*trained token rows"):
        llm.generate([PROMPT], SamplingParams(max_tokens=1, prompt_logprobs=1), adapter="x")
    assert llm.generate([PROMPT], SamplingParams(max_tokens=2, temperature=0), adapter="x")[0].token_ids


def test_token_rows_that_do_not_match_their_config_are_an_error(tiny_models, tmp_path):
    import json

    _make_adapter(tiny_models["qwen2"], tmp_path / "a")
    conf = tmp_path / "a" / "adapter_config.json"
    conf.write_text(json.dumps({**json.loads(conf.read_text()), "trainable_token_indices": [5, 17]}))
    with pytest.raises(AdapterError, match=r"token rows of shape \(3, \d+\), expected \(2, \d+\)"):
        _runner(tiny_models["qwen2"], tmp_path / "a")
