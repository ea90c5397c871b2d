"""GRPO rollouts on tunelab's own engine (paged KV, continuous batching, multi-LoRA).

The engine holds the frozen base once, in the training dtype; before each generation the
policy's current LoRA tensors are installed into it as adapter `policy` (engine/lora.py,
`add_weights`: no file, no merge), so completions come from the weights being trained.
The policy's frozen base weights are views of the engine's (`share_base`), so the base is held
once. Under qlora the engine's copies of the NF4 weights are overwritten once with the policy's
dequantized ones (`load_nf4`), so rollouts sample from the same rounded base the loss sees.
Under method=full/freeze there is no adapter: the policy's trainable tensors are copied in
place into the engine's own weights (names mapped by models/loader, fused q/k/v and gate/up
as slices), so the engine keeps its one copy and its prefix cache is reset.
Group members are one request with `n = group size`; a request's seed is drawn from the
global torch RNG, which checkpoints store, so a resumed run samples what it would have.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from tunelab.engine.config import SamplingParams

POLICY = "policy"


@dataclasses.dataclass
class Completions:
    """G completions per prompt, flattened prompt-major: index i*G + g."""

    token_ids: list[list[int]]
    texts: list[str]
    truncated: list[bool]  # stopped at max_tokens rather than at an end-of-turn/EOS token or a stop string

    def select(self, rows: slice) -> Completions:
        """The completions of `rows`."""
        return Completions(self.token_ids[rows], self.texts[rows], self.truncated[rows])


class Rollout:
    """The engine that samples completions with the policy's current adapter."""

    def __init__(self, model_dir: Path, template: Any, params: SamplingParams, dtype: torch.dtype,
                 max_seqs: int, max_len: int, blocks: int = 0):
        from tunelab.config import build
        from tunelab.engine.config import EngineConfig
        from tunelab.engine.engine import LLMEngine
        from tunelab.engine.llm import with_template_stops

        block_size = 16
        blocks = blocks or max_seqs * -(-max_len // block_size) + 4
        cfg = build(EngineConfig, {"dtype": {torch.float32: "fp32", torch.bfloat16: "bf16"}.get(dtype, "auto"),
                                   "max_num_seqs": max_seqs, "max_model_len": max_len, "num_blocks": blocks,
                                   "block_size": block_size, "max_lora_rank": 256})
        self.engine = LLMEngine(model_dir, None, cfg)
        self.params = with_template_stops(params, template, self.engine.tokenizer)
        self._ids = 0
        self.adapter: str | None = POLICY
        self._targets: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # (policy tensor, engine view)

    def share_base(self, model: nn.Module) -> int:
        """Hold the policy's frozen base once: its weights become views of the engine's (share_frozen).
        Under qlora the engine first takes the policy's NF4 weights, dequantized (load_nf4)."""
        with self.engine.lock:
            load_nf4(model, self.engine.model)
            return share_frozen(model, self.engine.model)

    def sync(self, model: nn.Module) -> None:
        """Install the policy's current weights: a PEFT model's adapter as the engine's `policy`
        adapter, or (full/freeze) its trainable tensors into the engine's weights."""
        if not hasattr(model, "peft_config"):
            self.adapter = None
            self._install(model)
            return
        from peft import get_peft_model_state_dict

        weights = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
        config = model.peft_config["default"].to_dict()
        self.engine.add_adapter_weights(POLICY, weights, _plain(config))

    @torch.no_grad()
    def _install(self, model: nn.Module) -> None:
        if self._targets is None:
            self._targets = engine_views(model, self.engine.model)
        with self.engine.lock:
            for src, dst in self._targets:
                if src.data_ptr() != dst.data_ptr():  # a shared tensor is already current
                    dst.copy_(src)  # in place (bumps the version: cached norm gains are rebuilt)
            self.engine.scheduler.block_manager.reset_prefix_cache()  # cached KV is from the old weights

    @torch.no_grad()
    def generate(self, prompts: Sequence[list[int]], seed: int) -> Completions:
        """`params.n` completions of each prompt (token ids) with the synced policy."""
        seqs = []
        for i, ids in enumerate(prompts):
            self._ids += 1
            params = self.params.replace(seed=seed + i * self.params.n)  # member g uses seed + g
            seqs += self.engine.add_request(f"grpo-{self._ids}", list(ids), params, adapter=self.adapter)
        while self.engine.has_unfinished():
            self.engine.step()
        return Completions([list(s.output_ids) for s in seqs], [scored_text(s.text, s.stop_reason) for s in seqs],
                           [s.finish_reason == "length" for s in seqs])

    @property
    def generated_tokens(self) -> int:
        """Tokens the engine has generated so far (its own counter)."""
        return self.engine.total_generated_tokens


def scored_text(text: str, stop_reason: int | str | None) -> str:
    """The text the reward functions score: the engine's, plus the stop string (grpo.sampling.stop)
    that ended it. The engine leaves a stop string out of the text but keeps its tokens, which the
    loss trains on, so `stop: ["</answer>"]` ends a completion at a closed, scorable tag."""
    return text + stop_reason if isinstance(stop_reason, str) else text


def engine_views(policy: nn.Module, engine_model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(policy tensor, the engine tensor or fused slice holding it) for each trainable parameter of a
    transformers causal LM, by the loader's name map; an error names a tensor the engine has no place for."""
    from tunelab.errors import TunelabError

    find = _engine_lookup(policy, engine_model)
    out = []
    for name, tensor in policy.named_parameters():
        if not tensor.requires_grad:
            continue
        dst = find(name)
        if dst is None:
            raise TunelabError(f"grpo: the rollout engine has no weight for the trained tensor '{name}'")
        if dst.shape != tensor.shape:
            raise TunelabError(f"grpo: trained tensor '{name}' has shape {tuple(tensor.shape)}, the engine's "
                               f"{tuple(dst.shape)}")
        out.append((tensor, dst))
    return out


@torch.no_grad()
def share_frozen(policy: nn.Module, engine_model: nn.Module) -> int:
    """Make each frozen weight of the policy a view of the engine's tensor holding it (fused q/k/v
    and gate/up as row slices) where shape and dtype agree, so the base is held once; the policy's
    own copy is freed. The policy is built on the CPU before the trainer moves it: its frozen base
    lands on the engine's device, which is the training device (both take CUDA when present).
    Tied weights stay tied. Returns the number of tensors shared."""
    find = _engine_lookup(policy, engine_model)
    replaced: dict[int, nn.Parameter] = {}
    for module_name, module in policy.named_modules():
        for attr, param in list(module._parameters.items()):
            if param is None or param.requires_grad:
                continue
            if id(param) not in replaced:
                dst = find(f"{module_name}.{attr}")
                if dst is None or (dst.shape, dst.dtype) != (param.shape, param.dtype):
                    continue
                dst.copy_(param)  # the same checkpoint's values; the policy's are the ones trained against
                replaced[id(param)] = nn.Parameter(dst.detach(), requires_grad=False)
            module._parameters[attr] = replaced[id(param)]
    return len(replaced)


@torch.no_grad()
def load_nf4(policy: nn.Module, engine_model: nn.Module) -> int:
    """Overwrite each engine weight that is 4-bit NF4 in the policy (bitsandbytes Params4bit, qlora)
    with the policy's dequantized weight, so rollouts sample from the rounded base being trained, not
    the checkpoint's 16-bit one. Once: the base is frozen. Returns the number of weights written."""
    from tunelab.errors import TunelabError

    find = _engine_lookup(policy, engine_model)
    done = 0
    for module_name, module in policy.named_modules():
        weight = module._parameters.get("weight")  # the Linear4bit's own, not a PEFT wrapper's alias
        if getattr(weight, "quant_state", None) is None:
            continue
        from bitsandbytes.functional import dequantize_4bit

        if getattr(weight.quant_state, "packing_format_for_cpu", False):
            raise TunelabError(f"grpo: the NF4 weight '{module_name}.weight' is in bitsandbytes' CPU inference "
                               "layout; load the policy with train.methods.load_model, which keeps NF4's")
        dst = find(f"{module_name}.weight")
        if dst is None:
            raise TunelabError(f"grpo: the rollout engine has no weight for the NF4 tensor '{module_name}.weight'")
        dst.copy_(dequantize_4bit(weight.data, weight.quant_state).to(dst.device).reshape(dst.shape))
        done += 1
    return done


def _engine_lookup(policy: nn.Module, engine_model: nn.Module):
    """name of a policy parameter (PEFT-wrapped or not) -> the engine tensor holding it, or None."""
    from tunelab.models.loader import FUSED, _our_name
    from tunelab.models.registry import family_for

    prefix = family_for(policy.config).prefix
    params = dict(engine_model.named_parameters(remove_duplicate=False))
    modules = dict(engine_model.named_modules())

    def find(name: str) -> torch.Tensor | None:
        name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")  # PEFT's wrapping
        ours = _our_name(name, prefix)
        module_name, _, leaf = (ours or "").rpartition(".")
        parent, _, proj = module_name.rpartition(".")
        fused = modules.get(f"{parent}.{FUSED.get(proj)}")
        if fused is not None:
            return getattr(fused, leaf)[fused.slices[proj]]
        return params.get(ours) if ours else None

    return find


def _plain(config: dict) -> dict:
    """The adapter config as adapter_config.json holds it (sets as lists, enums as values)."""
    out = {}
    for key, value in config.items():
        value = sorted(value) if isinstance(value, set) else value
        out[key] = getattr(value, "value", value)
    return out
