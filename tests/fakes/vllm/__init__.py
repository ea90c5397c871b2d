"""A test double of vLLM's public serving interface (see tests/fakes/README.md): what tunelab's vLLM
backend imports, with vLLM's names and signatures, recording every call and streaming a scripted reply."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, AsyncIterator

from vllm.logprobs import Logprob
from vllm.lora.request import LoRARequest
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import SamplingParams

__all__ = ["AsyncEngineArgs", "AsyncLLMEngine", "SamplingParams", "ENGINES"]

ENGINES: list[AsyncLLMEngine] = []  # every engine started, newest last: tests read what it was given


@dataclasses.dataclass
class AsyncEngineArgs:
    """vLLM's engine arguments, the ones tunelab may pass (an unknown name is a TypeError, as in vLLM)."""

    model: str
    dtype: str = "auto"
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    trust_remote_code: bool = False
    max_num_seqs: int | None = None
    enable_lora: bool = False
    max_loras: int = 1
    max_lora_rank: int = 16
    enable_prefix_caching: bool | None = None
    enforce_eager: bool = False


class AsyncLLMEngine:
    """`from_engine_args` and the async `generate`/`abort` of vLLM's engine. Its "model" replies
    `reply(prompt ids, LoRARequest or None)` (text), token by token through the model's tokenizer."""

    def __init__(self, args: AsyncEngineArgs):
        from transformers import AutoTokenizer

        self.args = args
        self.tokenizer = AutoTokenizer.from_pretrained(args.model)
        self.requests: list[dict[str, Any]] = []  # each generate call's arguments
        self.aborted: list[str] = []

    @classmethod
    def from_engine_args(cls, engine_args: AsyncEngineArgs) -> AsyncLLMEngine:
        ENGINES.append(cls(engine_args))
        return ENGINES[-1]

    @staticmethod
    def reply(prompt_ids: list[int], lora: LoRARequest | None) -> str:
        return f" {len(prompt_ids)} prompt tokens to the {lora.lora_name if lora else 'base'} model. END more"

    async def generate(self, prompt: dict, sampling_params: SamplingParams, request_id: str,
                       lora_request: LoRARequest | None = None) -> AsyncIterator[RequestOutput]:
        """Cumulative outputs, one per token; stop strings, stop ids and max_tokens as vLLM applies them."""
        ids = prompt["prompt_token_ids"]
        self.requests.append({"prompt": prompt, "params": sampling_params, "request_id": request_id,
                              "lora_request": lora_request})
        script = self.tokenizer.encode(self.reply(ids, lora_request), add_special_tokens=False)
        out = CompletionOutput(0, "", [], logprobs=[] if sampling_params.logprobs is not None else None)
        for i, token in enumerate(script[: sampling_params.max_tokens]):
            await asyncio.sleep(0)  # other requests interleave, as on a real engine
            if request_id in self.aborted:
                return
            out.token_ids.append(token)
            out.text = self.tokenizer.decode(out.token_ids)
            if out.logprobs is not None:
                out.logprobs.append(_logprobs(token, i, sampling_params.logprobs, self.tokenizer))
            out.finish_reason = _finish(out, sampling_params, i + 1)
            held = 0 if out.finish_reason else _stop_buffer(sampling_params)  # a stop string may be starting
            snapshot = dataclasses.replace(out, text=out.text[: len(out.text) - held], token_ids=list(out.token_ids),
                                           logprobs=None if out.logprobs is None else list(out.logprobs))
            yield RequestOutput(request_id, ids, [snapshot], finished=out.finish_reason is not None)
            if out.finish_reason is not None:
                return

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)


def _stop_buffer(params: SamplingParams) -> int:
    """vLLM's detokenizer holds back the last max(len(stop)) - 1 characters of unfinished outputs."""
    stops = [params.stop] if isinstance(params.stop, str) else params.stop or []
    return 0 if params.include_stop_str_in_output or not stops else max(map(len, stops)) - 1


def _finish(out: CompletionOutput, params: SamplingParams, n: int) -> str | None:
    """vLLM's stop checks after a token: a stop string is cut from the text, a stop id is kept."""
    for stop in [params.stop] if isinstance(params.stop, str) else params.stop or []:
        if stop in out.text:
            out.text, out.stop_reason = out.text[: out.text.index(stop)], stop
            return "stop"
    if out.token_ids[-1] in (params.stop_token_ids or []):
        out.stop_reason = out.token_ids[-1]
        return "stop"
    return "length" if n == params.max_tokens else None


def _logprobs(token: int, i: int, k: int, tokenizer) -> dict[int, Logprob]:
    """vLLM's per-position dict: the top k (ranks 1..k) plus the sampled token, here ranked k+1."""
    others = [t for t in range(3, 3 + k + 1) if t != token][:k]
    step = {t: Logprob(-0.25 * (rank + 1), rank + 1, tokenizer.decode([t])) for rank, t in enumerate(others)}
    step[token] = Logprob(-2.0 - 0.5 * i, k + 1, tokenizer.decode([token]))
    return step
