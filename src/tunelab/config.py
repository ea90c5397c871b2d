"""Typed configuration: one dataclass per concern, precedence CLI > YAML > defaults.

Declare fields with `opt(default, "one-line doc")`. `load_config` merges a YAML
file and `key=value` overrides into an instance, coercing strings to the field
types and rejecting unknown keys with the closest valid one. A field may carry
`aliases` (other accepted names), and a nested config field may be `flat`: its keys
are then accepted at the top level too (`dtype` for `engine.dtype`). Command-line
flags for every key come from `tunelab.config_flags`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from tunelab.errors import ConfigError

T = TypeVar("T")


def opt(default: Any, doc: str, *, aliases: tuple[str, ...] = (), flat: bool = False) -> Any:
    """A dataclass field with a default and a one-line doc shown in `--help` and errors.

    `aliases`: other names accepted for this key. `flat`: for a nested config, its keys
    are accepted without the prefix too (`dtype` = `engine.dtype`).
    """
    meta = {"doc": doc, "aliases": tuple(aliases), "flat": flat}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata=meta)
    if dataclasses.is_dataclass(default):  # an instance: a nested config with other defaults
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def require_positive(config: Any, *names: str) -> None:
    """Each named field of `config` must be >= 1 (counts, sizes, limits): a ValueError naming it."""
    for name in names:
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")


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
    for name, raw in canonical(cls, values, where).items():
        if name not in fields:
            raise ConfigError(_unknown_key(where + name, config_keys(cls, where), where))
        kwargs[name] = _coerce(hints[name], _with_default(fields[name], raw), where + name)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where.rstrip('.') or cls.__name__}: {err}") from None
    return obj


def _with_default(f: dataclasses.Field, raw: Any) -> Any:
    """A nested config given in part keeps its field's own default for the rest: chat's engine
    default `max_num_seqs=1` survives `--dtype fp32`."""
    if isinstance(raw, dict) and f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
        if dataclasses.is_dataclass(default):
            return merge(dataclasses.asdict(default), raw)
    return raw


def load_config(
    cls: type[T], yaml_path: str | Path | None = None, overrides: list[str] | dict | None = None
) -> T:
    """Defaults, then the YAML file, then command-line overrides (CLI > YAML > defaults)."""
    values: dict[str, Any] = canonical(cls, read_yaml(yaml_path)) if yaml_path else {}
    if overrides:
        extra = parse_overrides(overrides) if isinstance(overrides, list) else overrides
        values = merge(values, canonical(cls, extra))  # each layer canonical first: `dtype` beats YAML `engine.dtype`
    return build(cls, values)


def to_dict(obj: Any) -> dict[str, Any]:
    """A config as a plain nested dict, for saving the resolved config."""
    return dataclasses.asdict(obj)


def config_keys(cls: type, prefix: str = "") -> list[str]:
    """Every key `cls` accepts: fields, aliases, flat keys and dotted nested keys."""
    keys = [prefix + k for k in [*(f.name for f in dataclasses.fields(cls)), *_routes(cls)]]
    for name, nested in _nested(cls).items():
        keys += config_keys(nested, f"{prefix}{name}.")
    return keys


def canonical(cls: type, values: dict[str, Any], where: str = "") -> dict[str, Any]:
    """`values` with aliases and flat keys moved to their canonical nested place."""
    routes, nested = _routes(cls), _nested(cls)
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        _put(out, routes.get(name, (name,)), value, where + name)
    for name, value in out.items():
        if name in nested and isinstance(value, dict):
            out[name] = canonical(nested[name], value, f"{where}{name}.")
    return out


def _put(node: dict[str, Any], path: tuple[str, ...], value: Any, label: str) -> None:
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{label}: '{part}' is given as a value and as a mapping")
    leaf = path[-1]
    if isinstance(value, dict) and isinstance(node.get(leaf), dict):
        for key, sub in value.items():
            _put(node[leaf], (str(key).replace("-", "_"),), sub, f"{label}.{key}")
    elif leaf in node:
        raise ConfigError(f"{label}: given twice (under two of its names)")
    else:
        node[leaf] = value


def _nested(cls: type) -> dict[str, type]:
    """Field name -> nested config class, for the fields that hold one."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def _routes(cls: type) -> dict[str, tuple[str, ...]]:
    """Other accepted name -> canonical path: field aliases, and the keys of flat nested configs."""
    own = {f.name for f in dataclasses.fields(cls)}
    routes: dict[str, tuple[str, ...]] = {}
    nested = _nested(cls)
    for f in dataclasses.fields(cls):
        routes.update({alias: (f.name,) for alias in f.metadata.get("aliases", ())})
        if f.metadata.get("flat") and f.name in nested:
            inner = nested[f.name]
            routes.update({sub.name: (f.name, sub.name) for sub in dataclasses.fields(inner)})
            routes.update({alias: (f.name, *path) for alias, path in _routes(inner).items()})
    clash = own & set(routes)
    if clash:
        raise TypeError(f"{cls.__name__}: {', '.join(sorted(clash))} is both a field and an alias")
    return routes


def _unknown_key(key: str, valid: list[str], where: str) -> str:
    name = key[len(where):]
    local = [k[len(where):] for k in valid if k.startswith(where)] or valid
    close = difflib.get_close_matches(name, local, n=1, cutoff=0.5)
    shown = ", ".join(k for k in local if "." not in k)
    hint = f"; did you mean '{where}{close[0]}'?" if close else f"; valid keys: {shown}"
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
    if origin in (list, tuple) or tp in (list, tuple):
        items = raw if isinstance(raw, (list, tuple)) else split_list(raw, key)
        inner = args[0] if args else Any
        return [_coerce(inner, x, f"{key}[{i}]") for i, x in enumerate(items)]
    if origin is dict or tp is dict:
        return dict(raw) if isinstance(raw, dict) else split_dict(raw, key)
    return _scalar(tp, raw, key)


def split_list(raw: Any, key: str = "value") -> list[Any]:
    """A command-line list: YAML flow `[a, b]`, or comma-separated `a,b`."""
    if not isinstance(raw, str):
        return [raw]
    text = raw.strip()
    if text.startswith("["):
        value = _flow(text, key, "list")
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list like [a, b], got {raw!r}")
        return value
    return [x.strip() for x in text.split(",") if x.strip()]


def split_dict(raw: Any, key: str = "value") -> dict[str, Any]:
    """A command-line mapping: YAML flow `{a: 1, b: 2}`, or `a=1,b=2`."""
    text = str(raw).strip()
    if text.startswith("{"):
        value = _flow(text, key, "mapping")
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping like {{a: 1}}, got {raw!r}")
        return value
    pairs = [item.partition("=") for item in split_list(text, key)]
    bad = [k for k, sep, v in pairs if not sep or not k.strip()]
    if bad or not text:
        raise ConfigError(f"{key}: expected a mapping like a=1,b=2 or {{a: 1}}, got {raw!r}")
    return {k.strip(): v.strip() for k, _, v in pairs}


def _flow(text: str, key: str, kind: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"{key}: invalid {kind} {text!r} (write it as YAML, e.g. [a, b] or {{a: 1}})") from None


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
