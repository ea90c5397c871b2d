"""ExportConfig: the settings of `tunelab export`, one typed object (CLI > YAML > defaults)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tunelab.config import opt


@dataclasses.dataclass
class ExportConfig:
    """What a run or model is exported to."""

    format: str = opt("gguf", "gguf (one file) or ollama (GGUF + Modelfile)")
    quant: str = opt("q8_0", "weight type: f16, bf16, q8_0, q4_0, q4_k_s, q4_k_m, q5_k_m or q6_k "
                             "(export.quantize.QUANTS)")
    out: Path | None = opt(None, "output file (gguf) or directory (ollama); default under RUN/export/")
    system: str | None = opt(None, "SYSTEM prompt for the Ollama Modelfile")
