"""`tunelab chat [MODEL] [--adapter PATH|RUN]`: a streaming terminal chat with a model or a run.

Input: end a line with '\\' to continue it, or wrap several lines in triple quotes (\"\"\").
Commands: /system TEXT, /reset, /save FILE, /params [key=value ...], /result TEXT, /help, /exit.
With --tools FILE (a JSON list of OpenAI tools) the model may call them: calls are shown as
[tool call] lines and answered with /result TEXT.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from tunelab.config import opt
from tunelab.engine.config import EngineConfig, SamplingParams

HELP = """commands:
  /system TEXT        set the system prompt (and start over)
  /reset              forget the conversation
  /save FILE          write the conversation as JSON
  /params [k=v ...]   show or change sampling (temperature, top_p, top_k, max_tokens, ...)
  /result TEXT        answer the model's pending tool call with TEXT (with --tools)
  /exit               quit (or Ctrl-D)
multi-line input: end a line with \\ or wrap lines in \"\"\""""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None,
                        help="store name, model dir or run (default: the built-in Gemma 3 270M)")
    parser.add_argument("--adapter", default=None, help="LoRA adapter dir or training run name/dir")
    parser.add_argument("--system", default=None, help="system prompt")
    parser.add_argument("--tools", default=None, help="JSON file with a list of OpenAI tools the model may call")
    from tunelab.config_flags import add_config_arguments

    # every SamplingParams knob (--temperature, --repetition-penalty, ...) and serve's engine flags
    add_config_arguments(parser, ChatConfig, yaml=False)


@dataclasses.dataclass
class ChatConfig:
    """What chat takes besides the model: sampling (the one SamplingParams) and the engine settings."""

    sampling: SamplingParams = opt(SamplingParams(max_tokens=512, temperature=0.7, top_p=0.95),
                                   "sampling of each reply (max_tokens, temperature, top_p, top_k, min_p, "
                                   "repetition_penalty, ...); also accepted without the sampling. prefix", flat=True)
    engine: EngineConfig = opt(EngineConfig(max_num_seqs=1), "engine settings (dtype, device, quantize, "
                               "max_model_len alias context_length, num_speculative_tokens, ...); also "
                               "accepted without the engine. prefix", flat=True)


def run(args: argparse.Namespace) -> int:
    open_chat(args, *resolve_target(args.model, args.adapter)).loop()
    return 0


def open_chat(args: argparse.Namespace, model: str | Path | None, adapter: Path | None) -> "Chat":
    """Load the model (and adapter) with the command line's engine and sampling flags."""
    from tunelab.config_flags import config_from_args
    from tunelab.engine.engine import LLMEngine

    print(f"loading {model or 'the default model'}{' + adapter ' + str(adapter) if adapter else ''} ...",
          file=sys.stderr)
    cfg = config_from_args(ChatConfig, args)
    engine = LLMEngine(model, {"chat": adapter} if adapter else None, cfg.engine)
    tools = json.loads(Path(args.tools).read_text(encoding="utf-8")) if args.tools else None
    return Chat(engine, cfg.sampling, args.system, "chat" if adapter else None, str(model or "the default model"),
                tools)


def resolve_target(model: str | None, adapter: str | None) -> tuple[str | Path | None, Path | None]:
    """(base model spec, adapter dir): a run given as MODEL or --adapter supplies both."""
    from tunelab.errors import TunelabError
    from tunelab.rundir import find_run

    for spec in (adapter, model):
        run = find_run(spec) if spec else None
        if run is None:
            continue
        run.require_generative("chatted with")
        if run.model_dir is not None:
            return run.model_dir, None
        if run.adapter_dir is None:
            raise TunelabError(f"{run.path}: run has no adapter/ yet (state: {run.state})")
        return (model if spec == adapter and model else run.base_model), run.adapter_dir
    return model, Path(adapter) if adapter else None


class Chat:
    """The read-eval-print loop around one engine; the conversation is a list of messages."""

    def __init__(self, engine, params, system: str | None, adapter: str | None, label: str = "this model",
                 tools: list[dict] | None = None):
        from tunelab.engine.llm import chat_template

        self.label, self.tools = label, tools
        self.engine = engine
        self.params = params
        self.system = system
        self.adapter = adapter
        self.template = chat_template(engine, adapter)
        self.messages: list[dict] = []
        self.turn = 0

    def loop(self) -> None:
        """Read, answer, repeat until /exit or end of input."""
        from tunelab.data.templates import base_model_notice

        notice = base_model_notice(self.template, self.label)
        if notice:
            print(notice)
        print(f"chat template: {self.template.name}. /help for commands.", flush=True)
        while True:
            text = read_message()
            if text is None or text.strip() in ("/exit", "/quit"):
                print()
                return
            if not text.strip():
                continue
            if text.startswith("/"):
                self.command(text.strip())
            else:
                self.reply(text)

    def command(self, line: str) -> None:
        """Run one /command."""
        name, _, rest = line.partition(" ")
        if name == "/system":
            self.system, self.messages = rest.strip() or None, []
            print(f"system prompt {'set' if self.system else 'cleared'}; conversation reset")
        elif name == "/reset":
            self.messages = []
            print("conversation reset")
        elif name == "/save":
            print(f"saved to {self.save(rest.strip())}")
        elif name == "/params":
            self.set_params(rest.split())
        elif name == "/result":
            self.result(rest)
        elif name == "/help":
            print(HELP)
        else:
            print(f"unknown command {name}; /help lists them")

    def save(self, filename: str) -> Path:
        """Write system prompt and messages to `filename` as JSON (atomically)."""
        from tunelab.atomic import write_text_atomic

        path = Path(filename or "chat.json").expanduser()
        return write_text_atomic(path, json.dumps({"messages": self.conversation()}, ensure_ascii=False, indent=2))

    def conversation(self) -> list[dict]:
        """The system prompt (if any) followed by the messages so far."""
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.messages

    def set_params(self, items: list[str]) -> None:
        """`/params` shows the sampling settings; `/params k=v ...` changes them."""
        from tunelab.config import build
        from tunelab.engine.config import SamplingParams
        from tunelab.errors import TunelabError

        if items:
            values = {**dataclasses.asdict(self.params), **dict(i.split("=", 1) for i in items if "=" in i)}
            try:
                self.params = build(SamplingParams, values)
            except TunelabError as err:
                print(f"error: {err}")
                return
        shown = ("temperature", "top_p", "top_k", "min_p", "max_tokens", "repetition_penalty", "presence_penalty",
                 "frequency_penalty", "seed", "stop")
        print(" ".join(f"{k}={getattr(self.params, k)}" for k in shown))

    def reply(self, text: str) -> None:
        """Send the user message, stream the answer, report tokens/s."""
        from tunelab.data.templates import encode_prompt
        from tunelab.engine.llm import with_template_stops
        from tunelab.errors import TunelabError

        self.messages.append({"role": "user", "content": text})
        self.answer()

    def answer(self) -> None:
        """Stream the model's next turn; with tools, show the calls it makes."""
        from tunelab.data.templates import encode_prompt
        from tunelab.engine.llm import with_template_stops
        from tunelab.errors import TunelabError

        kwargs = {"tools": self.tools} if self.tools else {}
        try:
            prompt = encode_prompt(self.template, self.engine.tokenizer, self.conversation(), **kwargs)
            params = with_template_stops(self.params, self.template, self.engine.tokenizer)
            answer, n, seconds = self._stream(prompt, params)
        except TunelabError as err:
            self.messages.pop()
            print(f"error: {err}")
            return
        except KeyboardInterrupt:
            self.engine.abort(f"turn-{self.turn}")
            answer, n, seconds = "", 0, 0.0
            print("\n[interrupted]")
        self.messages.append(self._assistant_turn(answer))
        print(f"\n[{n} tokens, {n / seconds if seconds else 0:.1f} tok/s]", flush=True)

    def _assistant_turn(self, answer: str) -> dict:
        """The reply as a turn; calls in the template's tool format are parsed and shown."""
        from tunelab.tools import get_format, parse_tool_calls

        if not self.tools or self.template.tool_format is None:
            return {"role": "assistant", "content": answer}
        content, calls = parse_tool_calls(get_format(self.template.tool_format), answer)
        for call in calls:
            print(f"\n[tool call] {call.name}({call.arguments})  -- answer with /result TEXT", end="")
        turn: dict = {"role": "assistant", "content": content}
        return {**turn, "tool_calls": [c.to_openai() for c in calls]} if calls else turn

    def result(self, text: str) -> None:
        """Answer the oldest unanswered tool call with `text`; the model goes on once all are answered."""
        calls = next((m.get("tool_calls") or [] for m in reversed(self.messages) if m["role"] == "assistant"), [])
        answered = {m.get("tool_call_id") for m in self.messages if m["role"] == "tool"}
        pending = [c for c in calls if c["id"] not in answered]
        if not pending:
            print("no tool call is waiting for a result")
            return
        self.messages.append({"role": "tool", "tool_call_id": pending[0]["id"], "content": text})
        if len(pending) == 1:
            self.answer()

    def _stream(self, prompt: list[int], params) -> tuple[str, int, float]:
        self.turn += 1
        seq = self.engine.add_request(f"turn-{self.turn}", prompt, params, self.adapter)[0]
        start = time.perf_counter()
        while self.engine.has_unfinished():
            self.engine.step()
            print(seq.take_delta(), end="", flush=True)
        print(seq.take_delta(), end="", flush=True)
        if seq.error:
            print(f"\n[error: {seq.error}]")
        return seq.text, len(seq.output_ids), time.perf_counter() - start


def read_message() -> str | None:
    """One user message: '\\' at line end continues it; a \"\"\" line opens/closes a block."""
    try:
        first = input(">>> ")
    except EOFError:
        return None
    if first.strip().startswith('"""'):
        return _read_block(first.strip()[3:])
    lines = [first]
    while lines[-1].endswith("\\"):
        lines[-1] = lines[-1][:-1]
        try:
            lines.append(input("... "))
        except EOFError:
            break
    return "\n".join(lines)


def _read_block(rest: str) -> str:
    if rest.endswith('"""'):
        return rest[:-3]
    lines = [rest] if rest else []
    while True:
        try:
            line = input("... ")
        except EOFError:
            break
        if line.rstrip().endswith('"""'):
            lines.append(line.rstrip()[:-3])
            break
        lines.append(line)
    return "\n".join(lines)
