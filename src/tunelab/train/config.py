"""TrainConfig: everything `tunelab train` accepts, one typed field with one line of doc each.

Precedence is command line over YAML over these defaults (tunelab.config.load_config).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from tunelab.config import opt, require_positive
from tunelab.data.config import DataConfig
from tunelab.train.grpo_config import GRPOConfig

Method = Literal["lora", "dora", "qlora", "full", "freeze"]
Tracker = Literal["tensorboard", "wandb", "mlflow", "swanlab"]
Stage = Literal["sft", "dpo", "kto", "orpo", "simpo", "rm", "grpo"]


@dataclasses.dataclass
class LoraConfig:
    """The low-rank branch added to each target linear layer: y = Wx + (alpha/r)·B(A(dropout(x)))."""

    rank: int = opt(16, "rank r of the A (r x in) and B (out x r) matrices")
    alpha: float = opt(32.0, "scale numerator: the update is multiplied by alpha / rank")
    dropout: float = opt(0.0, "dropout on the LoRA branch input")
    target_modules: list[str] = opt(["all-linear"], "module names to adapt; 'all-linear' = every linear layer but the output")
    trainable_tokens: list[str] = opt([], "tokens whose embedding rows (and tied output rows) train with the adapter; "
                                          "'template' = the chat template's control tokens (a base model's are untrained)")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"lora.rank must be >= 1, got {self.rank}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")


@dataclasses.dataclass
class PreferenceConfig:
    """Knobs of the preference stages (dpo, kto, orpo, simpo); the maths is in train/preference.py."""

    beta: float | None = opt(None, "strength of the preference term; empty = 0.1 (simpo: 2.0)")
    loss: Literal["sigmoid", "ipo", "hinge"] = opt("sigmoid", "stage=dpo: sigmoid (DPO), ipo or hinge")
    label_smoothing: float = opt(0.0, "dpo sigmoid / simpo: probability that a preference label is flipped (cDPO)")
    simpo_gamma: float = opt(0.5, "stage=simpo: target reward margin gamma")
    desirable_weight: float = opt(1.0, "stage=kto: weight of desirable examples' losses")
    undesirable_weight: float = opt(1.0, "stage=kto: weight of undesirable examples' losses")

    def __post_init__(self) -> None:
        if self.beta is not None and self.beta <= 0:
            raise ValueError(f"pref.beta must be > 0, got {self.beta}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"pref.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")

    def beta_for(self, stage: str) -> float:
        """beta, or the stage's usual value (SimPO 2.0, the others 0.1)."""
        return self.beta if self.beta is not None else (2.0 if stage == "simpo" else 0.1)


@dataclasses.dataclass
class TrainConfig:
    """One fine-tuning run."""

    model: str | None = opt(None, "store name, local HF dir or hub id; empty = the embedded Gemma 3 270M")
    datasets: list[str] = opt([], "training data files (jsonl/json/csv/parquet/txt)")
    dataset_weights: list[float] = opt([], "mixing weight per dataset: its rows are repeated/subsampled to weight x size")
    data: DataConfig = opt(DataConfig, "how rows become training examples (format, template, cutoff_len, ...)")
    method: Method = opt("lora", "lora | dora | qlora (4-bit NF4 base, bitsandbytes) | full | freeze")
    stage: Stage = opt("sft", "sft | dpo | kto | orpo | simpo (preference pairs or KTO rows) | rm (reward model: "
                              "scalar head on pairs) | grpo (prompts + reward functions, rollouts on tunelab's engine)")
    pref: PreferenceConfig = opt(PreferenceConfig, "preference-stage settings (beta, loss, label_smoothing, ...)")
    grpo: GRPOConfig = opt(GRPOConfig, "stage=grpo settings (reward_funcs, sampling.n, beta, epsilon, loss_type, ...)")
    lora: LoraConfig = opt(LoraConfig, "LoRA/DoRA/QLoRA settings")
    freeze_trainable_layers: int = opt(2, "method=freeze: train only the last N decoder layers")
    freeze_vision_tower: bool = opt(True, "vision models: keep the vision tower frozen (false: it trains too)")
    train_projector: bool = opt(False, "vision models: train the projector between vision tower and language model")
    lr: float = opt(2e-4, "peak learning rate")
    schedule: Literal["cosine", "linear", "constant"] = opt("cosine", "learning-rate decay after warm-up")
    warmup_steps: int = opt(0, "steps of linear warm-up from 0 to lr")
    warmup_ratio: float = opt(0.0, "warm-up as a fraction of the total steps, when warmup_steps is 0")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    max_grad_norm: float = opt(1.0, "clip the gradient norm to this (0 = no clipping)")
    epochs: int = opt(1, "passes over the training data (ignored when max_steps > 0)")
    max_steps: int = opt(0, "stop after this many optimizer steps (0 = use epochs)")
    micro_batch_size: int = opt(4, "examples per forward pass (packed: a row of micro_batch_size x cutoff_len tokens)")
    grad_accum: int = opt(1, "micro-batches per optimizer step")
    packing: bool = opt(False, "pack examples into rows (block-diagonal mask; best with flash-attn on GPU); "
                               "off = length buckets, right-padded, no mask (fastest on CPU)")
    eval_split: float = opt(0.05, "fraction of examples held out for eval loss (at least one; 0 = none)")
    eval_every: int = opt(0, "evaluate every N steps (0 = only at the end)")
    seed: int = opt(42, "seed for data order, LoRA init and dropout")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = opt("auto", "auto = bf16 where the device computes it natively "
                                                             "(CPU: lora/dora, adapter weights kept fp32), else fp32")
    gradient_checkpointing: bool = opt(False, "recompute activations in backward: less memory, ~30% slower")
    save_every: int = opt(0, "write a checkpoint every N steps (0 = only when stopping)")
    keep_last: int = opt(2, "checkpoints to keep")
    log_every: int = opt(1, "write a metrics line every N steps")
    output: str = opt("", "run directory; empty = runs/<model>-<method>-<time>")
    report_to: list[Tracker] = opt([], "experiment trackers that also get the metrics: tensorboard, wandb, mlflow, swanlab")
    ignore_memory_plan: bool = opt(False, "train even when the memory plan (`tunelab plan`) says it cannot fit")

    def __post_init__(self) -> None:
        from tunelab.data.formats import join_dataset_names

        self.datasets = join_dataset_names(self.datasets)  # `info.json#a,b` names two datasets, not a file `b`
        require_positive(self, "micro_batch_size", "grad_accum", "epochs", "keep_last", "log_every")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.eval_split < 1:
            raise ValueError(f"eval_split must be in [0, 1), got {self.eval_split}")
        if self.stage != "sft" and self.packing:
            raise ValueError(f"packing: stage={self.stage} keeps each pair in its own rows; set packing=false")
        if self.stage == "grpo":
            self.grpo.check_stage()
        if self.dataset_weights and len(self.dataset_weights) != len(self.datasets):
            raise ValueError(
                f"dataset_weights has {len(self.dataset_weights)} entries for {len(self.datasets)} datasets"
            )

    def dtype_name(self, kind: str) -> str:
        """The base weights' dtype on a device kind ("cpu"/"cuda"): precision, with auto resolved
        by tunelab.dtypes. Only lora/dora keep every trainable weight fp32 over a frozen base
        (peft upcasts adapter weights; stage=rm's new score head is not one, and stage=grpo's
        rollouts have not been checked over a bf16 base)."""
        from tunelab.dtypes import auto_dtype_name

        if self.precision != "auto":
            return self.precision
        frozen_base = self.method in ("lora", "dora") and self.stage not in ("rm", "grpo")
        return auto_dtype_name(kind, training=True, frozen_base=frozen_base)
