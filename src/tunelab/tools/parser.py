"""Model output -> content plus tool calls, incrementally, for one `ToolFormat`.

Text is fed as it streams. Outside a call region it is content, except a tail that could
still grow into a start marker (held back, like stop strings). Inside the region each JSON
object is one call: its id and name go out as soon as `{"name": "..."` has been read, then
its arguments in pieces as they grow, so the pieces of a call join to the final arguments.
A region that never yields a name (not JSON, no "name") goes out as content instead; text
after the calls is content too. A call cut off by the end of the output keeps what was
written (its arguments may then not parse; `ToolCall.complete` says so), as OpenAI's do.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from tunelab.engine.detokenizer import partial_stop_len
from tunelab.tools.formats import ToolFormat
from tunelab.tools.messages import new_call_id

_HEAD = re.compile(r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(arguments|parameters)"\s*:\s*')


@dataclass
class ToolCall:
    """One parsed call: OpenAI's `{id, type: function, function: {name, arguments}}`."""

    id: str
    name: str
    arguments: str = ""
    complete: bool = False  # its JSON object closed and parsed

    def to_openai(self) -> dict:
        """The call as an OpenAI `tool_calls` entry."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class ToolCallDelta:
    """New output of call `index`: id and name on its first delta, then argument pieces."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class ParsedDelta:
    """What one `feed` produced: content text and call deltas."""

    content: str = ""
    calls: list[ToolCallDelta] = field(default_factory=list)


class ToolCallParser:
    """Incremental parser of one sequence's output in one format (see module docstring)."""

    def __init__(self, fmt: ToolFormat, max_calls: int | None = None):
        self.fmt, self.max_calls = fmt, max_calls
        self.calls: list[ToolCall] = []
        self._mode = "content"  # content | region | after (all content) | drop (all dropped)
        self._pending = ""  # content mode: text not yet sent
        self._seen_content = False
        self._region = ""  # region mode: text from the marker on
        self._pos = 0  # region mode: where the next call starts
        self._sent_args = 0  # chars of the open call's arguments already sent

    def feed(self, text: str) -> ParsedDelta:
        """Take more output; return what can be said about it now."""
        out = ParsedDelta()
        if self._mode in ("after", "drop"):
            out.content = text if self._mode == "after" else ""
        elif self._mode == "content":
            self._pending += text
            self._scan_content(out, final=False)
        else:
            self._region += text
            self._scan_region(out, final=False)
        return out

    def finish(self) -> ParsedDelta:
        """The output ended: flush held-back text and close a cut-off call."""
        out = ParsedDelta()
        if self._mode == "content":
            self._scan_content(out, final=True)
        elif self._mode == "region":
            self._scan_region(out, final=True)
        return out

    def step(self, text: str, final: bool) -> ParsedDelta:
        """`feed(text)`, and when `final` also `finish()`, as one delta."""
        parsed = self.feed(text)
        if not final:
            return parsed
        tail = self.finish()
        return ParsedDelta(parsed.content + tail.content, parsed.calls + tail.calls)

    # ---- content ------------------------------------------------------------------------

    def _scan_content(self, out: ParsedDelta, final: bool) -> None:
        text = self._pending
        if self.fmt.json_start and not self._seen_content:
            stripped = text.lstrip()
            if stripped.startswith("{"):
                return self._open_region(out, "", stripped)
            if not stripped and not final:
                return  # only whitespace yet: the reply may still start with `{`
        at, marker = _find_marker(text, self.fmt.starts)
        if marker:
            return self._open_region(out, text[:at], text[at:])
        keep = 0 if final else partial_stop_len(text, self.fmt.starts)
        self._emit_content(out, text[: len(text) - keep])
        self._pending = text[len(text) - keep:]

    def _emit_content(self, out: ParsedDelta, text: str) -> None:
        if text:
            out.content += text
            self._seen_content = self._seen_content or bool(text.strip())

    def _open_region(self, out: ParsedDelta, before: str, region: str) -> None:
        self._emit_content(out, before)
        self._mode, self._pending, self._region = "region", "", region
        self._pos = _marker_len(region, self.fmt.starts)
        self._scan_region(out, final=False)

    # ---- calls region ---------------------------------------------------------------------

    def _scan_region(self, out: ParsedDelta, final: bool) -> None:
        while self._mode == "region":
            if not self._step_region(out, final):
                break
        if final and self._mode == "region":
            self._end_region(out)

    def _step_region(self, out: ParsedDelta, final: bool) -> bool:
        """Advance over one separator or one call; False when more text is needed."""
        rest = self._region[self._pos:]
        stripped = rest.lstrip()
        self._pos += len(rest) - len(stripped)
        if not stripped:
            return False
        if not final and any(s.startswith(stripped) and s != stripped for s in self.fmt.skips):
            return False  # maybe a (longer) separator still arriving
        skip = next((s for s in self.fmt.skips if stripped.startswith(s)), None)
        if skip:
            self._pos += len(skip)
            return True
        if stripped[0] != "{" or self._full():
            self._leave_region(out, stripped)
            return False
        return self._step_call(out, final)

    def _step_call(self, out: ParsedDelta, final: bool) -> bool:
        """Read the call starting at `_pos`; True when it closed."""
        text = self._region[self._pos:]
        end = json_value_end(text)
        if end is None:
            self._stream_head(out, text)
            return False
        self._close_call(out, text[:end])
        self._pos += end
        return True

    def _stream_head(self, out: ParsedDelta, text: str) -> None:
        """An open call: send id and name once known, then the arguments written so far."""
        head = _HEAD.match(text)
        if head is None:
            return
        call = self._open_call(out, json.loads(f'"{head.group(1)}"'))
        args = text[head.end():]
        if not args.startswith("{"):
            return  # a string or other value: sent whole when the call closes
        stop = json_value_end(args)
        piece = args[: stop if stop is not None else len(args)]
        self._send_args(out, call, piece)

    def _open_call(self, out: ParsedDelta, name: str) -> ToolCall:
        """The call being read, made (and announced) on first sight."""
        if self.calls and not self.calls[-1].complete:
            return self.calls[-1]
        call = ToolCall(new_call_id(), name)
        self.calls.append(call)
        self._sent_args = 0
        out.calls.append(ToolCallDelta(len(self.calls) - 1, call.id, name))
        return call

    def _send_args(self, out: ParsedDelta, call: ToolCall, piece: str) -> None:
        if len(piece) > self._sent_args:
            new = piece[self._sent_args:]
            call.arguments += new
            self._sent_args = len(piece)
            _delta_for(out, len(self.calls) - 1).arguments += new

    def _close_call(self, out: ParsedDelta, text: str) -> None:
        """A call's JSON closed: parse it, finish its arguments or give it up as content."""
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        name = obj.get("name") if isinstance(obj, dict) else None
        open_call = self.calls[-1] if self.calls and not self.calls[-1].complete else None
        if not isinstance(name, str):
            head = _HEAD.match(text)
            if head is None and open_call is None:
                return self._leave_region(out, self._region[self._pos:])
            # its head read as a call: it stays one, arguments as written (not JSON), as OpenAI's can be
            call = open_call or self._open_call(out, json.loads(f'"{head.group(1)}"'))
            self._send_args(out, call, _raw_args(text, None))
        else:
            call = open_call or self._open_call(out, name)
            args = obj.get("arguments", obj.get(self.fmt.args_key, {}))
            final = args if isinstance(args, str) else _raw_args(text, args)
            if final.startswith(call.arguments):
                self._send_args(out, call, final)
        call.complete = True
        return None

    def _full(self) -> bool:
        return self.max_calls is not None and len([c for c in self.calls if c.complete]) >= self.max_calls

    def _leave_region(self, out: ParsedDelta, rest: str) -> None:
        """Text that is not a call: with no call yet the whole region is content, else what is left."""
        if self._full():
            self._mode = "drop"  # calls beyond the limit (parallel_tool_calls=false) are dropped
            return
        self._mode = "after"
        self._emit_content(out, self._region if not self.calls else rest)

    def _end_region(self, out: ParsedDelta) -> None:
        """The output ended inside the region."""
        if self.calls and not self.calls[-1].complete:
            return  # a cut-off call keeps what it has
        rest = self._region[self._pos:]
        if not self.calls:
            self._emit_content(out, self._region)
        elif rest.strip():
            self._emit_content(out, rest)
        self._mode = "after"


def parse_tool_calls(fmt: ToolFormat, text: str, max_calls: int | None = None) -> tuple[str, list[ToolCall]]:
    """A whole reply -> (content, calls), exactly what streaming it would have produced."""
    parser = ToolCallParser(fmt, max_calls)
    first, last = parser.feed(text), parser.finish()
    return first.content + last.content, parser.calls


def json_value_end(text: str) -> int | None:
    """End index of the JSON object or array that `text` starts with; None while it is open."""
    depth, in_string, escaped = 0, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _raw_args(text: str, value: object) -> str:
    """The arguments exactly as the model wrote them (so streamed pieces join to them)."""
    head = _HEAD.match(text)
    if head is not None and text[head.end():].startswith("{"):
        end = json_value_end(text[head.end():])
        return text[head.end(): head.end() + end] if end is not None else text[head.end():-1].rstrip()
    return json.dumps(value, ensure_ascii=False)


def _delta_for(out: ParsedDelta, index: int) -> ToolCallDelta:
    if not out.calls or out.calls[-1].index != index:
        out.calls.append(ToolCallDelta(index))
    return out.calls[-1]


def _find_marker(text: str, markers: tuple[str, ...]) -> tuple[int, str | None]:
    hits = [(text.find(m), m) for m in markers if m in text]
    return min(hits) if hits else (-1, None)


def _marker_len(region: str, markers: tuple[str, ...]) -> int:
    return next((len(m) for m in markers if region.startswith(m)), 0)
