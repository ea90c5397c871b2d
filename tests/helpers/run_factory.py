"""Build finished training runs on tiny models the way `tunelab train` lays them out."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

CHATML = {"name": "chatml"}  # saved with tunelab.data.templates, as training does


def make_run(base: Path, run_dir: Path, method: str = "lora", seed: int = 0, state: str = "finished",
             template: dict | None = CHATML, metrics: list[dict] | None = None) -> Path:
    """A run dir with a random (non-zero) LoRA adapter on `base`, status.json and metrics."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    # init_lora_weights=False gives a non-zero B, so merging visibly changes the model.
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        init_lora_weights=False)
    from tunelab.compat import quiet_peft_warnings

    with quiet_peft_warnings():
        peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.mul_(0.5)
    adapter = run_dir / "adapter"
    peft_model.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(base).save_pretrained(adapter)
    if template is not None:
        from tunelab.data.templates import ChatTemplate

        ChatTemplate.for_model(base, name=template["name"]).save(adapter)
    write_status(run_dir, base, method=method, state=state)
    write_metrics(run_dir, metrics if metrics is not None else default_metrics())
    (run_dir / "config.yaml").write_text(f"model: {base}\nmethod: {method}\nlr: 0.0002\n", encoding="utf-8")
    return run_dir


def write_status(run_dir: Path, base: Path, method: str = "lora", state: str = "finished",
                 pid: int | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    status = {"state": state, "pid": pid, "step": 10, "total_steps": 10, "final_loss": 1.5,
              "base_model": str(base), "base_model_spec": str(base), "method": method,
              "started": time.time() - 60, "updated": time.time()}
    (run_dir / "status.json").write_text(json.dumps(status), encoding="utf-8")


def default_metrics() -> list[dict]:
    rows = []
    for step in range(1, 11):
        row = {"step": step, "loss": 3.0 / step ** 0.5, "lr": 2e-4 * (1 - step / 11),
               "grad_norm": 1.0, "tokens_per_s": 900.0 + 10 * step, "peak_mem_mb": 500, "time": step}
        if step % 5 == 0:
            row["eval_loss"] = 3.2 / step ** 0.5
        rows.append(row)
    return rows


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (run_dir / "metrics.jsonl").write_text(text, encoding="utf-8")


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
