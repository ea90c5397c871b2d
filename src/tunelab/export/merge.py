"""Fold a run's adapter into its base model: a standalone Hugging Face directory.

The result carries the training chat template (tunelab_template.json and the
tokenizer's chat_template) and a generation_config whose EOS list holds the
end-of-turn ids, so any HF-compatible runtime stops where training stopped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

from tunelab.data.templates import ChatTemplate
from tunelab.atomic import atomic_dir
from tunelab.progress import progress
from tunelab.rundir import Run

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def merge_run(run: Run, out: Path | None = None, log: Callable[[str], None] = print) -> Path:
    """Write base + adapter (or a full fine-tune) to `out` (default RUN/merged); return it.
    A reward model (stage=rm) becomes a *ForSequenceClassification model with its score head,
    without a generation config: it scores text, it does not generate."""
    out = Path(out) if out else run.path / "merged"
    with atomic_dir(out) as tmp:
        if run.model_dir is not None:
            _copy_model(run.model_dir, tmp)
        else:
            _merge_adapter(run, tmp, log)
        template = run.chat_template()
        write_tokenizer_and_template(_tokenizer_source(run), tmp, template)
        if not run.is_reward_model:
            write_generation_config(run.model_dir or run.base_model, tmp, template)
    log(f"merged model written to {out}")
    return out


def _copy_model(model_dir: Path, dest: Path) -> None:
    for item in model_dir.iterdir():
        if item.is_file():
            shutil.copy2(item, dest / item.name)


def _merge_adapter(run: Run, dest: Path, log: Callable[[str], None]) -> None:
    import torch
    from peft import PeftModel

    from tunelab.compat import quiet_peft_warnings

    target = merge_dtype(run)
    if run.is_qlora:
        log(f"QLoRA run: merging into a dequantized 16-bit ({str(target).split('.')[-1]}) base, "
            "not into 4-bit weights")
    # Merge in float32 so the low-rank update is not rounded twice, then cast once.
    with progress("loading the base model and the adapter"):
        base = _load_base(run, torch.float32)
        with quiet_peft_warnings():
            model = PeftModel.from_pretrained(base, str(run.adapter_dir))
    with progress("folding the adapter into the base weights"):
        merged = model.merge_and_unload()
    with progress(f"saving the merged model ({str(target).split('.')[-1]})"):
        merged.to(target).save_pretrained(dest, safe_serialization=True)


def _load_base(run: Run, dtype):
    """The base as the adapter was trained on it: a causal LM, a reward model's sequence classifier, or a
    vision-language model with its vision tower (an image-text-to-text model)."""
    from transformers import AutoModelForCausalLM

    from tunelab.vision.family import is_vision_model

    if is_vision_model(run.base_model):
        from tunelab.vision.training import load_vision_model

        return load_vision_model(run.base_model, dtype=dtype)
    if run.is_reward_model:
        from tunelab.train.reward import load_reward_model

        return load_reward_model(run.base_model, dtype=dtype)
    return AutoModelForCausalLM.from_pretrained(run.base_model, dtype=dtype)


def merge_dtype(run: Run):
    """The base model's dtype; for QLoRA always a 16-bit float."""
    import torch

    config = json.loads((run.base_model / "config.json").read_text(encoding="utf-8"))
    name = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    dtype = getattr(torch, name, torch.float32)
    if run.is_qlora and dtype not in (torch.float16, torch.bfloat16):
        return torch.bfloat16
    return dtype


def _tokenizer_source(run: Run) -> Path:
    # Training saves the tokenizer (with any added tokens) beside the adapter; prefer it.
    for cand in (run.adapter_dir, run.model_dir):
        if cand is not None and any((cand / f).is_file() for f in TOKENIZER_FILES):
            return cand
    return run.base_model


def write_tokenizer_and_template(source: Path, dest: Path, template: ChatTemplate) -> None:
    """Save the tokenizer of `source` into `dest` with `template` as its chat template."""
    from transformers import AutoTokenizer

    template.save_with_tokenizer(AutoTokenizer.from_pretrained(source), dest)


def write_generation_config(model_src: Path, dest: Path, template: ChatTemplate) -> None:
    """generation_config.json whose eos_token_id lists EOS plus every end-of-turn id."""
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(dest)
    try:
        gen = GenerationConfig.from_pretrained(model_src)
    except OSError:
        gen = GenerationConfig()
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    gen.eos_token_id = list(dict.fromkeys(eos + template.stop_token_ids(tokenizer))) or None
    gen.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        gen.bos_token_id = tokenizer.bos_token_id
    gen.save_pretrained(dest)
