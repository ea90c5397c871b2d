"""Constrained decoding inside the sampler: a per-sequence grammar matcher masks the logits.

A sequence whose `params.structured_outputs` is set gets an llguidance matcher on its first
sampled token (compiled grammars are cached, so equal constraints compile once). Each step,
before penalties change nothing the mask cares about:

    logits (B, V) --penalties--> --mask rows with constraints (-inf where disallowed)--> ...

and after the draw every constrained row's token advances its matcher. Unconstrained rows
are untouched, so constrained and free requests share a batch and each gets the output it
would get alone. Once the grammar is complete the mask allows the end-of-turn/EOS ids the
sequence stops at, so a constrained reply ends as soon as it parses.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
import weakref
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from tunelab.engine.sequence import Sequence
from tunelab.engine.structured import _llguidance
from tunelab.errors import InvalidRequest

# hf tokenizer -> {vocab: LLTokenizer}; weak: a stopped server's tokenizer takes its llguidance view with it
_TOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_BUILD_LOCK = threading.Lock()  # one build per tokenizer
PARALLEL_MIN_CPUS = 8  # fewer usable CPUs: a batch's masks are filled row after row (_parallel_fill)
log = logging.getLogger("tunelab.engine")


class SequenceConstraint:
    """One sequence's grammar state: which tokens may come next, advanced token by token."""

    def __init__(self, matcher: Any, stop_ids: list[int]):
        self.matcher, self.stop_ids = matcher, stop_ids

    def allow_stops(self, bitmask: torch.Tensor, row: int) -> None:
        """Once the grammar is complete the template's end-of-turn ids may end the reply too."""
        if self.matcher.is_accepting():
            for t in self.stop_ids:
                bitmask[row, t // 32] |= _bit(t % 32)

    def accept(self, token_id: int) -> None:
        """Advance past the sampled token (a stop token past the end just ends the sequence)."""
        if token_id in self.stop_ids and self.matcher.is_accepting():
            return
        if not self.matcher.consume_token(token_id):
            raise RuntimeError(f"constraint rejected token {token_id}: {self.matcher.get_error()}")


def apply_constraints(logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    """Logits (B, V) with disallowed tokens at -inf in the rows of constrained sequences (in place:
    the sampler owns this step's logits, and raw logprobs were taken before). Free rows are not read."""
    rows = [i for i, s in enumerate(seqs) if s.params.structured_outputs is not None]
    if not rows:
        return logits
    import llguidance.torch as lt

    vocab = logits.shape[1]
    # (R, ceil(V/32)) int32 on the CPU, all allowed; llguidance's allocate_token_bitmask asks
    # torch.cuda.is_available() each time (~0.1 ms), the logits' device says whether to pin
    bitmask = torch.full(lt.get_bitmask_shape(len(rows), vocab), -1, dtype=torch.int32, pin_memory=logits.is_cuda)
    constraints = [constraint_of(seqs[i], vocab) for i in rows]
    if len(constraints) > 1 and _parallel_fill():  # llguidance's threads fill the rows without the GIL
        lt.fill_next_token_bitmask_par(_executor(), [(c.matcher, r) for r, c in enumerate(constraints)], bitmask)
    else:
        for r, c in enumerate(constraints):
            lt.fill_next_token_bitmask(c.matcher, bitmask, r)
    for r, c in enumerate(constraints):
        c.allow_stops(bitmask, r)
    _mask_rows(logits, rows, bitmask)
    return logits


def advance_constraints(token_ids: torch.Tensor, seqs: list[Sequence]) -> None:
    """Feed each constrained row's sampled token (B,) to its matcher."""
    rows = [i for i, s in enumerate(seqs) if s.constraint is not None]
    if rows:
        ids = token_ids.tolist()
        for i in rows:
            seqs[i].constraint.accept(ids[i])


def check_constrainable(tokenizer: Any, structured: Any) -> None:
    """A constraint that compiles, for a tokenizer llguidance can read (a fast one); else InvalidRequest."""
    structured.check()
    if not getattr(tokenizer, "is_fast", False):
        raise InvalidRequest(f"{structured.param}: constrained decoding needs a fast (tokenizer.json) tokenizer; "
                             f"this model's is {type(tokenizer).__name__}", param=structured.param)


def constraint_of(seq: Sequence, vocab: int) -> SequenceConstraint:
    """The sequence's matcher, made on first use from its tokenizer and constraint."""
    if seq.constraint is None:
        tokenizer = seq.detokenizer.tokenizer
        grammar = seq.params.structured_outputs.check()
        matcher = _compiled(_lltokenizer(tokenizer, vocab), grammar).deep_copy()
        seq.constraint = SequenceConstraint(matcher, list(seq.params.stop_token_ids))
    return seq.constraint


@lru_cache(maxsize=1)
def _executor() -> Any:
    """llguidance's thread pool for filling several rows' masks at once."""
    return _llguidance().LLExecutor()


@lru_cache(maxsize=1)
def _parallel_fill() -> bool:
    """Whether to fill a batch's masks on llguidance's thread pool. Its default pool has 80% of the
    CPUs; with few of them waking it costs more than it saves (2 cores, 16 JSON rows: ~5 ms against
    ~0.3 ms filling them one after another, docs/benchmarks.md)."""
    return len(os.sched_getaffinity(0)) >= PARALLEL_MIN_CPUS


def cached_lltokenizer(tokenizer: Any, vocab: int) -> Any:
    """llguidance's tokenizer for `tokenizer` if already built, else None."""
    return _TOKENIZERS.get(tokenizer, {}).get(vocab)


def _lltokenizer(tokenizer: Any, vocab: int) -> Any:
    """llguidance's view of a HF tokenizer, built on the first constrained request and kept (seconds of
    CPU for a 262k vocabulary, holding the GIL throughout, so it is not built before it is needed)."""
    built = cached_lltokenizer(tokenizer, vocab)
    if built is not None:
        return built
    with _BUILD_LOCK:
        built = cached_lltokenizer(tokenizer, vocab)  # another thread may have built it while we waited
        if built is None:
            start = time.perf_counter()
            built = _llguidance().LLTokenizer(_tokenizer_json(tokenizer), n_vocab=vocab,
                                              eos_token=tokenizer.eos_token_id)
            _TOKENIZERS.setdefault(tokenizer, {})[vocab] = built
            log.info("constrained decoding: llguidance tokenizer built in %.1f s", time.perf_counter() - start)
    return built


def _tokenizer_json(tokenizer: Any) -> str:
    """The fast tokenizer serialized without padding or truncation (what `llguidance.hf.from_tokenizer`
    passes, added tokens included). That copies the backend first, a pickle round trip costing more
    than the serialization itself; a backend without padding and truncation needs no copy."""
    backend = tokenizer.backend_tokenizer
    if backend.padding is not None or backend.truncation is not None:
        backend = copy.copy(backend)
        backend.no_padding()
        backend.no_truncation()
    return backend.to_str()


@lru_cache(maxsize=64)
def _compiled(lltokenizer: Any, grammar: str) -> Any:
    """A fresh matcher for `grammar`; callers deep_copy it, so each grammar compiles once."""
    matcher = _llguidance().LLMatcher(lltokenizer, grammar)
    if matcher.is_error():
        raise RuntimeError(f"constraint failed to compile: {matcher.get_error()}")
    return matcher


def _bit(i: int) -> int:
    return -(1 << 31) if i == 31 else 1 << i  # int32 words: bit 31 is the sign bit


def _mask_rows(logits: torch.Tensor, rows: list[int], bitmask: torch.Tensor) -> None:
    """-inf in rows `rows` of logits (B, V) wherever the int32 words `bitmask` (R, W) have no bit, in place.

    On CUDA the packed words travel (V/8 bytes a row), unpack there and one masked_fill_ applies them.
    On the CPU a row keeps its few allowed logits over a fresh -inf row (a JSON grammar between
    tokens allows a handful of 262k) or sets its few banned ones (inside a string most are allowed):
    ~5x cheaper than masked_fill_ on 16 rows, whose cost grows with how scattered the mask is."""
    vocab = logits.shape[1]
    if logits.device.type != "cpu" or not logits.is_contiguous():
        shifts = torch.arange(32, dtype=torch.int32, device=logits.device)
        bits = (bitmask.to(logits.device, non_blocking=True)[:, :, None] >> shifts) & 1  # (R, W, 32)
        banned = bits.reshape(bitmask.shape[0], -1)[:, :vocab] == 0
        index = torch.tensor(rows, device=logits.device)
        logits[index] = logits[index].masked_fill_(banned, float("-inf"))
        return
    # little-endian words: byte k holds tokens 8k..8k+7; unpackbits takes ~0.03 ms for 262k tokens
    allowed = np.unpackbits(bitmask.numpy().view(np.uint8), axis=-1, bitorder="little")[:, :vocab].view(np.bool_)
    values = logits.numpy()
    for r, i in enumerate(rows):
        _keep_allowed(values[i], allowed[r])


def _keep_allowed(row: np.ndarray, allowed: np.ndarray) -> None:
    ids = np.flatnonzero(allowed)
    if 2 * len(ids) < len(row):
        kept = row[ids]
        row.fill(-np.inf)
        row[ids] = kept
    else:
        row[np.flatnonzero(~allowed)] = -np.inf
