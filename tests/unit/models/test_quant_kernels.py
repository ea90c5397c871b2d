"""Our AVX2 quantized matrix-vector kernels (models/quant_kernels.py) against torch's on the same weights."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tunelab.models import quant_kernels
from tunelab.models.quant import QuantSpec, QuantWeight

needs_ours = pytest.mark.skipif(quant_kernels.ops() is None, reason="no compiler or not an AVX2 x86 CPU")
# Activations rounded to int8 per 32 inputs: measured max error 0.5-1.3% of max|y| (N(0,1) inputs, 2026-12-02).
TOLERANCE = 3e-2


@needs_ours
@pytest.mark.parametrize("spec", ["int8", "int4-g32", "int4-g64"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3])
def test_ours_agree_with_torchs_kernel(spec, dtype, rows, monkeypatch):
    torch.manual_seed(0)
    q = QuantWeight.from_dense((torch.randn(96, 256) * 0.02).to(dtype), QuantSpec.parse(spec))
    x = torch.randn(rows, 256).to(dtype)
    if q.spec.scheme == "int8":
        ours = quant_kernels.ops().int8_gemv(x, q.data, q.scales)
        ref = torch._weight_int8pack_mm(x, q.data, q.scales)
    else:
        if quant_kernels.int4_pack_block() != 32:
            pytest.skip("torch's int4 packing here is not the AVX2 one ours read")
        ours = quant_kernels.ops().int4_gemv(x, q.data, q.scales, q.spec.group_size)
        ref = torch._weight_int4pack_mm_for_cpu(x, q.data, q.spec.group_size, q.scales)
    assert ours.dtype == dtype and ours.shape == (rows, 96)
    assert (ours.float() - ref.float()).abs().max() <= TOLERANCE * ref.float().abs().max()


@needs_ours
def test_quantweight_takes_ours_up_to_max_rows_and_torchs_when_disabled(monkeypatch):
    torch.manual_seed(0)
    q = QuantWeight.from_dense(torch.randn(64, 128).to(torch.bfloat16), QuantSpec.parse("int8"))
    x = torch.randn(2, 128).to(torch.bfloat16)
    monkeypatch.setattr(quant_kernels, "DEFAULT_CAPABILITIES", (torch.backends.cpu.get_cpu_capability(),))
    quant_kernels._default_here.cache_clear()
    mine = q.kernel(x)
    monkeypatch.setattr(quant_kernels, "enabled", False)
    theirs = q.kernel(x)
    quant_kernels._default_here.cache_clear()
    assert torch.equal(mine, quant_kernels.ops().int8_gemv(x, q.data, q.scales))
    assert torch.equal(theirs, torch._weight_int8pack_mm(x, q.data, q.scales))


def test_without_a_compiler_torchs_kernels_serve(tmp_path):
    code = ("import torch; from tunelab.models import quant_kernels as k; from tunelab.models.quant import *; "
            "q = QuantWeight.from_dense(torch.randn(64, 64), QuantSpec.parse('int4-g32')); "
            "print(k.ops() is None, tuple(q.matmul(torch.randn(1, 64)).shape))")
    env = {**os.environ, "TUNELAB_KERNEL_CACHE": str(tmp_path), "CXX": str(tmp_path / "no-such-compiler")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-3:] == ["True", "(1,", "64)"]
