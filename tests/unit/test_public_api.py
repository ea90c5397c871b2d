"""The public API is a handful of names, and importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys


def test_public_names_resolve_lazily():
    code = (
        "import sys, tunelab, tunelab.train, tunelab.serve\n"
        "assert 'torch' not in sys.modules and 'fastapi' not in sys.modules\n"
        "from tunelab import LLM, SamplingParams, TrainConfig, ServeConfig, resolve_model\n"
        "from tunelab.train import train\n"
        "from tunelab.serve import serve, create_app\n"
        "print(sorted(tunelab.__all__), train.__module__, serve.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "['LLM',", "'LoRARequest',", "'SamplingParams',", "'ServeConfig',", "'TrainConfig',", "'resolve_model']",
        "tunelab.train.trainer", "tunelab.serve.server",
    ]
