"""lm-eval's model backend over tunelab's engine: an `lm_eval.api.model.LM` registered as "tunelab".

    llm = LLM(base, adapters={"tuned": "runs/x/adapter"})
    base_lm, tuned_lm = TunelabLM(llm), TunelabLM(llm, adapter="tuned")  # one engine, both sides
    lm_eval.simple_evaluate(model=tuned_lm, tasks=["hellaswag"])

Log-likelihoods read the engine's prompt logprobs (`SamplingParams(prompt_logprobs=1)`) of the
continuation tokens only (`prompt_logprobs_start`): each context+continuation is one prompt, a whole
group of them runs as one continuous batch with no padding, identical requests run once, and a
context shared by several requests (the choices of a question) runs once: one choice first, whose
row at the context's end also returns the logprobs of the other one-token choices
(`prompt_logprobs_tokens`, the same lm_head pass), then the longer choices on the context's KV
blocks from the prefix cache.
Generation is `LLM.generate` with the task's stop strings, all requests of a group in one continuous
batch (identical greedy requests once, a few-shot preamble shared by all prefilled once first); on
a CPU model greedy steps take their argmax from a cheaper copy of the lm_head, certified equal
(engine/greedy_head.py, which the engine builds unless `greedy_head="off"`). Tokenization, stop handling and
generation kwargs go through lm-eval's own helpers, the ones its `hf` backend uses, so the scores
equal that backend's on the same model. Import this module only after `require_lm_eval()`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, has_bos_prefix, normalize_gen_kwargs, \
    postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from tunelab.engine import LLM, SamplingParams
from tunelab.engine.outputs import RequestOutput
from tunelab.engine.sequence import TokenLogprob
from tunelab.errors import ConfigError

GROUP = 512  # requests per LLM.generate call: bounds the prompt logprobs held at once
Scored = tuple[tuple[int, ...], int]  # (prompt ids, continuation length): one distinct scoring request
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "seed", "repetition_penalty")  # passed as they are


@register_model("tunelab")
class TunelabLM(TemplateLM):
    """A tunelab engine (and optionally one of its adapters) as lm-eval's model."""

    def __init__(self, pretrained: str | Path | LLM | None = None, adapter: str | Path | None = None,
                 dtype: str = "auto", add_bos_token: bool | None = None, max_gen_toks: int = 256,
                 **engine_kwargs: Any):
        """`pretrained`: a model (store name, path) or an `LLM` to share; `adapter`: an adapter
        directory to load, or with a shared `LLM` the name of one loaded on it (None: the base)."""
        super().__init__()
        if isinstance(pretrained, LLM):
            self.llm, self.adapter = pretrained, adapter
        else:
            adapters = {"adapter": adapter} if adapter else None
            self.llm = LLM(pretrained, adapters, dtype=dtype, **engine_kwargs)
            self.adapter = "adapter" if adapter else None
        self.tokenizer = self.llm.get_tokenizer()
        self.add_bos_token = add_bos_token
        self._max_gen_toks = int(max_gen_toks)

    @property
    def eot_token_id(self) -> int:
        """The tokenizer's EOS, as the `hf` backend has it."""
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """What an empty context is conditioned on: BOS, else EOS (as the `hf` backend)."""
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        """The engine's context window in tokens."""
        return self.llm.engine.config.max_model_len

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return str(self.llm.engine.model_dir).replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """Token ids of `string`; special tokens as the `hf` backend adds them."""
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            add_special_tokens = False
        if add_special_tokens is None:
            add_special_tokens = self.add_bos_token
        special = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return self.tokenizer.encode(string, **special)

    # ---- log-likelihoods ------------------------------------------------------------------

    def _loglikelihood_tokens(self, requests: list, disable_tqdm: bool = False, greedy: bool = True,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        """(sum of continuation logprobs, whether greedy decoding gives it) per (key, ctx, cont);
        greedy=False skips the argmax (a top-1 search over the vocabulary per token) and says False."""
        results = []
        for start in range(0, len(requests), GROUP):
            group = requests[start:start + GROUP]
            items = [(tuple((ctx + cont)[-self.max_length:]), len(cont)) for _, ctx, cont in group]
            scores = self._score(list(dict.fromkeys(items)), greedy)  # identical requests run once
            for (key, _, _), item in zip(group, items):
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, scores[item])
                results.append(scores[item])
        return results

    def _score(self, items: list[Scored], greedy: bool) -> dict[Scored, tuple[float, bool]]:
        """Score distinct (prompt, continuation length) items in two rounds. Of the items sharing a
        context (the choices of a question) the first runs alone in round one, leaving the context's
        KV blocks in the prefix cache; its first scored row also returns the logprobs of the other
        one-token choices (MMLU's ' A'..' D') after its argmax. The longer ones run in round two
        on the cached context. Contexts too short to share (a rolling window's) run in round one."""
        groups: dict[tuple[int, ...], list[Scored]] = {}
        for item in items:
            groups.setdefault(item[0][:_start(item)], []).append(item)
        block = self.llm.engine.config.block_size
        leads, tops, extras, followers = [], [], [], []  # followers: (index of their lead, items after it)
        for context, members in groups.items():
            ones = [item[0][-1] for item in members[1:] if item[1] == 1]  # settled by the lead's row
            if len(members) > 1 and (ones or len(context) >= block):
                followers.append((len(leads), members[1:]))
                members = members[:1]
            leads.extend(members)
            tops.extend([1 if ones else int(greedy)] * len(members))  # the argmax first: a one-token choice's greedy
            extras.extend([ones] * len(members))
        outs = self._prompt_logprobs(leads, tops, extras)
        scores = {item: _continuation_score(out, item[1]) for item, out in zip(leads, outs)}
        rest = []
        for lead, members in followers:
            row = outs[lead].prompt_logprobs[_start(leads[lead])]  # the distribution after the context
            for item in members:
                found = _from_top(row, item) if item[1] == 1 else None
                if found is None:
                    rest.append(item)
                else:
                    scores[item] = found
        outs = self._prompt_logprobs(rest, [int(greedy)] * len(rest), [[]] * len(rest))
        scores.update({item: _continuation_score(out, item[1]) for item, out in zip(rest, outs)})
        return scores

    def _prompt_logprobs(self, items: list[Scored], tops: list[int], extras: list[list[int]]) -> list[RequestOutput]:
        """One engine batch: each prompt's logprobs from its continuation on (`tops` alternatives
        each), its first scored row also those of its `extras` tokens."""
        if not items:
            return []
        params = [SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=k, prompt_logprobs_tokens=tokens,
                                 prompt_logprobs_start=_start(item))  # logits for the continuation rows only
                  for item, k, tokens in zip(items, tops, extras)]
        return self.llm.generate([list(p) for p, _ in items], params, use_tqdm=False, adapter=self.adapter)

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of each whole string, in disjoint windows that fit the context."""
        windows, owners = [], []
        for i, (string,) in enumerate(req.args for req in requests):
            for ctx, cont in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length - 1, context_len=1)):  # -1: context + window fit the engine
                windows.append((None, ctx, cont))
                owners.append(i)
        totals = [0.0] * len(requests)
        for i, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows, greedy=False)):
            totals[i] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ---- generation -------------------------------------------------------------------------

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        """Greedy (or the task's sampling) continuations, cut at the task's stop strings."""
        eos = self.tokenizer.decode(self.eot_token_id)
        texts: list[str] = []
        for start in range(0, len(requests), GROUP):
            group = [req.args for req in requests[start:start + GROUP]]
            plans = [self._plan(context, gen_kwargs, eos) for context, gen_kwargs in group]
            for (context, gen_kwargs), (_, _, until), out in zip(group, plans, self._generate(plans)):
                text = postprocess_generated_text(out.text, until, None)
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
                texts.append(text)
        return texts

    def _generate(self, plans: list[tuple[list[int], SamplingParams, list[str]]]) -> list[RequestOutput]:
        """One continuous batch of `plans`' outputs, in order. Identical greedy requests (a task's
        repeats) run once; a prompt prefix of at least a KV block shared by every request (a few-shot
        preamble) is prefilled once first, so the batch reads it from the prefix cache."""
        keys = [(tuple(ids), repr(params)) if params.temperature == 0 else i for i, (ids, params, _) in enumerate(plans)]
        distinct = {key: plan for key, plan in zip(keys, plans)}  # first plan of each key, in order
        prompts = [ids for ids, _, _ in distinct.values()]
        shared = os.path.commonprefix(prompts) if len(prompts) > 1 else []
        if len(shared) >= self.llm.engine.config.block_size:
            self.llm.generate([shared], SamplingParams(max_tokens=1, temperature=0), use_tqdm=False,
                              adapter=self.adapter)
        outs = self.llm.generate(prompts, [params for _, params, _ in distinct.values()], use_tqdm=False,
                                 adapter=self.adapter)
        found = dict(zip(distinct, outs))
        return [found[key] for key in keys]

    def _plan(self, context: str, gen_kwargs: dict, eos: str) -> tuple[list[int], SamplingParams, list[str]]:
        """Prompt ids (left-truncated to leave room), sampling params and stop strings of one request."""
        kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
        until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
        max_tokens = kwargs.pop("max_gen_toks")
        do_sample = kwargs.pop("do_sample", False)
        unknown = sorted(set(kwargs) - set(SAMPLING_KEYS))
        if unknown:
            raise ConfigError(f"lm-eval generation kwargs the tunelab backend does not take: {', '.join(unknown)} "
                              f"(it takes until, max_gen_toks, do_sample, {', '.join(SAMPLING_KEYS)})")
        if not do_sample:
            kwargs["temperature"] = 0.0
        ids = self.tok_encode(context)[-(self.max_length - max_tokens):]
        return ids, SamplingParams(max_tokens=max_tokens, stop=until, **kwargs), until


def _start(item: Scored) -> int:
    """The first scored position of a (prompt, continuation length) item (position 0 has no logprob)."""
    return max(1, len(item[0]) - item[1])


def _from_top(row: TokenLogprob, item: Scored) -> tuple[float, bool] | None:
    """A one-token continuation's score read from another prompt's `row` at the same position, if its
    token is among that row's alternatives (the argmax first, then the `prompt_logprobs_tokens`)."""
    token = item[0][-1]
    for rank, (token_id, logprob) in enumerate(row.top):
        if token_id == token:
            return logprob, rank == 0
    return None


def _continuation_score(out: RequestOutput, n: int) -> tuple[float, bool]:
    """Sum of the last `n` prompt tokens' logprobs, and whether each was the most likely token."""
    tail = out.prompt_logprobs[-n:] if n else []
    return sum(lp.logprob for lp in tail), all(lp.top and lp.top[0][0] == lp.token_id for lp in tail)
