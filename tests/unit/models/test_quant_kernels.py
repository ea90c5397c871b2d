"""Our quantized matrix-vector kernels (models/quant_kernels.py) against torch's on the same weights,
and against the dequantized weight in both of torch's int4 packings (AVX2: 32-row blocks, AVX512: 64)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tunelab.dtypes import cpu_flags
from tunelab.models import quant_kernels
from tunelab.models.quant import QuantSpec, QuantWeight
from tunelab.models.quant_layout import int4_pack_block

needs_ours = pytest.mark.skipif(quant_kernels.ops() is None, reason="no compiler or not an AVX2 x86 CPU")
needs_wide = pytest.mark.skipif(quant_kernels.ops() is None or quant_kernels.ops().vector_bits() != 512,
                                reason="no AVX-512 (BW/VL/DQ/VBMI) build on this CPU")
# Activations rounded to int8 per 32 inputs: measured max error 0.5-1.3% of max|y| (N(0,1) inputs, 2026-12-02).
TOLERANCE = 3e-2
ROWS = [1, 2, 3, 4, 5, 8, 13, 16, 17]  # every tail of the 4-row and 16-row loops, and past 16


def _err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.float() - ref.float()).abs().max() / ref.float().abs().max()).item()


def pack_int4(codes: torch.Tensor, block: int) -> torch.Tensor:
    """codes (N, K) in 0..15 -> torch's CPU int4 packing with `block`-row blocks (quant_layout.unpack_int4):
    per block a (K, block/2) byte matrix, low nibbles rows 0..block/2-1, high nibbles the rest."""
    n, k = codes.shape
    c = codes.to(torch.uint8).view(n // block, 2, block // 2, k).permute(0, 3, 2, 1)  # (N/b, K, b/2, lo|hi)
    return (c[..., 0] | c[..., 1] << 4).contiguous().view(n, k // 2)


def test_pack_int4_is_torchs_packing_here():
    codes = torch.randint(0, 16, (128, 64), dtype=torch.int32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(pack_int4(codes, int4_pack_block()), torch._convert_weight_to_int4pack_for_cpu(codes, 1))


@needs_ours
@pytest.mark.parametrize("spec", ["int8", "int4-g32", "int4-g64"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3, 16])
def test_ours_agree_with_torchs_kernel(spec, dtype, rows):
    torch.manual_seed(0)
    q = QuantWeight.from_dense((torch.randn(192, 256) * 0.02).to(dtype), QuantSpec.parse(spec))
    x = torch.randn(rows, 256).to(dtype)
    if q.spec.scheme == "int8":
        ours = quant_kernels.ops().int8_gemv(x, q.data, q.scales, quant_kernels.wide())
        ref = torch._weight_int8pack_mm(x, q.data, q.scales)
    else:
        ours = quant_kernels.int4(x, q.data, q.scales, q.spec.group_size)
        if ours is None:
            pytest.skip(f"torch's int4 packing here ({int4_pack_block()}-row blocks) is not one ours read")
        ref = torch._weight_int4pack_mm_for_cpu(x, q.data, q.spec.group_size, q.scales)
    assert ours.dtype == dtype and ours.shape == (rows, 192)
    assert _err(ours, ref) <= TOLERANCE


@needs_ours
@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("n, k", [(7, 96), (97, 32), (64, 640)])  # N % 4 tails, K % 64 == 32 halves
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_both_widths_every_row_count_and_odd_shapes(wide, n, k, dtype):
    if wide and quant_kernels.ops().vector_bits() != 512:
        pytest.skip("no AVX-512 build on this CPU")
    torch.manual_seed(0)
    q = QuantWeight.from_dense((torch.randn(n, k) * 0.02).to(dtype), QuantSpec.parse("int8"))
    for rows in ROWS:
        x = torch.randn(rows, k).to(dtype)
        ours = quant_kernels.ops().int8_gemv(x, q.data, q.scales, wide)
        assert ours.dtype == dtype and ours.shape == (rows, n)
        assert _err(ours, torch._weight_int8pack_mm(x, q.data, q.scales)) <= TOLERANCE, rows


@needs_ours
@pytest.mark.parametrize("block", [32, 64])
@pytest.mark.parametrize("group, k", [(32, 96), (64, 640), (128, 256)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_both_packings_against_the_dequantized_weight(block, group, k, dtype):
    if block not in quant_kernels.int4_blocks():
        pytest.skip(f"this build reads {quant_kernels.int4_blocks()}-row int4 blocks")
    g = torch.Generator().manual_seed(0)
    n = 2 * block
    codes = torch.randint(0, 16, (n, k), generator=g)
    scale = (torch.rand(k // group, n, generator=g) + 0.5).to(dtype) * 0.01
    zero = (torch.randn(k // group, n, generator=g) * 0.01).to(dtype)
    w = (codes.float() - 8).view(n, k // group, group) * scale.float().t()[..., None] + zero.float().t()[..., None]
    scales_zeros = torch.stack([scale, zero], dim=-1).contiguous()  # (groups, N, 2)
    packed = pack_int4(codes, block)
    for rows in ROWS:
        x = torch.randn(rows, k, generator=g).to(dtype)
        ours = quant_kernels.ops().int4_gemv(x, packed, scales_zeros, group, block)
        assert ours.dtype == dtype and ours.shape == (rows, n)
        assert _err(ours, x.float() @ w.view(n, k).t()) <= TOLERANCE, rows


@needs_wide
def test_int4_wrong_block_is_an_error_naming_it():
    with pytest.raises(RuntimeError, match="block"):
        quant_kernels.ops().int4_gemv(torch.randn(1, 64), torch.zeros(64, 32, dtype=torch.uint8),
                                      torch.zeros(2, 64, 2), 32, 16)


@needs_ours
def test_quantweight_takes_ours_up_to_max_rows_and_torchs_past_them_or_when_disabled(monkeypatch):
    torch.manual_seed(0)
    q = QuantWeight.from_dense(torch.randn(64, 128).to(torch.bfloat16), QuantSpec.parse("int8"))
    monkeypatch.setattr(quant_kernels, "DEFAULT_CAPABILITIES", (torch.backends.cpu.get_cpu_capability(),))
    quant_kernels._default_here.cache_clear()
    most = quant_kernels._max_rows()
    x, past = torch.randn(2, 128).to(torch.bfloat16), torch.randn(most + 1, 128).to(torch.bfloat16)
    mine, at_most, beyond = q.kernel(x), q.kernel(past[:most]), q.kernel(past)
    monkeypatch.setattr(quant_kernels, "enabled", False)
    theirs = q.kernel(x)
    quant_kernels._default_here.cache_clear()
    wide = quant_kernels.wide()
    assert torch.equal(mine, quant_kernels.ops().int8_gemv(x, q.data, q.scales, wide))
    assert torch.equal(at_most, quant_kernels.ops().int8_gemv(past[:most], q.data, q.scales, wide))
    assert torch.equal(beyond, torch._weight_int8pack_mm(past, q.data, q.scales))
    assert torch.equal(theirs, torch._weight_int8pack_mm(x, q.data, q.scales))


def test_flags_follow_the_cpu():
    wide = set(quant_kernels.AVX512_NEEDS) <= cpu_flags()
    assert quant_kernels.flags()[:len(quant_kernels.FLAGS)] == quant_kernels.FLAGS
    assert ("-mavx512vbmi" in quant_kernels.flags()) == wide
    assert ("-mavx512vnni" in quant_kernels.flags()) == (wide and "avx512_vnni" in cpu_flags())
    if quant_kernels.ops() is not None:
        assert quant_kernels.ops().vector_bits() == (512 if wide else 256)


def test_without_a_compiler_torchs_kernels_serve(tmp_path):
    code = ("import torch; from tunelab.models import quant_kernels as k; from tunelab.models.quant import *; "
            "q = QuantWeight.from_dense(torch.randn(64, 64), QuantSpec.parse('int4-g32')); "
            "print(k.ops() is None, tuple(q.matmul(torch.randn(1, 64)).shape))")
    env = {**os.environ, "TUNELAB_KERNEL_CACHE": str(tmp_path), "CXX": str(tmp_path / "no-such-compiler")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-3:] == ["True", "(1,", "64)"]
