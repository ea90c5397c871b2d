"""Run `tunelab train` once in this process and print its peak memory as JSON (a test helper).

    python measure_peak.py MODEL_DIR OUT_DIR TOKENS_PER_EXAMPLE key=value ...

CPU: the peak resident set (VmHWM) minus the resident set just before training, with the
peak reset after the imports (Linux /proc/self/clear_refs), so only training is measured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _examples(n: int, length: int, vocab: int):
    from tunelab.data.tokenize import Example

    ids = [[(7 * i + 13 * j) % vocab for j in range(length)] for i in range(n)]
    return [Example(x, list(x)) for x in ids]  # every position trains: the heaviest head load


def main(argv: list[str]) -> None:
    """Train on synthetic full-length examples and print {"baseline", "peak", "delta"} in bytes."""
    import accelerate  # noqa: F401  (imports before the baseline: they are not training memory)
    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401

    from tunelab.config import load_config
    from tunelab.train.config import TrainConfig
    from tunelab.train.trainer import train

    torch.set_num_threads(1)
    model, out, length, overrides = argv[0], argv[1], int(argv[2]), argv[3:]
    cfg = load_config(TrainConfig, None, [f"model={model}", f"output={out}", *overrides])
    examples = _examples(4 * cfg.micro_batch_size, length, 500)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak: imports are not training
    baseline = _status("VmRSS")
    train(cfg, examples=(examples, []))
    peak = _status("VmHWM")
    print(json.dumps({"baseline": baseline, "peak": peak, "delta": peak - baseline}))


if __name__ == "__main__":
    main(sys.argv[1:])
