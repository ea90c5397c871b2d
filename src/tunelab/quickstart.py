"""The quick-start: teach the embedded Gemma 3 270M its tunelab identity, show before/after.

    held-out questions -> base model answers -> LoRA on the demo data -> answers again -> report

Answers come from tunelab's own engine (the one `tunelab serve` runs), greedily, base and
adapter in one batch, with the template and stop tokens saved with the run, so what you see
is what the server will say. The base model is a pretrained (not chat-tuned) model, so
its "before" answers are mostly continuations or repeats: that is the point of the demo.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tunelab.config import opt


@dataclasses.dataclass
class QuickstartConfig:
    """Knobs of `tunelab quickstart` (defaults finish in about 5 minutes on a 2-core CPU)."""

    model: str | None = opt(None, "model to fine-tune; empty = the embedded Gemma 3 270M")
    epochs: int = opt(5, "passes over the 67 demo conversations")
    max_steps: int = opt(0, "stop after this many optimizer steps (0 = use epochs)")
    lr: float = opt(1e-3, "peak learning rate (cosine decay, short warm-up)")
    rank: int = opt(16, "LoRA rank (alpha = 2 x rank)")
    micro_batch_size: int = opt(8, "examples per optimizer step")
    max_new_tokens: int = opt(32, "tokens generated per answer")
    questions: int = opt(0, "held-out questions to show (0 = all 12)")
    seed: int = opt(0, "seed for data order and LoRA init")
    output: str = opt("", "run directory; empty = runs/quickstart-<time>")


@dataclasses.dataclass
class Answer:
    """One held-out question with the base and fine-tuned answers."""

    question: str
    reference: str
    before: str
    after: str


@dataclasses.dataclass
class QuickstartResult:
    """The answers, the run directory and the HTML report."""

    answers: list[Answer]
    run_dir: Path
    report: Path


def quickstart(cfg: QuickstartConfig, console=None) -> QuickstartResult:
    """Train a LoRA on the demo data, answer held-out questions before and after, write the report."""
    from rich.console import Console

    from tunelab.data.demo import demo_train_path
    from tunelab.eval.report import write_report
    from tunelab.rundir import Run
    from tunelab.store.resolve import resolve_model
    from tunelab.train.trainer import train

    console = console or Console(stderr=True)
    model_dir = resolve_model(cfg.model)
    questions = heldout_questions(cfg.questions)
    prompts = [messages for messages, _ in questions]
    result = train(train_config(cfg, model_dir, demo_train_path()), console=console)
    if result.state != "finished":  # stopped by a signal: no adapter to answer with
        from tunelab.errors import TunelabError

        raise TunelabError(f"training {result.state} at step {result.step}; continue it with "
                           f"`tunelab train --resume {result.run_dir}`")
    before, after = answer_both(model_dir, Run(result.run_dir).adapter_dir, prompts, cfg.max_new_tokens, console)
    answers = [Answer(m[-1]["content"], ref, b, a) for (m, ref), b, a in zip(questions, before, after)]
    report = write_report(result.run_dir)
    print_answers(console, answers, result.run_dir, report)
    return QuickstartResult(answers, result.run_dir, report)


def train_config(cfg: QuickstartConfig, model_dir: Path, data: Path):
    """The TrainConfig of the quick-start run."""
    import time

    from tunelab.config import load_config
    from tunelab.train.config import TrainConfig

    output = cfg.output or str(Path("runs") / f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}")
    return load_config(TrainConfig, None, {
        "model": str(model_dir), "datasets": [str(data)], "method": "lora", "lr": cfg.lr,
        "epochs": cfg.epochs, "max_steps": cfg.max_steps, "micro_batch_size": cfg.micro_batch_size,
        "warmup_steps": 2, "lora": {"rank": cfg.rank, "alpha": 2 * cfg.rank}, "data": {"cutoff_len": 256},
        "output": output, "schedule": "cosine", "seed": cfg.seed, "precision": "auto",
        "eval_split": 0,  # every demo row trains; the held-out questions are the quick-start's own eval
    })


def heldout_questions(n: int = 0) -> list[tuple[list[dict], str]]:
    """(prompt messages up to the last user turn, reference answer) for the first n (0 = all) held-out rows."""
    from tunelab.data.demo import demo_heldout_path
    from tunelab.data.formats import read_datasets

    rows = read_datasets([demo_heldout_path()]).rows
    out = []
    for row in rows[:n] if n > 0 else rows:
        messages = list(row.messages or [])
        reference = messages.pop()["content"] if messages and messages[-1]["role"] == "assistant" else ""
        out.append((messages, reference))
    return out


def answer_both(model_dir: Path, adapter: Path, prompts: list[list[dict]], max_new_tokens: int,
                console: Any = None) -> tuple[list[str], list[str]]:
    """Greedy answers of the base model and of base + adapter, from one engine (no weight merge),
    in one batch: each side's prompts rendered with that side's template and stop tokens."""
    from tunelab.data.templates import encode_prompt
    from tunelab.engine import LLM, SamplingParams
    from tunelab.engine.llm import with_template_stops
    from tunelab.progress import progress

    with progress("loading the engine with the base model and the adapter", console=console):
        llm = LLM(str(model_dir), adapters={"tuned": str(adapter)})
    greedy = SamplingParams(max_tokens=max_new_tokens, temperature=0.0)
    ids, params, sides = [], [], []
    for side in (None, "tuned"):
        template = llm.template(side)
        ids += [encode_prompt(template, llm.tokenizer, p) for p in prompts]
        params += [with_template_stops(greedy, template, llm.tokenizer)] * len(prompts)
        sides += [side] * len(prompts)
    with progress(f"answering {len(prompts)} held-out questions, before and after, in one batch", console=console):
        texts = [o.outputs[0].text.strip() for o in llm.generate(ids, params, use_tqdm=False, adapter=sides)]
    return texts[: len(prompts)], texts[len(prompts):]


def print_answers(console: Any, answers: list[Answer], run_dir: Path, report: Path) -> None:
    """A side-by-side table of before/after answers, then where the results are."""
    from rich.text import Text

    from tunelab.eval.table import answers_table

    console.print(answers_table([(a.question, a.before, a.after) for a in answers], "quick-start"))
    console.print(Text(f"adapter saved in {run_dir / 'adapter'}; serve it with `tunelab serve --adapter {run_dir}`"))
    console.print(Text(f"report: {report}"))
