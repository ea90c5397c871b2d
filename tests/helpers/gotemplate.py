"""A small evaluator of the Go text/template subset Ollama's chat templates use, for tests.

Covered: text and `{{ }}` actions with `{{-`/`-}}` trimming; `if`/`else if`/`else`/`end`;
`range` over a list with `$i, $x :=`, `$x :=` or neither (dot is the element); `continue`;
variables (`$x := ..`, `$x = ..`, `$`, `$x.Field`) scoped per block as in Go; fields
`.A.B`; parenthesized pipelines; string/int/bool literals; and the functions eq, ne, and,
or, not, len, slice, index, print and Ollama's json. Truth is Go's: false, 0, "", nil and
empty lists/maps are false; a struct (`Struct`) is always true. Printing a value calls its
`go_string()` when it has one (Ollama's String() methods on tools and arguments), else
Go's fmt. A missing field is an error, as it is for Go structs.

Its fidelity is checked against Ollama's own expected renders (tests/assets/ollama).
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'\s*(\(|\)|"(?:\\.|[^"\\])*"|`[^`]*`|:=|=|,|\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*'
                    r"|\.[A-Za-z0-9_.]*|-?\d+|[A-Za-z_][A-Za-z0-9_]*)")
_WS = " \t\r\n"


class Struct(dict):
    """A Go struct: fields by name, always true, printed by `printer` when given."""

    def __init__(self, fields: dict, printer: Callable[[Any], str] | None = None):
        super().__init__(fields)
        self.printer = printer

    def go_string(self) -> str:
        return self.printer(self) if self.printer else "{" + " ".join(_fmt(v) for v in self.values()) + "}"


class Map(dict):
    """A Go map printed by `printer` (Ollama's arguments print as JSON)."""

    def __init__(self, items: dict, printer: Callable[[Any], str]):
        super().__init__(items)
        self.printer = printer

    def go_string(self) -> str:
        return self.printer(self)


class GoList(list):
    """A Go slice printed by `printer` (Ollama's tool list prints as JSON)."""

    def __init__(self, items: list, printer: Callable[[Any], str] | None = None):
        super().__init__(items)
        self.printer = printer

    def go_string(self) -> str:
        return self.printer(self) if self.printer else "[" + " ".join(_fmt(v) for v in self) + "]"


def render(source: str, data: Any, funcs: dict[str, Callable] | None = None) -> str:
    """Execute `source` on `data` (dicts for maps and structs, lists for slices)."""
    nodes = parse(lex(source))
    out: list[str] = []
    _Exec({**_FUNCS, **(funcs or {})}, data, out).block(nodes, data, [{"$": data}])
    return "".join(out)


class _Continue(Exception):
    pass


def lex(source: str) -> list[tuple[str, str]]:
    """[(kind, text)]: 'text' pieces (already trimmed) and 'action' bodies."""
    items: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for m in _ACTION.finditer(source):
        text = source[pos:m.start()]
        if trim_next:
            text = text.lstrip(_WS)
        if m.group(1):
            text = text.rstrip(_WS)
        items.append(("text", text))
        items.append(("action", m.group(2).strip()))
        pos, trim_next = m.end(), bool(m.group(3))
    tail = source[pos:]
    items.append(("text", tail.lstrip(_WS) if trim_next else tail))
    return [i for i in items if i != ("text", "")]


def parse(items: list[tuple[str, str]]) -> list:
    """A tree: ('text', s) | ('print', expr) | ('set', name, expr, declare) | ('if', [(cond, body)], else)
    | ('range', vars, expr, body, else) | ('continue',)."""
    stack: list[list] = [[]]
    frames: list[dict] = []
    for kind, text in items:
        if kind == "text":
            stack[-1].append(("text", text))
            continue
        word = text.split(None, 1)[0] if text else ""
        rest = text[len(word):].strip()
        if word == "if":
            frames.append({"kind": "if", "branches": [[rest, []]], "else": None})
            stack.append(frames[-1]["branches"][0][1])
        elif word == "range":
            names, expr = _range_vars(rest)
            frames.append({"kind": "range", "vars": names, "expr": expr, "body": [], "else": None})
            stack.append(frames[-1]["body"])
        elif word == "else":
            stack.pop()
            frame = frames[-1]
            if rest.startswith("if "):
                frame["branches"].append([rest[3:].strip(), []])
                stack.append(frame["branches"][-1][1])
            else:
                frame["else"] = []
                stack.append(frame["else"])
        elif word == "end":
            stack.pop()
            frame = frames.pop()
            if frame["kind"] == "if":
                node = ("if", [(c, b) for c, b in frame["branches"]], frame["else"])
            else:
                node = ("range", frame["vars"], frame["expr"], frame["body"], frame["else"])
            stack[-1].append(node)
        elif word == "continue":
            stack[-1].append(("continue",))
        elif re.match(r"^\$[A-Za-z0-9_]*\s*(:=|=)", text):
            name, op, expr = re.match(r"^(\$[A-Za-z0-9_]*)\s*(:=|=)\s*(.*)$", text, re.S).groups()
            stack[-1].append(("set", name, expr, op == ":="))
        else:
            stack[-1].append(("print", text))
    assert len(stack) == 1 and not frames, "unbalanced template"
    return stack[0]


def _range_vars(rest: str) -> tuple[list[str], str]:
    m = re.match(r"^(\$[A-Za-z0-9_]*)\s*(?:,\s*(\$[A-Za-z0-9_]*))?\s*:=\s*(.*)$", rest, re.S)
    if not m:
        return [], rest
    names = [m.group(1)] + ([m.group(2)] if m.group(2) else [])
    return names, m.group(3)


class _Exec:
    def __init__(self, funcs: dict, root: Any, out: list[str]):
        self.funcs, self.root, self.out = funcs, root, out

    def block(self, nodes: list, dot: Any, scopes: list[dict]) -> None:
        scopes = scopes + [{}]
        for node in nodes:
            kind = node[0]
            if kind == "text":
                self.out.append(node[1])
            elif kind == "print":
                self.out.append(_fmt(self.expr(node[1], dot, scopes)))
            elif kind == "set":
                self._set(node, dot, scopes)
            elif kind == "if":
                self._if(node, dot, scopes)
            elif kind == "range":
                self._range(node, dot, scopes)
            elif kind == "continue":
                raise _Continue

    def _set(self, node: tuple, dot: Any, scopes: list[dict]) -> None:
        _, name, expr, declare = node
        value = self.expr(expr, dot, scopes)
        if declare:
            scopes[-1][name] = value
            return
        for scope in reversed(scopes):
            if name in scope:
                scope[name] = value
                return
        raise KeyError(f"undefined variable {name}")

    def _if(self, node: tuple, dot: Any, scopes: list[dict]) -> None:
        for cond, body in node[1]:
            if truth(self.expr(cond, dot, scopes)):
                self.block(body, dot, scopes)
                return
        if node[2] is not None:
            self.block(node[2], dot, scopes)

    def _range(self, node: tuple, dot: Any, scopes: list[dict]) -> None:
        _, names, expr, body, other = node
        items = self.expr(expr, dot, scopes)
        pairs = sorted(items.items()) if isinstance(items, dict) else list(enumerate(items or []))  # Go: sorted keys
        if not pairs and other is not None:
            self.block(other, dot, scopes)
        for key, value in pairs:
            bound = {names[0]: value} if len(names) == 1 else dict(zip(names, (key, value)))
            try:
                self.block(body, value, scopes + [bound])
            except _Continue:
                continue

    def expr(self, text: str, dot: Any, scopes: list[dict]) -> Any:
        tokens = [t for t in _TOKEN.findall(text) if t]
        value, rest = self._command(tokens, dot, scopes)
        assert not rest, f"unparsed: {rest} in {text!r}"
        return value

    def _command(self, tokens: list[str], dot: Any, scopes: list[dict]) -> tuple[Any, list[str]]:
        """A function call with its arguments, or one operand; stops at ')'."""
        if tokens and tokens[0] in self.funcs:
            name, tokens = tokens[0], tokens[1:]
            args = []
            while tokens and tokens[0] != ")":
                arg, tokens = self._operand(tokens, dot, scopes)
                args.append(arg)
            return self.funcs[name](*args), tokens
        return self._operand(tokens, dot, scopes)

    def _operand(self, tokens: list[str], dot: Any, scopes: list[dict]) -> tuple[Any, list[str]]:
        tok, tokens = tokens[0], tokens[1:]
        if tok == "(":
            value, tokens = self._command(tokens, dot, scopes)
            assert tokens and tokens[0] == ")"
            tokens = tokens[1:]
            if tokens and tokens[0].startswith(".") and tokens[0] != ".":  # (pipeline).Field
                value, tokens = _fields(value, tokens[0]), tokens[1:]
            return value, tokens
        if tok.startswith('"'):
            return json.loads(tok), tokens
        if tok.startswith("`"):
            return tok[1:-1], tokens
        if tok in ("true", "false"):
            return tok == "true", tokens
        if re.fullmatch(r"-?\d+", tok):
            return int(tok), tokens
        if tok.startswith("$"):
            name, _, path = tok.partition(".")
            value = _lookup(name, scopes)
            return (_fields(value, "." + path) if path else value), tokens
        if tok.startswith("."):
            return (dot if tok == "." else _fields(dot, tok)), tokens
        if tok == "nil":
            return None, tokens
        raise ValueError(f"unknown token {tok!r}")


def _lookup(name: str, scopes: list[dict]) -> Any:
    for scope in reversed(scopes):
        if name in scope:
            return scope[name]
    raise KeyError(f"undefined variable {name}")


def _fields(value: Any, path: str) -> Any:
    for name in path.strip(".").split("."):
        if not isinstance(value, dict) or (name not in value and not isinstance(value, Map)):
            raise KeyError(f"can't evaluate field {name} in {type(value).__name__}")
        value = value.get(name)
    return value


def truth(value: Any) -> bool:
    """Go's template truth."""
    if isinstance(value, Struct):
        return True
    return bool(value)


def _fmt(value: Any) -> str:
    """Go's fmt.Sprint for the values templates print."""
    if hasattr(value, "go_string"):
        return value.go_string()
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _eq(a: Any, *bs: Any) -> bool:
    return any(a == b for b in bs)


def _and(*args: Any) -> Any:
    for a in args:
        if not truth(a):
            return a
    return args[-1]


def _or(*args: Any) -> Any:
    for a in args:
        if truth(a):
            return a
    return args[-1]


def _print(*args: Any) -> str:
    """fmt.Sprint: a space between operands when neither is a string."""
    out = ""
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out += " "
        out += _fmt(a)
    return out


def _index(value: Any, *keys: Any) -> Any:
    for k in keys:
        value = value[k]
    return value


_FUNCS: dict[str, Callable] = {
    "eq": _eq, "ne": lambda a, b: a != b, "and": _and, "or": _or, "not": lambda a: not truth(a),
    "len": len, "slice": lambda x, *ij: x[ij[0]:ij[1]] if len(ij) == 2 else x[ij[0]:] if ij else x,
    "index": _index, "print": _print,
    "json": lambda v: go_json(v),
}


def go_json(value: Any) -> str:
    """Go's json.Marshal: compact, and <, > and & escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def ollama_values(messages: list[dict], tools: list[dict] | None, dumps: Callable[[Any], str]) -> dict:
    """The data Ollama executes a chat template with (template.Execute after `collate`): System,
    Messages (consecutive same-role turns merged, tool turns kept apart) and Tools; tools and
    call arguments print with `dumps` (Ollama: Go's compact JSON)."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    collated: list[dict] = []
    for m in messages:
        if collated and collated[-1]["role"] == m["role"] and m["role"] != "tool":
            collated[-1] = {**collated[-1], "content": collated[-1]["content"] + "\n\n" + m["content"]}
        else:
            collated.append(m)
    listed = GoList([_tool(t, dumps) for t in tools], lambda _l: dumps(tools)) if tools else None
    values = {"System": system, "Messages": [_message(m, dumps) for m in collated], "Tools": listed,
              "Response": "", "Think": False, "ThinkLevel": "", "IsThinkSet": False}
    return Map(values, lambda _m: "map[..]")  # Ollama's map[string]any with missingkey=zero: absent keys are nil


def _message(m: dict, dumps: Callable[[Any], str]) -> Struct:
    calls = [Struct({"ID": c.get("id", ""), "Function": Struct({
        "Index": i, "Name": c["function"]["name"],
        "Arguments": Map(_arguments(c["function"]["arguments"]), dumps)})})
        for i, c in enumerate(m.get("tool_calls") or [])]
    return Struct({"Role": m["role"], "Content": m.get("content") or "", "Thinking": "", "Images": [],
                   "ToolCalls": calls, "ToolName": m.get("name", ""), "ToolCallID": m.get("tool_call_id", "")})


def _arguments(value: Any) -> dict:
    return json.loads(value) if isinstance(value, str) else dict(value)


def _tool(tool: dict, dumps: Callable[[Any], str]) -> Struct:
    fn = tool["function"]
    params = fn.get("parameters") or {}
    function = Struct({"Name": fn["name"], "Description": fn.get("description", ""), "Parameters": Struct({
        "Type": params.get("type", ""), "Required": params.get("required", []),
        "Properties": params.get("properties", {})})}, lambda _s: dumps(fn))
    return Struct({"Type": tool.get("type", "function"), "Function": function}, lambda _s: dumps(tool))
