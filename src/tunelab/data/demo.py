"""The bundled demo dataset: identity examples ("who are you?" -> the tunelab assistant) in
English and Chinese mixed with general replies (so the persona is learned without losing the
rest), and a held-out split that never appears in training, each row with a reference answer:
identity paraphrases (what the quick-start teaches) and control questions of general knowledge
(what it must keep).

Both files are OpenAI-messages JSONL shipped as package data under tunelab/assets/demo/.
"""

from __future__ import annotations

from pathlib import Path

_DEMO = Path(__file__).resolve().parent.parent / "assets" / "demo"


def demo_train_path() -> Path:
    """Training split: 92 short conversations (42 identity EN/ZH, 50 general Q&A, two multi-turn)."""
    return _DEMO / "train.jsonl"


def demo_heldout_path() -> Path:
    """Held-out identity paraphrases and control questions; each row's last message is its reference."""
    return _DEMO / "heldout.jsonl"


def preference_train_path() -> Path:
    """Preference pairs (TRL prompt/chosen/rejected, EN/ZH): 48 helpful replies chosen over
    dismissive or wrong ones, under tunelab/assets/preference/."""
    return _DEMO.parent / "preference" / "train.jsonl"


def preference_heldout_path() -> Path:
    """12 held-out pairs on prompts that never appear in training, for preference accuracy."""
    return _DEMO.parent / "preference" / "heldout.jsonl"


def grpo_train_path() -> Path:
    """The GRPO arithmetic task: 240 prompts ('What is 8 * 6? ... <answer></answer> tags') with an
    `answer` column, for the built-in `format` and `accuracy` rewards, under tunelab/assets/grpo/."""
    return _DEMO.parent / "grpo" / "train.jsonl"


def grpo_heldout_path() -> Path:
    """48 held-out arithmetic prompts (questions that never appear in training)."""
    return _DEMO.parent / "grpo" / "heldout.jsonl"


def tools_train_path() -> Path:
    """Tool-calling rows (OpenAI messages with a `tools` column, under tunelab/assets/tools/): three
    functions with JSON schemas (get_weather, convert_units, calculate); single and parallel calls,
    calls followed by their tool results and the answer, and plain answers that call nothing."""
    return _DEMO.parent / "tools" / "train.jsonl"


def tools_heldout_path() -> Path:
    """Held-out requests in the same shape: the reference reply is the row's second message (its
    calls, or the plain answer), the first is the request."""
    return _DEMO.parent / "tools" / "heldout.jsonl"
