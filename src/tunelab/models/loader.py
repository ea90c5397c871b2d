"""Load a Hugging Face safetensors checkpoint (single file or sharded) into our model classes.

The model is first built on the meta device (no memory, no init cost), materialised empty on
the target device and then filled tensor by tensor, so peak memory is about one copy of the
weights. Checkpoint names map 1:1 to ours except the fused projections in `FUSED`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tunelab.errors import TunelabError
from tunelab.models.registry import family_for

# checkpoint projection -> fused module that holds it as an output slice
FUSED = {
    "q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj",
    "gate_proj": "gate_up_proj", "up_proj": "gate_up_proj",
}


_BACKBONE = ("embed_tokens", "layers", "norm")  # top-level names of a checkpoint saved without its LM head
# a vision family's checkpoint names (transformers 5's and the hub's) -> ours, first match wins
_VISION_RENAMES = (("model.language_model.", "model."), ("model.visual.", "visual."),
                   ("language_model.model.", "model."), ("language_model.lm_head.", "lm_head."),  # Gemma 3 hub
                   ("model.vision_tower.", "vision_tower."), ("vision_tower.vision_model.", "vision_tower."),
                   ("model.multi_modal_projector.", "multi_modal_projector."))
_VISION_MODULES = ("visual.", "vision_tower.", "multi_modal_projector.")  # tower + projector: loaded as they are


class CheckpointError(TunelabError):
    """A checkpoint is missing files or tensors, or has tensors of the wrong shape."""


def load_config(model_dir: Path):
    """The transformers config of `model_dir` (normalises old/new rope fields for us)."""
    from transformers import AutoConfig

    if not (model_dir / "config.json").is_file():
        raise CheckpointError(f"{model_dir}: no config.json (not a Hugging Face model directory)")
    return AutoConfig.from_pretrained(model_dir)


def load_model(model_dir: str | Path, dtype: torch.dtype, device: torch.device, quantize: str | None = None,
               score: bool = False):
    """Build and fill the model for `model_dir`; returns (model, transformers config).

    `quantize` (see `quant.QuantSpec`) is checked before any weight is read. `score`: a reward model
    (*ForSequenceClassification) loads, its `score` head (num_labels, hidden) as the model's lm_head."""
    from tunelab.models.gguf_weights import check_gguf_load, fill_from_gguf, gguf_source
    from tunelab.models.hugepages import pack_weights_hugepages
    from tunelab.models.quant import QuantSpec, quantize_model

    QuantSpec.parse(quantize)
    model_dir = Path(model_dir)
    config = load_config(model_dir)
    family = family_for(config, str(model_dir / "config.json"), score)
    if score and quantize:
        raise CheckpointError(f"{model_dir}: a reward model is scored unquantized (quantize={quantize!r})")
    text_config = config.text_config if family.text_config else config
    spec = family.spec_fn(text_config)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = family.model_cls(spec, config if family.vision else text_config)
            if score:  # the checkpoint has no LM head; its score head takes that place
                model.lm_head = type(model.lm_head)(spec.hidden_size, config.num_labels, bias=False)
    finally:
        torch.set_default_dtype(previous)
    model.to_empty(device=device)
    if spec.tie_embeddings and not score:  # to_empty materialises shared parameters separately
        model.lm_head.weight = model.model.embed_tokens.weight
    gguf = gguf_source(model_dir)
    if gguf is not None:  # the file's own quantized tensors (models.gguf_weights)
        check_gguf_load(quantize, device, gguf)
        fill_from_gguf(model, model_dir, text_config, dtype)
        return model.eval(), text_config
    if device.type == "cpu" and quantize is None:  # quantizing replaces weights: the arena would keep the old
        pack_weights_hugepages(model, copy=False)  # 2 MB pages, filled by _fill: decode reads weights faster
    _fill(model, model_dir, family.prefix, family.vision, score)
    model.to_device(device)
    quantize_model(model, quantize)
    return model.eval(), text_config


def checkpoint_files(model_dir: Path) -> list[Path]:
    """Safetensors files of a checkpoint, following model.safetensors.index.json when sharded."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [model_dir / name for name in sorted(set(weight_map.values()))]
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{model_dir}: no *.safetensors weights found")
    return files


def _fill(model: torch.nn.Module, model_dir: Path, prefix: str, vision: bool = False, score: bool = False) -> None:
    from safetensors import safe_open

    params = dict(model.named_parameters(remove_duplicate=False))
    modules = dict(model.named_modules())
    loaded: set[str] = set()
    for path in checkpoint_files(model_dir):
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():
                name = _vision_name(key) if vision else _our_name(key, prefix)
                if score and key == "score.weight":
                    name = "lm_head.weight"
                if name is not None:
                    loaded |= _load_one(name, f.get_tensor(key), params, modules, path)
    _check_complete(model, params, loaded, model_dir, score)


def _our_name(key: str, prefix: str) -> str | None:
    """Checkpoint key -> our parameter name, or None for tensors we do not use."""
    if not prefix and key.split(".", 1)[0] in _BACKBONE:  # a bare backbone, e.g. Qwen3-Embedding (Qwen3Model)
        key = "model." + key
    if prefix and key.startswith(prefix):
        key = "model." + key[len(prefix):]
    elif prefix and key.startswith("lm_head."):
        pass
    elif prefix:
        return None  # vision tower, projector
    if "rotary_emb" in key or not (key.startswith("model.") or key.startswith("lm_head.")):
        return None
    return key


def vision_renamed(key: str) -> str:
    """A vision family's module path as transformers 5 or the hub names it -> ours
    (`model.language_model.layers...` -> `model.layers...`); other paths as they are."""
    for old, new in _VISION_RENAMES:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _vision_name(key: str) -> str | None:
    """A vision family's checkpoint key -> our name: the language model's as for text, the tower's and
    projector's as the model class names them (`_VISION_MODULES`)."""
    key = vision_renamed(key)
    return key if key.startswith(_VISION_MODULES) else _our_name(key, "")


def _load_one(name: str, tensor: torch.Tensor, params: dict, modules: dict, path: Path) -> set[str]:
    module_name, _, leaf = name.rpartition(".")
    parent, _, proj = module_name.rpartition(".")
    if proj in FUSED and f"{parent}.{FUSED[proj]}" in modules:  # the vision tower's MLP stays unfused
        fused = modules[f"{parent}.{FUSED[proj]}"]
        fused.load_part(proj, tensor, is_bias=leaf == "bias")
        return {f"{parent}.{FUSED[proj]}.{leaf}"}
    if name not in params:
        raise CheckpointError(f"{path.name}: unexpected tensor '{name}' for this architecture")
    param = params[name]
    if param.shape != tensor.shape:
        raise CheckpointError(f"{path.name}: tensor '{name}' has shape {tuple(tensor.shape)}, "
                              f"expected {tuple(param.shape)}")
    param.data.copy_(tensor)
    return {name}


def _check_complete(model, params: dict, loaded: set[str], model_dir: Path, score: bool = False) -> None:
    if model.spec.tie_embeddings and not score:
        loaded.add("lm_head.weight")
    missing = sorted(set(params) - loaded)
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise CheckpointError(f"{model_dir}: checkpoint lacks {', '.join(missing[:3])}{more}")
