"""The bundled tool-calling dataset reads and validates, and covers what the real-model test needs."""

from __future__ import annotations

from tunelab.data.demo import tools_heldout_path, tools_train_path
from tunelab.data.formats import read_datasets


def _kinds(rows) -> dict[str, int]:
    kinds = {"single": 0, "parallel": 0, "results": 0, "plain": 0}
    for row in rows:
        calls = [len(m.get("tool_calls") or []) for m in row.messages]
        kinds["parallel" if max(calls) > 1 else "single" if max(calls) == 1 else "plain"] += 1
        kinds["results"] += any(m["role"] == "tool" for m in row.messages)
    return kinds


def test_bundled_tool_data_validates_and_mixes_every_kind_of_turn():
    train, heldout = read_datasets([tools_train_path()]).rows, read_datasets([tools_heldout_path()]).rows
    assert all(k > 0 for k in _kinds(train).values()), _kinds(train)  # calls are checked against the tools' schemas
    held = _kinds(heldout)
    assert held["single"] and held["parallel"] and held["plain"] and not held["results"]
    seen = {row.messages[0]["content"] for row in train}
    assert not seen & {row.messages[0]["content"] for row in heldout}, "held-out requests never train"
    names = {t["function"]["name"] for row in train for t in row.tools}
    assert names == {"get_weather", "convert_units", "calculate"}
