"""The training estimate against reality: peak resident memory of real `tunelab train` runs (CPU).

Each case trains a small random model (tiny-model families, scaled so that weights, activations and
logits are measurable next to the fixed overheads) in a fresh subprocess and compares the peak RSS
growth during `train()` (the highest of three runs) with the planner's CPU estimate. These shapes are
among those the CPU factors of tunelab.plan.train were fitted on (docs/planner.md), so this guards
against regressions in the planner or in the trainer's memory use; Gemma 3 270M is the held-out
check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunelab.config import load_config
from tunelab.plan.device import Device
from tunelab.plan.shape import shape_from_config
from tunelab.plan.train import estimate_training
from tunelab.train.config import TrainConfig

HERE = Path(__file__).parent
# (arch, hidden, intermediate, layers, vocab)
SHAPES = {"qwen2": ("qwen2", 256, 640, 4, 16000), "llama": ("llama", 320, 896, 3, 12000),
          "gemma3": ("gemma3", 192, 1024, 6, 6000)}
# precision=auto trains adapters over a bf16 base on a CPU with native bf16 and over fp32 elsewhere:
# the fp32 case runs on every machine, so both paths are checked whichever kind CI draws
CASES = [("qwen2", "lora", 4, 384, "auto"), ("qwen2", "lora", 4, 384, "fp32"), ("qwen2", "full", 4, 384, "auto"),
         ("llama", "full", 2, 256, "auto"), ("gemma3", "lora", 2, 256, "auto")]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")]


def build_scaled(arch: str, hidden: int, inter: int, layers: int, vocab: int, out: Path) -> Path:
    """A random model of a tiny family at the given size, saved with the tiny tokenizer."""
    import torch
    from tiny_models import TOKENIZER_DIR, tiny_config
    from transformers import AutoModelForCausalLM, AutoTokenizer

    conf = tiny_config(arch)
    conf.hidden_size, conf.intermediate_size, conf.num_hidden_layers = hidden, inter, layers
    conf.vocab_size, conf.head_dim = vocab, 64
    if getattr(conf, "layer_types", None):
        kinds = ["sliding_attention", "full_attention"] if arch == "gemma3" else ["full_attention"]
        conf.layer_types = (kinds * layers)[:layers]
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(conf, dtype=torch.float32).save_pretrained(out)
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def scaled_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scaled")
    return {name: build_scaled(*shape, root / name) for name, shape in SHAPES.items()}


def measure(model: Path, out: Path, keys: list[str], cutoff: int) -> int:
    """Peak RSS growth (bytes) of a 3-step `train()` in a fresh process."""
    args = [str(model), str(out), str(cutoff), *keys, "max_steps=3"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(HERE / "measure_peak.py"), *args], capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["delta"]


@pytest.mark.parametrize("name, method, mbs, cutoff, precision", CASES)
def test_cpu_estimate_within_15_percent_of_measured_peak(name, method, mbs, cutoff, precision, scaled_models,
                                                         tmp_path):
    model = scaled_models[name]
    keys = [f"method={method}", f"micro_batch_size={mbs}", f"data.cutoff_len={cutoff}", f"precision={precision}"]
    cfg = load_config(TrainConfig, None, keys)
    shape = shape_from_config(json.loads((model / "config.json").read_text()))
    estimate = estimate_training(shape, cfg, Device("cpu", 2**40, "test")).total
    # The highest of three fresh runs: glibc's dynamic mmap threshold makes identical runs' peaks differ
    # by up to ~25% (docs/planner.md: llama full 2x256 gave 219-297 MiB), and a plan must cover the higher
    # ones; with two runs both landed in the low tail about once in 25 full-suite runs.
    measured = max(measure(model, tmp_path / f"run{i}", keys, cutoff) for i in range(3))
    assert estimate == pytest.approx(measured, rel=0.15), f"estimate {estimate / 2**20:.0f} MiB, measured {measured / 2**20:.0f} MiB"
