"""The CUDA decode path on CPU: the Triton paged-decode kernel through Triton's interpreter, and
the CUDA-graph static-buffer decode (padding, spare block) without the capture itself.

The capture and replay proper need a GPU: see the `gpu` test at the end.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")

from tunelab.engine import LLM, SamplingParams  # noqa: E402
from tunelab.engine.cuda_graphs import graph_batch_sizes  # noqa: E402
from tunelab.models.attention import AttnBatch, _decode  # noqa: E402


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: Triton's interpreter (see conftest)


@pytest.fixture(scope="module")
def interpreted():
    """The kernel module; on CPU it must have been defined under TRITON_INTERPRET=1."""
    from tunelab.models import triton_attention

    if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.fail("TRITON_INTERPRET=1 must be set before triton is imported (tests/conftest.py does)")
    return triton_attention


def _reference(q, k_cache, v_cache, tables, lens, scale, window, softcap):
    """The gather + SDPA decode path over the same paged cache."""
    b, bs, kvh, d = q.shape[0], k_cache.shape[1], k_cache.shape[2], k_cache.shape[3]
    slots = (tables.long()[:, :, None] * bs + torch.arange(bs)).view(b, -1)[:, :int(lens.max())]
    batch = AttnBatch(positions=torch.zeros(b, dtype=torch.long), slot_mapping=torch.zeros(b, dtype=torch.long),
                      decode_rows=torch.arange(b), decode_slots=slots, decode_lens=lens)
    return _decode(q, k_cache.view(-1, kvh, d), v_cache.view(-1, kvh, d), batch, scale, window, softcap)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("heads,kv_heads,head_dim,block_size", [(4, 2, 64, 4), (8, 1, 32, 16), (2, 2, 80, 8)])
@pytest.mark.parametrize("window,softcap", [(None, None), (5, None), (None, 20.0)])
def test_kernel_matches_gather_path(interpreted, dtype, tol, heads, kv_heads, head_dim, block_size, window, softcap):
    gen = torch.Generator().manual_seed(heads * 100 + block_size)
    num_blocks = 80 // block_size + 4
    k_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=gen).to(dtype)
    v_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=gen).to(dtype)
    lens = torch.tensor([1, 7, 33, 70], dtype=torch.int32)  # one token, part of a tile, several tiles
    width = -(-70 // block_size)
    tables = torch.stack([torch.randperm(num_blocks, generator=gen)[:width] for _ in lens]).to(torch.int32)
    q = torch.randn(4, heads, head_dim, generator=gen).to(dtype)
    dev = [t.to(DEVICE) for t in (q, k_cache, v_cache, tables, lens)]
    got = interpreted.paged_decode(*dev, head_dim ** -0.5, window, softcap).cpu()
    want = _reference(q, k_cache, v_cache, tables, lens, head_dim ** -0.5, window, softcap)
    assert got.dtype == dtype and got.shape == q.shape
    torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)


_COMPILE = """
import sys, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from tunelab.models.triton_attention import _decode_kernel as k

dtype, group, head_dim, window, softcap, arch = sys.argv[1:]
types = [f"*{dtype}"] * 4 + ["*i32"] * 2 + ["i64"] * 8 + ["fp32", "fp32", "i32"]
const = dict(GROUP=int(group), G_PAD=max(16, triton.next_power_of_2(int(group))), HEAD_DIM=int(head_dim),
             D_PAD=max(16, triton.next_power_of_2(int(head_dim))), BLOCK_SIZE=16, TILE=32,
             SOFTCAP=softcap == "1", WINDOW=window == "1", PRECISION="ieee" if dtype == "fp32" else "tf32")
sig = dict(zip(k.arg_names, types)) | {name: "constexpr" for name in const}
src = ASTSource(fn=k, signature=sig, constexprs={(k.arg_names.index(n),): v for n, v in const.items()})
kernel = triton.compile(src, target=GPUTarget("cuda", int(arch), 32))
assert len(kernel.asm["cubin"]) > 1000
"""


@pytest.mark.parametrize("dtype,group,head_dim,window,softcap,arch", [
    ("bf16", 4, 128, 0, 0, 90),  # Llama 3 8B on an H100
    ("fp16", 7, 64, 1, 0, 80),  # Qwen2-style group of 7, sliding window, A100
    ("bf16", 4, 256, 1, 1, 90),  # Gemma: head_dim 256, soft-capping
    ("fp32", 1, 80, 0, 0, 80),
])
def test_kernel_compiles_for_cuda(dtype, group, head_dim, window, softcap, arch):
    """The interpreter is lenient; compiling to a cubin (no GPU needed) checks what a GPU would."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    args = [sys.executable, "-c", _COMPILE, dtype, str(group), str(head_dim), str(window), str(softcap), str(arch)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_graph_batch_sizes():
    assert graph_batch_sizes(1) == [1]
    assert graph_batch_sizes(6) == [1, 2, 4, 6]
    assert graph_batch_sizes(20) == [1, 2, 4, 8, 16, 20]
    assert graph_batch_sizes(64)[-3:] == [48, 56, 64]


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_static_buffer_decode_matches_eager(interpreted, tiny_models, arch):
    """Greedy output through padded static buffers + kernel equals the plain engine's, while batches
    shrink (finished sequences leave stale rows behind that must become padding)."""
    prompts = [[5, 60, 61, 62, 300], [7, 8, 9], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21], [40, 41], [50] * 6]
    # 5 rows run as 8 (3 padding), then 4, then 3 as 4 with a stale row from the step before.
    params = [SamplingParams(max_tokens=n, temperature=0, ignore_eos=True) for n in (12, 5, 9, 3, 7)]
    eager = LLM(tiny_models[arch], dtype="fp32", max_model_len=64, block_size=4, device=DEVICE, enforce_eager=True)
    static = LLM(tiny_models[arch], dtype="fp32", max_model_len=64, block_size=4, max_num_seqs=8, device=DEVICE,
                 enforce_eager=True)
    static.engine.runner.enable_graphs(max_batch=8, max_blocks=16, capture=False)
    got = [o.token_ids for o in static.generate(prompts, params)]
    assert got == [o.token_ids for o in eager.generate(prompts, params)]
    assert static.engine.runner.graphs.steps >= 10


def test_padding_rows_only_touch_the_spare_block(interpreted, tiny_models):
    llm = LLM(tiny_models["llama"], dtype="fp32", max_model_len=32, block_size=4, num_blocks=8, device=DEVICE,
              enforce_eager=True)
    llm.engine.runner.enable_graphs(max_batch=4, max_blocks=8, capture=False)
    kv = llm.engine.kv
    assert kv.layers[0][0].shape[0] == 9 and kv.spare_block == 8  # the pools hold one block more
    llm.generate([[5, 6, 7, 8, 9, 10]], SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))
    before = [k.clone() for k, _ in kv.layers]
    graphs = llm.engine.runner.graphs
    graphs.slots.fill_(5)  # as if an earlier, larger step had left real slots in rows 1..3
    graphs._load(_fake_step(), 1, 4)  # row 0 writes slot 0; rows 1..3 are padding
    graphs._run(4)
    for k, old in ((k, old) for (k, _), old in zip(kv.layers, before)):
        assert torch.equal(k[1:8], old[1:8]) and torch.equal(k[0, 1:], old[0, 1:])
        assert not torch.equal(k[0, 0], old[0, 0]) and k[8, 0].abs().sum() > 0


def _fake_step():
    """A one-row decode step writing position 0 of block 0 (a real runner.StepInputs)."""
    from tunelab.engine.runner import prepare_inputs
    from tunelab.engine.scheduler import ScheduledItem
    from tunelab.engine.sequence import Sequence

    seq = Sequence([9])
    seq.block_table = [0]
    return prepare_inputs([ScheduledItem(seq, 0, 1, True)], 4, torch.device(DEVICE), decode_kernel=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_cuda_graphs_match_eager_on_gpu(tiny_models, dtype):
    # Four sequences of equal length: every decode step is B=4, a captured size, so graph and eager
    # run the same GEMM shapes (padding to another size may pick other cuBLAS kernels and round
    # differently, which is fine in serving but would make this comparison inexact).
    prompts = [[5, 60, 61, 62, 300], [7, 8, 9], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21], [40, 41]]
    params = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
    graphs = LLM(tiny_models["qwen2"], dtype=dtype, max_model_len=64, max_num_seqs=8, device="cuda")
    eager = LLM(tiny_models["qwen2"], dtype=dtype, max_model_len=64, max_num_seqs=8, device="cuda",
                enforce_eager=True)
    assert graphs.engine.runner.graphs.graphs  # captured
    got = [o.token_ids for o in graphs.generate(prompts, params)]
    assert got == [o.token_ids for o in eager.generate(prompts, params)]
    assert graphs.engine.runner.graphs.steps >= 15
