"""`LoRARequest(name, id, path)`: which adapter one `LLM.generate`/`chat` call uses, as in vLLM.

    llm = LLM(base, enable_lora=True)
    llm.generate(prompts, params, lora_request=LoRARequest("sql", 1, "runs/sql/adapter"))

The adapter loads on first use under `name` (a run name or run folder works as the path
too) and stays loaded for later calls; the same name with another path reloads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import InvalidRequest


@dataclass(frozen=True)
class LoRARequest:
    """An adapter for a request: vLLM's (lora_name, lora_int_id, lora_path)."""

    lora_name: str
    lora_int_id: int
    lora_path: str | Path = ""

    def __post_init__(self) -> None:
        if not self.lora_name:
            raise InvalidRequest("LoRARequest: lora_name must be a non-empty string", param="lora_name")
        if not isinstance(self.lora_int_id, int) or self.lora_int_id < 1:
            raise InvalidRequest(f"LoRARequest: lora_int_id must be an integer >= 1, got {self.lora_int_id!r}",
                                 param="lora_int_id")
        if not str(self.lora_path):
            raise InvalidRequest(f"LoRARequest '{self.lora_name}': lora_path is required", param="lora_path")

    @property
    def name(self) -> str:
        return self.lora_name

    @property
    def path(self) -> str:
        return str(self.lora_path)
