"""`LLMEngine`: the synchronous core shared by `LLM` and `AsyncEngine`.

It wires the parts together -- weights and KV cache (runner), batching (scheduler),
sampling, detokenization, LoRA adapters -- and exposes `add_request`, `step` and `abort`.
One step is: schedule -> run the model -> sample -> postprocess. A lock guards the
scheduler so another thread may add or abort requests while the model runs.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from tunelab.engine.config import EngineConfig, SamplingParams
from tunelab.engine.constraints import check_constrainable
from tunelab.engine.detokenizer import IncrementalDetokenizer
from tunelab.engine.embedding import EmbedJob
from tunelab.engine.greedy_head import GreedyHead
from tunelab.engine.kv_cache import KVCache, blocks_for_budget, cuda_budget
from tunelab.engine.pooling import read_pooling, score_pooling
from tunelab.engine.runner import ModelRunner
from tunelab.engine.sampling import sample
from tunelab.engine.scheduler import Scheduler
from tunelab.engine.sequence import Sequence
from tunelab.errors import ConfigError, InvalidRequest
from tunelab.models.layers import pack_linears


class LLMEngine:
    """Owns one model on one device and steps its requests with continuous batching."""

    def __init__(self, model: str | Path | None = None, adapters: dict[str, str | Path] | None = None,
                 config: EngineConfig | None = None, score: bool = False):
        """`score`: scoring mode for a reward model (*ForSequenceClassification): `embed` returns its
        scores (pooling.score_pooling) and generation is refused (RewardModelError)."""
        from tunelab.engine.lora import LoRAManager
        from tunelab.dtypes import resolve_dtype
        from tunelab.models.loader import load_model
        from tunelab.store import resolve

        cfg = config or EngineConfig()
        if cfg.tensor_parallel_size != 1:
            raise ConfigError(f"tensor_parallel_size={cfg.tensor_parallel_size}: the tunelab engine runs a model "
                              "on one device; for tensor parallelism serve it with `tunelab serve MODEL "
                              f"--backend vllm --tensor-parallel-size {cfg.tensor_parallel_size}`")
        self.device = pick_device(cfg.device)
        # a .gguf on CPU runs its own quantized tensors (models.gguf_weights), with no float copy
        gguf_direct = cfg.quantize is None and self.device.type == "cpu" and resolve.is_gguf_file(model)
        self.model_dir = resolve.gguf_view(model) if gguf_direct else resolve.resolve_model(model)
        if self.device.type == "cpu" and cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        if cfg.kv_cache_dtype == "int8" and self.device.type != "cpu":
            raise ConfigError(f"kv_cache_dtype: int8 runs on CPU only for now (the {self.device.type} decode kernel "
                              "reads model-dtype blocks); use kv_cache_dtype=auto")
        self.model, self.hf_config = load_model(self.model_dir, self.dtype, self.device, cfg.quantize, score)
        self.tokenizer = load_tokenizer(self.model_dir)
        self.scoring = score
        # how `embed` pools hidden states; a reward model's score head is loaded as its lm_head
        self.pooling = score_pooling(self.model.lm_head.weight) if score else read_pooling(self.model_dir)
        self.config = self._finish_config(cfg)
        self.kv = KVCache.allocate(self.model.spec, self.config.num_blocks, self.config.block_size,
                                   self.dtype, self.device, self.config.kv_cache_dtype)
        self.lora = LoRAManager(self.model, self.config.max_loras, self.config.max_lora_rank)
        self.runner = ModelRunner(self.model, self.kv, self.device, self.lora)
        if self.config.packed_weights == "auto":
            pack_linears(self.model)  # now, not in the first request's step
        if self.config.greedy_head == "auto" and not score:  # None where it has nothing to gain
            self.runner.greedy_head = GreedyHead.for_model(self.model)
        self._setup_cuda_decode()
        self.scheduler = Scheduler(self.config)
        self.lock = threading.RLock()
        self.total_prompt_tokens = 0
        self.num_steps = 0  # batches run (stats "steps")
        self._image_processor = None  # a VLM's vision/preprocess.image_processor, made at the first image
        for name, path in (adapters or {}).items():
            self.add_adapter(name, path)

    # ---- requests -----------------------------------------------------------------------

    def check_prompt(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Reject a prompt that can never run (empty, too long, bad ids) before any work."""
        self.scheduler.check_prompt(len(prompt_ids))
        vocab = self.model.spec.vocab_size
        if min(prompt_ids) < 0 or max(prompt_ids) >= vocab:
            raise InvalidRequest(f"prompt token ids must be in [0, {vocab})", param="prompt")

    def add_request(self, request_id: Any, prompt_ids: list[int], params: SamplingParams,
                    adapter: str | None = None, images: list | None = None) -> list[Sequence]:
        """Queue `params.n` sequences for one prompt; seq ids are (request_id, index). `images` (PIL,
        one per run of image tokens in the prompt, or their `image_inputs` already built) go to a
        vision-language model."""
        if self.scoring:
            from tunelab.errors import RewardModelError

            raise RewardModelError(str(self.model_dir), "used for generation (the engine only scores it)")
        self.check_prompt(prompt_ids, params)
        self._check_adapter(adapter)
        if params.prompt_logprobs is not None and adapter in self.lora.token_rows:
            raise InvalidRequest(f"prompt_logprobs are not served for adapter '{adapter}', which trained token rows "
                                 "(lora.trainable_tokens); merge it to score prompts", param="prompt_logprobs")
        image_inputs = images or None  # ImageInputs already built (AsyncEngine builds them off its loop)
        if isinstance(images, list) and images:
            image_inputs = self.image_inputs(prompt_ids, images)
        if image_inputs is None and getattr(self.model, "image_token_id", None) in prompt_ids:
            raise InvalidRequest("the prompt holds image tokens but no images were given", param="images")
        if params.structured_outputs is not None:  # fail this request now, never the batch mid-step
            check_constrainable(self.tokenizer, params.structured_outputs)
        seqs = [self._new_seq(request_id, i, prompt_ids, params, adapter) for i in range(params.n)]
        for seq in seqs:
            seq.images = image_inputs  # shared: the n samples need the tower's rows once
        with self.lock:
            for seq in seqs:
                self.scheduler.add(seq)
        self.total_prompt_tokens += len(prompt_ids)
        return seqs

    def image_inputs(self, prompt_ids: list[int], images: list):
        """The prompt's `multimodal.ImageInputs`; a 400 for a text-only model."""
        from tunelab.engine.multimodal import build_image_inputs
        from tunelab.vision.preprocess import image_processor

        if not hasattr(self.model, "encode_images"):
            raise InvalidRequest("this model serves text only: it takes no images", param="images")
        if self._image_processor is None:
            self._image_processor = image_processor(self.model_dir)
        return build_image_inputs(prompt_ids, images, self._image_processor, self.model)

    def _check_adapter(self, adapter: str | None) -> None:
        if adapter is not None and adapter not in self.lora.names():
            known = ", ".join(self.lora.names()) or "none loaded"
            raise InvalidRequest(f"unknown adapter '{adapter}' (loaded: {known})", param="adapter")

    def embed_job(self, prompts: list[list[int]], adapter: str | None = None) -> EmbedJob:
        """Check `prompts` (token ids) and `adapter`; the job embeds them when advanced (`embed`)."""
        if self.pooling.problem:
            raise InvalidRequest(self.pooling.problem, param="model")
        for ids in prompts:
            self.check_prompt(ids, SamplingParams(max_tokens=1))
        self._check_adapter(adapter)
        return EmbedJob(prompts, adapter, self.pooling)

    def embed(self, prompts: list[list[int]], adapter: str | None = None) -> list[torch.Tensor]:
        """Pooled embeddings (D,) fp32 on the CPU, by the model's `pooling`; on the stepping thread."""
        job = self.embed_job(prompts, adapter)
        while not job.done:
            if not job.advance(self):
                raise InvalidRequest("no free KV blocks to embed the prompt; running requests hold them",
                                     param="input")
        return job.vectors

    def abort(self, request_id: Any) -> list[Sequence]:
        """Finish every sequence of a request now, freeing its KV blocks; returns them."""
        with self.lock:
            seqs = [s for s in (*self.scheduler.running, *self.scheduler.waiting) if s.seq_id[0] == request_id]
            for seq in seqs:
                self.scheduler.abort(seq.seq_id)
        return seqs

    @property
    def total_generated_tokens(self) -> int:
        """Tokens appended to outputs so far (a verified draft adds several per step)."""
        return self.scheduler.num_generated

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    # ---- one step ---------------------------------------------------------------------

    def step(self) -> list[Sequence]:
        """Run one batch; returns the sequences that got a token or finished in this step."""
        with self.lock:
            batch = self.scheduler.schedule()
            # Snapshot the block tables now: an abort from another thread frees them at once.
            inputs = self.runner.prepare(batch.items) if batch else None
        tokens, logprobs = self.runner.step(batch, sample, inputs) if batch else ([], None)
        self.num_steps += bool(batch)
        with self.lock:
            finished = self.scheduler.postprocess(batch, tokens, logprobs)
        touched = {id(s): s for s in batch.sample_seqs}
        touched.update((id(s), s) for s in finished)
        return list(touched.values())

    # ---- adapters and stats -----------------------------------------------------------------

    def add_adapter(self, name: str, path: str | Path) -> None:
        """Load (or reload) a PEFT adapter under `name` for requests to use."""
        with self.lock:
            self.lora.add(name, path)
            self.scheduler.block_manager.reset_prefix_cache()  # cached KV may be from the old weights

    def add_adapter_weights(self, name: str, weights: dict[str, torch.Tensor], config: dict) -> None:
        """Load (or replace) adapter `name` from in-memory PEFT tensors and its adapter config."""
        with self.lock:
            self.lora.add_weights(name, weights, config, f"<in-memory adapter '{name}'>")
            self.scheduler.block_manager.reset_prefix_cache()  # cached KV may be from the old weights

    def remove_adapter(self, name: str) -> None:
        """Unload adapter `name`; requests running with it are aborted first."""
        with self.lock:
            for seq in [*self.scheduler.running, *self.scheduler.waiting]:
                if seq.adapter == name:
                    self.scheduler.abort(seq.seq_id)
            self.lora.remove(name)

    def stats(self) -> dict[str, Any]:
        """running, waiting, kv_usage, preemptions, token totals, steps run, adapters."""
        with self.lock:
            out: dict[str, Any] = dict(self.scheduler.stats())
        out.update(prompt_tokens_total=self.total_prompt_tokens, steps=self.num_steps,
                   generation_tokens_total=self.total_generated_tokens,
                   spec_draft_tokens=self.scheduler.num_draft_tokens,
                   spec_accepted_tokens=self.scheduler.num_accepted_tokens,
                   num_blocks=self.config.num_blocks, adapters=self.lora.names())
        return out

    # ---- setup ---------------------------------------------------------------------------

    def _new_seq(self, request_id, index: int, prompt_ids, params: SamplingParams, adapter) -> Sequence:
        detok = IncrementalDetokenizer(self.tokenizer, prompt_ids, params.stop)
        return Sequence(prompt_ids, params, seq_id=(request_id, index), adapter=adapter,
                        sample_index=index, detokenizer=detok)

    def _finish_config(self, cfg: EngineConfig) -> EngineConfig:
        limit = self.model.spec.max_positions
        if cfg.max_model_len and cfg.max_model_len > limit:
            raise ConfigError(f"max_model_len {cfg.max_model_len} exceeds the model's limit of {limit}")
        max_len = cfg.max_model_len or limit
        # No point in more blocks than max_num_seqs full-length sequences can use.
        ceiling = cfg.max_num_seqs * -(-max_len // cfg.block_size)
        num_blocks = cfg.num_blocks or min(self._auto_blocks(cfg), ceiling)
        eos = sorted(set(cfg.eos_token_ids) | set(eos_token_ids(self.hf_config, self.tokenizer, self.model_dir)))
        return cfg.replace(max_model_len=max_len, num_blocks=num_blocks, eos_token_ids=eos)

    def _setup_cuda_decode(self) -> None:
        """On CUDA: the paged decode kernel, and CUDA graphs for decode batches unless enforce_eager."""
        if self.device.type != "cuda":
            return
        if not self.runner.decode_kernel:
            warnings.warn("triton is not installed: CUDA decode attention falls back to gather + SDPA "
                          "and CUDA graphs are off (pip install triton)", stacklevel=3)
        elif not self.config.enforce_eager:
            max_blocks = -(-self.config.max_model_len // self.config.block_size)
            self.runner.enable_graphs(self.config.max_num_seqs, max_blocks)

    def _auto_blocks(self, cfg: EngineConfig) -> int:
        if self.device.type == "cuda":
            budget = cuda_budget(self.device, cfg.gpu_memory_utilization)
        else:
            budget = int(cfg.cpu_kv_cache_gb * 2**30)
        return blocks_for_budget(self.model.spec, cfg.block_size, self.dtype, budget, cfg.kv_cache_dtype)


def pick_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but no CUDA GPU is available")
    return dev


def load_tokenizer(model_dir: Path):
    """The model directory's Hugging Face tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def eos_token_ids(hf_config, tokenizer, model_dir: Path) -> list[int]:
    """EOS ids from generation_config.json, config.json and the tokenizer, merged."""
    import json

    ids: list[int] = []
    gen = model_dir / "generation_config.json"
    sources = [getattr(hf_config, "eos_token_id", None), tokenizer.eos_token_id]
    if gen.is_file():
        sources.append(json.loads(gen.read_text()).get("eos_token_id"))
    for value in sources:
        ids.extend(value if isinstance(value, list) else [value] if value is not None else [])
    return sorted(set(int(i) for i in ids))

