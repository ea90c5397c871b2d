"""What trains on a VLM: LoRA on the language model only by default; tower and projector on request."""

from __future__ import annotations

import pytest

from tunelab.config import load_config
from tunelab.train.config import TrainConfig
from tunelab.train.methods import apply_method, load_model


def _trainable(tiny_vlm, method: str, *extra: str) -> set[str]:
    import torch

    cfg = load_config(TrainConfig, None, [f"model={tiny_vlm}", f"method={method}", *extra])
    model = apply_method(load_model(tiny_vlm, cfg, torch.float32), cfg, tiny_vlm)
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _where(names: set[str]) -> set[str]:
    """'language', 'tower' or 'projector' for each trainable parameter."""
    return {"projector" if ".merger." in n else "tower" if ".visual." in n else "language" for n in names}


@pytest.mark.parametrize("fixture", ["tiny_vlm", "tiny_qwen3_vl"])  # Qwen3-VL's DeepStack mergers are tower
@pytest.mark.parametrize("extra, parts", [((), {"language"}), (("train_projector=true",), {"language", "projector"}),
                                          (("freeze_vision_tower=false",), {"language", "tower"})])
def test_lora_targets_follow_the_vision_keys(fixture, extra, parts, request):
    names = _trainable(request.getfixturevalue(fixture), "lora", *extra)
    assert _where(names) == parts
    assert all("lora_" in n for n in names if ".merger." not in n)


def test_full_fine_tuning_keeps_the_tower_frozen_by_default(tiny_vlm):
    assert _where(_trainable(tiny_vlm, "full")) == {"language"}
    assert _where(_trainable(tiny_vlm, "full", "train_projector=true", "freeze_vision_tower=false")) == {
        "language", "tower", "projector"}


def test_llamafactory_vision_keys_map_to_ours():
    from tunelab.train.llamafactory import train_values

    data = {"model_name_or_path": "m", "stage": "sft", "finetuning_type": "lora", "freeze_vision_tower": False,
            "freeze_multi_modal_projector": False}
    values = train_values(data, "qwen2_5vl_lora_sft.yaml").values
    assert values["freeze_vision_tower"] is False and values["train_projector"] is True


def test_a_vision_family_tunelab_cannot_train_is_refused_by_name(tmp_path):
    from tunelab.errors import TunelabError
    from tunelab.vision.training import load_vision_model

    (tmp_path / "config.json").write_text('{"model_type": "qwen3_vl_moe", "vision_config": {}}')
    with pytest.raises(TunelabError, match="is a qwen3_vl_moe vision-language model; tunelab trains vision models "
                                           "of the qwen2_vl, qwen2_5_vl, qwen3_vl, gemma3 families only"):
        load_vision_model(tmp_path)
