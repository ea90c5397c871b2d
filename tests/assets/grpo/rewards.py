"""Reward functions for the GRPO tests (referenced as 'tests/assets/grpo/rewards.py:NAME').

`favoured` is a task a tiny random model can learn: the share of completion tokens in a set of
token ids the test names in $TUNELAB_TEST_FAVOURED (a JSON list), chosen along one embedding
direction so that a small change of the last hidden state moves all of them together.
"""

import json
import os


def favoured(completion_ids, **_):
    wanted = set(json.loads(os.environ["TUNELAB_TEST_FAVOURED"]))
    return [sum(t in wanted for t in ids) / max(len(ids), 1) for ids in completion_ids]


def wrong_count(completions, **_):
    return [1.0] * (len(completions) - 1)


def boom(completions, **_):
    raise KeyError("no such thing")


def not_a_number(completions, **_):
    return ["high"] * len(completions)


def needs_answer(completions, answer):
    return [float(a is not None) for a in answer]
