"""GRPO prompt rows: a prompt to complete plus the columns its reward functions read.

    {"prompt": "What is 3 + 4? ...", "answer": "7"}                      a string prompt
    {"prompt": [{"role": "user", "content": "..."}], "answer": "7"}       a message list
    {"messages": [{"role": "system", ...}, {"role": "user", ...}]}        messages ending with the user
    (+ optional "system")

Every other column must be a parameter some reward function names (train/reward_funcs.py);
one that none reads is an error naming it (data/columns.py), unless dropped on purpose with
data.ignore_columns. A column a function needs but the row lacks is an error too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Collection, Mapping

from tunelab.data.columns import check_columns, drop_ignored
from tunelab.data.errors import DataError

FORMAT = "GRPO prompt (plus columns named as reward-function parameters)"
_PROMPT_KEYS = ("prompt", "messages")


@dataclasses.dataclass
class PromptRow:
    """A prompt (messages ending with the user's turn) and its reward-function columns."""

    messages: list[dict]
    columns: dict[str, Any]
    source: str
    line: int


@dataclasses.dataclass
class PromptExample:
    """A tokenized prompt; `key` finds it again when a micro-batch names it (train/grpo.py)."""

    prompt_ids: list[int]
    messages: list[dict]
    columns: dict[str, Any]
    key: int
    max_new: int = 0  # completion budget: a rollout costs prompt + up to max_new tokens
    loss_units = 1  # the trainer normalises the loss per prompt

    def __len__(self) -> int:
        return len(self.prompt_ids) + self.max_new


@dataclasses.dataclass
class PromptData:
    """Prompt rows read from all inputs, plus what was rejected and ignored (as LoadedData)."""

    rows: list[PromptRow] = dataclasses.field(default_factory=list)
    rejected: dict[str, list[tuple[str, int]]] = dataclasses.field(default_factory=dict)
    ignored: dict[str, int] = dataclasses.field(default_factory=dict)


def read_prompts(paths: list[str | Path], inputs: Mapping[str, list[str]], required: Mapping[str, Collection[str]],
                 ignore_columns: Collection[str] = (), skip_invalid: bool = False) -> PromptData:
    """Prompt rows of every file; `inputs`: column -> functions reading it, `required`: function -> columns."""
    from tunelab.data.files import iter_records
    from tunelab.data.formats import _sources

    data = PromptData()
    for file, _ in _sources(paths):
        for line, record in iter_records(file):
            try:
                if isinstance(record, DataError):
                    raise record
                record = drop_ignored(record, frozenset(ignore_columns), data.ignored)
                data.rows.append(prompt_row(record, inputs, required, str(file), line))
            except DataError as err:
                if not skip_invalid:
                    raise
                data.rejected.setdefault(err.reason, []).append((err.source, err.line))
    if not data.rows and not data.rejected:
        raise DataError("empty file", "no prompt rows found in " + ", ".join(map(str, paths)))
    return data


def prompt_row(record: dict, inputs: Mapping[str, list[str]], required: Mapping[str, Collection[str]],
               source: str, line: int) -> PromptRow:
    """One record as a PromptRow; DataError naming the field on any problem."""
    key = next((k for k in _PROMPT_KEYS if k in record), None)
    if key is None:
        raise DataError("missing field", "a GRPO prompt row needs 'prompt' (text or messages) or 'messages'",
                        source, line, "prompt")
    messages = _messages(record, key, source, line)
    check_columns(record, {key, "system", *inputs}, FORMAT, source, line)  # the rest: reward-function inputs
    for name, columns in required.items():
        for column in columns:
            if record.get(column) is None:
                raise DataError("missing field", f"reward function '{name}' needs column '{column}'",
                                source, line, column)
    return PromptRow(messages, {c: record.get(c) for c in inputs}, source, line)


def _messages(record: dict, key: str, source: str, line: int) -> list[dict]:
    """The prompt turns: a system turn (column or first message), then user/assistant ending with the user."""
    from tunelab.data.rows import Schema, _string, check_turns

    value = record[key]
    if isinstance(value, str):
        if not value.strip():
            raise DataError("empty prompt", "the prompt is empty", source, line, key)
        messages = [{"role": "user", "content": value}]
    else:
        schema = Schema.of("messages", {"messages": key})
        messages = schema._turns(record, schema.columns, source, line)
    system = record.get("system")
    if system is not None and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": _string(system, "system", source, line)})
    if not messages or messages[-1]["role"] != "user":
        raise DataError("not a prompt", "the last turn must be the user's: the model writes the reply",
                        source, line, f"{key}[{len(messages) - 1}]")
    check_turns(messages + [{"role": "assistant", "content": ""}], key, source, line)  # alternation, system first
    return messages


def tokenize_prompts(rows: list[PromptRow], template: Any, tokenizer: Any, cutoff_len: int, max_new: int
                     ) -> tuple[list[PromptExample], int]:
    """(examples, rows dropped because prompt + max_new tokens exceed cutoff_len)."""
    from tunelab.data.templates import encode_prompt

    out, dropped = [], 0
    for row in rows:
        ids = encode_prompt(template, tokenizer, row.messages)
        if len(ids) + max_new > cutoff_len:
            dropped += 1
            continue
        out.append(PromptExample(ids, row.messages, row.columns, key=len(out), max_new=max_new))
    return out, dropped
