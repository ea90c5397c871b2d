"""Preference rows: a prompt with a chosen and a rejected reply, and KTO's labelled replies.

A pair becomes one `Row` whose `messages` are the prompt plus the chosen reply and whose
`rejected` holds the rejected reply, so the chosen side reads like any SFT row. Accepted:
- TRL style: `prompt` (string or messages) + `chosen`/`rejected` (strings or a one-message
  list); without `prompt`, chosen/rejected are whole conversations sharing a prefix.
- LLaMA-Factory `ranking: true`: alpaca (`instruction`/`input` + `chosen`/`rejected`
  strings) and sharegpt (`conversations` + `chosen`/`rejected` turn objects).
- OpenAI messages ending with the user turn + `chosen`/`rejected` (string or message).
KTO rows are any conversation row plus a boolean `label` (LLaMA-Factory's `kto_tag`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunelab.data.errors import DataError

if TYPE_CHECKING:
    from tunelab.data.rows import Row, Schema

PAIR_COLUMNS = {"chosen": "chosen", "rejected": "rejected"}
LABEL_COLUMN = "label"
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def is_pair_record(record: dict) -> bool:
    """A record with both a chosen and a rejected reply."""
    return "chosen" in record and "rejected" in record


def pair_row(schema: Schema, record: dict, source: str, line: int) -> Row:
    """A pair `Row` (messages = prompt + chosen, rejected = [rejected reply]); errors name the field."""
    from tunelab.data.rows import Row, check_turns

    chosen_key, rejected_key = schema.columns["chosen"], schema.columns["rejected"]
    prompt, chosen, rejected = _sides(schema, record, chosen_key, rejected_key, source, line)
    system = record.get(schema.columns.get("system", ""))
    if system is not None and not (prompt and prompt[0]["role"] == "system"):
        from tunelab.data.rows import _string

        prompt.insert(0, {"role": "system", "content": _string(system, schema.columns["system"], source, line)})
    for reply, key in ((chosen, chosen_key), (rejected, rejected_key)):
        if not reply["content"].strip():
            raise DataError("empty side", "the reply is empty; a pair needs two replies", source, line, key)
    check_turns(prompt + [chosen], chosen_key, source, line)
    return Row(prompt + [chosen], None, source, line, schema.format, rejected=[rejected])


def _sides(schema: Schema, record: dict, chosen_key: str, rejected_key: str, source: str, line: int):
    """(prompt messages, chosen reply, rejected reply) by format."""
    from tunelab.data.rows import _alpaca, _required

    chosen_v = _required(record, chosen_key, source, line)
    rejected_v = _required(record, rejected_key, source, line)
    if schema.format == "alpaca":
        prompt = _alpaca({**record, "__reply": ""}, {**schema.columns, "response": "__reply"}, source, line)[:-1]
    elif schema.format in ("sharegpt", "messages"):
        prompt = schema._turns(record, schema.columns, source, line)
    elif schema.columns["prompt"] in record:  # TRL explicit prompt
        prompt = _prompt(schema, record[schema.columns["prompt"]], source, line)
    else:  # TRL implicit prompt: two whole conversations sharing everything but the last reply
        return _split_implicit(schema, chosen_v, rejected_v, chosen_key, rejected_key, source, line)
    return prompt, _reply(schema, chosen_v, chosen_key, source, line), _reply(schema, rejected_v, rejected_key, source, line)


def _prompt(schema: Schema, value: Any, source: str, line: int) -> list[dict]:
    from tunelab.data.rows import _string

    key = schema.columns["prompt"]
    if isinstance(value, list):
        return [schema._turn(t, f"{key}[{i}]", source, line) for i, t in enumerate(value)]
    return [{"role": "user", "content": _string(value, key, source, line)}]


def _reply(schema: Schema, value: Any, key: str, source: str, line: int) -> dict:
    """One assistant reply from a string, a turn object, or a list holding one turn."""
    from tunelab.data.rows import _string

    if isinstance(value, list):
        if len(value) != 1:
            raise DataError("wrong type", f"expected one reply message, got {len(value)}", source, line, key)
        value = value[0]
    if isinstance(value, dict):
        turn = schema._turn(value, key, source, line)
        if turn["role"] != "assistant":
            raise DataError("wrong role", f"the reply is from '{turn['role']}', not the assistant", source, line, key)
        return turn
    return {"role": "assistant", "content": _string(value, key, source, line)}


def _split_implicit(schema, chosen_v, rejected_v, chosen_key, rejected_key, source, line):
    """Prompt = the shared prefix of two conversations that differ only in their last message."""
    if not (isinstance(chosen_v, list) and isinstance(rejected_v, list)):
        raise DataError("missing field", "a pair needs 'prompt', or chosen/rejected as whole conversations",
                        source, line, schema.columns["prompt"])
    chosen = [schema._turn(t, f"{chosen_key}[{i}]", source, line) for i, t in enumerate(chosen_v)]
    rejected = [schema._turn(t, f"{rejected_key}[{i}]", source, line) for i, t in enumerate(rejected_v)]
    if len(chosen) < 2 or chosen[:-1] != rejected[:-1] or len(chosen) != len(rejected):
        raise DataError("prompts differ", "chosen and rejected must share every message but the last reply",
                        source, line, rejected_key)
    last = (_reply(schema, [chosen[-1]], chosen_key, source, line),
            _reply(schema, [rejected[-1]], rejected_key, source, line))
    return chosen[:-1], last[0], last[1]


def read_label(record: dict, key: str, source: str, line: int) -> bool | None:
    """KTO's desirable/undesirable label: a boolean (or true/false text in CSV); None when absent."""
    value = record.get(key)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise DataError("wrong type", f"expected true or false, got {value!r}", source, line, key)
