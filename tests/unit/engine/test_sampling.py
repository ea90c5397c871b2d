"""Sampling: penalties, masks, greedy, seeded determinism, logprobs, parameter validation."""

import math

import pytest
import torch

from tunelab.engine.sampling import SamplingParams, apply_min_p, apply_penalties, apply_top_k_top_p, sample
from tunelab.engine.sequence import Sequence
from tunelab.errors import InvalidRequest

NEG = float("-inf")


def _seqs(n: int = 1, prompt=(1, 2), output=(), **params) -> list[Sequence]:
    seqs = []
    for i in range(n):
        s = Sequence(list(prompt), SamplingParams(**params), sample_index=i)
        for t in output:
            s.append_token(t)
        seqs.append(s)
    return seqs


def _draw_many(logits: torch.Tensor, seqs: list[Sequence], steps: int) -> list[list[int]]:
    return [sample(logits, seqs).token_ids.tolist() for _ in range(steps)]


@pytest.mark.parametrize("field,value", [
    ("max_tokens", 0), ("max_tokens", -3), ("temperature", -0.1), ("top_p", 0.0), ("top_p", 1.5),
    ("top_k", -2), ("min_p", 1.5), ("repetition_penalty", 0.0), ("presence_penalty", 2.5),
    ("frequency_penalty", -3.0), ("n", 0), ("logprobs", 21), ("logprobs", -1), ("stop", [""]),
    ("stop_token_ids", [-1]), ("seed", 1.5),
])
def test_invalid_params_name_the_field(field, value):
    with pytest.raises(InvalidRequest, match=field) as err:
        SamplingParams(**{field: value})
    assert err.value.param == field


def test_params_normalize_convenience_forms():
    p = SamplingParams(stop="###", top_k=0)
    assert p.stop == ["###"] and p.top_k == -1
    assert SamplingParams(temperature=0).greedy and SamplingParams(top_k=1).greedy


def test_repetition_penalty_scales_seen_tokens_by_sign():
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0, 1.0]])
    seqs = _seqs(prompt=(0,), output=(1,), repetition_penalty=2.0)  # token 0 in prompt, 1 in output
    out = apply_penalties(logits, seqs)
    assert out.tolist() == [[1.0, -4.0, 2.0, -2.0, 1.0]]


def test_presence_and_frequency_penalties_count_output_tokens_only():
    logits = torch.zeros(1, 5)
    seqs = _seqs(prompt=(4, 4, 4), output=(1, 1, 1, 2), presence_penalty=0.5, frequency_penalty=0.25)
    out = apply_penalties(logits, seqs)
    assert out.tolist() == [[0.0, -1.25, -0.75, 0.0, 0.0]]


def test_penalties_apply_per_row():
    logits = torch.ones(2, 3)
    seqs = _seqs(output=(0,), frequency_penalty=1.0) + _seqs(output=(0,))
    assert apply_penalties(logits, seqs).tolist() == [[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]


def test_top_k_keeps_the_k_best_per_row():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0], [1.0, 5.0, 3.0, 4.0]])
    out = apply_top_k_top_p(logits, torch.tensor([2, 4]), torch.tensor([1.0, 1.0]))
    assert out[0].tolist() == [NEG, 5.0, NEG, 4.0]
    assert out[1].tolist() == logits[1].tolist()


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    out = apply_top_k_top_p(probs.log(), torch.tensor([4]), torch.tensor([0.7]))
    assert torch.isfinite(out).tolist() == [[True, True, False, False]]  # 0.5 < 0.7 <= 0.8
    out = apply_top_k_top_p(probs.log(), torch.tensor([4]), torch.tensor([0.1]))
    assert torch.isfinite(out).tolist() == [[True, False, False, False]]  # the best always stays


def test_min_p_drops_tokens_below_a_fraction_of_the_best():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    out = apply_min_p(probs, torch.tensor([0.4]))  # threshold 0.2
    assert out[0, 2:].tolist() == [0.0, 0.0]
    assert out.sum().item() == pytest.approx(1.0) and out[0, 0].item() == pytest.approx(0.625)


def test_greedy_takes_argmax_after_penalties():
    logits = torch.tensor([[3.0, 2.9, 0.0]])
    assert sample(logits, _seqs(temperature=0)).token_ids.tolist() == [0]
    seqs = _seqs(output=(0,), temperature=0, presence_penalty=1.0)
    assert sample(logits, seqs).token_ids.tolist() == [1]


def test_sampling_respects_masks():
    torch.manual_seed(0)
    logits = torch.zeros(1, 50)
    logits[0, :3] = torch.tensor([3.0, 2.0, 1.0])
    draws = {t for row in _draw_many(logits, _seqs(top_k=2), 200) for t in row}
    assert draws == {0, 1}
    draws = {t for row in _draw_many(logits, _seqs(min_p=0.3), 200) for t in row}
    assert draws == {0, 1}  # e^2/e^3 = 0.37 survives, e^1/e^3 = 0.14 does not


def test_temperature_sharpens_and_flattens():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 0.0]])
    cold = sum(r[0] == 0 for r in _draw_many(logits, _seqs(temperature=0.25), 400)) / 400
    hot = sum(r[0] == 0 for r in _draw_many(logits, _seqs(temperature=4.0), 400)) / 400
    assert cold > 0.97 and 0.5 < hot < 0.75  # p(0) = 0.9997 and 0.62


def test_same_seed_same_tokens_regardless_of_batch():
    torch.manual_seed(0)
    logits = torch.randn(1, 100)
    alone = _seqs(seed=7)
    solo = _draw_many(logits, alone, 20)
    batched = _seqs(seed=7) + _seqs(seed=None) + _seqs(seed=3)
    together = _draw_many(logits.repeat(3, 1), batched, 20)
    assert [r[0] for r in together] == [r[0] for r in solo]
    again = _draw_many(logits, _seqs(seed=7), 20)
    assert again == solo
    other = _draw_many(logits, _seqs(seed=8), 20)
    assert other != solo


def test_n_completions_of_one_seeded_request_differ():
    logits = torch.zeros(2, 1000)
    rows = _draw_many(logits, _seqs(n=2, seed=1), 5)
    assert [r[0] for r in rows] != [r[1] for r in rows]


def test_logprobs_are_from_the_raw_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    seqs = _seqs(temperature=0, logprobs=2) + _seqs(temperature=0) + _seqs(temperature=0, logprobs=0)
    out = sample(logits.repeat(3, 1), seqs)
    expected = torch.log_softmax(logits, -1)[0].tolist()
    first, none, chosen_only = out.logprobs
    assert first.token_id == 0 and math.isclose(first.logprob, expected[0], rel_tol=1e-6)
    assert [t for t, _ in first.top] == [0, 1] and math.isclose(first.top[1][1], expected[1], rel_tol=1e-6)
    assert none is None and chosen_only.top == []
    assert sample(logits, _seqs()).logprobs is None


def _reference_mask(row: torch.Tensor, k: int, p: float) -> torch.Tensor:
    """Top-k then top-p on the renormalized survivors, by a plain full sort of one row."""
    order = row.argsort(descending=True)
    kept = order[:k]
    probs = row[kept].softmax(-1)
    before = probs.cumsum(-1) - probs
    kept = kept[(before < p) | (torch.arange(len(kept)) == 0)] if p < 1 else kept
    mask = torch.zeros_like(row, dtype=torch.bool)
    mask[kept] = True
    return mask


@pytest.mark.parametrize("scale", [0.1, 3.0, 12.0])  # flat rows need the full sort, peaked ones do not
def test_top_k_top_p_matches_a_full_sort_on_a_large_vocab(scale):
    gen = torch.Generator().manual_seed(int(scale * 10))
    vocab = 5000
    logits = torch.randn(6, vocab, generator=gen) * scale
    top_k = torch.tensor([vocab, 40, vocab, 2000, 1, vocab])
    top_p = torch.tensor([0.9, 0.5, 1.0, 0.95, 0.3, 0.2])
    out = apply_top_k_top_p(logits, top_k, top_p)
    for i in range(6):
        expected = _reference_mask(logits[i], int(top_k[i]), float(top_p[i]))
        assert torch.equal(torch.isfinite(out[i]), expected), f"row {i}"
        assert torch.equal(out[i][expected], logits[i][expected])


def test_draws_follow_the_distribution():
    torch.manual_seed(0)
    probs = torch.tensor([0.6, 0.25, 0.1, 0.05, 0.0])
    seqs = _seqs(n=8)
    rows = _draw_many(probs.log().repeat(8, 1), seqs, 250)  # 2000 draws
    counts = torch.bincount(torch.tensor(rows).flatten(), minlength=5).float() / 2000
    assert counts[4] == 0
    assert torch.allclose(counts, probs, atol=0.03)


@pytest.mark.parametrize("seed", [-1, 0, 2**70])
def test_any_integer_seed_is_reproducible(seed):
    logits = torch.zeros(1, 1000)
    assert _draw_many(logits, _seqs(seed=seed), 5) == _draw_many(logits, _seqs(seed=seed), 5)


def test_greedy_picks_the_first_of_tied_maxima():
    logits = torch.zeros(3, 300)
    logits[0, [7, 200]] = 5.0
    logits[1, :] = 1.0
    logits[2, [4, 9]] = float("inf")
    out = sample(logits, _seqs(3, temperature=0.0))
    assert out.token_ids.tolist() == [7, 0, 4] == logits.argmax(dim=-1).tolist()


def test_greedy_on_a_blocked_vocab_is_the_first_maximum():
    # 64 blocks of ARGMAX_BLOCK logits: ties inside one block, across blocks, the last block, -inf rows, NaN
    logits = torch.randn(6, 64 * 1024, generator=torch.Generator().manual_seed(0))
    logits[0, [5000, 60000]] = 50.0  # tie across blocks
    logits[1, [2048, 2050]] = 50.0  # tie inside a block
    logits[2, -1] = 50.0  # the very last logit
    logits[3, :] = float("-inf")
    logits[4, [9, 70]] = float("nan")
    out = sample(logits, _seqs(6, temperature=0.0)).token_ids
    assert out.tolist()[:5] == [5000, 2048, 64 * 1024 - 1, 0, 9]
    assert torch.equal(out, logits.max(dim=-1).indices)
