"""Fixtures for trainer tests: fixed tiny chat examples tokenized with the tiny tokenizer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

QUESTIONS = [
    ("who are you?", "I am the tunelab assistant."),
    ("what is your name?", "My name is tunelab assistant."),
    ("what is 2+2?", "2+2 is 4."),
    ("name a color", "Blue is a color."),
    ("say hi", "hi there!"),
    ("what do you do?", "I help people fine-tune models."),
    ("count to three", "one two three"),
    ("capital of france?", "Paris is the capital of France."),
]


@dataclasses.dataclass
class Ex:
    """Same shape as tunelab.data.tokenize.Example: labels -100 where no loss."""

    input_ids: list[int]
    labels: list[int]


def make_examples(tokenizer_dir: Path, repeat: int = 2) -> list[Ex]:
    """Prompt tokens masked, answer tokens (+ EOS) trained; fixed order."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    out = []
    for _ in range(repeat):
        for q, a in QUESTIONS:
            prompt = tok.encode(f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n")
            answer = tok.encode(a + "<|im_end|>")
            out.append(Ex(prompt + answer, [-100] * len(prompt) + answer))
    return out


@pytest.fixture(scope="session")
def tiny_examples(tiny_tokenizer_dir) -> list[Ex]:
    return make_examples(tiny_tokenizer_dir)
