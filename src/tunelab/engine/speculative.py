"""Prompt-lookup speculative decoding for greedy requests: draft from the text, verify in one pass.

One decode step reads every weight to produce one token; on a CPU (and a GPU at batch 1) that
read is the whole cost. If we can guess the next few tokens, one forward pass over
[last token, guess 1..k] costs about the same as over the last token alone, and its k+1
greedy predictions tell how many guesses were right:

    tokens ... the printing press begins in      last = "in"
    draft  (what followed the same 2-gram earlier):  the fifteenth century
    model  greedy after [in, the, fifteenth, century]:  the fifteenth century ,
    accept 3 drafts + 1 bonus token = 4 tokens for one pass

Guesses come from the sequence itself (an n-gram seen before, as in prompt-lookup decoding),
so no draft model is needed. The output equals plain greedy decoding up to floating-point
noise (a k+1-row pass rounds differently from k+1 one-row passes). Torch-free.
"""

from __future__ import annotations

from typing import Sequence as Seq

MAX_NGRAM = 3  # longest suffix matched; longer matches predict better but occur less often


def propose(tokens: Seq[int], k: int, max_ngram: int = MAX_NGRAM) -> list[int]:
    """Up to `k` tokens that followed the latest earlier occurrence of the longest suffix
    (length max_ngram down to 1) of `tokens`; [] when no suffix occurred before."""
    if k <= 0:
        return []
    n_tokens = len(tokens)
    for n in range(min(max_ngram, n_tokens - 1), 0, -1):
        suffix = list(tokens[n_tokens - n:])
        # latest start p < n_tokens - n with tokens[p:p+n] == suffix, scanning backwards
        for p in range(n_tokens - n - 1, -1, -1):
            if tokens[p] == suffix[0] and list(tokens[p:p + n]) == suffix:
                return list(tokens[p + n:p + n + k])
    return []


def accepted(draft: Seq[int], predicted: Seq[int]) -> list[int]:
    """The tokens a verified step yields: drafts while they equal the model's greedy choice,
    then the model's own next token. `predicted` has len(draft) + 1 entries."""
    out = []
    for guess, choice in zip(draft, predicted):
        out.append(choice)
        if guess != choice:
            return out
    out.append(predicted[len(draft)])
    return out
