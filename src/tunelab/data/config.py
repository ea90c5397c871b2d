"""Data options shared by `tunelab train` and `tunelab data`: formats, cutoff, loss masks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tunelab.config import opt


@dataclass
class DataConfig:
    """How rows are read, rendered with the chat template and cut into training examples."""

    format: str | None = opt(None, "input format: alpaca|sharegpt|messages|prompt_completion|text|preference (auto when unset)")
    cutoff_len: int = opt(1024, "maximum tokens per example; longer rows are truncated or dropped")
    overflow: Literal["drop", "truncate"] = opt("truncate", "rows over cutoff_len: cut at a turn boundary, or drop")
    train_on: Literal["assistant", "all", "last"] = opt("assistant", "which tokens carry loss: assistant turns, all, or the last reply")
    skip_invalid: bool = opt(False, "skip (and count) invalid rows instead of stopping at the first")
    ignore_columns: list[str] = opt([], "row columns to drop on purpose, e.g. [id, source]; any other column a format does not read is an error")
    template: str | None = opt(None, "built-in chat template to use: llama3|chatml|qwen3|gemma|mistral|default")
    system: str | None = opt(None, "default system prompt for rows that have none")
    max_samples: int = opt(0, "use at most the first N rows of each data file (LLaMA-Factory's max_samples); 0 = all")

    def __post_init__(self) -> None:
        from tunelab.data.builtin_templates import ALIASES, BUILTINS
        from tunelab.data.rows import FORMAT_ALIASES, FORMATS

        if self.max_samples < 0:
            raise ValueError(f"max_samples must be >= 0, got {self.max_samples}")
        if self.cutoff_len < 8:
            raise ValueError(f"cutoff_len must be at least 8, got {self.cutoff_len}")
        if self.format and self.format.lower() not in (*FORMATS, *FORMAT_ALIASES):
            raise ValueError(f"format '{self.format}' is not one of {', '.join(FORMATS)}")
        if self.template and self.template.lower() not in (*BUILTINS, *ALIASES):
            raise ValueError(f"template '{self.template}' is not one of {', '.join(BUILTINS)}")
