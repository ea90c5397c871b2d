"""The certified greedy head: a bf16 or fp16 copy of an fp32 lm_head (an fp16 copy of a bf16 one) ranks
the vocabulary, the head's own product decides. Its argmax equals the head's, near and exact ties
included, and greedy generation is unchanged; other requests take the full head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunelab.engine import LLM, SamplingParams
from tunelab.engine.greedy_head import GreedyHead, best_kind, eligible
from tunelab.engine.sampling import _argmax
from tunelab.models import quant_kernels
from tunelab.models.layers import Linear, dense, packing_pays

needs_fbgemm = pytest.mark.skipif(best_kind(torch.bfloat16) is None, reason="a bf16 head ranks with fbgemm's fp16")
needs_int8 = pytest.mark.skipif(not quant_kernels.active() or quant_kernels.ops() is None,
                                reason="an int8 copy ranks with our int8 kernel")


def _near_ties(vocab: int = 4096, width: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight whose rows come in pairs 1e-3 apart (bf16 cannot tell them apart, fp32 can), and
    hidden rows each aligned with one pair, at several scales."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(vocab, width, generator=gen)
    weight[1::2] = weight[0::2] + 1e-3 * torch.randn(vocab // 2, width, generator=gen)
    picks = torch.randint(0, vocab, (32,), generator=gen)
    hidden = weight[picks] * torch.logspace(-1, 2, 32)[:, None] + 0.01 * torch.randn(32, width, generator=gen)
    return weight, hidden


@pytest.mark.parametrize("kind", ["bf16", "fp16", pytest.param("int8", marks=needs_int8)])
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
    assert kept.sum(-1).min() >= 1 and kept.any(0).sum() < vocab // 32  # a few candidates a row: every row's kept
    torch.testing.assert_close(got[kept], full[kept], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["bf16", "fp16", pytest.param("int8", marks=needs_int8)])
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


def _bf16_ties(vocab: int = 4096, width: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """bf16 rows in fours: a row, its exact copy (equal logits: the first index must win), and two rows
    one bf16 step apart in one weight; hidden rows aligned with one four each, at several scales."""
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(vocab, width, generator=gen).bfloat16()
    weight[1::4] = weight[0::4]
    weight[3::4] = weight[2::4]
    weight[3::4, 0] = (weight[2::4, 0].view(torch.int16) + 1).view(torch.bfloat16)  # one step further from 0
    picks = torch.randint(0, vocab, (48,), generator=gen)
    scale = torch.logspace(-1, 1.5, 48)[:, None]
    hidden = (weight[picks].float() * scale + 0.01 * torch.randn(48, width, generator=gen)).bfloat16()
    return weight, hidden


@pytest.mark.parametrize("kind", [pytest.param("fp16", marks=needs_fbgemm), pytest.param("int8", marks=needs_int8)])
@pytest.mark.parametrize("vocab", [4096, 4000])
def test_a_bf16_heads_argmax_and_candidate_logits_are_the_heads_own(vocab, kind):
    weight, hidden = _bf16_ties(vocab)
    head = GreedyHead(weight, kind)
    got, full = head.logits(hidden), dense(hidden, weight).float()  # the head's product, all rows at once
    top2 = full.topk(2).values
    assert (top2[:, 0] == top2[:, 1]).sum() >= 24  # ties in the rounded logits: the first index decides
    assert torch.equal(_argmax(got), _argmax(full))
    kept = torch.isfinite(got)
    assert torch.equal(got[kept], full[kept])  # bit for bit
    assert kept.sum() < got.numel() // 20
    one = Linear(weight.shape[1], vocab, bias=False).to(torch.bfloat16).requires_grad_(False)
    one.weight.copy_(weight)
    one.pack()  # where packing pays, the engine's one-row head is the packed product
    with torch.inference_mode():
        for row in hidden[:12].split(1):
            alone, mine = one(row).float(), head.logits(row)
            assert _argmax(mine) == _argmax(alone) and torch.equal(mine[torch.isfinite(mine)],
                                                                   alone[torch.isfinite(mine)])
    assert packing_pays(weight) == (one.packed is not None)


def test_a_bf16_head_ranks_only_with_an_fp16_or_int8_copy():
    weight, _ = _bf16_ties()
    with pytest.raises(ValueError, match="fp16 or int8 copy"):
        GreedyHead(weight, "bf16")
    with pytest.raises(ValueError, match="'int4' is not one of bf16, fp16, int8"):
        GreedyHead(weight, "int4")


@needs_fbgemm
def test_a_bf16_models_greedy_steps_use_it_and_other_requests_do_not(tiny_models):
    """Greedy tokens equal the full head's; a request with logprobs, a temperature or a penalty in
    the step sends the whole step to the full head, with outputs as without the greedy head."""
    prompts = [[5, 6, 7, 8] * 3, [9, 10, 11], [12, 13, 14, 15, 16, 12, 13]]
    greedy = SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)
    others = [greedy.replace(logprobs=3), SamplingParams(max_tokens=10, temperature=0.8, seed=3, ignore_eos=True),
              greedy.replace(repetition_penalty=1.3), greedy.replace(presence_penalty=0.5)]
    llm = LLM(tiny_models["gemma3"], dtype="bf16", max_model_len=96, block_size=4)
    runner = llm.engine.runner
    assert runner.greedy_head is None  # a tiny vocabulary: nothing to gain by default

    def run(params):
        return [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]

    plain = {i: run([greedy, greedy, p]) for i, p in enumerate([greedy, *others])}
    runner.greedy_head = _Counted(runner.model.lm_head.weight.detach())
    assert run([greedy] * 3) == plain[0] and runner.greedy_head.calls >= 10
    assert [run([greedy] * 2 + [greedy])[2]] == [plain[0][2]]
    for i, p in enumerate(others, start=1):
        runner.greedy_head.calls = 0
        assert run([greedy, greedy, p]) == plain[i], p
        assert runner.greedy_head.calls <= 1  # only a step after the odd request finished, if any
