"""The base of every request schema: a field is served, accepted on purpose, or a 400 naming it.

Nothing a client sends is dropped silently. A field the schema declares is validated as usual;
one `field_policy.TABLE` lists is accepted on purpose (and dropped here) or rejected saying why;
any other is "unsupported field 'x'", with the closest known name. A schema for several kinds of
item (a part's `type`, a message's `role`) says in `Kinds` which declared fields each kind carries:
one set on a kind that does not carry it (a text block's `source`) is that same 400. The errors
carry the field name in `ctx["field"]`, so `serve/errors.py` can name its full path (`messages.0.foo`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from tunelab.serve.field_policy import TABLE, Policy, unused

UNSUPPORTED_FIELD = "unsupported_field"  # error types whose ctx["field"] extends the location
UNSUPPORTED_VALUE = "unsupported_value"


@dataclass(frozen=True)
class Kinds:
    """Which declared fields each kind of item carries; the rest, set, are a 400 (never dropped)."""

    key: str  # the field naming the kind: "type" (parts, blocks) or "role" (messages)
    noun: str  # what one item is called in the 400: "part", "block", "message"
    common: frozenset[str]  # the fields every kind carries
    own: Mapping[str, frozenset[str]]  # kind -> the fields only it carries

    def stray(self, kind: Any, values: Mapping[str, Any]) -> tuple[str, str] | None:
        """(field, the 400's reason) of the first declared field in `values` set on a `kind` item that
        does not carry it (null or empty is "not used"); None when all fit or `kind` is not listed
        (the kind's own check names it)."""
        if not isinstance(kind, str) or kind not in self.own:
            return None
        carried = self.common | self.own[kind] | {self.key}
        name = next((n for n, v in values.items() if n not in carried and not unused(v)), None)
        return None if name is None else (name, f": a '{kind}' {self.noun} has no {name}")


class RequestModel(BaseModel):
    """A request schema that rejects every field it does not serve or accept on purpose."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # Infinity/NaN: a 400
    KINDS: ClassVar[Kinds | None] = None  # a schema for several kinds of item: each kind's fields

    @model_validator(mode="before")
    @classmethod
    def _known_fields_only(cls, data: Any) -> Any:
        """Check the raw keys against the declared fields, the policy table and the kind's fields."""
        if not isinstance(data, dict):
            return data
        cls.check_raw(data)
        declared, policies = declared_fields(cls), policies_of(cls)
        for name, value in data.items():
            if name not in declared:
                _check_undeclared(cls, name, value, policies.get(name))
        values = {name: value for name, value in data.items() if name in declared}
        stray = cls.KINDS.stray(values.get(cls.KINDS.key), values) if cls.KINDS else None
        if stray:
            raise unsupported_field(*stray)
        return values

    @classmethod
    def check_raw(cls, data: dict[str, Any]) -> None:
        """A hook for checks that must come before the field check (e.g. a part's type)."""


def _check_undeclared(cls: type[BaseModel], name: str, value: Any, policy: Policy | None) -> None:
    if policy is None:
        raise unsupported_field(name, _suggestion(cls, name))
    if not policy.allows(value):
        raise unsupported_field(name, f": {policy.why}")


def unsupported_field(name: Any, detail: str = "") -> PydanticCustomError:
    """The error for a field that is not served; `detail` follows the name (a reason or a hint)."""
    return PydanticCustomError(UNSUPPORTED_FIELD, "unsupported field '{field}'{detail}",
                               {"field": str(name), "detail": detail})


def unsupported_value(name: str, message: str) -> PydanticCustomError:
    """The error for a served field holding a value that is not served (named as `name`)."""
    return PydanticCustomError(UNSUPPORTED_VALUE, "{message}", {"field": name, "message": message})


def _suggestion(cls: type[BaseModel], name: Any) -> str:
    known = sorted(declared_fields(cls) | set(policies_of(cls)))
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.7)
    return f"; did you mean '{close[0]}'?" if close else ""


@cache
def declared_fields(cls: type[BaseModel]) -> frozenset[str]:
    """Names the schema declares (aliases too)."""
    fields = cls.model_fields
    return frozenset(fields) | {f.alias for f in fields.values() if f.alias}


@cache
def policies_of(cls: type[BaseModel]) -> dict[str, Policy]:
    """The table's entries for `cls` and its bases (a subclass's entry wins)."""
    merged: dict[str, Policy] = {}
    for klass in reversed(cls.__mro__):
        merged.update(TABLE.get(klass.__name__, {}))
    return merged
