"""vLLM (optional extra `tunelab[vllm]`): multi-GPU and tensor-parallel serving.

For users who outgrow one GPU. tunelab keeps its HTTP layer, chat template and
reasoning parser; vLLM's AsyncLLMEngine does the generation. Supports adapters
(LoRARequest) and logprobs. Needs CUDA; on CPU-only machines the tests run this module against a
test double of the `vllm` package (tests/fakes/vllm), and against real vLLM under the `gpu` marker.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import AsyncIterator

from tunelab.errors import MissingExtra
from tunelab.dtypes import NAMES
from tunelab.engine.config import EngineConfig, SamplingParams
from tunelab.engine.sequence import TokenLogprob
from tunelab.serve.backends.base import Backend, Capabilities, Delta, HFTokenizerPrompts
from tunelab.serve.config import ServeConfig


class VllmBackend(HFTokenizerPrompts, Backend):
    """A Hugging Face model served by vLLM's AsyncLLMEngine."""

    name = "vllm"
    capabilities = Capabilities(adapters=True, logprobs=True, structured_outputs=True,
                                note="CUDA; tensor parallel via --tensor-parallel-size; LoRA adapters")

    def __init__(self, config: ServeConfig):
        self.config = config
        self._loras: dict[str, tuple[int, str]] = {}
        self._ids = itertools.count(1)

    def load(self) -> None:
        """Start vLLM's engine on the resolved model directory."""
        try:
            import vllm
        except ImportError:
            raise MissingExtra("vllm", "vllm", "the vllm backend") from None
        from tunelab.store.resolve import resolve_model

        model_dir = resolve_model(self.config.model)
        args = vllm.AsyncEngineArgs(model=str(model_dir), **engine_args(self.config.engine))
        self.engine = vllm.AsyncLLMEngine.from_engine_args(args)
        self.tokenizer = _tokenizer(model_dir)
        self.load_templates(model_dir)
        self.context_length = self.config.engine.max_model_len or self.tokenizer.model_max_length
        self.model_path, self.created = str(model_dir), int(Path(model_dir).stat().st_mtime)
        self.model_id = self.config.served_name or Path(model_dir).name

    async def generate(self, request_id: str, prompt: list[int], params: SamplingParams,
                       adapter: str | None = None) -> AsyncIterator[Delta]:
        """Relay vLLM's cumulative outputs as deltas."""
        from vllm.lora.request import LoRARequest

        sp = vllm_params(params.stopping_at(self.stop_ids(adapter)))
        lora = None
        if adapter:
            lora_id, path = self._loras[adapter]
            lora = LoRARequest(adapter, lora_id, path)
        sent_text, sent_ids = 0, 0
        async for out in self.engine.generate({"prompt_token_ids": prompt}, sp, request_id,
                                              lora_request=lora):
            c = out.outputs[0]
            ids = list(c.token_ids[sent_ids:])
            lps = _logprobs(ids, c.logprobs[sent_ids:], params.logprobs) if c.logprobs else None
            yield Delta(c.text[sent_text:], ids, lps, c.finish_reason if out.finished else None)
            sent_text, sent_ids = len(c.text), len(c.token_ids)

    def abort(self, request_id: str) -> None:
        """Ask vLLM to drop the request (it frees the blocks)."""
        import asyncio

        asyncio.ensure_future(self.engine.abort(request_id))

    def add_adapter(self, name: str, path: str) -> None:
        """Register a LoRA (and its chat template); vLLM loads the weights on first use."""
        self.remember_template(name, path)  # first: a bad template registers nothing
        self._loras[name] = (next(self._ids), str(path))

    def remove_adapter(self, name: str) -> None:
        """Forget a LoRA."""
        self._loras.pop(name, None)
        self.remember_template(name, None)

    def adapters(self) -> dict[str, str]:
        """name -> path."""
        return {name: path for name, (_, path) in self._loras.items()}


def engine_args(cfg: EngineConfig) -> dict:
    """Our EngineConfig -> vLLM's engine arguments, for the keys both have (same names, as the
    serve flags are vLLM's: --tensor-parallel-size, --gpu-memory-utilization, --dtype, ...)."""
    dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(NAMES.get(cfg.dtype, ""), cfg.dtype)
    return {"enable_lora": True, "max_model_len": cfg.max_model_len, "dtype": dtype,
            "tensor_parallel_size": cfg.tensor_parallel_size, "gpu_memory_utilization": cfg.gpu_memory_utilization,
            "trust_remote_code": cfg.trust_remote_code, "max_num_seqs": cfg.max_num_seqs,
            "max_loras": cfg.max_loras, "max_lora_rank": cfg.max_lora_rank,
            "enable_prefix_caching": cfg.enable_prefix_caching, "enforce_eager": cfg.enforce_eager}


def vllm_params(params: SamplingParams):
    """Ours -> vLLM's SamplingParams."""
    import vllm

    kwargs = vllm_kwargs(params)
    if kwargs["structured_outputs"] is not None:
        from vllm.sampling_params import StructuredOutputsParams

        kwargs["structured_outputs"] = StructuredOutputsParams(**kwargs["structured_outputs"])
    return vllm.SamplingParams(**kwargs)


TUNELAB_ONLY = ("prompt_logprobs_start", "prompt_logprobs_tokens")  # vLLM has neither: it returns every prompt logprob


def vllm_kwargs(params: SamplingParams) -> dict:
    """vLLM's SamplingParams takes every one of our fields under the same name (a field that
    it names differently would be mapped here) but TUNELAB_ONLY's; structured_outputs goes as its set field."""
    kwargs = {f.name: getattr(params, f.name) for f in dataclasses.fields(params) if f.name not in TUNELAB_ONLY}
    so = params.structured_outputs
    return {**kwargs, "structured_outputs": so.to_dict() if so is not None else None}


def _logprobs(token_ids: list[int], steps: list[dict], top: int | None) -> list[TokenLogprob]:
    """vLLM's per-position {token_id: Logprob} -> ours. Each dict holds the top `top` tokens plus
    the sampled one (which may rank lower): look the sampled one up by id, list the top by rank."""
    out = []
    for token_id, step in zip(token_ids, steps):
        chosen = step[token_id]
        ranked = sorted(step.items(), key=lambda kv: _rank(kv[1]))[:top or 0]
        out.append(TokenLogprob(token_id, chosen.logprob, [(lp_id, lp.logprob) for lp_id, lp in ranked],
                                chosen.decoded_token or "", [lp.decoded_token or "" for _, lp in ranked]))
    return out


def _rank(lp) -> int:
    return lp.rank if lp.rank is not None else 1 << 30


def _tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)
