"""Multi-LoRA: our unmerged per-row adapters against peft, and mixed batches against solo runs."""

from __future__ import annotations

import pytest
import torch

from tunelab.engine import LLM, SamplingParams
from tunelab.engine.kv_cache import KVCache
from tunelab.engine.lora import AdapterError, LoRAManager
from tunelab.engine.runner import prepare_inputs
from tunelab.engine.scheduler import ScheduledItem
from tunelab.engine.sequence import Sequence
from tunelab.models.loader import load_model

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROMPT = [5, 17, 99, 240, 33, 8, 71, 400, 12]


def _make_adapter(base_dir, out, seed: int, **lora_kw):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False, **lora_kw)
    model = get_peft_model(base, cfg)
    model.save_pretrained(out)
    return model.eval()


@pytest.fixture(scope="module")
def adapters(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    base = tiny_models["qwen2"]  # qwen2: fused q/k/v with biases
    return {
        "a": (root / "a", _make_adapter(base, root / "a", 1)),
        "b": (root / "b", _make_adapter(base, root / "b", 2, use_rslora=True)),
        "dora": (root / "dora", _make_adapter(base, root / "dora", 3, use_dora=True)),
    }


def _our_logits(model_dir, adapter_dir) -> torch.Tensor:
    model, _ = load_model(model_dir, torch.float32, torch.device("cpu"))
    lora = LoRAManager(model)
    lora.add("x", adapter_dir)
    kv = KVCache.allocate(model.spec, 16, 4, torch.float32, torch.device("cpu"))
    seq = Sequence(PROMPT, adapter="x")
    seq.block_table = list(range(3))
    step = prepare_inputs([ScheduledItem(seq, 0, len(PROMPT), True)], 4, torch.device("cpu"))
    lora.set_batch(step.adapter_rows, len(PROMPT))
    with torch.inference_mode():
        return model.compute_logits(model(step.input_ids, step.attn, kv.layers))


@pytest.mark.parametrize("name", ["a", "b", "dora"])
def test_adapter_logits_equal_peft(name, adapters, tiny_models):
    path, peft_model = adapters[name]
    with torch.no_grad():
        ref = peft_model(torch.tensor([PROMPT])).logits[0]
    torch.testing.assert_close(_our_logits(tiny_models["qwen2"], path), ref, atol=2e-4, rtol=1e-4)
    merged = peft_model.merge_and_unload()  # also equals the merged weights peft would export
    with torch.no_grad():
        torch.testing.assert_close(merged(torch.tensor([PROMPT])).logits[0], ref, atol=2e-4, rtol=1e-4)


def test_mixed_adapter_batch_equals_each_alone(adapters, tiny_models):
    llm = LLM(tiny_models["qwen2"], dtype="fp32", adapters={n: p for n, (p, _) in adapters.items()}, max_model_len=128)
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
    prompts = [PROMPT, PROMPT, PROMPT[:5], PROMPT, PROMPT[2:]]
    names = ["a", None, "b", "dora", "a"]
    mixed = llm.generate(prompts, params, adapter=names)
    alone = [llm.generate([p], params, adapter=n)[0] for p, n in zip(prompts, names)]
    assert [o.token_ids for o in mixed] == [o.token_ids for o in alone]
    assert len({tuple(mixed[i].token_ids) for i in (0, 1, 3)}) == 3  # adapters really change output


def test_adapter_add_remove_and_bad_dirs(adapters, tiny_models, tmp_path):
    llm = LLM(tiny_models["qwen2"], dtype="fp32", max_model_len=128)
    llm.engine.add_adapter("a", adapters["a"][0])
    assert llm.engine.lora.names() == ["a"]
    llm.engine.remove_adapter("a")
    assert llm.engine.lora.names() == []
    with pytest.raises(Exception, match="adapter_config.json"):
        llm.engine.add_adapter("x", tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text('{"peft_type": "PREFIX_TUNING"}')
    (bad / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(AdapterError, match="peft_type"):
        llm.engine.add_adapter("x", bad)
