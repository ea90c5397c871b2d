"""Tool calling learned by a short LoRA on the embedded Gemma 3 270M, served and called with `tools=`.

The bundled tool data (tunelab/assets/tools: get_weather, convert_units, calculate; single and
parallel calls, results, plain answers) trains a LoRA; the server (`tunelab serve`'s app on a
free loopback port) serves the base model and the adapter, and the official `openai` client
sends each held-out request with `tools=` and `tool_choice="auto"` (nothing forces a call).
A held-out request that wants calls is right when the reply's calls name the expected functions,
in order, with arguments that validate against each function's JSON schema (issue 16's "the
right function with valid arguments"); the requests that want a plain answer are right when
nothing is called, and are counted apart. Both models' rates, the exact-argument count and the
time of each phase are printed (`pytest -s`).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import jsonschema
import pytest
from openai import OpenAI

from serve_util import start_server

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(3600)]

# Opt-in (TUNELAB_TOOLS_REAL=1), and strict when it runs: the recipe below trains 42 steps with
# backward through all 18 layers (trainable_tokens), minutes past a real-model test's ~90 s budget
# on 2 cores, and its 8/10 sits on the 80% line (docs/training.md, "The teach tool calls recipe",
# has every measured candidate).
_REASON = ("opt-in (TUNELAB_TOOLS_REAL=1): the test takes 8-15 min wall on 2 cores (train 353-868 s, serve 46-103 s; "
           "1 or 2 threads, load 3-6) and its adapter made 8/10 right calls, 8 exact (base 0/10) on 2026-12-03")
_OPT_IN = pytest.mark.skipif(not os.environ.get("TUNELAB_TOOLS_REAL"), reason=_REASON)

# The recipe (docs/training.md, "Teach tool calls"): measured choices, see there.
LAYERS = range(10, 18)  # LoRA on the last 8 of 18 layers (trainable_tokens still sends backward through all 18)
MODULES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
RECIPE = {"method": "lora", "lr": 2e-3, "epochs": 1, "micro_batch_size": 2, "grad_accum": 1,
          "warmup_steps": 0, "schedule": "cosine", "eval_split": 0, "seed": 0,
          "lora": {"rank": 16, "alpha": 32, "target_modules": [f"layers.{i}.{m}" for i in LAYERS for m in MODULES],
                   "trainable_tokens": ["template"]},  # Gemma 3 270M base's turn markers are untrained rows
          "data": {"cutoff_len": 1024}}  # rows run to ~440 tokens


def _train(model, out):
    from rich.console import Console

    from tunelab.config import load_config
    from tunelab.data.demo import tools_train_path
    from tunelab.train.config import TrainConfig
    from tunelab.train.trainer import train

    cfg = load_config(TrainConfig, None, {**RECIPE, "model": str(model), "datasets": [str(tools_train_path())],
                                          "output": str(out)})
    return train(cfg, console=Console(quiet=True))


@dataclass(frozen=True)
class Verdict:
    wants_calls: bool
    right: bool  # calls: expected names, schema-valid arguments; plain: no call
    exact: bool  # and the arguments equal the expected ones
    reply: str


def _args(text: str):
    try:
        return json.loads(text)
    except ValueError:  # a malformed call is a wrong answer, not an error
        return None


def _valid(schema: dict, args) -> bool:
    return isinstance(args, dict) and not list(jsonschema.Draft202012Validator(schema).iter_errors(args))


def _judge(row: dict, message) -> Verdict:
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in row["tools"]}
    want = [(c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in row["messages"][1].get("tool_calls") or []]
    got = [(c.function.name, _args(c.function.arguments)) for c in message.tool_calls or []]
    reply = f"{got} {message.content or ''}"[:120]
    if not want:
        return Verdict(False, not got, not got, reply)
    right = [n for n, _ in got] == [n for n, _ in want] and all(_valid(schemas[n], a) for n, a in got)
    return Verdict(True, right, right and got == want, reply)


def _ask(client: OpenAI, model: str, row: dict) -> Verdict:
    r = client.chat.completions.create(model=model, messages=row["messages"][:1], tools=row["tools"],
                                       tool_choice="auto", max_tokens=64, temperature=0)
    return _judge(row, r.choices[0].message)


def _summary(name: str, verdicts: list[Verdict]) -> tuple[float, str]:
    calls = [v for v in verdicts if v.wants_calls]
    plain = [v for v in verdicts if not v.wants_calls]
    rate = sum(v.right for v in calls) / len(calls)
    return rate, (f"{name}: right call {sum(v.right for v in calls)}/{len(calls)} ({rate:.0%}; exact arguments "
                  f"{sum(v.exact for v in calls)}), plain answer kept {sum(v.right for v in plain)}/{len(plain)}")


@_OPT_IN
def test_short_lora_teaches_the_served_adapter_to_call_tools(tmp_path):
    from tunelab.data.demo import tools_heldout_path
    from tunelab.store.resolve import resolve_model

    start = time.perf_counter()
    model = resolve_model(None)
    assert _train(model, tmp_path / "run").state == "finished"
    trained = time.perf_counter()
    rows = [json.loads(line) for line in tools_heldout_path().read_text().splitlines()]
    server = start_server(model, served_name="base", adapters={"tools": str(tmp_path / "run" / "adapter")})
    try:
        client = OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        jobs = [(name, row) for name in ("tools", "base") for row in rows]
        with ThreadPoolExecutor(len(jobs)) as pool:  # both models' requests in one engine batch
            verdicts = list(pool.map(lambda job: _ask(client, *job), jobs))
    finally:
        server.stop()
    tuned, tuned_line = _summary("adapter", verdicts[:len(rows)])
    base, base_line = _summary("base", verdicts[len(rows):])
    print(f"\n{tuned_line}\n{base_line}\ntrain {trained - start:.0f} s, serve + "
          f"{len(jobs)} requests {time.perf_counter() - trained:.0f} s")
    for (name, row), v in zip(jobs, verdicts):
        print(f"  {name:5} {'ok ' if v.right else 'BAD'} {row['messages'][0]['content']!r} -> {v.reply}")
    assert tuned >= 0.8 and tuned > base, (tuned_line, base_line)
