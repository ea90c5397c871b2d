"""Pieces `train` builds before the loop: tokenizer + template + examples, optimizer, start facts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tunelab.train.config import TrainConfig
from tunelab.train.dataset import Examples, load_examples


def prepare_data(cfg: TrainConfig, model_dir: Path, examples: tuple[list, list] | None):
    """(tokenizer, chat template, Examples); given `examples` are used as they are."""
    from transformers import AutoTokenizer

    from tunelab.data.templates import resolve_template

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    template = resolve_template(model_dir, None, cfg.data.template, cfg.data.system)
    if examples is not None:
        train, held = examples
        return tokenizer, template, Examples(list(train), list(held), len(train) + len(held), {})
    return tokenizer, template, load_examples(cfg, tokenizer, template)


def build_objective(model: torch.nn.Module, cfg: TrainConfig, data: Examples | None = None) -> torch.nn.Module:
    """The module accelerate wraps: token cross-entropy for sft, GRPO with its rollout engine (needs
    the prompt `data`), the pair/KTO loss otherwise."""
    if cfg.stage == "grpo":
        from tunelab.train.grpo_setup import build_grpo_objective

        return build_grpo_objective(model, cfg, data)
    if cfg.stage == "sft":
        from tunelab.train.loss import SelectedLogitsLoss

        return SelectedLogitsLoss(model)
    from tunelab.train.pairs import PreferenceObjective
    from tunelab.train.reward import RewardObjective

    return (RewardObjective if cfg.stage == "rm" else PreferenceObjective)(model, cfg.stage, cfg.pref)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig):
    """AdamW over trainable parameters and the warm-up + decay schedule."""
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        from tunelab.errors import TunelabError

        raise TunelabError(f"method={cfg.method}: no trainable parameters (check lora.target_modules)")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    name = {"constant": "constant_with_warmup"}.get(cfg.schedule, cfg.schedule)
    total = cfg.max_steps if cfg.max_steps > 0 else 10**9  # replaced below once the plan is known
    return optimizer, _Schedule(optimizer, name, cfg.warmup_steps, total, get_scheduler, cfg.warmup_ratio)


class _Schedule:
    """A transformers LR schedule whose total steps are set once the data plan is known."""

    def __init__(self, optimizer, name: str, warmup: int, total: int, factory, warmup_ratio: float = 0.0):
        self.optimizer, self.name, self.warmup, self.factory = optimizer, name, warmup, factory
        self.warmup_ratio = warmup_ratio
        self.set_total(total)

    def set_total(self, total: int) -> None:
        """(Re)build the schedule for `total` steps, from step 0."""
        for group in self.optimizer.param_groups:
            group["lr"] = group.get("initial_lr", group["lr"])
        warmup = self.warmup or int(self.warmup_ratio * total + 0.5)  # a ratio needs the total: set here
        self.inner = self.factory(self.name, self.optimizer, num_warmup_steps=warmup,
                                  num_training_steps=max(total, 1))

    def step(self) -> None:
        self.inner.step()

    def get_last_lr(self) -> list[float]:
        return self.inner.get_last_lr()

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


def start_facts(cfg: TrainConfig, model: torch.nn.Module, model_dir: Path, data: Examples,
                total_steps: int, start_step: int) -> dict[str, Any]:
    """The rows of the one-screen start summary."""
    from tunelab.train.display import human
    from tunelab.train.methods import ADAPTER_METHODS, count_params
    from tunelab.plan import estimate_training, model_shape
    from tunelab.plan.device import detect_device
    from tunelab.plan.render import gib

    trainable, total = count_params(model)
    plan = estimate_training(model_shape(str(model_dir))[0], cfg, detect_device())
    steps = f"{total_steps}" + (f" (resuming at {start_step})" if start_step else "")
    return {
        "model": f"{cfg.model or 'default (Gemma 3 270M)'}  [{model_dir}]",
        "method": cfg.method + (f" r={cfg.lora.rank} alpha={cfg.lora.alpha:g}"
                                if cfg.method in ADAPTER_METHODS else "") + _stage(cfg),
        "params": f"{human(trainable)} trainable / {human(total)} total ({100 * trainable / max(total, 1):.2f}%)",
        "data": f"{data.rows} rows -> {len(data.train)} train / {len(data.eval)} eval examples, "
                f"{human(data.tokens())} tokens/epoch",
        "batch": f"micro {cfg.micro_batch_size} x accum {cfg.grad_accum}, cutoff {cfg.data.cutoff_len}, "
                 f"packing {'on' if cfg.packing else 'off'}",
        "memory": f"~{gib(plan.total)} planned peak (`tunelab plan` shows the breakdown)",
        "steps": steps,
        "run dir": cfg.output,
    }


def _stage(cfg: TrainConfig) -> str:
    """', stage dpo (beta 0.1, sigmoid)' for preference stages; empty for sft."""
    if cfg.stage == "grpo":
        from tunelab.train.grpo_setup import describe

        return describe(cfg)
    if cfg.stage in ("sft", "rm"):
        return f", stage {cfg.stage}" if cfg.stage == "rm" else ""
    beta = cfg.pref.beta_for(cfg.stage)
    return f", stage {cfg.stage} (beta {beta:g}" + (f", {cfg.pref.loss})" if cfg.stage == "dpo" else ")")
