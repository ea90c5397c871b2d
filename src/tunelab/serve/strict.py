"""The base of every request schema: a field is served, accepted on purpose, or a 400 naming it.

Nothing a client sends is dropped silently. A field the schema declares is validated as usual;
one `field_policy.TABLE` lists is accepted on purpose (and dropped here) or rejected saying why;
any other is "unsupported field 'x'", with the closest known name. The errors carry the field
name in `ctx["field"]`, so `serve/errors.py` can name its full path (`messages.0.foo`).
"""

from __future__ import annotations

import difflib
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from tunelab.serve.field_policy import TABLE, Policy

UNSUPPORTED_FIELD = "unsupported_field"  # error types whose ctx["field"] extends the location
UNSUPPORTED_VALUE = "unsupported_value"


class RequestModel(BaseModel):
    """A request schema that rejects every field it does not serve or accept on purpose."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # Infinity/NaN: a 400

    @model_validator(mode="before")
    @classmethod
    def _known_fields_only(cls, data: Any) -> Any:
        """Check the raw keys against the declared fields and the policy table."""
        if not isinstance(data, dict):
            return data
        cls.check_raw(data)
        declared, policies = declared_fields(cls), policies_of(cls)
        for name, value in data.items():
            if name not in declared:
                _check_undeclared(cls, name, value, policies.get(name))
        return {name: value for name, value in data.items() if name in declared}

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
