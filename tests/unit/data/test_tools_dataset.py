"""The bundled tool-calling dataset reads and validates, and covers what the real-model test needs."""

from __future__ import annotations

from tunelab.data.demo import tools_heldout_path, tools_train_path
from tunelab.data.formats import read_datasets


def _kinds(rows) -> dict[str, int]:
    """Assistant turns by kind (rows are conversations of several exchanges): one call, parallel
    calls, plain answers to a request, answers after tool results; and the tool results."""
    kinds = {"single": 0, "parallel": 0, "plain": 0, "after_results": 0, "results": 0}
    for row in rows:
        for before, turn in zip(row.messages, row.messages[1:]):
            calls = len(turn.get("tool_calls") or [])
            if turn["role"] == "tool":
                kinds["results"] += 1
            elif turn["role"] == "assistant":
                key = "parallel" if calls > 1 else "single" if calls else "after_results" if before["role"] == "tool" \
                    else "plain"
                kinds[key] += 1
    return kinds


def test_bundled_tool_data_validates_and_mixes_every_kind_of_turn():
    train, heldout = read_datasets([tools_train_path()]).rows, read_datasets([tools_heldout_path()]).rows
    assert all(k > 0 for k in _kinds(train).values()), _kinds(train)  # calls are checked against the tools' schemas
    held = _kinds(heldout)
    assert held["single"] and held["parallel"] and held["plain"] and not held["results"], held
    assert all(len(row.messages) == 2 for row in heldout), "a held-out row is one request and its reference reply"
    seen = {m["content"] for row in train for m in row.messages if m["role"] == "user"}
    assert not seen & {row.messages[0]["content"] for row in heldout}, "held-out requests never train"
    names = {t["function"]["name"] for row in train + heldout for t in row.tools}
    assert names == {"get_weather", "convert_units", "calculate"}
