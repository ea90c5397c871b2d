"""The quantized lm_head's fused search and rescoring (csrc/head_ops.cpp, models/quant.py RescoredHead):
the top-k set against torch's, the rescored logits against the gather + bmm path, and the fallbacks."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
import torch

from tunelab.models import quant_kernels
from tunelab.models.quant import QuantSpec, QuantWeight, RescoredHead

needs_ours = pytest.mark.skipif(quant_kernels.ops() is None, reason="no compiler or not an AVX2 x86 CPU")
DTYPES = [torch.bfloat16, torch.float32]


def by_rule(y: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest of each row, ties at the k-th value to the lowest indices (NaN largest, -0 == +0), ascending."""
    order = torch.sort(y.float(), dim=1, descending=True, stable=True).indices[:, :k]
    return order.sort(dim=1).values


def adversarial(dtype: torch.dtype) -> list[tuple[torch.Tensor, int]]:
    g = torch.Generator().manual_seed(3)
    rough = (torch.randn(4, 4099, generator=g) * 2).round()  # few distinct values: ties everywhere
    cases = [(torch.zeros(3, 1000), 10), (rough, 700), (rough, 1), (rough, 4098), (rough, 4099), (rough, 9000)]
    holes = torch.randn(2, 5000, generator=g)
    holes[0, :4990] = float("-inf")  # fewer finite values than k: the rest are -inf ties
    holes[1, 100:4000] = float("-inf")
    cases.append((holes, 64))
    odd = torch.randn(5, 333, generator=g)
    odd[0, [3, 200]] = float("nan")
    odd[1, ::2], odd[2, ::3] = -0.0, 0.0
    odd[3, 10], odd[4, -1] = float("inf"), float("inf")
    cases += [(odd, 5), (odd, 150), (odd, 1)]
    return [(y.to(dtype).contiguous(), k) for y, k in cases]


@needs_ours
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, vocab, k", [(1, 262144, 1024), (3, 262144, 1024), (64, 2048, 100), (17, 640, 8),
                                            (5, 100, 100), (2, 31, 40), (1, 1, 1)])
def test_head_topk_is_torchs_set(dtype, rows, vocab, k):
    g = torch.Generator().manual_seed(rows * vocab + k)
    y = (torch.randn(rows, vocab, generator=g) * 4).to(dtype)
    got = quant_kernels.ops().head_topk(y, k)
    assert got.dtype == torch.int64 and got.shape == (rows, min(k, vocab))
    assert torch.equal(got, by_rule(y, k))
    ref = y.topk(min(k, vocab), dim=1, sorted=False)
    assert torch.equal(y.gather(1, got).float().sort(1).values, ref.values.float().sort(1).values)
    if dtype == torch.float32:  # continuous values: no ties at the k-th, so torch's set itself
        assert torch.equal(got, ref.indices.sort(1).values)


@needs_ours
@pytest.mark.parametrize("dtype", DTYPES)
def test_head_topk_ties_infinities_and_nans_follow_the_rule(dtype):
    for y, k in adversarial(dtype):
        got = quant_kernels.ops().head_topk(y, k)
        assert torch.equal(got, by_rule(y, k)), (tuple(y.shape), k)
        ref = y.topk(min(k, y.shape[1]), dim=1).values.float()  # torch ranks NaN first too
        assert torch.equal(y.gather(1, got).float().sort(1).values.nan_to_num(), ref.sort(1).values.nan_to_num())


def old_rescore(y: torch.Tensor, x: torch.Tensor, exact: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The gather + bmm + scatter the fused op replaces."""
    rows = exact.index_select(0, idx.flatten()).view(*idx.shape, -1)
    return y.clone().scatter_(1, idx, torch.bmm(rows, x.unsqueeze(-1)).squeeze(-1))


@needs_ours
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, hidden", [(1, 640), (8, 640), (3, 72)])
def test_head_rescore_matches_the_gather_and_bmm(dtype, rows, hidden):
    g = torch.Generator().manual_seed(rows + hidden)
    vocab, k = 5000, 300
    exact = (torch.randn(vocab, hidden, generator=g) * 0.05).to(dtype)
    x = (torch.randn(rows, hidden, generator=g) * 3).to(dtype)
    y = torch.randn(rows, vocab, generator=g).to(dtype)
    idx = quant_kernels.ops().head_topk(y, k)
    ref = old_rescore(y, x, exact, idx)
    got = y.clone()
    quant_kernels.ops().head_rescore_(got, x, exact, idx)
    picked = torch.zeros(rows, vocab, dtype=torch.bool).scatter_(1, idx, True)
    assert torch.equal(got[~picked], y[~picked])  # nothing else is written
    terms = exact.double()[idx] * x.double()[:, None, :]  # (rows, k, hidden)
    exact64, size = terms.sum(-1), terms.abs().sum(-1)
    assert_same_sums(got.gather(1, idx), ref.gather(1, idx))
    u = 2.0 ** -8 if dtype == torch.bfloat16 else 0.0  # the output's rounding; any fp32 sum: H 2^-24 sum|terms|
    assert ((got.gather(1, idx).double() - exact64).abs() <= exact64.abs() * u + hidden * 2.0 ** -24 * size).all()


@needs_ours
def test_head_rescore_rejects_an_index_outside_the_vocab():
    y, x, exact = torch.zeros(1, 10), torch.zeros(1, 4), torch.zeros(10, 4)
    with pytest.raises(RuntimeError, match="outside"):
        quant_kernels.ops().head_rescore_(y, x, exact, torch.tensor([[3, 10]]))
    with pytest.raises(RuntimeError, match="dtype"):
        quant_kernels.ops().head_rescore_(y, x.bfloat16(), exact, torch.tensor([[3]]))


def _head(dtype: torch.dtype, vocab: int = 4096, hidden: int = 128, top: int = 64) -> RescoredHead:
    w = (torch.randn(vocab, hidden, generator=torch.Generator().manual_seed(7)) * 0.05).to(dtype)
    return RescoredHead(QuantWeight.from_dense(w, QuantSpec.parse("int4")), w, top=top)


def assert_same_sums(got: torch.Tensor, ref: torch.Tensor) -> None:
    """fp32: the same sums up to their order; bf16: the same roundings but at a boundary (1 ulp, rare)."""
    if got.dtype == torch.float32:
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        return
    ulps = (got.view(torch.int16).int() - ref.view(torch.int16).int()).abs()
    assert ulps.max() <= 1 and (ulps > 0).float().mean() < 0.01


@needs_ours
@pytest.mark.parametrize("dtype", DTYPES)
def test_rescored_head_fused_equals_the_torch_path(dtype):
    head = _head(dtype)
    x = (torch.randn(5, 128, generator=torch.Generator().manual_seed(8)) * 3).to(dtype)
    with torch.inference_mode():
        fused, approx = head.matmul(x), head.q.matmul(x)  # approx: the int4 logits the search ranks
    idx = by_rule(approx, head.top)
    picked = torch.zeros_like(approx, dtype=torch.bool).scatter_(1, idx, True)
    assert torch.equal(fused[~picked], approx[~picked])
    assert_same_sums(fused.gather(1, idx), old_rescore(approx, x, head.exact, idx).gather(1, idx))


def test_rescored_head_falls_back_to_torch_without_our_ops(monkeypatch):
    monkeypatch.setattr(quant_kernels, "enabled", False)  # the bench switch: ours off, as where none is built
    head = _head(torch.float32, vocab=640, hidden=64, top=8)
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(9))
    approx = head.q.matmul(x)
    idx = approx.topk(8, dim=1, sorted=False).indices
    assert torch.equal(head.matmul(x), old_rescore(approx, x, head.exact, idx))
    x.requires_grad_(True)  # a gradient through x keeps torch's differentiable path even where ours are built
    monkeypatch.setattr(quant_kernels, "enabled", True)
    assert head.matmul(x).shape == (3, 640)


AVX2_CHECK = """
import sys, torch
from torch.utils.cpp_extension import load
load(name=sys.argv[2], sources=[sys.argv[1]], extra_cflags=["-O3", "-mavx2", "-mfma", "-mf16c"], build_directory=sys.argv[3],
     is_python_module=False, verbose=False)
g = torch.Generator().manual_seed(0)
for dtype in (torch.bfloat16, torch.float32):
    for rows, vocab, k in ((2, 262144, 1024), (3, 4099, 700), (2, 100, 100)):
        y = (torch.randn(rows, vocab, generator=g) * 2).round().to(dtype)
        y[0, 5], y[-1, 7] = float("nan"), -0.0
        got = torch.ops.tunelab_quant.head_topk(y, k)
        ref = torch.sort(y.float(), dim=1, descending=True, stable=True).indices[:, :k].sort(1).values
        assert torch.equal(got, ref), (dtype, rows, vocab, k)
print("same")
"""


@pytest.mark.skipif(quant_kernels.ops() is None, reason="no compiler or not an AVX2 x86 CPU")
def test_avx2_only_build_finds_the_same_set():
    """An AVX2-only machine builds the scalar (auto-vectorised) passes: built here without -mavx512*."""
    src = quant_kernels.CSRC / "head_ops.cpp"
    name = "tunelab_head_avx2_" + hashlib.sha256(src.read_bytes() + torch.__version__.encode()).hexdigest()[:12]
    build = quant_kernels.cache_dir() / name
    build.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, "-c", AVX2_CHECK, str(src), name, str(build)], capture_output=True,
                         text=True, timeout=600, env=os.environ)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "same"
