"""Which of our model classes runs a Hugging Face architecture, and how its config is read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tunelab.errors import TunelabError


class UnsupportedModel(TunelabError):
    """The checkpoint's architecture has no implementation in tunelab's engine."""


@dataclass(frozen=True)
class Family:
    """How to build one architecture: spec reader, model class, checkpoint name prefix."""

    spec_fn: Callable
    model_cls: type
    prefix: str = ""  # checkpoint prefix replaced by "model." (multimodal wrappers)
    text_config: bool = False  # the LM config is nested under config.text_config
    vision: bool = False  # the model class takes the full config and loads its vision tower and projector


def _families() -> dict[str, Family]:
    from tunelab.models.gemma3 import Gemma3ForCausalLM, gemma3_spec
    from tunelab.models.gemma3_vl import Gemma3VLForCausalLM
    from tunelab.models.llama import CausalLM, llama_spec
    from tunelab.models.qwen import qwen2_spec, qwen3_spec
    from tunelab.models.qwen3_vl import Qwen3VLForCausalLM
    from tunelab.models.qwen_vl import Qwen2_5_VLForCausalLM

    return {
        "LlamaForCausalLM": Family(llama_spec, CausalLM),
        "MistralForCausalLM": Family(llama_spec, CausalLM),
        "Qwen2ForCausalLM": Family(qwen2_spec, CausalLM),
        "Qwen3ForCausalLM": Family(qwen3_spec, CausalLM),
        "Gemma3ForCausalLM": Family(gemma3_spec, Gemma3ForCausalLM),
        "Gemma3ForConditionalGeneration": Family(gemma3_spec, Gemma3VLForCausalLM, text_config=True, vision=True),
        "Qwen2_5_VLForConditionalGeneration": Family(qwen2_spec, Qwen2_5_VLForCausalLM, text_config=True,
                                                     vision=True),
        "Qwen3VLForConditionalGeneration": Family(qwen3_spec, Qwen3VLForCausalLM, text_config=True, vision=True),
        # bare backbones, as sentence-transformers saves embedding models (they must tie embeddings)
        "LlamaModel": Family(llama_spec, CausalLM),
        "Qwen2Model": Family(qwen2_spec, CausalLM),
        "Qwen3Model": Family(qwen3_spec, CausalLM),
        "Gemma3TextModel": Family(gemma3_spec, Gemma3ForCausalLM),
    }


SUPPORTED = (
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
    "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration",
    "Qwen3VLForConditionalGeneration", "LlamaModel",
    "Qwen2Model", "Qwen3Model", "Gemma3TextModel",
)


def is_reward_model(architectures: list[str]) -> bool:
    """A *ForSequenceClassification checkpoint (stage=rm): a scalar score head, no LM head."""
    return any(str(a).endswith("ForSequenceClassification") for a in architectures)


def family_for(config, where: str = "config.json", score: bool = False) -> Family:
    """The `Family` for a transformers config, or UnsupportedModel naming the supported ones.
    A reward model is RewardModelError unless `score` (the engine's scoring mode): then its
    decoder's family, the score head loaded in place of the LM head (loader, pooling.score_pooling)."""
    archs = named = list(getattr(config, "architectures", None) or [])
    if is_reward_model(archs):
        if not score:
            from tunelab.errors import RewardModelError

            raise RewardModelError(where, "loaded by the engine (serve, chat, generation)")
        # Gemma3TextForSequenceClassification -> Gemma3ForCausalLM, Qwen2ForSequenceClassification -> Qwen2ForCausalLM
        archs = [a.removesuffix("ForSequenceClassification").removesuffix("Text") + "ForCausalLM" for a in archs]
    families = _families()
    for arch in archs:
        if arch in families:
            return families[arch]
    got = ", ".join(named) or f"model_type '{getattr(config, 'model_type', '?')}'"
    raise UnsupportedModel(
        f"{where}: architecture {got} is not supported by the tunelab engine; "
        f"supported: {', '.join(SUPPORTED)}"
    )
