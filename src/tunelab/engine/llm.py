"""`LLM`: offline batch generation, the public Python API of the engine.

    llm = LLM("my-model", adapters={"sql": "runs/sql"})
    outs = llm.generate(["Hello"], SamplingParams(max_tokens=32, temperature=0))
    outs = llm.chat([[{"role": "user", "content": "Hi"}]], SamplingParams(), adapter="sql")
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.engine.config import EngineConfig, SamplingParams
from tunelab.engine.engine import LLMEngine
from tunelab.engine.sequence import Sequence, TokenLogprob
from tunelab.errors import InvalidRequest


@dataclass
class CompletionOutput:
    """One of the n completions of a request."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None  # "stop" | "length" | "abort"
    logprobs: list[TokenLogprob] | None = None
    error: str | None = None  # why the engine aborted it (e.g. out of KV memory)


@dataclass
class RequestOutput:
    """The result of one prompt: its completions and token counts."""

    request_id: Any
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.outputs[0].text

    @property
    def token_ids(self) -> list[int]:
        return self.outputs[0].token_ids

    @property
    def finish_reason(self) -> str | None:
        return self.outputs[0].finish_reason

    @property
    def logprobs(self) -> list[TokenLogprob] | None:
        return self.outputs[0].logprobs

    @property
    def usage(self) -> dict[str, int]:
        """prompt_tokens, completion_tokens, total_tokens (OpenAI naming)."""
        done = sum(len(o.token_ids) for o in self.outputs)
        n = len(self.prompt_token_ids)
        return {"prompt_tokens": n, "completion_tokens": done, "total_tokens": n + done}


class LLM:
    """A model (store name, path or None for the default) ready to generate, with optional adapters."""

    def __init__(self, model: str | Path | None = None, adapters: dict[str, str | Path] | None = None,
                 dtype: str = "auto", device: str = "auto", **engine_cfg: Any):
        from tunelab.config import build

        cfg = build(EngineConfig, {**engine_cfg, "dtype": dtype, "device": device})
        self.engine = LLMEngine(model, adapters, cfg)
        self.tokenizer = self.engine.tokenizer
        self._ids = itertools.count()

    def generate(self, prompts: str | list[int] | list[str | list[int]],
                 params: SamplingParams | list[SamplingParams] | None = None,
                 adapter: str | list[str | None] | None = None) -> list[RequestOutput]:
        """Complete each prompt (text or token ids); outputs come back in prompt order."""
        prompt_ids = [self._encode(p) for p in _as_list(prompts)]
        return self._run(prompt_ids, params, adapter)

    def chat(self, conversations: list[dict] | list[list[dict]], params: SamplingParams | None = None,
             chat_template_kwargs: dict | None = None, adapter: str | None = None) -> list[RequestOutput]:
        """Reply to each conversation using the model's (or adapter's) chat template and its stop tokens."""
        from tunelab.data.templates import encode_prompt

        convs = [conversations] if conversations and isinstance(conversations[0], dict) else conversations
        template = self.template(adapter)
        prompt_ids = [encode_prompt(template, self.tokenizer, c, **(chat_template_kwargs or {})) for c in convs]
        params = with_template_stops(params or SamplingParams(), template, self.tokenizer)
        return self._run(prompt_ids, params, adapter)

    def template(self, adapter: str | None = None):
        """The chat template saved with the adapter if it has one, else the model's."""
        return chat_template(self.engine, adapter)

    def _encode(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            return list(self.tokenizer.encode(prompt))  # plain completion: tokenizer adds BOS if it uses one
        if not all(isinstance(t, int) for t in prompt):
            raise InvalidRequest("prompts must be strings or lists of token ids", param="prompts")
        return list(prompt)

    def _run(self, prompt_ids: list[list[int]], params, adapter) -> list[RequestOutput]:
        params_list = params if isinstance(params, list) else [params or SamplingParams()] * len(prompt_ids)
        adapters = adapter if isinstance(adapter, list) else [adapter] * len(prompt_ids)
        if len(params_list) != len(prompt_ids) or len(adapters) != len(prompt_ids):
            raise InvalidRequest("params and adapter lists must have one entry per prompt", param="params")
        for ids, p in zip(prompt_ids, params_list):  # every prompt is checked before any work starts
            self.engine.check_prompt(ids, p)
        requests = []
        for ids, p, a in zip(prompt_ids, params_list, adapters):
            rid = f"llm-{next(self._ids)}"
            requests.append((rid, ids, self.engine.add_request(rid, ids, p, a)))
        while self.engine.has_unfinished():
            self.engine.step()
        return [RequestOutput(rid, ids, [_completion(s) for s in seqs]) for rid, ids, seqs in requests]


def chat_template(engine: LLMEngine, adapter: str | None = None):
    """The ChatTemplate for `engine`'s adapter `adapter` (None: the base model), by `resolve_template`."""
    from tunelab.data.templates import resolve_template

    return resolve_template(engine.model_dir, engine.lora.adapters.get(adapter) if adapter else None)


def with_template_stops(params: SamplingParams, template, tokenizer) -> SamplingParams:
    """A copy of `params` that also stops at the template's end-of-turn token ids (as the server
    does: not with ignore_eos)."""
    return params.stopping_at(template.stop_token_ids(tokenizer))


def _completion(seq: Sequence) -> CompletionOutput:
    logprobs = seq.logprobs if seq.params.logprobs is not None else None
    return CompletionOutput(seq.sample_index, seq.text, list(seq.output_ids), seq.finish_reason,
                            logprobs, seq.error)


def _as_list(prompts) -> list:
    if isinstance(prompts, str):
        return [prompts]
    if prompts and isinstance(prompts[0], int):
        return [prompts]
    return list(prompts)
