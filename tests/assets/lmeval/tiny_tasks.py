"""Data of the local lm-eval test tasks: a JSONL file next to this one, read without the hub."""

from __future__ import annotations

import json
from pathlib import Path


def load(file: str, **_: object) -> dict:
    """{"test": Dataset} from `file` (relative to this folder); lm-eval passes task metadata too."""
    import datasets

    lines = (Path(__file__).parent / file).read_text(encoding="utf-8").splitlines()
    return {"test": datasets.Dataset.from_list([json.loads(line) for line in lines if line.strip()])}
