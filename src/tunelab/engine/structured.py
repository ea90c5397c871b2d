"""What a constrained request's output must match: vLLM's `StructuredOutputsParams`. No torch.

Exactly one of `json` (a JSON schema), `json_object`, `regex`, `choice` or `grammar` (a Lark
grammar in llguidance's dialect, which embeds JSON schemas as `%json {...}`) is set. The
engine's sampler enforces it with a token mask per sequence (`engine/constraints.py`); the
grammar library is llguidance (chosen for its per-step mask cost: docs/benchmarks.md).
`check()` compiles the grammar without a tokenizer, so a bad schema is a 400 at the edge.
"""

from __future__ import annotations

import dataclasses
import json as jsonlib
from typing import Any

from tunelab.errors import InvalidRequest

INSTALL_HINT = "constrained decoding needs llguidance: pip install llguidance"
COMPACT = {"whitespace_flexible": False}  # JSON without free whitespace: fewer tokens, no runaway blank lines


@dataclasses.dataclass(frozen=True)
class StructuredOutputsParams:
    """One output constraint (vLLM's names); `param` is the request field it came from, for errors."""

    json: dict | str | None = None  # a JSON schema (object or its JSON text)
    json_object: bool = False  # any JSON object
    regex: str | None = None
    choice: tuple[str, ...] | None = None  # one of these strings exactly
    grammar: str | None = None  # Lark (llguidance dialect)
    param: str = dataclasses.field(default="structured_outputs", compare=False)

    def __post_init__(self) -> None:
        given = [k for k in ("json", "regex", "choice", "grammar") if getattr(self, k) is not None]
        given += ["json_object"] if self.json_object else []
        if len(given) != 1:
            raise InvalidRequest(f"{self.param} needs exactly one of json, json_object, regex, choice, grammar; "
                                 f"got {', '.join(given) or 'none'}", param=self.param)
        if self.choice is not None:
            object.__setattr__(self, "choice", tuple(self.choice))

    def grammar_text(self) -> str:
        """The constraint as an llguidance grammar (serialized)."""
        matcher = _llguidance().LLMatcher
        if self.json is not None:
            return matcher.grammar_from_json_schema(_schema(self.json, self.param), defaults=COMPACT)
        if self.json_object:
            return matcher.grammar_from_json_schema({"type": "object"}, defaults=COMPACT)
        if self.regex is not None:
            return matcher.grammar_from_regex(self.regex)
        if self.choice is not None:
            return matcher.grammar_from_lark("start: " + " | ".join(jsonlib.dumps(c) for c in self.choice))
        return matcher.grammar_from_lark(self.grammar)

    def check(self) -> str:
        """The compiled grammar; an invalid one is an InvalidRequest naming `param`. Checked once per
        object (the edge checks it, the engine asks again per sequence)."""
        checked = self.__dict__.get("_checked")
        if checked is None:
            checked = self._compile_checked()
            object.__setattr__(self, "_checked", checked)  # frozen: a memo, not a field
        return checked

    def _compile_checked(self) -> str:
        try:
            text = self.grammar_text()
            error = _llguidance().LLMatcher.validate_grammar(text)
        except (ValueError, TypeError, RuntimeError) as err:
            error = str(err)
        if error:
            raise InvalidRequest(f"{self.param} is not a valid constraint: {error.strip()}", param=self.param)
        return text

    def to_dict(self) -> dict[str, Any]:
        """The set field only, in vLLM's names."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "param" and v not in (None, False)}


def _schema(value: dict | str, param: str) -> dict:
    """A schema given as text must be JSON; an object is taken as it is."""
    if isinstance(value, dict):
        return value
    try:
        schema = jsonlib.loads(value)
    except ValueError as err:
        raise InvalidRequest(f"{param} is not valid JSON: {err}", param=param) from None
    if not isinstance(schema, (dict, bool)):
        raise InvalidRequest(f"{param} must be a JSON schema object", param=param)
    return schema


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError:
        raise InvalidRequest(INSTALL_HINT, param="structured_outputs") from None
    return llguidance
