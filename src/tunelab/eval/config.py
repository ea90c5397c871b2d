"""EvalOptions: the knobs of `tunelab eval`, one typed object (CLI > YAML > defaults)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tunelab.config import opt


@dataclasses.dataclass
class EvalOptions:
    """How a run is compared with its base model."""

    data: Path | None = opt(None, "held-out data (JSONL in any format tunelab train reads)")
    prompts: Path | None = opt(None, "prompts to generate from: JSONL (last assistant turn = reference) or "
                                     ".txt lines; default: the held-out rows")
    max_examples: int = opt(200, "most held-out examples scored for loss")
    num_generations: int = opt(8, "prompts answered by both models, shown side by side")
    max_new_tokens: int = opt(64, "tokens generated per prompt")
    forgetting_threshold: float = opt(1.25, "warn when general-text perplexity grows by more than this factor")
    tasks: list[str] = opt([], "lm-eval benchmarks run on both models (any lm-eval task, group or tag name, or the "
                                "path of a task YAML), e.g. mmlu,gsm8k; needs tunelab[lmeval]")
    task_limit: int | None = opt(None, "most examples per benchmark task (lm-eval's --limit); None = all")
    dtype: str = opt("auto", "engine dtype for the generations: auto (bf16 where the CPU/GPU has it), bf16, "
                             "fp16, fp32")
