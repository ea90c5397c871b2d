"""What /api/show says of a `--models` model that is not loaded, read from its files.

Ollama answers show without loading; so does `serve --models`. The keys are those of the loaded
path (`ollama_models._loaded_facts`, the engine backend's `describe`), each read from the owner
the engine itself loads it through: config.json (`store.describe`), the safetensors headers
(`store.weights.summarize`), the chat template (`resolve_template`, adapter first), the pooling
rule (`engine.pooling.read_pooling`), and the server's engine config (dtype, context length).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.serve.config import ServeConfig
from tunelab.serve.library import Servable


def unloaded_facts(item: Servable, config: ServeConfig) -> dict[str, Any]:
    """`_loaded_facts`'s keys for `item`, without loading it (blocking file reads)."""
    from tunelab.data.templates import resolve_template
    from tunelab.serve.backends.engine import EngineBackend
    from tunelab.serve.ollama_models import details
    from tunelab.vision.family import serves_images

    model_dir = Path(item.base_path)
    info = describe_files(model_dir, config)
    max_positions = info.pop("max_positions")
    template = resolve_template(model_dir, item.adapter, config.chat_template)
    return {"info": {**info, "template": template.source}, "template": template,
            "model_path": str(model_dir), "adapter_path": str(item.adapter) if item.adapter else None,
            "details": details(item.base_name if item.adapter else "", info),
            "context_length": config.engine.max_model_len or max_positions,
            "embeds": EngineBackend.capabilities.embeddings, "created": int(model_dir.stat().st_mtime),
            "vision": serves_images(model_dir)}


def describe_files(model_dir: Path, config: ServeConfig) -> dict[str, Any]:
    """The engine backend's `describe` keys (family, format, parameter_size, quantization, size,
    pooling, embedding_length) and the model's max_positions, from files and the engine config."""
    from tunelab.dtypes import resolve_dtype
    from tunelab.engine.engine import pick_device
    from tunelab.engine.pooling import read_pooling
    from tunelab.store.describe import architecture_of, human_count, read_config
    from tunelab.store.weights import summarize

    config_json = read_config(model_dir)
    text = config_json.get("text_config") or config_json  # multimodal configs nest the language model
    pooling = read_pooling(model_dir)
    dtype = resolve_dtype(config.engine.dtype, pick_device(config.engine.device))
    return {"family": architecture_of(config_json), "format": "safetensors",
            "parameter_size": human_count(summarize(model_dir).params), "quantization": str(dtype).split(".")[-1],
            "size": sum(f.stat().st_size for f in model_dir.glob("*.safetensors")),
            "pooling": pooling.describe(), "embedding_length": int(text["hidden_size"]) * len(pooling.modes),
            "max_positions": int(text["max_position_embeddings"])}
