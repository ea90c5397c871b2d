"""A finished LoRA run on the tiny qwen2 model, with held-out data, for eval and report tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.run_factory import make_run

ROWS = [
    {"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]},
    {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi there"}]},
    {"prompt": "你好吗", "completion": "我很好"},
]


@pytest.fixture(scope="session")
def eval_run(tiny_models, tmp_path_factory) -> tuple[Path, Path]:
    """(run dir, held-out JSONL) for a LoRA run on tiny qwen2."""
    root = tmp_path_factory.mktemp("eval")
    data = root / "held_out.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    return make_run(tiny_models["qwen2"], root / "run-eval"), data
