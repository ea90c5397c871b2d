"""ServeConfig: everything `tunelab serve` needs, one typed object (CLI > YAML > defaults).

Engine settings live in the one `EngineConfig` (field `engine`); its keys are accepted
flat too (`dtype: bfloat16`, `--max-num-seqs 8`, `context_length`) as well as nested
(`engine: {dtype: bfloat16}`, `--engine.dtype`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from tunelab.config import opt, require_positive
from tunelab.engine.config import EngineConfig


@dataclasses.dataclass
class ServeConfig:
    """How the API server runs: model, network, limits and operations."""

    model: str | None = opt(None, "model to serve: store name, HF dir, GGUF file (llamacpp); None = default")
    served_name: str | None = opt(None, "name clients use in `model`; default: the model's folder name (and "
                                        "the model as given, e.g. a path)", aliases=("served_model_name",))
    adapters: dict = opt({}, "adapter name -> PEFT adapter dir, loaded at start (vLLM: --lora-modules "
                             "NAME=PATH ...)")
    backend: Literal["engine", "llamacpp", "vllm"] = opt("engine", "inference backend")
    host: str = opt("127.0.0.1", "bind address; loopback by default so nothing is exposed by accident")
    port: int = opt(8000, "TCP port; 0 picks a free one")
    api_key: str | None = opt(None, "required as 'Authorization: Bearer KEY' on /v1 and /api when set")
    watch: str | None = opt(None, "runs/ folder: serve each run's adapter/ once the run has finished")
    watch_interval_s: float = opt(2.0, "how often the runs/ folder is scanned")
    cors_origins: list = opt([], "origins allowed by CORS; empty = CORS off")
    chat_template: str | None = opt(None, "chat template name overriding the model's own")
    max_body_bytes: int = opt(1_000_000, "largest accepted request body (413 above)")
    max_tokens_limit: int = opt(4096, "largest max_tokens a request may ask for")
    default_max_tokens: int = opt(256, "max_tokens when a request gives none (capped by the context)")
    max_n: int = opt(8, "largest n (choices per request)")
    max_pending: int = opt(64, "requests admitted at once (running + queued); more get 429")
    shutdown_timeout_s: float = opt(10.0, "on SIGTERM: let requests run this long, then end them")
    body_timeout_s: float = opt(30.0, "a request body must arrive within this many seconds (408 after)")
    max_stop_sequences: int = opt(16, "most `stop` strings a request may send")
    max_stop_length: int = opt(200, "longest `stop` string, in characters")
    public_metrics: bool = opt(False, "with api_key: serve /metrics and /openapi.json without the key")
    access_log: bool = opt(True, "one JSON line per request on stderr")
    reasoning: Literal["auto", "off"] = opt("auto", "split <think>...</think> into reasoning_content")
    engine: EngineConfig = opt(EngineConfig, "engine settings (dtype, device, quantize, max_num_seqs, "
                               "max_model_len alias context_length, num_threads alias n_threads, ...); "
                               "also accepted without the engine. prefix", flat=True)
    models: list = opt([], "serve a library, each model loaded on its first request: 'all' (every store "
                           "model and finished run) or names; instead of `model`")
    keep_alive: str = opt("5m", "with models: how long an idle model stays loaded (Ollama durations: 30s, 5m, "
                                "1h; a number is seconds; 0 = unload after each request; negative = forever)")
    max_loaded_models: int = opt(3, "with models: most base models loaded at once (least recently used "
                                    "unloaded first)")
    max_loaded_bytes: int = opt(0, "with models: most weight bytes loaded at once; 0 = no byte budget")
    ui: bool = opt(False, "serve the web UI at /ui (its JSON API under /ui/api, same API key)")
    runs_dir: str = opt("runs", "web UI: folder where training runs are listed and started")

    def __post_init__(self) -> None:
        require_positive(self, "max_body_bytes", "max_tokens_limit", "default_max_tokens", "max_n",
                         "max_pending", "max_stop_sequences", "max_stop_length", "max_loaded_models")
        if self.max_loaded_bytes < 0:
            raise ValueError(f"max_loaded_bytes must be >= 0, got {self.max_loaded_bytes}")
        from tunelab.errors import InvalidRequest
        from tunelab.serve.keep_alive import parse_keep_alive

        try:  # a bad duration fails at start, naming the key
            parse_keep_alive(self.keep_alive, "keep_alive")
        except InvalidRequest as err:
            raise ValueError(str(err)) from None
        if self.models and (self.model or self.adapters or self.watch):
            given = "model" if self.model else "adapters" if self.adapters else "watch"
            raise ValueError(f"models serves a library loaded on demand; drop {given} (finished runs "
                             "are served by name, no watch needed)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
