"""Decode fast paths of the building blocks: same bits as the plain formulas they replace."""

from __future__ import annotations

import pytest
import torch

from tunelab.models.hugepages import pack_weights_hugepages
from tunelab.models.layers import RMSNorm, Rotary, apply_rotary, head_norm_rotary

EPS = 1e-6


def _plain_norm(x: torch.Tensor, norm: RMSNorm) -> torch.Tensor:
    """The op-by-op fp32 RMSNorm (transformers' Gemma/Llama forms)."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.eps)
    if norm.offset:
        return (h * (norm.offset + norm.weight.float())).to(x.dtype)
    return norm.weight * h.to(x.dtype)


def _plain_rotary(x: torch.Tensor, rot: Rotary, positions: torch.Tensor) -> torch.Tensor:
    """Rotate-half with half-width tables, in fp32."""
    cos, sin = rot.cos[positions].unsqueeze(1), rot.sin[positions].unsqueeze(1)
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


def _norm(dim: int, offset: float, dtype: torch.dtype) -> RMSNorm:
    norm = RMSNorm(dim, EPS, offset)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(dim) * 0.3 + (0 if offset else 1))
    return norm.to(dtype)


@pytest.mark.parametrize("offset", [0.0, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_matches_plain_formula_bitwise(offset, dtype):
    torch.manual_seed(0)
    norm, x = _norm(64, offset, dtype), (torch.randn(7, 3, 64) * 4).to(dtype)
    with torch.inference_mode():
        assert torch.equal(norm(x), _plain_norm(x, norm))


def test_cached_gain_follows_weight_changes():
    torch.manual_seed(0)
    norm, x = _norm(32, 1.0, torch.bfloat16), torch.randn(2, 32).bfloat16()
    with torch.inference_mode():
        norm(x)  # fills the cache
    with torch.no_grad():
        norm.weight.mul_(-2)  # in place: the version counter moves
    with torch.inference_mode():
        assert torch.equal(norm(x), _plain_norm(x, norm))
    norm.float()  # a cast: the cache is dropped
    with torch.inference_mode():
        assert torch.equal(norm(x.float()), _plain_norm(x.float(), norm))


def test_norm_gain_keeps_gradients_outside_inference():
    norm = _norm(16, 1.0, torch.float32)
    norm(torch.randn(3, 16)).sum().backward()
    assert norm.weight.grad is not None and norm.weight.grad.abs().sum() > 0


def test_rotary_roll_form_matches_rotate_half_bitwise():
    torch.manual_seed(0)
    rot = Rotary(1.0 / (10000 ** (torch.arange(0, 32, 2).float() / 32)), 64, attention_scaling=0.7)
    positions = torch.tensor([0, 5, 63, 17])
    for dtype in (torch.float32, torch.bfloat16):
        x = (torch.randn(4, 3, 32) * 3).to(dtype)
        assert torch.equal(apply_rotary(x, rot.at(positions)), _plain_rotary(x, rot, positions))


@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_stacked_head_norm_rotary_matches_separate_q_and_k(offset):
    torch.manual_seed(0)
    h, kv, d = 4, 2, 32
    q_norm, k_norm = _norm(d, offset, torch.bfloat16), _norm(d, offset, torch.bfloat16)
    rot = Rotary(1.0 / (10000 ** (torch.arange(0, d, 2).float() / d)), 32)
    positions = torch.tensor([3, 9, 30])
    qk = (torch.randn(3, h + kv, d) * 2).bfloat16()
    with torch.inference_mode():
        gain = torch.cat((q_norm.gain().expand(h, d), k_norm.gain().expand(kv, d)))
        got = head_norm_rotary(qk, gain, EPS, offset, rot.at(positions))
    q = _plain_rotary(_plain_norm(qk[:, :h], q_norm), rot, positions)
    k = _plain_rotary(_plain_norm(qk[:, h:], k_norm), rot, positions)
    assert torch.equal(got, torch.cat((q, k), dim=1))


def test_hugepage_packing_keeps_values_and_ties():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 50, bias=True)).bfloat16()
    model[1].weight = model[0].weight  # tied, like Gemma's lm_head
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.tensor([1, 7, 3])
    ref = model(x)
    moved = pack_weights_hugepages(model)
    assert moved in (0, sum(p.numel() * p.element_size() for p in model.parameters()))
    assert model[1].weight is model[0].weight
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])
    assert torch.equal(model(x), ref)


def test_hugepage_packing_before_loading_repoints_without_copying():
    model = torch.nn.Linear(8, 16, bias=False).bfloat16()
    weight = model.weight
    moved = pack_weights_hugepages(model, copy=False)
    assert model.weight is weight and model.weight.shape == (16, 8)  # same parameter, new storage
    if moved:
        with torch.no_grad():
            model.weight.copy_(torch.ones(16, 8))  # what the checkpoint loader then does
        assert torch.equal(model(torch.ones(1, 8).bfloat16()), torch.full((1, 16), 8.0).bfloat16())
