"""The planner's model shapes and activation coefficients against real transformers models."""

from __future__ import annotations

import json

import pytest

from tunelab.config import load_config
from tunelab.plan.shape import ARCHITECTURES, shape_from_config
from tunelab.plan.train import CHUNK, activation_floats_per_token, trainable_params
from tunelab.train.config import TrainConfig


def _shape(model_dir):
    return shape_from_config(json.loads((model_dir / "config.json").read_text()))


def test_parameter_count_equals_the_model(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    assert _shape(tiny_model).total_params() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("method", ["lora", "dora", "freeze"])
def test_trainable_count_equals_peft(method, tiny_models):
    import torch
    from transformers import AutoModelForCausalLM

    from tunelab.train.methods import apply_method, count_params

    cfg = load_config(TrainConfig, None, [f"method={method}", "lora.rank=4", "freeze_trainable_layers=1"])
    model = AutoModelForCausalLM.from_pretrained(tiny_models["qwen2"], dtype=torch.float32)
    trainable, _ = count_params(apply_method(model, cfg, tiny_models["qwen2"]))
    assert trainable_params(_shape(tiny_models["qwen2"]), cfg) == trainable


def test_builtin_gemma3_270m_has_its_published_size():
    assert shape_from_config(ARCHITECTURES["gemma3-270m"]).total_params() == 268_098_176


def test_chunk_and_adapter_methods_are_the_trainers():
    from tunelab.plan import train as plan_train
    from tunelab.train import loss, methods

    assert CHUNK == loss.CHUNK
    assert plan_train.ADAPTER_METHODS == methods.ADAPTER_METHODS


def _saved_floats_per_token(model_dir, method: str, tokens: int = 96) -> float:
    """Bytes autograd keeps for backward in the trainer's forward, per token per layer, in floats."""
    import torch
    from transformers import AutoModelForCausalLM

    from tunelab.train.loss import SelectedLogitsLoss
    from tunelab.train.methods import apply_method

    cfg = load_config(TrainConfig, None, [f"method={method}"])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    wrapped = SelectedLogitsLoss(apply_method(model, cfg, model_dir))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    ids = torch.arange(2 * tokens).reshape(2, tokens) % 500
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        wrapped(input_ids=ids, labels=ids, position_ids=torch.arange(tokens).expand(2, tokens))
    saved = sum(n for ptr, n in seen.items() if ptr not in params)
    return saved / 4 / (2 * tokens * model.config.num_hidden_layers)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_activation_coefficients_match_saved_tensors(method, tiny_model):
    """The fitted per-layer form predicts what autograd saves, on shapes it was not fitted on."""
    shape = _shape(tiny_model)
    cfg = load_config(TrainConfig, None, [f"method={method}"])
    once = {("llama", "full"): 3.5, ("llama", "lora"): 1.5, ("gemma3", "full"): 4.0}.get((shape.family, method), 2.0)
    predicted = activation_floats_per_token(shape, cfg) + once * shape.hidden / shape.layers  # embedding side
    measured = _saved_floats_per_token(tiny_model, method)
    if method == "full":  # the head's fp32 gradient is saved too (planned under logits)
        measured -= shape.vocab * shape.hidden / (2 * 96 * shape.layers)
    assert predicted == pytest.approx(measured, rel=0.1)
