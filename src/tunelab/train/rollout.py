"""GRPO rollouts on tunelab's own engine (paged KV, continuous batching, multi-LoRA).

The engine holds the frozen base once, in the training dtype; before each generation the
policy's current LoRA tensors are installed into it as adapter `policy` (engine/lora.py,
`add_weights`: no file, no merge), so completions come from the weights being trained.
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
    truncated: list[bool]  # stopped at max_tokens rather than at an end-of-turn/EOS token

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

    def sync(self, model: nn.Module) -> None:
        """Install the PEFT model's current adapter weights as the engine's `policy` adapter."""
        from peft import get_peft_model_state_dict

        weights = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
        config = model.peft_config["default"].to_dict()
        self.engine.add_adapter_weights(POLICY, weights, _plain(config))

    @torch.no_grad()
    def generate(self, prompts: Sequence[list[int]], seed: int) -> Completions:
        """`params.n` completions of each prompt (token ids) with the synced policy."""
        seqs = []
        for i, ids in enumerate(prompts):
            self._ids += 1
            params = self.params.replace(seed=seed + i * self.params.n)  # member g uses seed + g
            seqs += self.engine.add_request(f"grpo-{self._ids}", list(ids), params, adapter=POLICY)
        while self.engine.has_unfinished():
            self.engine.step()
        eos = set(self.params.stop_token_ids) | set(self.engine.config.eos_token_ids)
        return Completions([list(s.output_ids) for s in seqs], [s.text for s in seqs],
                           [not (s.output_ids and s.output_ids[-1] in eos) for s in seqs])

    @property
    def generated_tokens(self) -> int:
        """Tokens the engine has generated so far (its own counter)."""
        return self.engine.total_generated_tokens


def _plain(config: dict) -> dict:
    """The adapter config as adapter_config.json holds it (sets as lists, enums as values)."""
    out = {}
    for key, value in config.items():
        value = sorted(value) if isinstance(value, set) else value
        out[key] = getattr(value, "value", value)
    return out
