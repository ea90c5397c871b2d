"""The certified greedy head: a bf16 or fp16 copy of an fp32 lm_head ranks the vocabulary, fp32 decides.
Its argmax equals the fp32 head's, near-ties included, and greedy generation is unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunelab.engine import LLM, SamplingParams
from tunelab.engine.greedy_head import GreedyHead, eligible


def _near_ties(vocab: int = 4096, width: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight whose rows come in pairs 1e-3 apart (bf16 cannot tell them apart, fp32 can), and
    hidden rows each aligned with one pair, at several scales."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(vocab, width, generator=gen)
    weight[1::2] = weight[0::2] + 1e-3 * torch.randn(vocab // 2, width, generator=gen)
    picks = torch.randint(0, vocab, (32,), generator=gen)
    hidden = weight[picks] * torch.logspace(-1, 2, 32)[:, None] + 0.01 * torch.randn(32, width, generator=gen)
    return weight, hidden


@pytest.mark.parametrize("kind", ["bf16", "fp16"])
@pytest.mark.parametrize("vocab", [4096, 4000])  # candidates searched by blocks; a vocabulary that has none
def test_argmax_equals_the_fp32_heads_and_candidates_hold_exact_logits(vocab, kind):
    weight, hidden = _near_ties(vocab)
    head = GreedyHead(weight, kind)
    got, full = head.logits(hidden), F.linear(hidden, weight)
    exact = F.linear(hidden.double(), weight.double()).topk(2)
    gap = exact.values[:, 0] - exact.values[:, 1]
    clear = gap > 1e-5 * exact.values[:, 0].abs()  # above fp32's own summation noise
    assert clear.sum() >= 24 and (gap[clear] < 2 ** -11 * exact.values[clear, 0].abs()).sum() >= 16  # below fp16's
    assert torch.equal(got.argmax(-1)[clear], exact.indices[clear, 0])
    assert torch.equal(got.argmax(-1)[clear], full.argmax(-1)[clear])
    kept = torch.isfinite(got)
    assert kept.sum(-1).min() >= 1 and kept.sum() < got.numel() // 100  # a few candidates a row
    torch.testing.assert_close(got[kept], full[kept], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["bf16", "fp16"])
def test_a_nan_row_gets_the_full_heads_logits(kind):
    weight, hidden = _near_ties()
    hidden[3] = float("nan")
    got = GreedyHead(weight, kind).logits(hidden)
    assert got[3].isnan().all()  # the row gets the full head's logits, NaN as they are
    others = torch.arange(len(hidden)) != 3
    assert torch.equal(got[others].argmax(-1), GreedyHead(weight, kind).logits(hidden[others]).argmax(-1))


def test_an_fp16_copy_refuses_weights_beyond_fp16s_range_and_leaves_them_as_they_are():
    weight, _ = _near_ties()
    weight[5, 7] = 1e5
    with pytest.raises(ValueError, match="fp16"):
        GreedyHead(weight, "fp16")
    assert weight[5, 7] == 1e5  # fbgemm's prepacking would have clamped it in place


def test_only_plain_fp32_heads_of_large_vocabularies(tiny_models):
    llm = LLM(tiny_models["llama"], dtype="fp32")
    assert GreedyHead.for_model(llm.engine.runner.model) is None  # tiny vocabulary: nothing to gain
    assert not eligible([_Seq(SamplingParams(temperature=0, logprobs=0))])
    assert not eligible([_Seq(SamplingParams(temperature=0)), _Seq(SamplingParams(temperature=0.7))])
    assert eligible([_Seq(SamplingParams(temperature=0, stop=["\n"]))])


def test_greedy_generation_is_unchanged_in_the_engine(tiny_models):
    """The engine's greedy outputs with the head on equal those without; a request that asks for
    logprobs in the same batch takes the model's own head."""
    prompts = [[5, 6, 7, 8] * 3, [9, 10, 11], [12, 13, 14, 15, 16, 12, 13], [20, 21]]
    params = [SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)] * 4
    llm = LLM(tiny_models["gemma3"], dtype="fp32", max_model_len=96, block_size=4)  # a tied head, as Gemma 3
    runner = llm.engine.runner
    plain = llm.generate(prompts, params, use_tqdm=False)
    for kind in ("bf16", "fp16"):
        runner.greedy_head = _Counted(runner.model.lm_head.weight.detach(), kind)
        fast = llm.generate(prompts, params, use_tqdm=False)
        assert [o.outputs[0].token_ids for o in fast] == [o.outputs[0].token_ids for o in plain]
        assert runner.greedy_head.calls >= 12  # every step of the batch went through it
    mixed = llm.generate(prompts, params[:3] + [params[3].replace(logprobs=2)], use_tqdm=False)
    assert mixed[3].outputs[0].logprobs[0].top  # full logits: real alternatives
    assert [o.outputs[0].token_ids for o in mixed] == [o.outputs[0].token_ids for o in plain]


class _Counted(GreedyHead):
    calls = 0

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().logits(hidden)


class _Seq:
    def __init__(self, params: SamplingParams):
        self.params = params
