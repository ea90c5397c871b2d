"""Continuous batching: which sequences run this step, and how many tokens each. No torch.

Every step (`schedule`) spends a token budget, first on running sequences in the order
they were admitted (one token per decode, a chunk per unfinished prefill), then on
admitting waiting sequences (FIFO) while there is room. Long prompts are prefilled in
chunks across steps (chunked prefill), so decodes never stall behind them. When the KV
cache runs out, the most recently admitted running sequence is preempted: its blocks
are freed and it goes back to the front of the queue, to be recomputed later.

The runner runs the batch, samples one token for each item in `batch.sample_items`
(those that reach the end of their known tokens) and hands them to `postprocess`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple

from tunelab.engine import speculative
from tunelab.engine.block_manager import BlockManager
from tunelab.engine.sequence import Sequence, SequenceStatus, TokenLogprob
from tunelab.errors import InvalidRequest


@dataclass(frozen=True)
class ScheduledItem:
    """Run `num_tokens` tokens of `seq` starting at position `start_pos`.

    Unpacks as `seq, start_pos, num_tokens = item`. `needs_logits` is fixed when the
    item is scheduled: True when the chunk reaches the last known token, so the runner
    computes logits for its last position and a new token is sampled.
    """

    seq: Sequence
    start_pos: int
    num_tokens: int
    needs_logits: bool
    draft: tuple[int, ...] = ()  # speculative tokens after the last known one (see speculative.py)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.seq, self.start_pos, self.num_tokens))

    @property
    def token_ids(self) -> list[int]:
        """The tokens this item feeds the model: known ones, then its draft."""
        known = self.seq.token_ids[self.start_pos:self.start_pos + self.num_tokens - len(self.draft)]
        return known + list(self.draft)

    @property
    def num_samples(self) -> int:
        """Rows that produce logits: the last one, or every row of a drafted item (each verifies)."""
        return 0 if not self.needs_logits else len(self.draft) + 1

    @property
    def is_decode(self) -> bool:
        return self.num_tokens == 1 and self.seq.num_prompt_tokens <= self.start_pos


class Batch(NamedTuple):
    """One step's work; `items` are in the order the runner should lay out its tokens."""

    items: list[ScheduledItem]

    @property
    def sample_items(self) -> list[ScheduledItem]:
        """Items that produce logits, in order; `postprocess` expects `num_samples` tokens each."""
        return [it for it in self.items if it.needs_logits]

    @property
    def sample_seqs(self) -> list[Sequence]:
        """The sequence of each logits row, in row order (a drafted item has several rows)."""
        return [it.seq for it in self.items for _ in range(it.num_samples)]

    @property
    def num_tokens(self) -> int:
        return sum(it.num_tokens for it in self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


class Scheduler:
    """Admits, batches, preempts and finishes sequences over one paged KV cache.

    `cfg` is an EngineConfig (or anything with its fields) with max_model_len and
    num_blocks filled in.
    """

    def __init__(self, cfg: Any):
        if not cfg.max_model_len or not cfg.num_blocks:
            raise ValueError("Scheduler needs cfg.max_model_len and cfg.num_blocks set")
        self.cfg = cfg
        self.block_manager = BlockManager(cfg.num_blocks, cfg.block_size, cfg.enable_prefix_caching)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # admission order: the last is preempted first
        self.num_preemptions = 0
        self._eos = frozenset(cfg.eos_token_ids)
        self._finished_outside_step: list[Sequence] = []
        self.num_generated = 0  # tokens appended to outputs (a verified draft adds several per step)
        self.num_draft_tokens = 0  # speculative tokens proposed, and accepted
        self.num_accepted_tokens = 0

    # ---- requests in and out -------------------------------------------------------

    def add(self, seq: Sequence) -> None:
        """Queue a sequence; a prompt that can never run is rejected before any work."""
        self.check_prompt(seq.num_prompt_tokens)
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def check_prompt(self, n: int) -> None:
        """InvalidRequest unless a prompt of `n` tokens fits the model length and the KV cache."""
        limit = self.cfg.max_model_len
        if n == 0:
            raise InvalidRequest("the prompt is empty", param="prompt")
        if n > limit:
            raise InvalidRequest(
                f"the prompt has {n} tokens, more than the maximum model length of {limit}", param="prompt")
        capacity = self.block_manager.num_blocks * self.block_manager.block_size
        if n > capacity:
            raise InvalidRequest(
                f"the prompt has {n} tokens, more than the KV cache holds ({capacity})", param="prompt")

    def abort(self, seq_id: Any, reason: str = "abort") -> Sequence | None:
        """Finish a sequence now and free its blocks; returns it, or None if unknown."""
        for queue in (self.running, self.waiting):
            for seq in queue:
                if seq.seq_id == seq_id:
                    queue.remove(seq)
                    self._finish(seq, reason)
                    return seq
        return None

    def has_unfinished(self) -> bool:
        return bool(self.running or self.waiting)

    def stats(self) -> dict[str, float]:
        """running, waiting, preemptions so far, KV cache usage (0..1)."""
        return {"running": len(self.running), "waiting": len(self.waiting),
                "preemptions": self.num_preemptions, "kv_usage": self.block_manager.usage()}

    # ---- one step --------------------------------------------------------------------

    def schedule(self) -> Batch:
        """Pick this step's work under the token budget (may preempt; may be empty)."""
        items: list[ScheduledItem] = []
        budget = self.cfg.max_num_batched_tokens
        preempted_before = self.num_preemptions
        budget = self._schedule_running(items, budget)
        if self.num_preemptions == preempted_before:  # no room was short: admit newcomers
            self._schedule_waiting(items, budget)
        return Batch(items)

    def postprocess(
        self, batch: Batch, sampled_token_ids: list[int], logprobs: list[TokenLogprob | None] | None = None
    ) -> list[Sequence]:
        """Advance computed counts, append each sample item's token(s), finish seqs.

        `sampled_token_ids` holds one token per logits row (`Batch.sample_seqs`). Returns the
        sequences finished since the last call (including ones failed for lack of memory).
        """
        per_item = self._split(batch, sampled_token_ids, logprobs)
        for item in batch.items:
            if not item.seq.is_finished:  # skip seqs aborted while the step ran
                # a drafted item computed KV for its rejected guesses too; those slots get rewritten
                rejected = len(item.draft) + 1 - len(per_item[id(item)][0]) if item.draft else 0
                item.seq.num_computed_tokens += item.num_tokens - rejected
                self.block_manager.commit(item.seq)
        finished, self._finished_outside_step = self._finished_outside_step, []
        for item in batch.sample_items:
            if item.seq.is_finished:
                continue
            for token, logprob in zip(*per_item[id(item)]):
                self._append(item.seq, int(token), logprob)
                if item.seq.is_finished:
                    break
            if item.seq.is_finished:
                self.running.remove(item.seq)
                self.block_manager.free(item.seq)
                finished.append(item.seq)
        return finished

    def _split(self, batch: Batch, tokens: list[int], logprobs) -> dict[int, tuple[list[int], list]]:
        """Each sample item's tokens to append: its one sampled token, or its accepted draft."""
        rows = sum(it.num_samples for it in batch.sample_items)
        if len(tokens) != rows:
            raise ValueError(f"expected {rows} sampled tokens, got {len(tokens)}")
        logprobs = logprobs or [None] * rows
        out, row = {}, 0
        for item in batch.sample_items:
            end = row + item.num_samples
            predicted, lps, row = tokens[row:end], logprobs[row:end], end
            if item.draft:
                predicted = speculative.accepted(item.draft, predicted)
                self.num_draft_tokens += len(item.draft)
                self.num_accepted_tokens += len(predicted) - 1
            out[id(item)] = (predicted, lps[:len(predicted)])
        return out

    # ---- internals ---------------------------------------------------------------------

    def _schedule_running(self, items: list[ScheduledItem], budget: int) -> int:
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            draft = self._draft(seq, budget)
            n = _whole_images(seq, min(seq.num_uncomputed_tokens + len(draft), budget))
            n = self._make_room(seq, n, need=_whole_images(seq, 1))
            if n == 0:  # seq itself was preempted or failed; running[i] is now the next one
                continue
            n = _whole_images(seq, n)  # the KV room may have cut an image short: stop before it
            draft = draft[:n - 1] if draft else draft  # fewer slots than asked: fewer guesses
            self.block_manager.allocate(seq, n)
            items.append(_item(seq, n, tuple(draft)))
            budget -= n
            i += 1
        return budget

    def _draft(self, seq: Sequence, budget: int) -> list[int]:
        """Speculative tokens for a greedy decode (none when off, or for sampled/penalised seqs)."""
        k = getattr(self.cfg, "num_speculative_tokens", 0)
        p = seq.params
        if not k or seq.num_uncomputed_tokens != 1 or not p.greedy or p.logprobs is not None or (
                p.repetition_penalty != 1.0 or p.presence_penalty or p.frequency_penalty
                or p.structured_outputs is not None):
            return []  # penalties, logprobs and grammars depend on every earlier token: one at a time
        room = min(k, budget - 1, p.max_tokens - len(seq.output_ids) - 1,
                   self.cfg.max_model_len - seq.num_tokens - 1)
        return speculative.propose(seq.token_ids, room)

    def _make_room(self, seq: Sequence, n: int, need: int = 1) -> int:
        """Tokens of `seq` that get slots, preempting later-admitted seqs until `need` fit."""
        while (fit := self.block_manager.fit(seq)) < need:
            victim = self.running[-1]
            if victim is seq and len(self.running) == 1:
                self._fail(seq, "the KV cache is too small for this sequence")
                return 0
            self._preempt(victim)
            if victim is seq:
                return 0
        return min(n, fit)

    def _schedule_waiting(self, items: list[ScheduledItem], budget: int) -> None:
        bm = self.block_manager
        while self.waiting and budget > 0 and len(self.running) < self.cfg.max_num_seqs:
            seq = self.waiting[0]
            hits = bm.match_prefix(seq)[:seq.prefix_cache_limit(bm.block_size)]  # cached rows give no logprobs
            fit = bm.fit(seq, hits)
            n = _whole_images(seq, min(seq.num_tokens - len(hits) * bm.block_size, budget, fit),
                              len(hits) * bm.block_size)
            if n <= 0 or n > fit:
                break  # head of the queue waits for memory; no overtaking, so no starvation
            self.waiting.popleft()
            bm.allocate(seq, n, hits)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            items.append(_item(seq, n))
            budget -= n

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.reset_for_recompute()
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def _fail(self, seq: Sequence, error: str) -> None:
        self.running.remove(seq)
        seq.error = error
        self._finish(seq, "abort")
        self._finished_outside_step.append(seq)

    def _finish(self, seq: Sequence, reason: str) -> None:
        self.block_manager.free(seq)
        seq.finish(reason)

    def _append(self, seq: Sequence, token: int, logprob: TokenLogprob | None) -> None:
        seq.append_token(token, logprob)
        self.num_generated += 1
        p = seq.params
        if token in p.stop_token_ids or (token in self._eos and not p.ignore_eos):
            seq.stop_reason = token
            seq.finish("stop")  # the stop token is kept in output_ids but never in the text
            return
        seq.add_text(token)
        if seq.is_finished:
            return
        if len(seq.output_ids) >= p.max_tokens or seq.num_tokens >= self.cfg.max_model_len:
            seq.finish("length")


def _item(seq: Sequence, num_tokens: int, draft: tuple[int, ...] = ()) -> ScheduledItem:
    start = seq.num_computed_tokens
    return ScheduledItem(seq, start, num_tokens, start + num_tokens - len(draft) == seq.num_tokens, draft)


def _whole_images(seq: Sequence, n: int, start: int | None = None) -> int:
    """Tokens of a prefill chunk of `n` from `start` (default: the first uncomputed) that keep an image
    whose tokens attend both ways (Gemma 3) in one chunk; the KV room (`fit`) still caps the result."""
    images = getattr(seq, "images", None)
    if images is None:
        return n
    return images.chunk_tokens(seq.num_computed_tokens if start is None else start, n)
