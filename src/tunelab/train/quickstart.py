"""The quick-start: teach the embedded Gemma 3 270M its tunelab identity, show before/after.

Answers are generated greedily with transformers, prompts built by the same
`encode_prompt` and stop tokens that training and serving use, so what you see is
what the server will say.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tunelab.config import opt


@dataclasses.dataclass
class QuickstartConfig:
    """Knobs of `tunelab quickstart` (defaults are tuned to finish in minutes on a 2-core CPU)."""

    model: str | None = opt(None, "model to fine-tune; empty = the embedded Gemma 3 270M")
    max_steps: int = opt(40, "optimizer steps of LoRA training")
    lr: float = opt(1e-3, "peak learning rate")
    rank: int = opt(16, "LoRA rank")
    micro_batch_size: int = opt(4, "examples packed per step")
    max_new_tokens: int = opt(40, "tokens generated per answer")
    questions: int = opt(5, "held-out questions to show")
    output: str = opt("", "run directory; empty = runs/quickstart-<time>")


@dataclasses.dataclass
class Answer:
    """One held-out question with the base and fine-tuned answers."""

    question: str
    reference: str
    before: str
    after: str


def quickstart(cfg: QuickstartConfig, console=None) -> list[Answer]:
    """Train a LoRA on the demo data, then answer held-out questions before and after."""
    from rich.console import Console

    from tunelab.data.demo import demo_train_path
    from tunelab.store.resolve import resolve_model
    from tunelab.train.trainer import train

    console = console or Console(stderr=True)
    model_dir = resolve_model(cfg.model)
    questions = heldout_questions(cfg.questions)
    console.print(f"answering {len(questions)} held-out questions with the base model ...")
    before = answer_all(model_dir, None, [q for q, _ in questions], cfg.max_new_tokens)
    result = train(_train_config(cfg, model_dir, demo_train_path()), console=console)
    after = answer_all(model_dir, result.run_dir / "adapter", [q for q, _ in questions], cfg.max_new_tokens)
    answers = [Answer(m[-1]["content"], ref, b, a) for (m, ref), b, a in zip(questions, before, after)]
    print_answers(console, answers, result.run_dir)
    return answers


def _train_config(cfg: QuickstartConfig, model_dir: Path, data: Path):
    from tunelab.config import load_config
    from tunelab.train.config import TrainConfig
    from tunelab.train.rundir import default_run_name

    output = cfg.output or str(Path("runs") / default_run_name("quickstart", "lora").replace("quickstart-lora", "quickstart"))
    return load_config(TrainConfig, None, {
        "model": str(model_dir), "datasets": [str(data)], "method": "lora", "lr": cfg.lr,
        "max_steps": cfg.max_steps, "micro_batch_size": cfg.micro_batch_size, "warmup_steps": 2,
        "lora": {"rank": cfg.rank, "alpha": 2 * cfg.rank}, "data": {"cutoff_len": 256}, "output": output,
        "schedule": "cosine", "seed": 0,
    })


def heldout_questions(n: int) -> list[tuple[list[dict], str]]:
    """(prompt messages up to the last user turn, reference answer) for the first n held-out rows."""
    from tunelab.data.demo import demo_heldout_path
    from tunelab.data.formats import read_datasets

    out = []
    for row in read_datasets([demo_heldout_path()]).rows[:n]:
        messages = list(row.messages or [])
        reference = messages.pop()["content"] if messages and messages[-1]["role"] == "assistant" else ""
        out.append((messages, reference))
    return out


def answer_all(model_dir: Path, adapter: Path | None, prompts: list[list[dict]], max_new_tokens: int) -> list[str]:
    """Greedy answers from the base model (or base + adapter) for each conversation prefix."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.data.templates import ChatTemplate, encode_prompt

    source = adapter or model_dir
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    template = ChatTemplate.for_model(source)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    stops = template.stop_token_ids(tokenizer)
    return [_generate(model, tokenizer, encode_prompt(template, tokenizer, p), stops, max_new_tokens)
            for p in prompts]


def _generate(model, tokenizer, prompt_ids: list[int], stops: list[int], max_new_tokens: int) -> str:
    import torch

    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=stops or None, pad_token_id=tokenizer.pad_token_id)
    new = [t for t in out[0, len(prompt_ids):].tolist() if t not in stops]
    return tokenizer.decode(new, skip_special_tokens=True).strip()


def print_answers(console: Any, answers: list[Answer], run_dir: Path) -> None:
    """A side-by-side table of before/after answers."""
    from rich.table import Table
    from rich.text import Text

    table = Table("question", "before (base model)", "after (fine-tuned)", show_lines=True, title="quick-start")
    for a in answers:
        table.add_row(Text(a.question), Text(a.before), Text(a.after))
    console.print(table)
    console.print(Text(f"adapter saved in {run_dir / 'adapter'}; serve it with `tunelab serve --adapter {run_dir}`"))
