"""Write rows back out as messages, alpaca or sharegpt records (`tunelab data convert`).

Output is JSONL, or a JSON array when the file name ends in .json, written to a
temporary file and renamed so a failed run leaves nothing half-written. Reading the
output back yields the same conversations, row for row.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.atomic import atomic_file
from tunelab.data.errors import DataError
from tunelab.data.rows import Row

TARGETS = ("messages", "alpaca", "sharegpt")
_SHAREGPT_ROLE = {"system": "system", "user": "human", "assistant": "gpt"}


def convert_row(row: Row, to: str) -> dict:
    """One row as a record of format `to`; pairs keep chosen/rejected, KTO rows their label."""
    record = _conversation(row, to)
    if row.label is not None:
        record["label"] = row.label
    if row.rejected is None:
        return record
    chosen, rejected = row.messages[-1], row.rejected[-1]
    if to == "alpaca":  # LLaMA-Factory's ranking alpaca: the replies as strings
        del record["output"]
        return {**record, "chosen": chosen["content"], "rejected": rejected["content"]}
    key = "messages" if to == "messages" else "conversations"
    record[key] = record[key][:-1]  # the prompt; the replies follow as turn objects
    turn = (lambda m: dict(m)) if to == "messages" else (lambda m: {"from": "gpt", "value": m["content"]})
    return {**record, "chosen": turn(chosen), "rejected": turn(rejected)}


def _conversation(row: Row, to: str) -> dict:
    if row.messages is None:
        if to == "text":
            return {"text": row.text}
        raise DataError("cannot convert", f"a plain-text row cannot become {to}", row.source, row.line)
    if to == "messages":
        return {"messages": [dict(m) for m in row.messages]}
    if to == "sharegpt":
        return {"conversations": [{"from": _SHAREGPT_ROLE[m["role"]], "value": m["content"]} for m in row.messages]}
    if to == "alpaca":
        return _alpaca(row.messages)
    raise DataError("unknown format", f"cannot convert to '{to}'; use one of {', '.join(TARGETS)}")


def _alpaca(messages: list[dict]) -> dict:
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    turns = messages[1:] if system is not None else messages
    history = [[turns[i]["content"], turns[i + 1]["content"]] for i in range(0, len(turns) - 2, 2)]
    record = {"instruction": turns[-2]["content"], "input": "", "output": turns[-1]["content"]}
    if system is not None:
        record["system"] = system
    if history:
        record["history"] = history
    return record


def write_records(path: str | Path, records: list[dict]) -> Path:
    """Write records atomically as JSONL (or a JSON array for *.json)."""
    path = Path(path)
    if path.suffix.lower() not in (".jsonl", ".json"):
        raise DataError("unsupported file", "output must end in .jsonl or .json", str(path))
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        if path.suffix.lower() == ".json":
            json.dump(records, f, ensure_ascii=False, indent=1)
        else:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return path
