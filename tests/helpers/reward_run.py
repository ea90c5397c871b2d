"""The tiny reward model (stage=rm) the export and GRPO reward-model tests share."""

from __future__ import annotations

from pathlib import Path


def train_tiny_rm(model_dir: Path, out: Path) -> tuple[Path, list]:
    """(run dir, held-out pairs): a LoRA reward model on `model_dir` after 2 steps on the bundled pairs."""
    from transformers import AutoTokenizer

    from tunelab.config import load_config
    from tunelab.data.config import DataConfig
    from tunelab.data.demo import preference_heldout_path
    from tunelab.data.formats import read_datasets
    from tunelab.data.templates import ChatTemplate
    from tunelab.data.tokenize import tokenize_preference_rows
    from tunelab.train.config import TrainConfig
    from tunelab.train.trainer import train

    tokenizer, template = AutoTokenizer.from_pretrained(model_dir), ChatTemplate.for_model(model_dir)
    rows = read_datasets([preference_heldout_path()]).rows
    pairs = tokenize_preference_rows(rows, template, tokenizer, DataConfig(cutoff_len=256))[0]
    cfg = load_config(TrainConfig, None, [f"model={model_dir}", f"output={out}", "stage=rm", "max_steps=2",
                                          "lr=1e-2", "micro_batch_size=4", "data.cutoff_len=256"])
    return train(cfg, examples=(pairs, [])).run_dir, pairs
