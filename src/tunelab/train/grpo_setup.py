"""What `train` builds for stage=grpo: prompt examples (reward functions loaded first) and the objective."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tunelab.train.config import TrainConfig


def load_prompt_examples(cfg: TrainConfig, tokenizer: Any, template: Any):
    """Examples of the GRPO prompts in cfg.datasets; the reward functions are imported first, so a
    bad one (or a column none of them reads) stops before the model loads."""
    from tunelab.data.prompts import read_prompts, tokenize_prompts
    from tunelab.errors import TunelabError
    from tunelab.train.dataset import Examples, first_rows, mix_rows, split_eval
    from tunelab.train.reward_funcs import load_reward_funcs, reward_inputs

    funcs = load_reward_funcs(cfg.grpo.reward_funcs)
    required = {f.name: f.required for f in funcs}
    weights = cfg.dataset_weights or [1.0] * len(cfg.datasets)
    rows: list = []
    for i, (path, weight) in enumerate(zip(cfg.datasets, weights)):
        loaded = read_prompts([path], reward_inputs(funcs), required, cfg.data.ignore_columns, cfg.data.skip_invalid)
        rows += mix_rows(first_rows(loaded.rows, cfg.data.max_samples), weight, seed=cfg.seed + i)
    examples, dropped = tokenize_prompts(rows, template, tokenizer, cfg.data.cutoff_len, cfg.grpo.sampling.max_tokens)
    if not examples:
        raise TunelabError(f"datasets: no usable prompts in {', '.join(cfg.datasets)}: {dropped} of {len(rows)} "
                           f"exceed data.cutoff_len ({cfg.data.cutoff_len}) with grpo.sampling.max_tokens "
                           f"({cfg.grpo.sampling.max_tokens})")
    train, held = split_eval(examples, cfg.eval_split, cfg.seed)
    return Examples(train, held, len(rows), {"prompts_over_cutoff": dropped})


def build_grpo_objective(model: torch.nn.Module, cfg: TrainConfig, data) -> torch.nn.Module:
    """The GRPO objective with its rollout engine on the model's own directory and dtype (under
    LoRA/DoRA the policy's frozen base then lives in the engine's tensors)."""
    from tunelab.data.templates import resolve_template
    from tunelab.train.grpo import GRPOObjective
    from tunelab.train.loss import causal_lm
    from tunelab.train.reward_funcs import load_reward_funcs
    from tunelab.train.rollout import Rollout

    lm = causal_lm(model)
    model_dir = Path(lm.config.name_or_path)  # the directory the trainer loaded the base from
    template = resolve_template(model_dir, None, cfg.data.template, cfg.data.system)  # as prepare_data chose
    longest = max(len(ex) for ex in [*data.train, *data.eval])
    rollout = Rollout(model_dir, template, cfg.grpo.sampling, next(lm.parameters()).dtype,
                      cfg.micro_batch_size * cfg.grpo.group_size, max(longest, 16), cfg.grpo.engine_blocks)
    if cfg.method in ("lora", "dora", "qlora"):  # only the adapter is saved: the base can live in the engine's
        # tensors (qlora: the 16-bit rest; the engine takes the NF4 weights dequantized, rollout.load_nf4)
        rollout.share_base(model)
    return GRPOObjective(model, cfg.grpo, load_reward_funcs(cfg.grpo.reward_funcs), [*data.train, *data.eval],
                         rollout)


def describe(cfg: TrainConfig) -> str:
    """', stage grpo (G 4, beta 0, dapo, rewards format+accuracy)' for the start summary."""
    g = cfg.grpo
    return (f", stage grpo (G {g.group_size}, max {g.sampling.max_tokens} tokens, T {g.sampling.temperature:g}, "
            f"beta {g.beta:g}, {g.loss_type}, rewards {'+'.join(g.reward_funcs)})")
