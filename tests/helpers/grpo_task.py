"""The tiny GRPO task the trainer's and eval's GRPO tests share.

A tiny llama whose embeddings are large enough (init std 0.2) for LoRA to move its sampling, and
the tokens the `favoured` reward of tests/assets/grpo/rewards.py counts: one embedding direction,
handed over in $TUNELAB_TEST_FAVOURED (the same list for the same seed, whichever test builds it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

REWARDS = Path(__file__).parents[1] / "assets" / "grpo" / "rewards.py"


def make_grpo_task(root: Path, prompts: list[str]) -> tuple[Path, Path]:
    """(model dir, prompts file) under `root`; sets $TUNELAB_TEST_FAVOURED for the reward."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tiny_models import TOKENIZER_DIR, tiny_config

    config = tiny_config("llama")
    config.initializer_range = 0.2
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(root / "model")
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(root / "model")
    favoured = (model.get_input_embeddings().weight[:, 0] > 0).nonzero()[:, 0].tolist()
    os.environ["TUNELAB_TEST_FAVOURED"] = json.dumps(favoured)
    data = root / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in prompts))
    return root / "model", data
