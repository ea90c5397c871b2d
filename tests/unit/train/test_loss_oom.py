"""The chunked output-layer loss matches plain cross-entropy; out-of-memory errors become advice."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tunelab.config import load_config
from tunelab.train.config import TrainConfig
from tunelab.train.loss import head_loss
from tunelab.train.trainer import OutOfMemory, as_out_of_memory


class _LM(nn.Module):
    """Just what head_loss reads from a causal LM: the output layer and the config."""

    def __init__(self, vocab: int, hidden: int, cap: float | None):
        super().__init__()
        self.head = nn.Linear(hidden, vocab, bias=False)
        self.config = type("Config", (), {"final_logit_softcapping": cap})()

    def get_output_embeddings(self) -> nn.Module:
        return self.head


@pytest.mark.parametrize("cap", [None, 4.0])
@pytest.mark.parametrize("train_head", [False, True])
def test_chunked_head_loss_matches_cross_entropy(cap, train_head):
    torch.manual_seed(0)
    lm = _LM(vocab=97, hidden=12, cap=cap)
    lm.head.weight.requires_grad_(train_head)
    hidden = torch.randn(23, 12, requires_grad=True)
    targets = torch.randint(0, 97, (23,))
    ours = head_loss(lm, hidden, targets, chunk=5)  # 5 chunks, the last one partial
    (ours * 0.5).backward()
    ours_grads = hidden.grad.clone(), (lm.head.weight.grad.clone() if train_head else None)
    hidden.grad, lm.head.weight.grad = None, None
    logits = lm.head(hidden)
    logits = torch.tanh(logits / cap) * cap if cap else logits
    ref = F.cross_entropy(logits, targets, reduction="sum")
    (ref * 0.5).backward()
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)
    torch.testing.assert_close(ours_grads[0], hidden.grad, rtol=1e-4, atol=1e-6)
    if train_head:
        torch.testing.assert_close(ours_grads[1], lm.head.weight.grad, rtol=1e-4, atol=1e-6)


def test_chunked_head_loss_without_grad_is_the_same_value():
    lm = _LM(vocab=31, hidden=8, cap=None)
    hidden, targets = torch.randn(9, 8), torch.randint(0, 31, (9,))
    with torch.no_grad():
        value = head_loss(lm, hidden, targets, chunk=4)
        ref = F.cross_entropy(lm.head(hidden), targets, reduction="sum")
    assert float(value) == pytest.approx(float(ref), rel=1e-5)


def _cfg(*extra: str) -> TrainConfig:
    return load_config(TrainConfig, None, ["micro_batch_size=8", "data.cutoff_len=1024", *extra])


@pytest.mark.parametrize("err", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                 RuntimeError("DefaultCPUAllocator: can't allocate memory: out of memory")])
def test_out_of_memory_names_the_settings_to_lower(err):
    mapped = as_out_of_memory(err, _cfg(), step=7)
    assert isinstance(mapped, OutOfMemory)
    text = str(mapped)
    assert "step 7" in text and "micro_batch_size (now 8" in text and "cutoff_len (now 1024)" in text
    assert "gradient_checkpointing=true" in text and "method=qlora" in text


def test_out_of_memory_advice_follows_the_config():
    text = str(as_out_of_memory(torch.OutOfMemoryError("oom"), _cfg("gradient_checkpointing=true",
                                                                     "method=full"), step=1))
    assert "gradient_checkpointing" not in text and "method=lora" in text


def test_other_runtime_errors_pass_through_unchanged():
    err = RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    assert as_out_of_memory(err, _cfg(), step=1) is err
