"""Command-line flags for every config key, on top of `tunelab.config` (one override parser).

Every key of a config dataclass may be given as `--key VALUE`, `--key=VALUE`, `key=VALUE`
(where the command takes positional overrides) or `--set key=VALUE`. One naming rule:
dashes and underscores are the same (`--max-steps` = `--max_steps`) and dots nest
(`--lora.rank 8`). Keys of a flat nested config work without their prefix too
(`--dtype` = `--engine.dtype`). An absent flag is absent from the namespace (default
SUPPRESS), so flags only carry what the user typed: CLI > YAML > defaults, for every key.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from tunelab.config import canonical, load_config, merge, parse_overrides, split_dict, split_list

T = TypeVar("T")
_DEST = "config:"  # namespace attribute prefix of generated flags: config:<kind>:<dotted key>
_BOOL_WORDS = {"1", "true", "yes", "on", "0", "false", "no", "off"}


@dataclasses.dataclass
class Leaf:
    """One settable key: its canonical dotted name, accepted spellings, type, doc and default."""

    key: str
    names: list[str]
    tp: Any
    doc: str
    default: Any


def config_leaves(cls: type, instance: Any = None, prefix: str = "", prefixes: tuple[str, ...] = ("",)) -> list[Leaf]:
    """Every scalar/list/dict key of `cls`, nested configs flattened to dotted keys."""
    instance = cls() if instance is None else instance
    hints = typing.get_type_hints(cls)
    out: list[Leaf] = []
    for f in dataclasses.fields(cls):
        tp, value, aliases = hints[f.name], getattr(instance, f.name), f.metadata.get("aliases", ())
        if dataclasses.is_dataclass(tp):
            inner = tuple(p + f.name + "." for p in prefixes)
            inner = (prefixes + inner) if f.metadata.get("flat") else inner
            out += config_leaves(tp, value, f"{prefix}{f.name}.", inner)
            continue
        names = [p + n for p in prefixes for n in (f.name, *aliases)]
        out.append(Leaf(prefix + f.name, names, tp, f.metadata.get("doc", ""), value))
    return out


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, yaml: bool = True,
                         positional: bool = False, extra_flags: dict[str, list[str]] | None = None) -> None:
    """`--config FILE`, `--set KEY=VALUE`, optional positional `key=value`s and a flag per key of `cls`."""
    if yaml:
        parser.add_argument("--config", "-c", metavar="FILE", help=f"YAML file of {cls.__name__} keys")
    parser.add_argument("--set", action="append", default=[], dest="config_set", metavar="KEY=VALUE",
                        help=f"any {cls.__name__} key as KEY=VALUE (repeatable)")
    if positional:
        parser.add_argument("overrides", nargs="*", metavar="key=value",
                            help=f"any {cls.__name__} key as key=value (each key is listed below with its default)")
    group = parser.add_argument_group(
        f"{cls.__name__} keys", "each as --key VALUE, --key=VALUE or --set key=VALUE; dashes = underscores, "
        "dots nest; lists as a,b or [a, b]; precedence: flags > YAML (--config) > defaults")
    for leaf in config_leaves(cls):
        _add_leaf(group, leaf, (extra_flags or {}).get(leaf.key, []))


def config_overrides(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The command line's values as a nested dict: key=value and --set items, then flags (flags win)."""
    items = list(getattr(args, "overrides", None) or []) + list(getattr(args, "config_set", None) or [])
    flags: dict[str, Any] = {}
    for dest, raw in vars(args).items():
        if dest.startswith(_DEST):
            kind, key = dest[len(_DEST):].split(":", 1)
            *parents, leaf = key.split(".")
            node = flags
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = _joined(kind, raw, key)
    return merge(canonical(cls, parse_overrides(items)), flags)


def config_from_args(cls: type[T], args: argparse.Namespace, extra: dict[str, Any] | None = None) -> T:
    """Defaults, then `--config` YAML, then the command line, then `extra` (command-specific flags)."""
    values = config_overrides(cls, args)
    if extra:
        values = merge(values, canonical(cls, extra))
    return load_config(cls, getattr(args, "config", None), values)


def expand_bool_flags(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`--flag` -> `--flag=true` and `--flag false` -> `--flag=false` for boolean keys, so a bare
    boolean flag never swallows the positional argument after it (`--enforce-eager MODEL`)."""
    bools = {s for s, a in parser._option_string_actions.items()  # noqa: SLF001
             if a.dest.startswith(f"{_DEST}bool:")}
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            return out + argv[i:]
        if token in bools:
            following = argv[i + 1] if i + 1 < len(argv) else ""
            is_word = following.strip().lower() in _BOOL_WORDS
            out.append(f"{token}={following if is_word else 'true'}")
            i += 2 if is_word else 1
            continue
        out.append(token)
        i += 1
    return out


def unknown_flag_message(flag: str, parser: argparse.ArgumentParser) -> str:
    """'unknown flag --x; did you mean --y?' against the flags `parser` accepts."""
    name = flag.split("=", 1)[0]
    known = [s for s, a in parser._option_string_actions.items()  # noqa: SLF001 - argparse has no public list
             if s.startswith("--") and a.help != argparse.SUPPRESS]
    close = difflib.get_close_matches(name.replace("_", "-"), known, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else f"; see `{parser.prog} --help`"
    return f"unknown flag '{name}'{hint}"


def _add_leaf(group: argparse._ArgumentGroup, leaf: Leaf, extra: list[str]) -> None:
    kind = _kind(leaf.tp)
    kwargs: dict[str, Any] = {"dest": f"{_DEST}{kind}:{leaf.key}", "default": argparse.SUPPRESS,
                              "metavar": _metavar(leaf.tp)}
    if kind == "bool":
        kwargs.update(nargs="?", const="true")
    elif kind in ("list", "dict"):
        kwargs["action"] = "append"
    shown = [n for n in leaf.names if "." not in n or n == leaf.key]
    visible = _unique([f"--{n.replace('_', '-')}" for n in shown] + list(extra))
    hidden = _unique([f"--{n}" for n in leaf.names] + [f"--{n.replace('_', '-')}" for n in leaf.names])
    hidden = [h for h in hidden if h not in visible]
    group.add_argument(*visible, help=_help(leaf), **kwargs)
    if hidden:
        group.add_argument(*hidden, help=argparse.SUPPRESS, **kwargs)


def _joined(kind: str, raw: Any, key: str) -> Any:
    """A repeated list flag concatenates, a repeated mapping flag merges."""
    if kind == "list":
        return [item for value in raw for item in split_list(value, key)]
    if kind == "dict":
        out: dict[str, Any] = {}
        for value in raw:
            out.update(split_dict(value, key))
        return out
    return raw


def _base(tp: Any) -> Any:
    """`X | None` -> X."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _kind(tp: Any) -> str:
    tp = _base(tp)
    if tp is bool:
        return "bool"
    if get_origin(tp) in (list, tuple) or tp in (list, tuple):
        return "list"
    if get_origin(tp) is dict or tp is dict:
        return "dict"
    return "value"


def _metavar(tp: Any) -> str:
    tp = _base(tp)
    if get_origin(tp) is Literal:
        return "{" + ",".join(map(str, get_args(tp))) + "}"
    names = {bool: "BOOL", int: "N", float: "X", str: "TEXT", Path: "PATH"}
    return names.get(tp, {"list": "A,B", "dict": "K=V,..."}.get(_kind(tp), "VALUE"))


def _help(leaf: Leaf) -> str:
    default = leaf.default
    if isinstance(default, (list, tuple)):
        shown = ",".join(map(str, default)) or "empty"
    elif isinstance(default, dict):
        shown = ",".join(f"{k}={v}" for k, v in default.items()) or "empty"
    elif default is None or default == "":
        if "default" in leaf.doc or "empty =" in leaf.doc:
            return leaf.doc.replace("%", "%%")  # the doc already says what "not set" means
        shown = "none"
    else:
        shown = str(default).lower() if isinstance(default, bool) else str(default)
    return f"{leaf.doc} (default: {shown})".replace("%", "%%")


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
