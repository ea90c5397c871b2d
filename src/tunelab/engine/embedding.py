"""Embeddings from the engine's own model code: prompts -> final hidden states -> pooled vectors.

An embedding request never enters the scheduler. It runs on the thread that steps the
engine (between generation steps under `AsyncEngine`), borrowing KV blocks from the free
pool for one forward pass -- attention writes keys/values somewhere -- and returning them
at once, never into the prefix cache. Prompts are batched up to the step token budget and
each runs as one whole prefill chunk, so every token's hidden state is there to pool:

    prompts --allocate--> [p0 p0 p0 | p1 p1] --model--> hidden (T, H) --pool per prompt--> (B, D)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from tunelab.engine.pooling import Pooling


@dataclass
class _Scratch:
    """A prompt holding KV blocks for one forward pass (what BlockManager and prepare_inputs read)."""

    token_ids: list[int]
    adapter: str | None
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0


@dataclass
class _Item:
    """A whole-prompt prefill chunk that samples nothing (a ScheduledItem for prepare_inputs)."""

    seq: _Scratch
    start_pos: int = 0
    num_samples: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.seq.token_ids)

    @property
    def token_ids(self) -> list[int]:
        return self.seq.token_ids


class EmbedJob:
    """Embed `prompts` (token ids) with `adapter`, a batch at a time; `vectors` fills in order."""

    def __init__(self, prompts: list[list[int]], adapter: str | None, pooling: Pooling):
        self.prompts, self.adapter, self.pooling = prompts, adapter, pooling
        self.vectors: list[torch.Tensor] = []  # (D,) fp32 on the CPU, one per finished prompt

    @property
    def done(self) -> bool:
        """Whether every prompt has its vector."""
        return len(self.vectors) == len(self.prompts)

    def advance(self, engine: Any) -> bool:
        """Embed the next batch that fits (an LLMEngine); False when no blocks are free for it."""
        batch = self._take(engine)
        if not batch:
            return False
        try:
            inputs = engine.runner.prepare([_Item(seq) for seq in batch])
            hidden = engine.runner.hidden_states(inputs)  # (T, H), prompts back to back
            start = 0
            for seq in batch:
                n = len(seq.token_ids)
                self.vectors.append(self.pooling.pool(hidden[start:start + n]).cpu())
                start += n
        finally:
            with engine.lock:
                for seq in batch:
                    engine.scheduler.block_manager.free(seq)
        return True

    def _take(self, engine: Any) -> list[_Scratch]:
        """Allocate blocks for the next prompts, up to the step token budget (at least one prompt)."""
        blocks, budget = engine.scheduler.block_manager, engine.config.max_num_batched_tokens
        batch: list[_Scratch] = []
        used = 0
        with engine.lock:  # other threads add and abort requests meanwhile
            for ids in self.prompts[len(self.vectors):]:
                seq = _Scratch(list(ids), self.adapter)
                if (batch and used + len(ids) > budget) or blocks.fit(seq) < len(ids):
                    break
                blocks.allocate(seq, len(ids))
                batch.append(seq)
                used += len(ids)
        return batch
