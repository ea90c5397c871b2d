"""A sliding-window layer's decode gathers only the window (O(window) per step, not O(context)) and
gives what attending over the whole padded context with the window mask gives."""

from __future__ import annotations

import pytest
import torch

from tunelab.models.attention import AttnBatch, _decode, _sdpa


@pytest.mark.parametrize("softcap", [None, 30.0])
def test_windowed_decode_equals_the_masked_full_context(softcap):
    g = torch.Generator().manual_seed(0)
    kvh, heads, d, window = 2, 4, 16, 8
    lens = [5, 8, 9, 23, 40]  # shorter than, equal to and past the window
    cmax = max(lens)
    k_flat, v_flat = torch.randn(256, kvh, d, generator=g), torch.randn(256, kvh, d, generator=g)
    slots = torch.stack([torch.randperm(256, generator=g)[:cmax] for _ in lens])  # (B, Cmax) scattered
    for i, n in enumerate(lens):
        slots[i, n:] = 0  # padding, as the runner lays it out
    batch = AttnBatch(positions=torch.tensor([n - 1 for n in lens]), slot_mapping=torch.zeros(len(lens)),
                      decode_rows=torch.arange(len(lens)), decode_slots=slots,
                      decode_lens=torch.tensor(lens, dtype=torch.int32))
    q = torch.randn(len(lens), heads, d, generator=g)
    got = _decode(q, k_flat, v_flat, batch, 0.25, window, softcap)
    keys, vals = k_flat[slots].transpose(1, 2), v_flat[slots].transpose(1, 2)
    ref = _sdpa(q.unsqueeze(2), keys, vals, batch.decode_mask(window), 0.25, softcap).squeeze(2)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert batch.decode_window(window)[0].shape == (len(lens), window)  # what is gathered: the window only


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lens", [[40], [5, 8, 9, 23, 40]])  # one sequence (no mask) and a padded batch
@pytest.mark.parametrize("window", [None, 8])
def test_fast_decode_attention_stays_close_to_sdpa(dtype, lens, window):
    """The two-matmul decode of quantized layers (`fast`) against the SDPA path on the same batch:
    fp32 to float rounding, bf16 within the output's own rounding (one step of 2^-8 relative)."""
    g = torch.Generator().manual_seed(1)
    kvh, heads, d = 1, 4, 32
    k_flat, v_flat = torch.randn(256, kvh, d, generator=g), torch.randn(256, kvh, d, generator=g)
    slots = torch.stack([torch.randperm(256, generator=g)[:max(lens)] for _ in lens])
    for i, n in enumerate(lens):
        slots[i, n:] = 0
    batch = AttnBatch(positions=torch.tensor([n - 1 for n in lens]), slot_mapping=torch.zeros(len(lens)),
                      decode_rows=torch.arange(len(lens)), decode_slots=slots,
                      decode_lens=torch.tensor(lens, dtype=torch.int32))
    q = torch.randn(len(lens), heads, d, generator=g).to(dtype)
    k_flat, v_flat = k_flat.to(dtype), v_flat.to(dtype)
    fast = _decode(q, k_flat, v_flat, batch, 0.2, window, None, fast=True)
    ref = _decode(q, k_flat, v_flat, batch, 0.2, window, None)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2 ** -7, "atol": 2 ** -8}
    torch.testing.assert_close(fast, ref, **tol)
