"""lora.trainable_tokens: the chat template's control tokens (or named ones) train their embedding rows,
tied to the output rows; the adapter merges and serves to what peft computes."""

from __future__ import annotations

import json

import pytest
import torch

from tunelab.cli import parse
from tunelab.config_flags import config_from_args
from tunelab.errors import TunelabError
from tunelab.train.config import TrainConfig
from tunelab.train.trainer import train

PROMPT = [5, 17, 1, 42, 2, 99]  # 1, 2: the tiny tokenizer's <|im_start|>, <|im_end|>


def _cfg(model, out, tokens: str, *extra: str) -> TrainConfig:
    argv = ["train", f"model={model}", f"output={out}", "max_steps=2", "micro_batch_size=2", "lr=1e-2",
            "data.cutoff_len=64", f"lora.trainable_tokens={tokens}", *extra]
    return config_from_args(TrainConfig, parse(argv))


@pytest.fixture(scope="module")
def token_run(tiny_models, tiny_examples, tmp_path_factory):
    out = tmp_path_factory.mktemp("tt") / "run"
    return train(_cfg(tiny_models["qwen2"], out, "[template]"), examples=(tiny_examples, [])).run_dir


def _peft_logits(base_dir, adapter_dir=None) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    with torch.no_grad():
        return model(torch.tensor([PROMPT])).logits[0]


def test_template_control_tokens_train_their_rows(token_run, tiny_models, tiny_tokenizer_dir):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    conf = json.loads((token_run / "adapter" / "adapter_config.json").read_text())
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    assert conf["trainable_token_indices"] == tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    rows = load_file(token_run / "adapter" / "adapter_model.safetensors")
    trained = rows["base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta"]
    base = AutoModelForCausalLM.from_pretrained(tiny_models["qwen2"]).get_input_embeddings().weight
    assert (trained - base[conf["trainable_token_indices"]]).abs().max() > 1e-3  # the rows moved


def test_merged_and_served_adapter_compute_what_peft_computes(token_run, tiny_models, tmp_path):
    from tunelab.engine import LLM, SamplingParams
    from tunelab.export.merge import merge_run
    from tunelab.rundir import load_finished

    ref = _peft_logits(tiny_models["qwen2"], token_run / "adapter")
    merged = merge_run(load_finished(token_run), tmp_path / "merged", log=lambda _m: None)
    torch.testing.assert_close(_peft_logits(merged), ref, atol=1e-5, rtol=1e-5)
    params = SamplingParams(max_tokens=1, temperature=0, logprobs=5)
    llm = LLM(tiny_models["qwen2"], dtype="fp32", adapters={"t": token_run / "adapter"}, max_model_len=64)
    top = dict(llm.generate([PROMPT], params, adapter="t")[0].logprobs[0].top)
    want = dict(zip(*torch.log_softmax(ref[-1], -1).topk(5)[::-1]))
    assert sorted(top) == sorted(int(i) for i in want)
    assert max(abs(top[int(i)] - float(v)) for i, v in want.items()) < 1e-4


def test_a_token_that_is_not_one_vocabulary_entry_is_named(tiny_models, tiny_examples, tmp_path):
    cfg = _cfg(tiny_models["qwen2"], tmp_path / "run", "[<|im_end|>,<no_such_token>]")
    with pytest.raises(TunelabError, match=r"lora.trainable_tokens: '<no_such_token>' is not one token"):
        train(cfg, examples=(tiny_examples, []))
    assert not (tmp_path / "run").exists()


def test_chunked_head_loss_with_trained_rows_equals_the_plain_cross_entropy(tiny_models):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunelab.train.loss import head_loss, token_rows

    base = AutoModelForCausalLM.from_pretrained(tiny_models["gemma3"], dtype=torch.float32)  # soft-capped head
    lm = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"], trainable_token_indices=[1, 2, 7]))
    lm = lm.get_base_model()
    delta = token_rows(lm.get_output_embeddings())[2]
    with torch.no_grad():
        delta.add_(torch.randn_like(delta))
    hidden = torch.randn(9, lm.config.hidden_size, requires_grad=True)
    targets = torch.tensor([1, 2, 7, 3, 1, 40, 2, 9, 7])
    got = head_loss(lm, hidden, targets, chunk=4)
    got_grads = torch.autograd.grad(got, [hidden, delta])
    logits = lm.get_output_embeddings()(hidden).float()  # peft's own forward: full logits
    cap = lm.config.final_logit_softcapping
    want = torch.nn.functional.cross_entropy(torch.tanh(logits / cap) * cap if cap else logits, targets, reduction="sum")
    for a, b in zip(got_grads, torch.autograd.grad(want, [hidden, delta])):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
