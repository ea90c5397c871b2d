"""Prompt logprobs (vLLM's `SamplingParams(prompt_logprobs=k)`): each prompt token's logprob given
the tokens before it, plus its k most likely alternatives. lm-eval's log-likelihoods read them.

A prefill chunk of positions [start, start+n) gives at its row for position p the distribution of
the token at p+1. `plan_rows` picks the rows whose next token is a prompt token not collected yet
(a preempted sequence recomputes its prompt; nothing is collected twice); after the forward pass
`collect` turns their hidden states into logprobs CHUNK rows at a time (the step's sampled rows
ride in the last pass), so a 262k vocabulary never needs (prompt length, V) logits at once; a
dense head on a CPU is read a vocabulary slice at a time (`head_scan`): (CHUNK, slice) logits.
Cached positions are never run, so such a sequence reads prefix-cache hits only before
`prompt_logprobs_start` (vLLM, which has no start, reads none): scoring a continuation after a
shared context (lm-eval's multiple choice) runs the context once. `prompt_logprobs_tokens` adds
rows for the first scored position, one per token, whose logprobs join that position's `top`:
every one-token continuation of the context in the same lm_head pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

CHUNK = 256  # prompt rows per lm_head + logsumexp pass


@dataclass
class PromptRows:
    """Rows of one step whose logprobs go to their sequences' `prompt_logprobs`."""

    rows: list[int] = field(default_factory=list)  # flat row in the step
    targets: list[int] = field(default_factory=list)  # the prompt token that row predicts
    tops: list[int] = field(default_factory=list)  # alternatives wanted (params.prompt_logprobs)
    owners: list = field(default_factory=list)  # the sequence of each row
    extra: list[bool] = field(default_factory=list)  # a prompt_logprobs_tokens row: joins the row before's top

    def __bool__(self) -> bool:
        return bool(self.rows)


def positions(seq, start: int, n: int) -> range:
    """Positions in [start, start+n) whose row predicts a prompt token `seq` has no logprob for yet."""
    params = getattr(seq, "params", None)
    if params is None or params.prompt_logprobs is None:
        return range(0)
    low = max(start, len(seq.prompt_logprobs))  # prompt_logprobs[i] is the logprob of token i+1
    return range(low, max(low, min(start + n, seq.num_prompt_tokens - 1)))


def plan_rows(plan: PromptRows, seq, start: int, n: int, row: int) -> None:
    """Add the rows of the chunk `seq`[start, start+n), laid out from flat row `row`, to `plan`."""
    rows = positions(seq, start, n)  # empty for a sequence without params (an embedding prompt) or logprobs
    if not rows:
        return
    first = max(0, seq.params.prompt_logprobs_start - 1)
    for p in rows:
        tokens = seq.params.prompt_logprobs_tokens if p == first else ()
        plan.rows.extend([row + p - start] * (1 + len(tokens)))
        plan.targets.extend([seq.token_ids[p + 1], *tokens])
        plan.tops.extend([seq.params.prompt_logprobs] + [0] * len(tokens))
        plan.owners.extend([seq] * (1 + len(tokens)))
        plan.extra.extend([False] + [True] * len(tokens))


def collect(model, hidden: torch.Tensor, plan: PromptRows, sample_rows: torch.Tensor) -> torch.Tensor:
    """Append a TokenLogprob per planned row (hidden: (T, hidden) of the whole step) to its owner,
    and return the logits (N, V) of the step's `sample_rows`: they ride in the last lm_head pass,
    which saves a read of the 262k x hidden weight per step (a scoring step samples a token too).
    A dense head is read a vocabulary slice at a time (`head_scan`)."""
    from tunelab.engine import head_scan
    from tunelab.engine.sampling import build_logprobs, token_logprobs

    weight = head_scan.dense_head(model)
    n = len(plan.rows)
    rows = torch.cat([torch.tensor(plan.rows, dtype=torch.long, device=hidden.device), sample_rows])
    for i in range(0, n, CHUNK):
        last = i + CHUNK >= n
        chunk = hidden[rows[i:] if last else rows[i:i + CHUNK]]  # (R [+ N], hidden)
        k = min(CHUNK, n - i)
        targets = torch.tensor(plan.targets[i:i + k], device=hidden.device)
        tops = plan.tops[i:i + k]
        if weight is not None and not hidden.is_cuda:
            norm, chosen, vals, ids, logits = head_scan.scan(weight, model.spec.final_softcap, chunk, k, targets,
                                                             max(tops))
            logprobs = build_logprobs(targets, chosen - norm[:, 0], None if vals is None else vals - norm, ids, tops)
        else:
            logits = model.compute_logits(chunk)  # (R [+ N], V) fp32
            norm = logits[:k].logsumexp(dim=-1, keepdim=True)  # (R, 1): logprob = logit - norm
            inside = targets < logits.shape[1]  # a prompt_logprobs_tokens id may lie outside: probability 0
            logprobs = token_logprobs(logits[:k], targets.where(inside, 0), tops, norm)
            for logprob, token, ok in zip(logprobs, plan.targets[i:i + k], inside.tolist()):
                logprob.token_id, logprob.logprob = token, logprob.logprob if ok else float("-inf")
            logits = logits[k:]
        _hand_out(plan, i, logprobs)
    return logits


def _hand_out(plan: PromptRows, i: int, logprobs: list) -> None:
    """Give the logprobs of plan rows from `i` on to their sequences; an extra row's joins the `top`
    of its sequence's last one (its position's, planned just before it)."""
    for seq, extra, logprob in zip(plan.owners[i:], plan.extra[i:], logprobs):
        if extra:
            seq.prompt_logprobs[-1].top.append((logprob.token_id, logprob.logprob))
        else:
            seq.prompt_logprobs.append(logprob)
