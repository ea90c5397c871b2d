"""FSDP2: every process holds 1/N of each weight, gradient and optimizer state (torch `fully_shard`).

Asked for the way accelerate users already ask: `accelerate launch --config_file
configs/accelerate_fsdp.yaml` (it exports ACCELERATE_USE_FSDP=true, FSDP_VERSION=2), or the same
variables in front of torchrun. On GPUs accelerate's own FSDP2 `prepare` shards the model; on CPU
(gloo) accelerate keeps FSDP off, so we call torch's `fully_shard` ourselves, one unit per decoder
layer plus the root (embeddings, final norm and head), as accelerate's transformer auto-wrap does.

    objective (root unit: embed, norm, head)
      model.layers[i]  (one unit each: all-gathered for its forward/backward, then freed)

Gradients are reduce-scattered and averaged over processes like DDP's all-reduce, so the trainer's
loss scaling, clipping (DTensor-aware, in accelerate) and metrics are unchanged.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from tunelab.errors import TunelabError


def requested(accelerator) -> bool:
    """True when the launch asks for FSDP and there is more than one process to shard over."""
    env = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")
    return accelerator.num_processes > 1 and (env or accelerator.distributed_type.name == "FSDP")


def check(accelerator, cfg) -> None:
    """Refuse unsupported launches, and what FSDP cannot do, naming the setting, before loading."""
    from tunelab.train.distributed import check_supported

    check_supported(accelerator)
    if not requested(accelerator):
        return
    version = os.environ.get("FSDP_VERSION", "2")
    if getattr(accelerator.state, "fsdp_plugin", None) is not None:
        version = str(accelerator.state.fsdp_plugin.fsdp_version)
    if version != "2":
        raise TunelabError(f"fsdp_version: {version} is not supported; tunelab shards with FSDP2 "
                           "(set fsdp_version: 2 in the accelerate config, or FSDP_VERSION=2)")
    if cfg.method == "qlora":
        raise TunelabError("method=qlora with FSDP needs bitsandbytes 4-bit weights stored in a float "
                           "dtype (bnb_4bit_quant_storage) on CUDA; not wired in tunelab yet: use method=lora")
    if cfg.stage in ("dpo", "kto", "orpo", "simpo") and cfg.method in ("full", "freeze"):
        raise TunelabError(f"stage={cfg.stage} with method={cfg.method} under FSDP: the reference "
                           "log-probs are computed outside the sharded forward; use method=lora")


def prepare(accelerator, objective: nn.Module, model: nn.Module, cfg):
    """(module to train, optimizer, scheduler): DDP as before, or FSDP2 (accelerate's on GPU,
    `fully_shard` on CPU)."""
    from tunelab.train.setup import build_optimizer

    if not requested(accelerator):
        optimizer, scheduler = build_optimizer(model, cfg)
        wrapped, optimizer = accelerator.prepare(objective, optimizer)
        return wrapped, optimizer, scheduler
    if accelerator.distributed_type.name == "FSDP":  # accelerate shards and re-points the optimizer
        from tunelab.train.loss import causal_lm

        # accelerate's default auto-wrap reads the root's layer classes; the root is our loss wrapper
        objective._no_split_modules = getattr(causal_lm(model), "_no_split_modules", None)
        optimizer, scheduler = build_optimizer(model, cfg)
        wrapped, optimizer = accelerator.prepare(objective, optimizer)
        return wrapped, optimizer, scheduler
    shard(objective, model)
    optimizer, scheduler = build_optimizer(model, cfg)  # after sharding: over the sharded parameters
    return objective, accelerator.prepare(optimizer), scheduler


def shard(objective: nn.Module, model: nn.Module) -> None:
    """fully_shard each decoder layer, then the root (which keeps embeddings, final norm and head)."""
    from torch.distributed.fsdp import fully_shard

    from tunelab.train.loss import causal_lm

    reshard = reshard_after_forward()
    for layer in causal_lm(model).get_decoder().layers:
        fully_shard(layer, reshard_after_forward=reshard)
    fully_shard(objective)


def reshard_after_forward() -> bool:
    """accelerate's fsdp_reshard_after_forward as its launcher exports it: false (or FSDP1's
    SHARD_GRAD_OP) keeps gathered weights from forward to backward, like ZeRO-2; true is ZeRO-3."""
    value = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower()
    return value not in ("false", "0", "shard_grad_op", "no_shard")


def is_sharded(module: nn.Module) -> bool:
    """True for a module under FSDP2."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def eval_share(plan: list, accelerator, sharded: bool) -> list[tuple[object, bool]]:
    """This process's eval batches as (batch, counts); under FSDP every process runs the same number
    of forwards (each one all-gathers weights with the others), padding with uncounted repeats."""
    mine = plan[accelerator.process_index :: accelerator.num_processes]
    if not sharded or not plan:
        return [(mb, True) for mb in mine]
    rounds = -(-len(plan) // accelerator.num_processes)
    return [(mb, True) for mb in mine] + [(plan[0], False)] * (rounds - len(mine))


def full_tensor(value) -> torch.Tensor:
    """A DTensor (e.g. a sharded run's grad norm) as one plain tensor; plain tensors unchanged."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def gather_result(wrapped: nn.Module, cfg) -> dict[str, torch.Tensor] | None:
    """The trained model's whole weights (the adapter's only, for LoRA) on the main process's CPU,
    for `save_pretrained(state_dict=...)`; None when not sharded. Every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from tunelab.train.methods import ADAPTER_METHODS

    if not is_sharded(wrapped):
        return None
    options = StateDictOptions(full_state_dict=True, cpu_offload=True,
                               ignore_frozen_params=cfg.method in ADAPTER_METHODS)
    whole = get_model_state_dict(wrapped, options=options)
    tied = _tied_names(wrapped)  # save_pretrained drops them from its own state dict, not from a given one
    return {name.removeprefix("model."): t for name, t in whole.items() if name not in tied}


def _tied_names(module: nn.Module) -> set[str]:
    """Names that repeat an earlier parameter (e.g. lm_head.weight tied to the embeddings)."""
    seen: set[int] = set()
    tied: set[str] = set()
    for name, tensor in module.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            tied.add(name)
        seen.add(id(tensor))
    return tied
