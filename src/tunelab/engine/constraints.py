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

import logging
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
_BUILD_LOCK = threading.Lock()  # one build per tokenizer: a request waits for a prewarm in progress
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
    the sampler owns this step's logits, and raw logprobs were taken before)."""
    rows = [i for i, s in enumerate(seqs) if s.params.structured_outputs is not None]
    if not rows:
        return logits
    import llguidance.torch as lt

    batch, vocab = logits.shape
    bitmask = lt.allocate_token_bitmask(batch, vocab)  # (B, ceil(V/32)) int32 on the CPU, all allowed
    constraints = [(constraint_of(seqs[i], vocab), i) for i in rows]
    if len(constraints) > 1:  # llguidance's threads compute the rows' masks in parallel, without the GIL
        lt.fill_next_token_bitmask_par(_executor(), [(c.matcher, i) for c, i in constraints], bitmask)
    else:
        lt.fill_next_token_bitmask(constraints[0][0].matcher, bitmask, rows[0])
    for c, i in constraints:
        c.allow_stops(bitmask, i)
    return logits.masked_fill_(_banned(bitmask, vocab, logits.device), float("-inf"))


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


def prewarm(tokenizer: Any, vocab: int) -> threading.Thread | None:
    """Build llguidance's tokenizer for `tokenizer` on a background thread (about 20 s for a 262k
    vocabulary on a CPU), so the first constrained request does not pay for it; None when the
    tokenizer cannot be constrained (not a fast one) or llguidance is not installed."""
    if not getattr(tokenizer, "is_fast", False) or cached_lltokenizer(tokenizer, vocab) is not None:
        return None
    try:
        _llguidance()
    except Exception:  # noqa: BLE001 - a missing extra is reported when a constrained request asks for it
        return None
    thread = threading.Thread(target=_prewarm, args=(tokenizer, vocab), name="tunelab-llguidance", daemon=True)
    thread.start()
    return thread


def _prewarm(tokenizer: Any, vocab: int) -> None:
    start = time.perf_counter()
    try:
        _lltokenizer(tokenizer, vocab)
    except Exception as err:  # noqa: BLE001 - a request building it later reports the error
        log.warning("constrained decoding: building llguidance's tokenizer failed: %s", err)
        return
    log.info("constrained decoding ready (llguidance tokenizer built in %.1f s)", time.perf_counter() - start)


def cached_lltokenizer(tokenizer: Any, vocab: int) -> Any:
    """llguidance's tokenizer for `tokenizer` if already built, else None."""
    return _TOKENIZERS.get(tokenizer, {}).get(vocab)


def _lltokenizer(tokenizer: Any, vocab: int) -> Any:
    """llguidance's view of a HF tokenizer (seconds for a 262k vocabulary: built once)."""
    built = cached_lltokenizer(tokenizer, vocab)
    if built is not None:
        return built
    with _BUILD_LOCK:
        built = cached_lltokenizer(tokenizer, vocab)  # a prewarm may have finished while we waited
        if built is None:
            import llguidance.hf

            built = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab)
            _TOKENIZERS.setdefault(tokenizer, {})[vocab] = built
    return built


@lru_cache(maxsize=64)
def _compiled(lltokenizer: Any, grammar: str) -> Any:
    """A fresh matcher for `grammar`; callers deep_copy it, so each grammar compiles once."""
    matcher = _llguidance().LLMatcher(lltokenizer, grammar)
    if matcher.is_error():
        raise RuntimeError(f"constraint failed to compile: {matcher.get_error()}")
    return matcher


def _bit(i: int) -> int:
    return -(1 << 31) if i == 31 else 1 << i  # int32 words: bit 31 is the sign bit


def _banned(bitmask: torch.Tensor, vocab: int, device: torch.device) -> torch.Tensor:
    """int32 words (B, W) of allowed bits -> banned flags (B, V) bool on `device`.

    On CUDA the packed words travel (V/8 bytes a row) and unpack there; on the CPU numpy's
    unpackbits does it in ~0.03 ms for a 262k vocabulary, where torch's shift-and-mask takes ~1 ms."""
    if device.type != "cpu":
        shifts = torch.arange(32, dtype=torch.int32, device=device)
        bits = (bitmask.to(device, non_blocking=True)[:, :, None] >> shifts) & 1  # (B, W, 32)
        return bits.reshape(bitmask.shape[0], -1)[:, :vocab] == 0
    packed = (~bitmask.numpy()).view(np.uint8)  # little-endian words: byte k holds tokens 8k..8k+7
    return torch.from_numpy(np.unpackbits(packed, axis=-1, bitorder="little")[:, :vocab].view(np.bool_))
