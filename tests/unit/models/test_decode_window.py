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
