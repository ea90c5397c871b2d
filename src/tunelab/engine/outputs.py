"""What `LLM.generate` and `LLM.chat` return, shaped like vLLM's outputs.

`RequestOutput.prompt`, `.prompt_token_ids` and `.outputs[i].text / .token_ids /
.cumulative_logprob / .finish_reason / .stop_reason` mean what they mean in vLLM, so code
written for `from vllm import LLM` reads our results unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunelab.engine.sequence import Sequence, TokenLogprob


@dataclass
class CompletionOutput:
    """One of the n completions of a request."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None  # "stop" | "length" | "abort"
    logprobs: list[TokenLogprob] | None = None
    error: str | None = None  # why the engine aborted it (e.g. out of KV memory)
    cumulative_logprob: float | None = None  # sum of the chosen tokens' logprobs; None unless logprobs asked
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it; None for EOS/length
    tool_calls: list[Any] | None = None  # `tunelab.tools.ToolCall`s parsed from text (LLM.chat with tools)

    @classmethod
    def from_sequence(cls, seq: Sequence) -> CompletionOutput:
        """The finished `seq` as an output (logprobs only when the request asked for them)."""
        logprobs = seq.logprobs if seq.params.logprobs is not None else None
        total = sum(lp.logprob for lp in logprobs) if logprobs is not None else None
        return cls(seq.sample_index, seq.text, list(seq.output_ids), seq.finish_reason, logprobs,
                   seq.error, total, seq.stop_reason)


@dataclass
class RequestOutput:
    """The result of one prompt: its text (None for token-id prompts), ids and completions."""

    request_id: Any
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)
    prompt: str | None = None
    finished: bool = True
    prompt_logprobs: list[TokenLogprob | None] | None = None  # vLLM's: [0] is None, [i] is token i's

    @classmethod
    def from_sequences(cls, request_id: Any, prompt_ids: list[int], seqs: list[Sequence],
                       prompt: str | None = None) -> RequestOutput:
        """The finished sequences of one prompt as its output (prompt logprobs when asked for)."""
        first = seqs[0]
        wanted = first.params.prompt_logprobs is not None
        return cls(request_id, prompt_ids, [CompletionOutput.from_sequence(s) for s in seqs], prompt,
                   prompt_logprobs=[None, *first.prompt_logprobs] if wanted else None)

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
