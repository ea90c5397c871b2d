"""Engine and request configuration: plain dataclasses, validated at construction, no torch.

`EngineConfig` is one object per engine (cache geometry, batching limits, device).
`SamplingParams` is one object per request and the one sampling type every backend
takes (the server maps its HTTP schemas onto it once, in `serve/protocol.py`); every
out-of-range value raises `InvalidRequest` naming the field, so the server can answer
400 with `param` set. A new sampling option is a field here (plus its HTTP field).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from tunelab.config import opt
from tunelab.engine.structured import StructuredOutputsParams
from tunelab.errors import ConfigError, InvalidRequest

MAX_TOP_LOGPROBS = 20
KV_CACHE_DTYPES = ("auto", "int8")
AUTO_OFF = ("auto", "off")  # greedy_head, packed_weights
_QUANTIZE = re.compile(r"^(int8|int4(-g(32|64|128|256))?)(-all)?$")  # parsed by models.quant.QuantSpec


@dataclass
class EngineConfig:
    """How the engine batches requests and sizes its paged KV cache."""

    max_num_seqs: int = opt(64, "most sequences running in one step")
    max_num_batched_tokens: int = opt(2048, "token budget per step: prefill chunks plus one per decode")
    max_model_len: int | None = opt(None, "longest prompt+output in tokens (context window); None = the model's "
                                          "limit", aliases=("context_length",))
    block_size: int = opt(16, "tokens per KV cache block")
    num_blocks: int | None = opt(None, "KV cache blocks; None = sized from free memory by the runner")
    enable_prefix_caching: bool = opt(True, "reuse KV blocks of prompt prefixes shared between requests")
    eos_token_ids: list[int] = opt([], "token ids that end a sequence unless ignore_eos is set")
    dtype: str = opt("auto", "weights/activations dtype: auto, float32, bfloat16 or float16")
    device: str = opt("auto", "auto, cpu, cuda or cuda:N")
    num_threads: int | None = opt(None, "CPU threads (torch; llama.cpp for backend=llamacpp); None = physical "
                                        "cores", aliases=("n_threads",))
    gpu_memory_utilization: float = opt(0.9, "fraction of GPU memory the engine may use (weights + KV)")
    cpu_kv_cache_gb: float = opt(1.0, "KV cache size on CPU in GiB")
    enforce_eager: bool = opt(False, "disable CUDA graphs for decode batches")
    num_speculative_tokens: int = opt(0, "prompt-lookup drafts verified per greedy decode step (e.g. 4); "
                                         "0 = off. Same output, fewer weight reads; best for one stream",
                                     aliases=("speculative",))
    max_loras: int = opt(8, "most LoRA adapters loaded at once")
    max_lora_rank: int = opt(64, "largest LoRA rank an adapter may have")
    tensor_parallel_size: int = opt(1, "GPUs to shard the model over; the tunelab engine runs on one (more: "
                                       "--backend vllm)")
    trust_remote_code: bool = opt(False, "allow the model repo's own Python code (vllm backend); the tunelab "
                                         "engine runs its own model code and never runs a repo's")
    quantize: str | None = opt(None, "weight-only quantization: int8, int4, int4-g64/-g128; add -all for "
                                     "the decoder linears too (default: lm_head only); None = exact (a .gguf model on CPU: "
                                     "its own Q4_K/Q6_K/Q8_0/Q5_0/Q4_0 tensors, as they are)")
    greedy_head: str = opt("auto", "auto: greedy-only steps rank the vocabulary with a cheaper copy of a large "
                                   "CPU lm_head and take the head's own argmax from its few contenders "
                                   "(engine/greedy_head.py: same tokens; costs up to the head's memory again); "
                                   "off: the full head every step")
    packed_weights: str = opt("auto", "auto: steps of up to 64 rows (decode) multiply by a oneDNN-packed copy of "
                                      "each bf16 linear on AVX512-BF16 CPUs without AMX (one row about 2x faster, "
                                      "the same logits bit for bit; costs the linears' memory again); off: never")
    kv_cache_dtype: str = opt("auto", "KV cache storage: auto (the model dtype) or int8 (one scale per token and "
                                      "head: about twice the blocks in the same memory; CPU only for now)")

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size", "max_loras", "max_lora_rank",
                     "tensor_parallel_size"):
            _positive(name, getattr(self, name))
        if not isinstance(self.num_speculative_tokens, int) or self.num_speculative_tokens < 0:
            raise ConfigError("num_speculative_tokens must be an integer >= 0, "
                              f"got {self.num_speculative_tokens!r}")
        for name in ("max_model_len", "num_blocks", "num_threads"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.quantize is not None and not _QUANTIZE.match(str(self.quantize)):
            raise ConfigError(f"quantize: '{self.quantize}' is not one of int8, int4, int4-gN (N = 32, 64, "
                              "128, 256), optionally followed by -all, or None")
        for name in ("greedy_head", "packed_weights"):
            if getattr(self, name) not in AUTO_OFF:
                raise ConfigError(f"{name}: '{getattr(self, name)}' is not one of {', '.join(AUTO_OFF)}")
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise ConfigError(f"kv_cache_dtype: '{self.kv_cache_dtype}' is not one of {', '.join(KV_CACHE_DTYPES)}")
        if self.cpu_kv_cache_gb <= 0:
            raise ConfigError(f"cpu_kv_cache_gb must be > 0, got {self.cpu_kv_cache_gb}")

    def replace(self, **changes) -> EngineConfig:
        """A copy with some fields changed (the runner fills max_model_len and num_blocks)."""
        return dataclasses.replace(self, **changes)


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class SamplingParams:
    """How one request samples its output; see the OpenAI API for the meaning of each field."""

    max_tokens: int = opt(16, "most new tokens to generate (16, as in vLLM; chat and serve set their own)")
    temperature: float = opt(1.0, "softmax temperature; 0 = greedy")
    top_p: float = opt(1.0, "nucleus sampling: keep the smallest set of tokens with this much mass")
    top_k: int = opt(-1, "keep only the k most likely tokens; -1 (or 0) = off")
    min_p: float = opt(0.0, "drop tokens less likely than min_p times the most likely one")
    repetition_penalty: float = opt(1.0, "HF-style: divide positive logits of seen tokens (prompt+output)")
    presence_penalty: float = opt(0.0, "OpenAI: subtract once from every token already in the output")
    frequency_penalty: float = opt(0.0, "OpenAI: subtract per occurrence of a token in the output")
    seed: int | None = opt(None, "same seed, same output regardless of batching")
    stop: list[str] = opt([], "strings that end the output; never included in the text")
    stop_token_ids: list[int] = opt([], "token ids that end the output (e.g. end-of-turn)")
    ignore_eos: bool = opt(False, "keep generating past the model's EOS token")
    n: int = opt(1, "number of independent completions for the prompt")
    logprobs: int | None = opt(None, "top logprobs per token; 0 = the chosen token's only; None = off")
    prompt_logprobs: int | None = opt(None, "top logprobs per prompt token (vLLM); 0 = the prompt token's own "
                                            "only; None = off")
    prompt_logprobs_start: int = opt(0, "first prompt token given a prompt logprob (earlier ones get None): "
                                        "scoring a continuation skips the context's logits and may reuse its "
                                        "cached KV (the prefix cache serves tokens before it)")
    prompt_logprobs_tokens: list[int] = opt([], "token ids whose logprobs the first scored prompt row also "
                                                "returns, after its top alternatives (-inf outside the vocabulary): "
                                                "the one-token continuations of a context, scored in one pass")
    structured_outputs: StructuredOutputsParams | None = opt(
        None, "constrain the output to a JSON schema, any JSON object, a regex, a choice or a grammar")

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        if self.top_k == 0:  # OpenAI-style clients send 0 for "off"
            self.top_k = -1
        if isinstance(self.structured_outputs, dict):  # vLLM users may pass the fields as a dict
            self.structured_outputs = StructuredOutputsParams(**self.structured_outputs)
        for check in _CHECKS:
            check(self)

    @property
    def greedy(self) -> bool:
        """True when sampling reduces to argmax."""
        return self.temperature == 0.0 or self.top_k == 1

    def replace(self, **changes) -> SamplingParams:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def stopping_at(self, token_ids: list[int]) -> SamplingParams:
        """A copy that also ends at `token_ids` (a chat template's end-of-turn and EOS ids),
        unless ignore_eos asks for fixed-length output (benchmarks)."""
        if self.ignore_eos:
            return self
        return self.replace(stop_token_ids=list(dict.fromkeys([*self.stop_token_ids, *token_ids])))


def _require(ok: bool, param: str, message: str) -> None:
    if not ok:
        raise InvalidRequest(f"{param} {message}", param=param)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_lengths(p: SamplingParams) -> None:
    ok = _is_int(p.max_tokens) and p.max_tokens > 0
    _require(ok, "max_tokens", f"must be a positive integer, got {p.max_tokens!r}")
    _require(_is_int(p.n) and p.n >= 1, "n", f"must be an integer >= 1, got {p.n!r}")
    _require(p.seed is None or _is_int(p.seed), "seed", f"must be an integer, got {p.seed!r}")
    ok = p.logprobs is None or (_is_int(p.logprobs) and 0 <= p.logprobs <= MAX_TOP_LOGPROBS)
    _require(ok, "logprobs", f"must be between 0 and {MAX_TOP_LOGPROBS}, got {p.logprobs!r}")
    ok = p.prompt_logprobs is None or (_is_int(p.prompt_logprobs) and 0 <= p.prompt_logprobs <= MAX_TOP_LOGPROBS)
    _require(ok, "prompt_logprobs", f"must be between 0 and {MAX_TOP_LOGPROBS}, got {p.prompt_logprobs!r}")
    ok = _is_int(p.prompt_logprobs_start) and p.prompt_logprobs_start >= 0
    _require(ok, "prompt_logprobs_start", f"must be an integer >= 0, got {p.prompt_logprobs_start!r}")
    for t in p.prompt_logprobs_tokens:
        _require(_is_int(t) and t >= 0, "prompt_logprobs_tokens", f"entries must be token ids >= 0, got {t!r}")
    _require(not p.prompt_logprobs_tokens or p.prompt_logprobs is not None, "prompt_logprobs_tokens",
             "needs prompt_logprobs (0 or more)")


def _check_distribution(p: SamplingParams) -> None:
    _require(p.temperature >= 0, "temperature", f"must be >= 0, got {p.temperature}")
    _require(0 < p.top_p <= 1, "top_p", f"must be in (0, 1], got {p.top_p}")
    ok = _is_int(p.top_k) and (p.top_k == -1 or p.top_k >= 1)
    _require(ok, "top_k", f"must be -1 (off) or >= 1, got {p.top_k!r}")
    _require(0 <= p.min_p <= 1, "min_p", f"must be in [0, 1], got {p.min_p}")


def _check_penalties(p: SamplingParams) -> None:
    _require(p.repetition_penalty > 0, "repetition_penalty", f"must be > 0, got {p.repetition_penalty}")
    _require(-2 <= p.presence_penalty <= 2, "presence_penalty", f"must be in [-2, 2], got {p.presence_penalty}")
    _require(-2 <= p.frequency_penalty <= 2, "frequency_penalty", f"must be in [-2, 2], got {p.frequency_penalty}")


def _check_stops(p: SamplingParams) -> None:
    for s in p.stop:
        _require(isinstance(s, str) and s != "", "stop", f"entries must be non-empty strings, got {s!r}")
    for t in p.stop_token_ids:
        _require(_is_int(t) and t >= 0, "stop_token_ids", f"entries must be token ids >= 0, got {t!r}")


_CHECKS = (_check_lengths, _check_distribution, _check_penalties, _check_stops)
