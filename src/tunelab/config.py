"""Typed configuration: one dataclass per concern, precedence CLI > YAML > defaults.

Declare fields with `opt(default, "one-line doc")`. `load_config` merges a YAML
file and `key=value` overrides into an instance, coercing strings to the field
types and rejecting unknown keys with the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from tunelab.errors import ConfigError

T = TypeVar("T")


def opt(default: Any, doc: str) -> Any:
    """A dataclass field with a default and a one-line doc shown in `--help` and errors."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"doc": doc})
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata={"doc": doc})
    return dataclasses.field(default=default, metadata={"doc": doc})


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> one-line doc, for printing help."""
    return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ['a=1', 'lora.rank=8'] into a nested dict of raw strings."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"expected key=value, got '{item}'")
        key, value = item.split("=", 1)
        node = out
        *parents, leaf = key.strip().replace("-", "_").split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, naming the file in any error."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge two nested dicts; values in `top` win."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def build(cls: type[T], values: dict[str, Any], where: str = "") -> T:
    """Instantiate dataclass `cls` from a nested dict, coercing and validating every key."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        name = str(key).replace("-", "_")
        if name not in fields:
            raise ConfigError(_unknown_key(where + name, list(fields), where))
        kwargs[name] = _coerce(hints[name], raw, where + name)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where.rstrip('.') or cls.__name__}: {err}") from None
    return obj


def load_config(
    cls: type[T], yaml_path: str | Path | None = None, overrides: list[str] | dict | None = None
) -> T:
    """Defaults, then the YAML file, then command-line overrides (CLI > YAML > defaults)."""
    values: dict[str, Any] = read_yaml(yaml_path) if yaml_path else {}
    if overrides:
        extra = parse_overrides(overrides) if isinstance(overrides, list) else overrides
        values = merge(values, extra)
    return build(cls, values)


def to_dict(obj: Any) -> dict[str, Any]:
    """A config as a plain nested dict, for saving the resolved config."""
    return dataclasses.asdict(obj)


def _unknown_key(key: str, valid: list[str], where: str) -> str:
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{where}{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
    return f"unknown config key '{key}'{hint}"


def _coerce(tp: Any, raw: Any, key: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, raw, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {raw!r}")
    if origin is Literal:
        if raw in args or str(raw) in [str(a) for a in args]:
            return next(a for a in args if str(a) == str(raw))
        raise ConfigError(f"{key}: {raw!r} is not one of {', '.join(map(str, args))}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(raw, dict):
            raise ConfigError(f"{key}: expected a mapping")
        return build(tp, raw, where=key + ".")
    if origin in (list, tuple):
        items = raw if isinstance(raw, (list, tuple)) else _split_list(raw)
        inner = args[0] if args else str
        return [_coerce(inner, x, f"{key}[{i}]") for i, x in enumerate(items)]
    if origin is dict:
        if not isinstance(raw, dict):
            raise ConfigError(f"{key}: expected a mapping")
        return dict(raw)
    return _scalar(tp, raw, key)


def _split_list(raw: Any) -> list[Any]:
    if isinstance(raw, str):
        return [x.strip() for x in raw.split(",") if x.strip()]
    return [raw]


def _scalar(tp: Any, raw: Any, key: str) -> Any:
    if tp is Any:
        return raw
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {raw!r}")
    if tp in (int, float):
        if isinstance(raw, bool):
            raise ConfigError(f"{key}: expected a number, got {raw!r}")
        try:
            value = tp(float(raw)) if tp is int and isinstance(raw, str) and "e" in raw.lower() else tp(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected {tp.__name__}, got {raw!r}") from None
        if tp is int and isinstance(raw, float) and raw != int(raw):
            raise ConfigError(f"{key}: expected an integer, got {raw!r}")
        return value
    if tp is str:
        if isinstance(raw, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {type(raw).__name__}")
        return str(raw)
    if tp is Path:
        return Path(str(raw))
    return raw
