"""One generation stream: its tokens, KV block table, status and collected output. No torch.

Token bookkeeping, with L = len(token_ids):

    token_ids  = prompt_ids + output_ids
    [0, num_computed_tokens)  KV written to the cache (the first num_cached_tokens came
                              from the prefix cache and were never computed for this seq)
    [num_computed_tokens, L)  still to run through the model; the last one yields logits

After a step samples a token it is appended, so a decoding sequence always has exactly
one uncomputed token. Preemption resets num_computed_tokens to 0 and keeps the tokens,
so the sequence is recomputed later and continues where it stopped.
"""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from tunelab.engine.config import SamplingParams

_ids = itertools.count()


class SequenceStatus(enum.Enum):
    """Where a sequence is in its life: queued, in the running batch, or done."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class TokenLogprob:
    """Log-probability of one sampled token, plus the `top` most likely alternatives.

    The engine fills ids; whoever owns the tokenizer (a serving backend) fills the text
    with `decoded`, so the API routes read `token` and `top_tokens` for every backend."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)  # (token id, logprob), best first
    token: str = ""  # the sampled token's text
    top_tokens: list[str] = field(default_factory=list)  # text of each `top` entry, same order

    def decoded(self, piece: Callable[[int], str]) -> TokenLogprob:
        """A copy with `token` and `top_tokens` filled in by `piece(token_id) -> text`."""
        return replace(self, token=piece(self.token_id), top_tokens=[piece(t) for t, _ in self.top])

    def top_text(self) -> list[tuple[str, float]]:
        """The alternatives as (text, logprob), best first."""
        return [(text, lp) for text, (_, lp) in zip(self.top_tokens, self.top)]


class Sequence:
    """A prompt plus its growing output, with the KV bookkeeping the scheduler needs.

    `sample_index` separates the n completions of one request: the seeded generator
    uses `params.seed + sample_index`, so each completion differs and all repeat.
    `detokenizer` (optional, duck-typed: `add(token_id) -> str`, `flush() -> str`,
    `stopped`) turns tokens into text as they arrive; a completed stop string ends
    the sequence with finish_reason "stop".
    """

    def __init__(
        self,
        prompt_ids: list[int],
        params: SamplingParams | None = None,
        *,
        seq_id: Any = None,
        adapter: str | None = None,
        sample_index: int = 0,
        detokenizer: Any = None,
    ):
        self.seq_id = next(_ids) if seq_id is None else seq_id
        self.prompt_ids = list(prompt_ids)
        self.params = params or SamplingParams()
        self.adapter = adapter
        self.sample_index = sample_index
        self.detokenizer = detokenizer
        self.token_ids: list[int] = list(prompt_ids)
        self.output_ids: list[int] = []
        self.logprobs: list[TokenLogprob] = []
        # [i]: token i+1 given tokens 0..i (params.prompt_logprobs); None before prompt_logprobs_start
        skipped = max(0, self.params.prompt_logprobs_start - 1) if self.params.prompt_logprobs is not None else 0
        self.prompt_logprobs: list[TokenLogprob | None] = [None] * min(skipped, max(0, len(prompt_ids) - 1))
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0
        self.block_table: list[int] = []
        self.block_hashes: list[int] = []  # hash chain of the full, computed blocks
        self.status = SequenceStatus.WAITING
        self.finish_reason: str | None = None  # "stop" | "length" | "abort"
        self.error: str | None = None  # why it was aborted by the engine, if it was
        self.stop_reason: int | str | None = None  # the stop token id or stop string that ended it
        self.text = ""
        self._text_sent = 0
        self.generator: Any = None  # torch.Generator, created by the sampler on first use
        self.constraint: Any = None  # grammar state of params.structured_outputs (engine/constraints.py)
        self.images: Any = None  # a VLM prompt's engine.multimodal.ImageInputs
        self.arrival_time = time.monotonic()
        self.first_token_time: float | None = None

    def __repr__(self) -> str:
        return (f"Sequence(id={self.seq_id!r}, prompt={self.num_prompt_tokens}, out={len(self.output_ids)}, "
                f"computed={self.num_computed_tokens}, {self.status.value})")

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_tokens(self) -> int:
        """Prompt plus output tokens."""
        return len(self.token_ids)

    @property
    def num_uncomputed_tokens(self) -> int:
        """Tokens whose KV is not yet in the cache (1 for a decoding sequence)."""
        return len(self.token_ids) - self.num_computed_tokens

    def block_key(self, block: int, block_size: int) -> tuple:
        """What besides its tokens KV block `block` depends on: its adapter and the images in it."""
        if self.images is None:
            return (self.adapter,)
        return (self.adapter, *self.images.block_key(block, block_size))

    def prefix_cache_limit(self, block_size: int) -> int | None:
        """Most prefix-cache blocks this sequence may reuse: cached positions never run, so none
        that hold a position whose prompt logprob is still to come (None: no limit)."""
        if self.params.prompt_logprobs is None or len(self.prompt_logprobs) >= self.num_prompt_tokens - 1:
            return None
        return len(self.prompt_logprobs) // block_size

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def seed(self) -> int | None:
        """The seed of this sequence's generator, or None for the global RNG."""
        return None if self.params.seed is None else self.params.seed + self.sample_index

    def append_token(self, token_id: int, logprob: TokenLogprob | None = None) -> None:
        """Record one sampled token (its KV is written by the next step)."""
        self.token_ids.append(token_id)
        self.output_ids.append(token_id)
        if logprob is not None:
            self.logprobs.append(logprob)
        if self.first_token_time is None:
            self.first_token_time = time.monotonic()

    def add_text(self, token_id: int) -> None:
        """Feed the detokenizer; a completed stop string finishes the sequence."""
        if self.detokenizer is None:
            return
        self.text += self.detokenizer.add(token_id)
        if getattr(self.detokenizer, "stopped", False):
            self.stop_reason = getattr(self.detokenizer, "stop_string", None)
            self.finish("stop")

    def finish(self, reason: str) -> None:
        """Mark finished with `reason` and flush text the detokenizer held back."""
        if self.is_finished:
            return
        self.status = SequenceStatus.FINISHED
        self.finish_reason = reason
        if self.detokenizer is not None:
            self.text += self.detokenizer.flush()

    def take_delta(self) -> str:
        """Text produced since the last call, for streaming."""
        delta = self.text[self._text_sent:]
        self._text_sent = len(self.text)
        return delta

    def reset_for_recompute(self) -> None:
        """Forget all KV state after preemption; tokens and generator state are kept."""
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0
        self.block_table = []
        self.block_hashes = []
        self.status = SequenceStatus.WAITING
