"""Pay torch's per-shape first-call costs at load time instead of in the first requests.

On CPU a bf16 GEMM of a shape not seen before builds its oneDNN kernel first: about 1 ms
per linear shape (thread CPU time, Gemma 3 270M, `bench/warmup.py`), i.e. ~5 ms per new
batch size for a decoder's four projections, paid by whichever step first has that many rows.
A server's first requests meet every decode batch size 2..max_num_seqs for the first time
(one row runs `torch.mv`, which has no such cost). Running each distinct linear once at
every one of those sizes, on zeros, builds them all in a bounded time; the lm_head is left
out (262k rows: each call costs more than the kernel it would build).
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

log = logging.getLogger("tunelab.engine")


def distinct_linears(model: nn.Module) -> list[nn.Module]:
    """One decoder Linear per (in, out, quantized) shape: layers share kernels."""
    from tunelab.models.layers import Linear

    seen: dict[tuple, nn.Module] = {}
    for name, module in model.named_modules():
        if isinstance(module, Linear) and name != "lm_head":
            key = (module.in_features, module.out_features, module.qweight is not None)
            seen.setdefault(key, module)
    return list(seen.values())


@torch.inference_mode()
def warm_up(model: nn.Module, max_rows: int, dtype: torch.dtype, device: torch.device,
            budget_s: float = 5.0) -> tuple[int, float]:
    """Run every distinct linear at 2..max_rows rows (smallest first) until done or `budget_s`
    has passed; returns (largest row count warmed, seconds)."""
    start, done = time.perf_counter(), 1
    linears = distinct_linears(model)
    for rows in range(2, max_rows + 1):
        if time.perf_counter() - start > budget_s:
            break
        for linear in linears:
            linear(torch.zeros(rows, linear.in_features, dtype=dtype, device=device))
        done = rows
    return done, time.perf_counter() - start


def warm_up_engine(engine, budget_s: float = 5.0) -> None:
    """`warm_up` an LLMEngine's model for its decode batch sizes on CPU, with a log line (a server
    calls this once loaded, before it reports healthy)."""
    if engine.device.type != "cpu":
        return  # CUDA: the decode graphs are captured at load already
    rows, secs = warm_up(engine.model, engine.config.max_num_seqs, engine.dtype, engine.device, budget_s)
    log.info("warm-up: GEMM kernels for decode batches of 2..%d rows built in %.1fs", rows, secs)
