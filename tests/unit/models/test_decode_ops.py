"""The fused decode ops (models/decode_ops.py) give the torch path's bits, and step aside under autograd."""

from __future__ import annotations

import pytest
import torch

from tunelab.engine import LLM, SamplingParams
from tunelab.models import decode_ops
from tunelab.models.layers import GatedMLP, RMSNorm, Rotary, add_norm, head_norm_rotary

DTYPES = [torch.float32, torch.bfloat16]
ROWS = [1, 3, 8, 64]
EPS = 1e-6


@pytest.fixture(autouse=True)
def _built():
    with torch.inference_mode():
        if not decode_ops.usable(torch.zeros(1)):
            pytest.skip("the kernel extension is not built here")


def _both(fn):
    """fn() with the fused ops on, then off."""
    outs = []
    for on in (True, False):
        decode_ops.enabled = on
        try:
            with torch.inference_mode():
                outs.append(fn())
        finally:
            decode_ops.enabled = True
    return outs


def _norm(width: int, offset: float, dtype: torch.dtype) -> RMSNorm:
    norm = RMSNorm(width, EPS, offset)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(width) * 0.3 + (0 if offset else 1))
    return norm.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [0.0, 1.0])
@pytest.mark.parametrize("width", [16, 100, 640, 2048])  # 2048: aten's cascade levels; 100: a tail
def test_rms_norm_bitwise(dtype, offset, width):
    torch.manual_seed(width)
    norm = _norm(width, offset, dtype)
    for rows in ROWS:
        x = (torch.randn(rows, width) * 3).to(dtype)
        fused, plain = _both(lambda: norm(x))
        assert torch.equal(fused, plain)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_add_norm_bitwise(dtype, offset):
    torch.manual_seed(1)
    post, nxt = _norm(640, offset, dtype), _norm(640, offset, dtype)
    for rows in ROWS:
        x, h = (torch.randn(rows, 640) * 2).to(dtype), torch.randn(rows, 640).to(dtype)
        for p, n in ((post, nxt), (None, nxt), (post, None)):
            fused, plain = _both(lambda: add_norm(x, h, p, n))
            assert torch.equal(fused[0], plain[0])
            assert (fused[1] is None) == (n is None) and (n is None or torch.equal(fused[1], plain[1]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [0.0, 1.0])
@pytest.mark.parametrize("d", [16, 256])
def test_head_norm_rotary_bitwise(dtype, offset, d):
    torch.manual_seed(d)
    rot = Rotary(1.0 / (10000 ** (torch.arange(0, d, 2).float() / d)), 4096)
    for t in ROWS:
        qkv = (torch.randn(t, 8 * d) * 2).to(dtype)
        qk = qkv[:, :6 * d].view(t, 6, d)  # strided rows, as Attention slices them
        gain = torch.randn(6, d) * 0.1 + offset
        gain = gain if offset else gain.to(dtype)
        rope = rot.at(torch.randint(0, 4096, (t,)))
        fused, plain = _both(lambda: head_norm_rotary(qk, gain, EPS, offset, rope))
        assert torch.equal(fused, plain)


@pytest.mark.parametrize("act", ["gelu_pytorch_tanh", "silu"])
def test_gated_act_bitwise_in_bf16(act):
    torch.manual_seed(2)
    mlp = GatedMLP(64, 256, act).to(torch.bfloat16)
    for rows in ROWS:
        x = torch.randn(rows, 64).to(torch.bfloat16)
        with torch.inference_mode():
            assert decode_ops.act_usable(mlp.gate_up_proj(x))
        fused, plain = _both(lambda: mlp(x))
        assert torch.equal(fused, plain)


def test_gated_act_leaves_fp32_and_ragged_widths_to_torch():
    with torch.inference_mode():
        assert not decode_ops.act_usable(torch.zeros(2, 512))  # fp32: torch's activations round otherwise
        assert not decode_ops.act_usable(torch.zeros(2, 2 * 100, dtype=torch.bfloat16))  # libm tail


def test_autograd_takes_the_torch_path(monkeypatch):
    """Training: grads flow through the norm, the MLP and the q/k norm as before; no fused op is called."""
    def fail(*a, **k):
        raise AssertionError("fused op called under autograd")
    for name in ("rms_norm", "residual_norm", "norm_rotary", "gated_act"):
        monkeypatch.setattr(decode_ops, name, fail)
    norm, mlp = _norm(64, 1.0, torch.float32), GatedMLP(64, 128, "silu")
    x = torch.randn(3, 64, requires_grad=True)
    s, y = add_norm(x, mlp(norm(x)), norm, norm)
    gain = torch.ones(2, 16, requires_grad=True)
    rot = Rotary(1.0 / (10000 ** (torch.arange(0, 16, 2).float() / 16)), 64)
    q = head_norm_rotary(torch.randn(3, 2, 16), gain, EPS, 0.0, rot.at(torch.arange(3)))
    (s.sum() + y.sum() + q.sum()).backward()
    assert norm.weight.grad is not None and gain.grad is not None and x.grad is not None


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_generation_identical_with_fused_ops_on_and_off(tiny_models, arch, dtype, monkeypatch):
    calls = []
    real = decode_ops.rms_norm
    monkeypatch.setattr(decode_ops, "rms_norm", lambda *a: calls.append(1) or real(*a))
    llm = LLM(str(tiny_models[arch]), dtype=dtype, max_model_len=256, enable_prefix_caching=False)
    prompts = [[(7 * i + 3 * j) % 500 + 1 for i in range(20)] for j in range(3)]
    sp = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)
    outs = []
    for on in (True, False):
        monkeypatch.setattr(decode_ops, "enabled", on)
        calls.clear()
        outs.append([o.token_ids for o in llm.generate(prompts, sp, use_tqdm=False)])
        assert bool(calls) == on  # the switch turns the fused path on and off
    assert outs[0] == outs[1]
