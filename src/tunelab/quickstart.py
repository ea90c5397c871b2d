"""The quick-start: teach the embedded Gemma 3 270M its tunelab identity, show what was gained and lost.

    held-out questions -> LoRA on the demo data -> base and tuned answers -> perplexity -> report

The held-out set has identity paraphrases (gained: the tuned model names itself) and control
questions of general knowledge (kept: an answer the base got right must stay right), and the
general-text perplexity of base vs tuned says how much of the base model's language survived.
Answers come from tunelab's own engine (the one `tunelab serve` runs), greedily, base and
adapter in one batch, with the template and stop tokens saved with the run, so what you see
is what the server will say. The base model is a pretrained (not chat-tuned) model, so
its "before" answers are mostly continuations or repeats: that is the point of the demo.

The defaults below are the "teach a persona" recipe (docs/training.md): a rank-8 LoRA on the
attention projections only, lr 5e-4, 3 epochs over identity rows mixed with general replies,
chosen on the held-out set: identity 100%, general-text perplexity 1.03x, no control turned wrong.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tunelab.config import opt

IDENTITY_MARK = "tunelab"  # an identity answer is right when it names the project


@dataclasses.dataclass
class QuickstartConfig:
    """Knobs of `tunelab quickstart`; the defaults are the "teach a persona" recipe."""

    model: str | None = opt(None, "model to fine-tune; empty = the embedded Gemma 3 270M")
    epochs: int = opt(3, "passes over the demo conversations (3 x 12 = 36 steps)")
    max_steps: int = opt(0, "stop after this many optimizer steps (0 = use epochs)")
    lr: float = opt(5e-4, "peak learning rate (cosine decay, short warm-up)")
    rank: int = opt(8, "LoRA rank (alpha = 2 x rank)")
    target_modules: list[str] = opt(["q_proj", "k_proj", "v_proj", "o_proj"],
                                    "modules the LoRA adapts: attention only (MLPs keep the base's knowledge)")
    micro_batch_size: int = opt(8, "examples per optimizer step")
    max_new_tokens: int = opt(32, "tokens generated per answer")
    questions: int = opt(0, "held-out questions to show (0 = all)")
    seed: int = opt(0, "seed for data order and LoRA init")
    output: str = opt("", "run directory; empty = runs/quickstart-<time>")


@dataclasses.dataclass
class Answer:
    """One held-out question with the base and fine-tuned answers."""

    question: str
    reference: str
    before: str
    after: str

    @property
    def identity(self) -> bool:
        """An identity question (the persona taught); otherwise a control question."""
        return IDENTITY_MARK in self.reference.lower()

    def right(self, text: str) -> bool:
        """Identity: `text` names tunelab. Control: `text` holds every word (CJK: character) that
        the reference adds to the question, e.g. 'tokyo' for 'The capital of Japan is Tokyo.'."""
        from tunelab.eval.scores import tokens

        if self.identity:
            return IDENTITY_MARK in text.lower()
        return set(tokens(self.reference)) - set(tokens(self.question)) <= set(tokens(text))


@dataclasses.dataclass
class QuickstartResult:
    """The answers, the general-text perplexity check, the run directory, the report, phase times."""

    answers: list[Answer]
    forgetting: dict[str, Any]  # eval.compare.forgetting_check's result: base, tuned, ratio, warning
    run_dir: Path
    report: Path
    phases: dict[str, float]  # seconds per phase: import, train, answer, report

    @property
    def identity_rate(self) -> float:
        """Share of identity questions whose tuned answer names tunelab."""
        ident = [a for a in self.answers if a.identity]
        return sum(a.right(a.after) for a in ident) / max(len(ident), 1)

    @property
    def turned_wrong(self) -> list[Answer]:
        """Control questions the base answered right and the tuned model gets wrong."""
        return [a for a in self.answers if not a.identity and a.right(a.before) and not a.right(a.after)]


def quickstart(cfg: QuickstartConfig, console=None, data: Path | None = None) -> QuickstartResult:
    """Train a LoRA on the demo data (or `data`), answer held-out questions before and after,
    check general-text perplexity, write eval.json and the report, print it all with phase times."""
    from rich.console import Console

    from tunelab.data.demo import demo_train_path
    from tunelab.eval.report import write_report
    from tunelab.progress import Phases
    from tunelab.rundir import Run
    from tunelab.store.resolve import resolve_model

    console, phases = console or Console(stderr=True), Phases()
    with phases("import"):
        model_dir = resolve_model(cfg.model)
    questions = heldout_questions(cfg.questions)
    with phases("train"):
        run = Run(_train(train_config(cfg, model_dir, data or demo_train_path()), console))
    with phases("answer"):
        before, after = answer_both(model_dir, run.adapter_dir, [m for m, _ in questions], cfg.max_new_tokens, console)
        answers = [Answer(m[-1]["content"], ref, b, a) for (m, ref), b, a in zip(questions, before, after)]
        forgetting = general_text_check(run)
    with phases("report"):
        write_eval(run, answers, forgetting)
        report = write_report(run.path)
    result = QuickstartResult(answers, forgetting, run.path, report, phases.seconds)
    print_result(console, result, phases.line())
    return result


def _train(cfg, console) -> Path:
    from tunelab.train.trainer import train

    result = train(cfg, console=console)
    if result.state != "finished":  # stopped by a signal: no adapter to answer with
        from tunelab.errors import TunelabError

        raise TunelabError(f"training {result.state} at step {result.step}; continue it with "
                           f"`tunelab train --resume {result.run_dir}`")
    return Path(result.run_dir)


def train_config(cfg: QuickstartConfig, model_dir: Path, data: Path):
    """The TrainConfig of the quick-start run."""
    import time

    from tunelab.config import load_config
    from tunelab.train.config import TrainConfig

    output = cfg.output or str(Path("runs") / f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}")
    return load_config(TrainConfig, None, {
        "model": str(model_dir), "datasets": [str(data)], "method": "lora", "lr": cfg.lr,
        "epochs": cfg.epochs, "max_steps": cfg.max_steps, "micro_batch_size": cfg.micro_batch_size,
        "warmup_steps": 2, "data": {"cutoff_len": 256}, "output": output, "schedule": "cosine",
        "lora": {"rank": cfg.rank, "alpha": 2 * cfg.rank, "target_modules": cfg.target_modules},
        "seed": cfg.seed, "precision": "auto",
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


def general_text_check(run) -> dict[str, Any]:
    """`tunelab eval`'s forgetting check (general-text perplexity, base vs tuned) on this run."""
    from tunelab.eval.compare import Pair, forgetting_check
    from tunelab.eval.config import EvalOptions
    from tunelab.progress import progress

    with progress("loading the base and the tuned model for general-text perplexity"):
        pair = Pair(run)
    return forgetting_check(pair, EvalOptions().forgetting_threshold)


def write_eval(run, answers: list[Answer], forgetting: dict[str, Any]) -> None:
    """RUN/eval.json as `tunelab eval` writes it (generations, scores, forgetting), for the report."""
    from tunelab.eval.compare import mean_scores, write_json
    from tunelab.eval.scores import score_all

    rows = [{"prompt": a.question, "reference": a.reference, "base": a.before, "tuned": a.after,
             "base_scores": score_all(a.before, a.reference), "tuned_scores": score_all(a.after, a.reference)}
            for a in answers]
    write_json(run.eval_file, {"run": run.name, "base_model": str(run.base_model), "generations": rows,
                               "scores": {s: mean_scores(rows, s) for s in ("base", "tuned")},
                               "forgetting": forgetting})


def print_result(console: Any, result: QuickstartResult, phase_line: str) -> None:
    """Identity and control answers side by side, what was gained and lost, where the results are."""
    from rich.text import Text

    from tunelab.eval.table import answers_table

    for identity, title in ((True, "identity: held-out paraphrases (gained)"),
                            (False, "control: general questions (kept?)")):
        rows = [(a.question, a.before, a.after) for a in result.answers if a.identity == identity]
        if rows:
            console.print(answers_table(rows, title))
    for line in summary_lines(result):
        console.print(Text(line))
    console.print(Text(f"adapter saved in {result.run_dir / 'adapter'}; "
                       f"serve it with `tunelab serve --adapter {result.run_dir}`"))
    console.print(Text(f"report: {result.report}"))
    console.print(Text(phase_line))


def summary_lines(result: QuickstartResult) -> list[str]:
    """'identity 10/10 ...', 'control ...', 'general-text perplexity ...' (and its warning)."""
    ident = [a for a in result.answers if a.identity]
    control = [a for a in result.answers if not a.identity]
    f = result.forgetting
    lines = [f"identity: {sum(a.right(a.after) for a in ident)}/{len(ident)} tuned answers name tunelab "
             f"(base: {sum(a.right(a.before) for a in ident)}/{len(ident)})",
             f"control: {sum(a.right(a.after) for a in control)}/{len(control)} right after, "
             f"{sum(a.right(a.before) for a in control)}/{len(control)} before, "
             f"{len(result.turned_wrong)} turned wrong",
             f"general-text perplexity: base {f['base']['perplexity']:.2f}, tuned {f['tuned']['perplexity']:.2f} "
             f"({f['ratio']:.2f}x)"]
    return lines + ([f["warning"]] if f.get("warning") else [])
