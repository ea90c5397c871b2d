"""The internal row type and the conversion of each input format into it.

Every format becomes a `Row`: either `messages` ({role, content} dicts: an optional
system turn, then user/assistant turns alternating and ending with the assistant)
or `text` for continued pre-training. A `Schema` says which record keys hold what,
so LLaMA-Factory column mappings and tags plug in without new code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunelab.data.columns import check_columns, misspelt
from tunelab.data.errors import DataError
from tunelab.data.pairs import LABEL_COLUMN, PAIR_COLUMNS, is_pair_record, pair_row, read_label
from tunelab.data.tool_rows import check_calls, function_call_turn, openai_calls, read_tools
from tunelab.vision.images import check_markers, read_image_column, resolve_image, split_image_parts

FORMATS = ("alpaca", "sharegpt", "messages", "prompt_completion", "text", "preference")
FORMAT_ALIASES = {"openai": "messages", "chat": "messages", "prompt": "prompt_completion",
                  "completion": "prompt_completion", "plain": "text", "pretrain": "text",
                  "pairs": "preference", "dpo": "preference"}
ROLES = ("system", "user", "assistant")


@dataclass
class Row:
    """One training row: a conversation or plain text, with where it came from.

    A preference pair keeps the prompt + chosen reply in `messages` and the rejected reply
    in `rejected`; a KTO row is a conversation with a `label` (desirable or not).
    """

    messages: list[dict] | None
    text: str | None
    source: str
    line: int
    format: str
    rejected: list[dict] | None = None
    label: bool | None = None
    tools: list[dict] | None = None  # functions the conversation may call (OpenAI tool dicts)
    images: list[str] | None = None  # resolved image paths / data URLs, one per `<image>` marker, in order

    @property
    def kind(self) -> str:
        """'pair', 'kto' (a labelled reply), or 'sft'."""
        return "pair" if self.rejected is not None else "kto" if self.label is not None else "sft"


@dataclass
class LoadedData:
    """Rows read from all inputs, plus what was rejected (reason -> [(source, line)]) and ignored."""

    rows: list[Row] = field(default_factory=list)
    rejected: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)  # data.ignore_columns seen -> rows it was dropped from

    def add(self, row: Row) -> None:
        self.rows.append(row)
        self.counts[row.format] = self.counts.get(row.format, 0) + 1

    def reject(self, err: DataError) -> None:
        self.rejected.setdefault(err.reason, []).append((err.source, err.line))

    @property
    def rejected_count(self) -> int:
        return sum(len(v) for v in self.rejected.values())


_DEFAULT_COLUMNS = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output", "system": "system", "history": "history",
               "images": "images"},
    "sharegpt": {"messages": "conversations", "system": "system", "tools": "tools", "images": "images"},
    "messages": {"messages": "messages", "system": "system", "tools": "tools", "images": "images"},
    "prompt_completion": {"prompt": "prompt", "response": "completion", "system": "system"},
    "text": {"text": "text"},
    "preference": {"prompt": "prompt", "system": "system"},
}
# the roles (keys of Schema.columns) each format reads; every other column is an error (data/columns.py)
_READS = {"alpaca": ("prompt", "query", "response", "history", "images"), "sharegpt": ("messages", "images"),
          "messages": ("messages", "images"), "prompt_completion": ("prompt", "response")}
_PAIR_READS = {"alpaca": ("prompt", "query", "history"), "sharegpt": ("messages",), "messages": ("messages",)}
_TURN_EXTRAS = {"assistant": ("tool_calls",), "tool": ("tool_call_id",)}  # keys beyond role and content
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "chatgpt": "assistant", "model": "assistant"}


@dataclass
class Schema:
    """A format plus the record keys (columns) and role tags it reads."""

    format: str
    columns: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    ranking: bool = False  # rows are chosen/rejected pairs (LLaMA-Factory's `ranking: true`)

    @classmethod
    def of(cls, fmt: str, columns: dict | None = None, tags: dict | None = None, ranking: bool = False) -> Schema:
        """The default schema of a format, with optional overrides (dataset_info.json)."""
        fmt = normalize_format(fmt)
        defaults = {**PAIR_COLUMNS, "kto_tag": LABEL_COLUMN, **_DEFAULT_COLUMNS[fmt]}
        return cls(fmt, {**defaults, **(columns or {})}, dict(tags or {}), ranking or fmt == "preference")

    def known_columns(self) -> set[str]:
        """The record keys this schema reads; a row with any other column is an error."""
        if self.ranking:
            roles = ("chosen", "rejected", "system", *_PAIR_READS.get(self.format, ("prompt",)))
        elif self.format == "text":
            roles = ("text",)
        else:
            roles = (*_READS[self.format], "system", "tools", "kto_tag")
        return {self.columns.get(role, role) for role in roles}

    def to_row(self, record: dict, source: str, line: int) -> Row:
        """Convert one record, raising DataError naming the field on any problem (an unread column too)."""
        row = self._convert(record, source, line)
        check_columns(record, self.known_columns(), self.format, source, line)
        return row

    def _convert(self, record: dict, source: str, line: int) -> Row:
        """The row a record holds, by format (columns not checked here)."""
        where = (source, line)
        if self.ranking:
            return pair_row(self, record, source, line)
        if self.format == "text":
            return Row(None, _text_field(record, self.columns["text"], *where), source, line, "text")
        convert = {"alpaca": _alpaca, "sharegpt": self._turns, "messages": self._turns,
                   "prompt_completion": _prompt_completion}[self.format]
        messages = convert(record, self.columns, *where)
        system = record.get(self.columns.get("system", ""))
        if system is not None and not (messages and messages[0]["role"] == "system"):
            messages.insert(0, {"role": "system", "content": _string(system, self.columns["system"], *where)})
        key = self.columns.get("messages", "messages")
        check_turns(messages, key, *where)
        tools = read_tools(record.get(self.columns.get("tools", "tools")), self.columns.get("tools", "tools"), *where)
        check_calls(messages, tools, key, *where)
        label = read_label(record, self.columns["kto_tag"], *where)
        images = _images(messages, record, self.columns.get("images"), key, *where)
        return Row(messages, None, source, line, self.format, label=label, tools=tools, images=images)

    def _turns(self, record: dict, columns: dict, source: str, line: int) -> list[dict]:
        key = columns["messages"]
        turns = _required(record, key, source, line)
        if not isinstance(turns, list):
            raise DataError("wrong type", f"expected a list of turns, got {type(turns).__name__}", source, line, key)
        return [self._turn(t, f"{key}[{i}]", source, line) for i, t in enumerate(turns)]

    def _turn(self, turn: Any, where: str, source: str, line: int) -> dict:
        if not isinstance(turn, dict):
            raise DataError("wrong type", f"expected an object, got {type(turn).__name__}", source, line, where)
        role_key = self.tags.get("role_tag") or ("from" if "from" in turn else "role")
        content_key = self.tags.get("content_tag") or ("value" if role_key == "from" else "content")
        role = _required(turn, role_key, source, line, f"{where}.{role_key}")
        role = self._role(role, f"{where}.{role_key}", source, line)
        check_columns(turn, {role_key, content_key, *_TURN_EXTRAS.get(role, ())}, self.format, source, line, where)
        if role == "function_call":
            value = _required(turn, content_key, source, line, f"{where}.{content_key}")
            return function_call_turn(value, f"{where}.{content_key}", source, line)
        calls = turn.get("tool_calls") if role == "assistant" else None
        value = turn.get(content_key) if calls is not None else _required(turn, content_key, source, line,
                                                                           f"{where}.{content_key}")
        value, images = split_image_parts(value, f"{where}.{content_key}", source, line)
        content = "" if value is None else _content(value, f"{where}.{content_key}", source, line)
        out = {"role": role, "content": content, **({"images": images} if images else {})}
        if calls is not None:
            out["tool_calls"] = openai_calls(calls, f"{where}.tool_calls", source, line)
        if role == "tool" and turn.get("tool_call_id") is not None:
            out["tool_call_id"] = turn["tool_call_id"]
        return out

    def _role(self, role: Any, where: str, source: str, line: int) -> str:
        names = {**_SHAREGPT_ROLES, "function_call": "function_call", "observation": "tool", "tool": "tool"}
        for ours, tag in (("user", "user_tag"), ("assistant", "assistant_tag"), ("system", "system_tag"),
                          ("function_call", "function_tag"), ("tool", "observation_tag")):
            if self.tags.get(tag):
                names[self.tags[tag]] = ours
        if not isinstance(role, str) or role not in names:
            known = ", ".join(sorted(names))
            raise DataError("unknown role", f"unknown role {role!r}; expected one of {known}", source, line, where)
        return names[role]


def normalize_format(fmt: str) -> str:
    """A canonical format name, or DataError listing the valid ones."""
    key = FORMAT_ALIASES.get(fmt.lower(), fmt.lower())
    if key not in FORMATS:
        raise DataError("unknown format", f"unknown format '{fmt}'; use one of {', '.join(FORMATS)}")
    return key


def detect_format(record: dict) -> str | None:
    """Guess the format from a record's keys; None when nothing fits."""
    if is_pair_record(record) and not any(k in record for k in ("instruction", "conversations", "messages")):
        return "preference"
    if "messages" in record:
        turns = record["messages"]
        first = turns[0] if isinstance(turns, list) and turns else None
        return "sharegpt" if isinstance(first, dict) and "from" in first else "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and ("output" in record or is_pair_record(record)):
        return "alpaca"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    if "text" in record:
        return "text"
    return None


def check_turns(messages: list[dict], key: str, source: str, line: int) -> None:
    """An optional system turn, then user/assistant alternating, ending with the assistant; an
    assistant turn with tool calls is followed by tool results, then the assistant again."""
    if not messages:
        raise DataError("empty conversation", "conversation has no turns", source, line, key)
    start = 1 if messages[0]["role"] == "system" else 0
    previous: dict | None = None
    for i, msg in enumerate(messages[start:], start):
        expected = _next_roles(previous)
        if msg["role"] not in expected:
            raise DataError("turns do not alternate", f"turn {i} is '{msg['role']}' but '{' or '.join(expected)}' "
                            "was expected (system first, then user and assistant alternating; tool results "
                            "after an assistant's tool calls)", source, line, f"{key}[{i}]")
        previous = msg
    if messages[-1]["role"] != "assistant":
        raise DataError("no reply", "the last turn is not from the assistant, so there is nothing to train on",
                        source, line, f"{key}[{len(messages) - 1}]")


def _next_roles(previous: dict | None) -> tuple[str, ...]:
    """The roles that may follow `previous` (None: the first turn after the system prompt)."""
    if previous is None or (previous["role"] == "assistant" and not previous.get("tool_calls")):
        return ("user",)
    if previous["role"] == "assistant":
        return ("tool",)
    return ("tool", "assistant") if previous["role"] == "tool" else ("assistant",)


def _images(messages: list[dict], record: dict, column: str | None, key: str, source: str,
            line: int) -> list[str] | None:
    """The row's images, checked and resolved: image content parts (taken off their turns) then the
    `images` column (None: the format has none); None when there are none."""
    refs = [ref for m in messages for ref in m.pop("images", [])]
    listed = read_image_column(record.get(column), column, source, line) if column else []
    refs += [(ref, f"{column}[{i}]") for i, ref in enumerate(listed)]
    if not refs:
        return None
    check_markers(messages, refs, key, source, line)
    return [resolve_image(ref, source, line, field) for ref, field in refs]


def _alpaca(record: dict, columns: dict, source: str, line: int) -> list[dict]:
    prompt = _string(_required(record, columns["prompt"], source, line), columns["prompt"], source, line)
    query = record.get(columns["query"])
    query = "" if query is None else _string(query, columns["query"], source, line)
    response = _string(_required(record, columns["response"], source, line), columns["response"], source, line)
    messages = _history(record.get(columns["history"]), columns["history"], source, line)
    user = f"{prompt}\n{query}" if prompt and query else prompt or query
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": response}]


def _history(value: Any, key: str, source: str, line: int) -> list[dict]:
    if value is None or value == "":
        return []
    if not isinstance(value, list):
        raise DataError("wrong type", "expected a list of [question, answer] pairs", source, line, key)
    out = []
    for i, pair in enumerate(value):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise DataError("wrong type", "expected a [question, answer] pair", source, line, f"{key}[{i}]")
        out += [{"role": "user", "content": _string(pair[0], f"{key}[{i}][0]", source, line)},
                {"role": "assistant", "content": _string(pair[1], f"{key}[{i}][1]", source, line)}]
    return out


def _prompt_completion(record: dict, columns: dict, source: str, line: int) -> list[dict]:
    prompt = _required(record, columns["prompt"], source, line)
    completion = _required(record, columns["response"], source, line)
    if isinstance(prompt, list) and isinstance(completion, list):  # conversational prompt/completion
        schema = Schema.of("messages", {"messages": columns["prompt"]})
        turns = schema._turns({columns["prompt"]: prompt + completion}, schema.columns, source, line)
        return turns
    return [{"role": "user", "content": _string(prompt, columns["prompt"], source, line)},
            {"role": "assistant", "content": _string(completion, columns["response"], source, line)}]


def _text_field(record: dict, key: str, source: str, line: int) -> str:
    text = _string(_required(record, key, source, line), key, source, line)
    if not text.strip():
        raise DataError("empty text", "text is empty", source, line, key)
    return text


def _content(value: Any, key: str, source: str, line: int) -> str:
    """A message content: a string, or OpenAI-style text parts joined."""
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        if any(p.get("type", "text") != "text" for p in value):
            raise DataError("wrong type", "only text content parts are supported", source, line, key)
        return "".join(_string(p.get("text"), f"{key}[].text", source, line) for p in value)
    return _string(value, key, source, line)


def _string(value: Any, key: str, source: str, line: int) -> str:
    if isinstance(value, str):
        return value
    got = "null" if value is None else type(value).__name__
    raise DataError("wrong type", f"expected a string, got {got}", source, line, key)


def _required(record: dict, key: str, source: str, line: int, where: str | None = None) -> Any:
    if key not in record:
        raise DataError("missing field", f"missing; the row has {sorted(record)}{misspelt(key, record)}",
                        source, line, where or key)
    return record[key]
