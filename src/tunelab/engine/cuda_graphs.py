"""CUDA graphs for decode steps: capture the forward pass once per padded batch size, replay it.

A decode step of an 8B model launches about 15 kernels per layer, ~500 in all; for small
batches the CPU issuing those launches, not the GPU, sets the pace. A captured graph replays
them all with one launch. Graphs need fixed shapes and fixed memory, so each step is copied
into static buffers padded to the next captured size:

    step of B=5 decodes -> size 8: ids/positions/slots/lens/tables[:5] = step, rows 5..7 = padding
    replay graph[8] -> hidden[8][:5]

Padded rows write their keys/values to a spare cache block that the block manager never hands
out (`KVCache.spare_block`) and attend to that block alone, so they cannot touch real sequences.
Only decode-only steps whose rows use no LoRA adapter take this path; everything else runs eagerly.
Sampling stays outside the graph (it reads per-request options in Python).
"""

from __future__ import annotations

import torch

from tunelab.engine.kv_cache import KVCache
from tunelab.models.attention import AttnBatch


def graph_batch_sizes(max_batch: int) -> list[int]:
    """Captured sizes: 1, 2, 4, then every multiple of 8 up to `max_batch` (which is included)."""
    small = [s for s in (1, 2, 4) if s < max_batch]
    return small + list(range(8, max_batch, 8)) + [max_batch]


class DecodeGraphs:
    """Decode forward passes of `model`, one per padded batch size, over static input buffers.

    With `capture=False` (CPU tests) `forward` runs the same padded static-buffer pass eagerly,
    so everything but the capture itself is exercised without a GPU.
    """

    def __init__(self, model, kv: KVCache, max_batch: int, max_blocks: int, device: torch.device,
                 capture: bool = True):
        self.model = model
        self.kv = kv
        self.sizes = graph_batch_sizes(max_batch)
        n = self.sizes[-1]
        self.spare_slot = kv.spare_block * kv.block_size
        self.ids = torch.zeros(n, dtype=torch.long, device=device)
        self.positions = torch.zeros(n, dtype=torch.long, device=device)
        self.slots = torch.full((n,), self.spare_slot, dtype=torch.long, device=device)
        self.lens = torch.ones(n, dtype=torch.int32, device=device)
        self.tables = torch.full((n, max_blocks), kv.spare_block, dtype=torch.int32, device=device)
        self.rows = torch.arange(n, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.hidden: dict[int, torch.Tensor] = {}  # the graphs' output buffers
        self.steps = 0  # decode steps served from static buffers (a statistic, and for tests)
        if capture:
            self._capture_all()

    def fits(self, step) -> bool:
        """Whether `step` (runner.StepInputs) is decode-only, small enough and adapter-free."""
        attn = step.attn
        return (attn.decode_kernel and not attn.prefills and step.input_ids.shape[0] <= self.sizes[-1]
                and attn.decode_tables.shape[1] <= self.tables.shape[1]
                and all(adapter is None for adapter, _, _ in step.adapter_rows))

    def forward(self, step) -> torch.Tensor:
        """Hidden states (B, hidden) of a decode-only step, through the captured graph of the next size up."""
        b = step.input_ids.shape[0]
        size = next(s for s in self.sizes if s >= b)
        self._load(step, b, size)
        self.steps += 1
        if size in self.graphs:
            self.graphs[size].replay()
            return self.hidden[size][:b]
        return self._run(size)[:b]

    def _load(self, step, b: int, size: int) -> None:
        """Copy the step into the static buffers; rows b..size-1 become padding."""
        attn = step.attn
        self.ids[:b].copy_(step.input_ids)
        self.positions[:b].copy_(attn.positions)
        self.slots[:b].copy_(attn.slot_mapping)
        self.lens[:b].copy_(attn.decode_lens)
        self.tables[:b, :attn.decode_tables.shape[1]].copy_(attn.decode_tables)
        # Rows past b may hold a real sequence from an earlier, larger step: point them at the spare block.
        self.ids[b:size].zero_()
        self.positions[b:size].zero_()
        self.slots[b:size].fill_(self.spare_slot)
        self.lens[b:size].fill_(1)
        self.tables[b:size, 0].fill_(self.kv.spare_block)

    def _run(self, size: int) -> torch.Tensor:
        """The model over the first `size` static rows, all of them decode queries."""
        batch = AttnBatch(positions=self.positions[:size], slot_mapping=self.slots[:size],
                          decode_rows=self.rows[:size], decode_lens=self.lens[:size],
                          decode_tables=self.tables[:size], decode_kernel=True)
        return self.model(self.ids[:size], batch, self.kv.layers)  # (size, hidden)

    @torch.inference_mode()
    def _capture_all(self) -> None:
        """Capture largest first, so the smaller graphs reuse its memory pool."""
        pool = None
        for size in reversed(self.sizes):
            self._run(size)  # warm-up outside the graph: Triton compiles, cuBLAS picks its kernels
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.hidden[size] = self._run(size)
            pool = graph.pool()
            self.graphs[size] = graph
        torch.cuda.synchronize()
