"""GRPO reward functions: named in the config, loaded before the model, checked at every call.

    grpo.reward_funcs: [format, accuracy, my_pkg.rewards:brevity, ./my_rewards.py:score, runs/my-rm]

A function is called as TRL calls one, with keyword arguments only:
`f(prompts=..., completions=..., completion_ids=..., **columns) -> list[float]`, one reward per
completion (None = unscorable, as in TRL). `prompts` are message lists, `completions` strings.
It gets only the arguments it names, or all of them when it takes `**kwargs`. The data columns
it names are its inputs: a prompt row may carry those columns and no others (data/prompts.py),
so a column is either read by some reward function or is an error, never dropped silently.
An entry naming a directory is a trained reward model (stage=rm; train/grpo_reward_model.py).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import math
import numbers
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from tunelab.errors import RewardFunctionError

CALL_ARGS = ("prompts", "completions", "completion_ids")  # what every call offers besides data columns
_ANSWER = re.compile(r"<answer>\s*(-?\d+(?:\.\d+)?)\s*</answer>")  # a number between the tags


def format_reward(completions: list[str], **_: Any) -> list[float]:
    """1.0 when the completion gives a number as <answer>N</answer>, else 0.0."""
    return [1.0 if _ANSWER.search(c) else 0.0 for c in completions]


def accuracy_reward(completions: list[str], answer: list[Any], **_: Any) -> list[float]:
    """1.0 when the number in the last <answer>N</answer> equals the row's `answer`, else 0.0."""
    found = [_ANSWER.findall(c) for c in completions]
    return [1.0 if f and _same_number(f[-1], a) else 0.0 for f, a in zip(found, answer)]


def _same_number(text: str, answer: Any) -> bool:
    try:
        return float(text) == float(str(answer).strip())
    except ValueError:
        return False


BUILTINS: dict[str, Callable[..., list[float]]] = {"format": format_reward, "accuracy": accuracy_reward}


@dataclasses.dataclass
class RewardFunction:
    """A loaded reward function: its name as configured and the data columns it reads."""

    name: str
    fn: Callable[..., Sequence[Any]]
    inputs: tuple[str, ...]  # data columns named as parameters
    required: tuple[str, ...]  # ... of which have no default
    takes_all: bool  # has **kwargs: gets every column
    label: str = ""  # its name in metrics (rewards/<label>/mean): the function's own name, as TRL logs it

    def __call__(self, prompts: list, completions: list[str], completion_ids: list[list[int]],
                 columns: dict[str, list]) -> list[float]:
        """Rewards for the completions, checked: one finite number (or None -> NaN) per completion."""
        offered = {"prompts": prompts, "completions": completions, "completion_ids": completion_ids, **columns}
        kwargs = offered if self.takes_all else {k: v for k, v in offered.items() if k in (*CALL_ARGS, *self.inputs)
                                                 and k in self._params()}
        try:
            out = self.fn(**kwargs)
        except Exception as err:  # noqa: BLE001 - a user function: any error is reported naming it
            raise RewardFunctionError(f"reward function '{self.name}' raised {type(err).__name__}: {err}") from err
        return self._checked(out, len(completions))

    def _params(self) -> set[str]:
        return set(inspect.signature(self.fn).parameters)

    def _checked(self, out: Any, expected: int) -> list[float]:
        if isinstance(out, (str, bytes)) or not hasattr(out, "__len__"):
            raise RewardFunctionError(f"reward function '{self.name}' returned {type(out).__name__}; "
                                      f"expected a list of {expected} numbers, one per completion")
        if len(out) != expected:
            raise RewardFunctionError(f"reward function '{self.name}' returned {len(out)} rewards for "
                                      f"{expected} completions; return one per completion")
        return [self._number(v, i) for i, v in enumerate(out)]

    def _number(self, value: Any, index: int) -> float:
        if value is None:
            return math.nan  # unscorable, as in TRL: left out of the group baseline
        if isinstance(value, numbers.Real) or hasattr(value, "item"):
            number = float(value)
            if math.isfinite(number):
                return number
        raise RewardFunctionError(f"reward function '{self.name}' returned {value!r} for completion {index}; "
                                  "expected a finite number (or None for unscorable)")


def load_reward_funcs(specs: Sequence[str]) -> list[RewardFunction]:
    """Each configured function, imported now (before any model loads); errors name the entry."""
    funcs = [_describe(spec, _resolve(spec)) for spec in specs]
    for f in funcs:
        f.label = getattr(f.fn, "__name__", f.name) if f.name not in BUILTINS else f.name
    labels = [f.label for f in funcs]
    for f in funcs:
        if labels.count(f.label) > 1:  # two functions of one name: the configured entries tell them apart
            f.label = f.name
    return funcs


def score_completions(funcs: Sequence[RewardFunction], examples: Sequence[Any], texts: list[str],
                      token_ids: list[list[int]], repeat: int = 1) -> list[list[float]]:
    """Rewards [F][N] of completions (`repeat` per example, example-major), each function checked;
    `examples` carry `messages` and `columns` (data/prompts.PromptExample)."""
    prompts = [ex.messages for ex in examples for _ in range(repeat)]
    names = examples[0].columns if examples else {}
    columns = {c: [ex.columns.get(c) for ex in examples for _ in range(repeat)] for c in names}
    return [f(prompts, texts, token_ids, columns) for f in funcs]


def reward_inputs(funcs: Sequence[RewardFunction]) -> dict[str, list[str]]:
    """Data column -> the functions that read it."""
    out: dict[str, list[str]] = {}
    for f in funcs:
        for column in f.inputs:
            out.setdefault(column, []).append(f.name)
    return out


def _resolve(spec: str) -> Callable:
    if spec in BUILTINS:
        return BUILTINS[spec]
    from tunelab.train.grpo_reward_model import RewardModelScorer, names_reward_model

    if names_reward_model(spec):
        return RewardModelScorer(spec)
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise RewardFunctionError(f"grpo.reward_funcs: '{spec}' is neither a built-in ({', '.join(BUILTINS)}) "
                                  "nor 'module:function' / 'file.py:function' nor a reward-model run or directory")
    module = _import_file(where, spec) if where.endswith(".py") else _import_module(where, spec)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise RewardFunctionError(f"grpo.reward_funcs: '{spec}': {where} has no function '{name}'")
    return fn


def _import_module(name: str, spec: str):
    try:
        return importlib.import_module(name)
    except Exception as err:  # noqa: BLE001 - ImportError, or the module's own error at import
        raise RewardFunctionError(f"grpo.reward_funcs: cannot import '{spec}': {type(err).__name__}: {err}") from None


def _import_file(path: str, spec: str):
    file = Path(path).expanduser()
    if not file.is_file():
        raise RewardFunctionError(f"grpo.reward_funcs: cannot import '{spec}': no file {file}")
    module_name = f"tunelab_reward_{abs(hash(str(file.resolve())))}"
    loader = importlib.util.spec_from_file_location(module_name, file)
    module = importlib.util.module_from_spec(loader)
    sys.modules[module_name] = module
    try:
        loader.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - the file's own error at import
        sys.modules.pop(module_name, None)
        raise RewardFunctionError(f"grpo.reward_funcs: cannot import '{spec}': {type(err).__name__}: {err}") from None
    return module


def _describe(name: str, fn: Callable) -> RewardFunction:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        raise RewardFunctionError(f"grpo.reward_funcs: '{name}' has no inspectable signature") from None
    kinds = inspect.Parameter
    named = [p for p in params.values() if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)]
    positional_only = [p.name for p in params.values() if p.kind == kinds.POSITIONAL_ONLY]
    if positional_only:
        raise RewardFunctionError(f"grpo.reward_funcs: '{name}' takes positional-only {positional_only}; "
                                  "reward functions are called with keyword arguments")
    inputs = tuple(p.name for p in named if p.name not in CALL_ARGS)
    required = tuple(p.name for p in named if p.name not in CALL_ARGS and p.default is inspect.Parameter.empty)
    takes_all = any(p.kind == kinds.VAR_KEYWORD for p in params.values())
    return RewardFunction(name, fn, inputs, required, takes_all)
