"""One chat template for training, serving and export.

Public API (others build against these names):
- `resolve_template(model_dir, adapter_dir=None, override=None, system=None)`: THE choice of
  template; every path that renders a prompt (train, engine `LLM`, serve backends per adapter,
  chat, eval, export, UI) asks it. First match wins:
  1. the template saved with the adapter (`adapter_dir/tunelab_template.json`, written by train);
  2. `override` (a built-in name: `data.template`, `serve --chat-template`);
  3. the template saved in the model dir (a merged export or a full fine-tune);
  4. the tokenizer's own template (chat_template.jinja / tokenizer_config.json);
  5. the architecture's built-in (llama3, chatml, qwen3, gemma, mistral) if the tokenizer has its
     end-of-turn token; 6. `default` (base models).
  `system` replaces the default system prompt of whichever template wins.
- `ChatTemplate.for_model(model_dir, name=None, system=None)`: `resolve_template` without adapter.
- `saved_template(dir) -> ChatTemplate | None`: the `tunelab_template.json` in `dir`, if any.
- `choose_template(info, override=None, saved=None)`: steps 2-6 from a model's facts
  (`TokenizerInfo`, read from a HF dir or, in the llama.cpp backend, from a GGUF header).
- `ChatTemplate.load(dir)` / `.save(dir)`: the file `tunelab_template.json`.
- `.name`, `.source` (jinja), `.stop_strings` (end-of-turn + EOS strings), `.system`
  (default system prompt applied when a conversation has none),
  `.render(messages, add_generation_prompt=False, **template_kwargs) -> str`,
  `.stop_token_ids(tokenizer) -> list[int]`, `.builtin_family() -> str | None` (the built-in
  a template is or renders like; export uses it to pick per-format equivalents),
  `.tool_format` (the tool-call format it renders, or None), `.tool_aware_source()` (jinja that
  renders tool conversations by itself: what a GGUF carries).
- `encode_prompt(template, tokenizer, messages, **template_kwargs) -> list[int]`: the ONLY
  way training and serving turn a conversation prefix into prompt ids.

Rendering uses a sandboxed jinja environment set up like transformers' own
(trim_blocks, lstrip_blocks, raise_exception, strftime_now, tojson), so a
tokenizer's template renders here exactly as `apply_chat_template` renders it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from tunelab.atomic import read_json_object, write_text_atomic
from tunelab.data.builtin_templates import ALIASES, BUILTINS, BY_ARCHITECTURE, FAMILY
from tunelab.data.errors import TemplateError
from tunelab.tools.formats import BY_FAMILY as TOOL_FORMAT_BY_FAMILY, get_format, native_format
from tunelab.tools.messages import has_tool_turns, lower, native_messages

TEMPLATE_FILE = "tunelab_template.json"
_PROBE = "\x00tunelab-probe\x00"  # a reply no template rewrites, to find what follows a reply
# A marker in a tokenizer's jinja that shows which built-in format it renders.
_TURN_MARKERS = {"llama3": "<|start_header_id|>", "chatml": "<|im_start|>", "gemma": "<start_of_turn>",
                 "mistral": "[INST]"}


@dataclass
class ChatTemplate:
    """A jinja chat template plus the facts needed to use it without the tokenizer files."""

    name: str
    source: str
    stop_strings: list[str] = field(default_factory=list)
    bos_token: str = ""
    eos_token: str = ""
    system: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # Modelfile PARAMETERs (Ollama names): sampling defaults

    @classmethod
    def builtin(cls, name: str, bos_token: str = "", eos_token: str = "", system: str | None = None) -> ChatTemplate:
        """A built-in template by name (llama3, chatml, gemma, mistral, default, or an alias)."""
        key = ALIASES.get(name.lower(), name.lower())
        if key not in BUILTINS:
            choices = ", ".join(BUILTINS)
            raise TemplateError(f"unknown chat template '{name}'; built-ins are: {choices}")
        source, end_of_turn = BUILTINS[key]
        stops = _unique(end_of_turn + [eos_token])
        return cls(key, source, stops, bos_token, eos_token, system)

    @classmethod
    def for_model(cls, model_dir: str | Path, name: str | None = None, system: str | None = None) -> ChatTemplate:
        """The template for a model directory without an adapter: `resolve_template`'s order."""
        return resolve_template(model_dir, None, name, system)

    @classmethod
    def from_source(cls, name: str, source: str, info: TokenizerInfo, system: str | None = None) -> ChatTemplate:
        """A template from jinja text; its end-of-turn marker is found by rendering a probe reply."""
        template = cls(name, source, [info.eos], info.bos, info.eos, system)
        template.stop_strings = _unique(_end_of_turn(template, info.added_tokens) + [info.eos])
        return template

    @classmethod
    def load(cls, directory: str | Path) -> ChatTemplate:
        """Read `tunelab_template.json` from a directory (or the file itself)."""
        path = Path(directory)
        path = path / TEMPLATE_FILE if path.is_dir() else path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{k: data[k] for k in ("name", "source", "stop_strings", "bos_token", "eos_token")},
                       system=data.get("system"), options=dict(data.get("options") or {}))
        except FileNotFoundError:
            raise TemplateError(f"{path}: no saved chat template") from None
        except (ValueError, KeyError, TypeError) as err:
            raise TemplateError(f"{path}: unreadable chat template file: {err}") from None

    def save(self, directory: str | Path) -> Path:
        """Write `tunelab_template.json` into `directory` atomically; return its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"version": 1, **asdict(self)}, ensure_ascii=False, indent=2)
        return write_text_atomic(directory / TEMPLATE_FILE, text + "\n")

    def save_with_tokenizer(self, tokenizer: Any, directory: str | Path) -> None:
        """Save `tokenizer` into `directory` carrying this template as its chat template, in
        `chat_template.jinja` and `tokenizer_config.json` (so plain transformers
        `apply_chat_template` renders it), then `tunelab_template.json`."""
        old = tokenizer.chat_template
        tokenizer.chat_template = self.source
        try:
            tokenizer.save_pretrained(str(directory))
        finally:
            tokenizer.chat_template = old
        config_path = Path(directory) / "tokenizer_config.json"
        config = read_json_object(config_path) if config_path.is_file() else {}
        write_text_atomic(config_path, json.dumps({**config, "chat_template": self.source}, indent=2,
                                                  ensure_ascii=False))
        self.save(directory)

    def with_system(self, system: str | None) -> ChatTemplate:
        """A copy whose default system prompt is `system`."""
        return replace(self, system=system)

    def render(self, messages: list[dict], add_generation_prompt: bool = False, tools: list[dict] | None = None,
               **template_kwargs: Any) -> str:
        """Render `messages` to text; `tools` (OpenAI's list) and turns with `tool_calls` or the `tool`
        role go through the template's own jinja if it handles tools, else its family's `tool_format`
        (a TemplateError when it has none). Other kwargs reach the jinja template."""
        messages = [dict(m) for m in messages]
        if self.system and not (messages and messages[0].get("role") == "system"):
            messages.insert(0, {"role": "system", "content": self.system})
        if tools or has_tool_turns(messages):
            messages, template_kwargs = self._tool_messages(messages, tools, template_kwargs)
        variables = {"bos_token": self.bos_token, "eos_token": self.eos_token, **template_kwargs}
        try:
            return _compile(self.source).render(
                messages=messages, add_generation_prompt=add_generation_prompt, **variables
            )
        except TemplateError:
            raise
        except Exception as err:  # jinja raises many types; the user needs the template's name
            raise TemplateError(f"chat template '{self.name}' failed to render: {err}") from None

    @property
    def tool_format(self) -> str | None:
        """The tool-call format this template renders and replies are parsed with; None: no tools."""
        native = native_format(self.source)
        if native is not None:
            return native.name
        return TOOL_FORMAT_BY_FAMILY.get(self.builtin_family() or "")

    def tool_aware_source(self) -> str:
        """Jinja that renders tools, calls and results by itself exactly as `render(tools=)` does, for
        files other programs render (a GGUF's chat template): the source when it handles tools
        natively, else the source behind its tool format's lowering written in jinja."""
        from tunelab.tools.jinja import tool_aware_source

        if native_format(self.source) is not None or self.tool_format is None:
            return self.source
        return tool_aware_source(self.source, get_format(self.tool_format))

    def _tool_messages(self, messages: list[dict], tools: list[dict] | None,
                       kwargs: dict[str, Any]) -> tuple[list[dict], dict[str, Any]]:
        """Messages (and jinja kwargs) for a tool conversation: native jinja, else lowered turns."""
        if native_format(self.source) is not None:
            return native_messages(messages), {**kwargs, "tools": tools} if tools else kwargs
        name = self.tool_format
        if name is None:
            raise TemplateError(f"chat template '{self.name}' has no tool-call format (tool formats exist for "
                                f"{', '.join(TOOL_FORMAT_BY_FAMILY)} templates; choose one with chat_template)")
        return lower(messages, tools, get_format(name)), kwargs

    def stop_token_ids(self, tokenizer: Any) -> list[int]:
        """Ids of stop strings that are single tokens, plus the tokenizer's EOS id."""
        ids = []
        for text in self.stop_strings:
            encoded = tokenizer.encode(text, add_special_tokens=False) if text else []
            if len(encoded) == 1:
                ids.append(encoded[0])
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
        return _unique(ids)

    def control_tokens(self, tokenizer: Any) -> list[str]:
        """The special tokens (other than BOS) a rendered exchange uses, e.g. Gemma's turn markers."""
        text = self.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}])
        added = getattr(tokenizer, "added_tokens_decoder", {})  # Gemma's '\n' is an added token, not a special one
        special = set(tokenizer.all_special_ids) | {i for i, t in added.items() if getattr(t, "special", False)}
        ids = [i for i in tokenizer.encode(text, add_special_tokens=False) if i in special]
        return _unique([tokenizer.convert_ids_to_tokens(i) for i in ids if i != tokenizer.bos_token_id])

    def builtin_family(self) -> str | None:
        """The built-in this template is (by name) or renders like (by turn markers); None if custom."""
        if self.name in BUILTINS:
            return FAMILY.get(self.name, self.name)  # qwen3 renders ChatML turns
        return next((name for name, marker in _TURN_MARKERS.items() if marker in self.source), None)


def resolve_template(model_dir: str | Path, adapter_dir: str | Path | None = None,
                     override: str | None = None, system: str | None = None) -> ChatTemplate:
    """The one template for a model plus an optional adapter; the order is in the module docstring."""
    template = saved_template(adapter_dir) if adapter_dir is not None else None
    if template is None:
        template = _model_template(Path(model_dir), override)
    return template.with_system(system) if system is not None else template


def saved_template(directory: str | Path) -> ChatTemplate | None:
    """The `tunelab_template.json` training saved in `directory` (adapter or model dir), if any."""
    path = Path(directory) / TEMPLATE_FILE
    return ChatTemplate.load(path) if path.is_file() else None


def _model_template(model_dir: Path, override: str | None) -> ChatTemplate:
    """Steps 2-6 of the order for a Hugging Face model directory."""
    saved = saved_template(model_dir)
    if saved is not None and not override:
        return saved  # nothing after it in the order can win: skip reading the tokenizer files
    return choose_template(TokenizerInfo.read(model_dir), override, saved)


def choose_template(info: TokenizerInfo, override: str | None = None,
                    saved: ChatTemplate | None = None) -> ChatTemplate:
    """Steps 2-6: override, the model's saved template, its own jinja, the architecture's, default."""
    if override:
        return ChatTemplate.builtin(override, info.bos, info.eos)
    if saved is not None:
        return saved
    if info.chat_template:
        from tunelab.tools.jinja import without_prelude

        return ChatTemplate.from_source(info.own_name, without_prelude(info.chat_template), info)
    return ChatTemplate.builtin(_builtin_for(info), info.bos, info.eos)


def base_model_notice(template: ChatTemplate | None, model: str) -> str | None:
    """The one line chat and serve print when `model` has no chat template of any kind (a base
    model: the plain-text `default` template stands in), else None."""
    if template is None or template.name != "default":
        return None
    return (f"note: {model} has no chat template: it is a base model, not a chat model, so replies continue "
            "your text rather than answer it. Fine-tune it on conversations (`tunelab train model=... "
            "datasets=...`) or pull a chat model (e.g. `tunelab pull Qwen/Qwen3-0.6B`).")


def encode_prompt(template: ChatTemplate, tokenizer: Any, messages: list[dict], **template_kwargs: Any) -> list[int]:
    """Prompt ids for `messages` with the generation prompt: what the model continues from."""
    return encode_text(tokenizer, template.render(messages, add_generation_prompt=True, **template_kwargs))


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of rendered text; the template writes BOS itself, so none is added here. A Gemma 3 VLM's
    `<start_of_image>` grows into its image run first, after rendering, as Gemma3Processor does (a
    template's `trim` must not eat the run's newlines; vision/tokens.expand_image_starts)."""
    if "<start_of_image>" in text:
        from tunelab.vision.tokens import expand_image_starts, grid_for

        text = expand_image_starts(text, grid_for(tokenizer))
    return list(tokenizer.encode(text, add_special_tokens=False))


@dataclass
class TokenizerInfo:
    """What choosing a template needs from a model: its own jinja, special tokens, architecture."""

    chat_template: str | None
    bos: str
    eos: str
    added_tokens: list[str]  # special tokens; an end-of-turn marker must be one to be used
    model_type: str  # config.json model_type (or a GGUF's general.architecture)
    own_name: str = "tokenizer"  # the name a template from `chat_template` gets

    @classmethod
    def read(cls, model_dir: Path) -> TokenizerInfo:
        """Read from a HF model dir's files without loading a tokenizer."""
        config = read_json_object(model_dir / "tokenizer_config.json")
        specials = read_json_object(model_dir / "special_tokens_map.json")
        tok_json = read_json_object(model_dir / "tokenizer.json")
        added = [t.get("content", "") for t in tok_json.get("added_tokens", []) if isinstance(t, dict)]
        model_type = str(read_json_object(model_dir / "config.json").get("model_type", ""))
        return cls(
            chat_template=own_template(model_dir, config),
            bos=_token_text(config.get("bos_token", specials.get("bos_token"))),
            eos=_token_text(config.get("eos_token", specials.get("eos_token"))),
            added_tokens=added,
            model_type=model_type,
        )


def own_template(model_dir: Path, config: dict | None = None) -> str | None:
    """The tokenizer's own chat template (chat_template.jinja, else tokenizer_config.json), if any.

    The one rule for "this model has a chat template": `tunelab show` and the store use it too.
    `config` is tokenizer_config.json when the caller has read it already."""
    model_dir = Path(model_dir)
    if config is None:
        config = read_json_object(model_dir / "tokenizer_config.json")
    jinja_file = model_dir / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    value = config.get("chat_template")
    if isinstance(value, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        value = named.get("default") or next(iter(named.values()), None)
    return value if isinstance(value, str) and value.strip() else None


def _builtin_for(info: TokenizerInfo) -> str:
    """The architecture's built-in if the tokenizer has its end-of-turn token, else `default`."""
    name = BY_ARCHITECTURE.get(info.model_type, "default")
    markers = BUILTINS[name][1]
    if all(m in info.added_tokens for m in markers):
        return name
    return "default"


def _end_of_turn(template: ChatTemplate, added_tokens: list[str]) -> list[str]:
    """The added token that directly follows a rendered reply, e.g. '<|im_end|>'."""
    probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
    try:
        text = template.render(probe)
    except TemplateError:
        return []
    after = text[text.rfind(_PROBE) + len(_PROBE):].lstrip() if _PROBE in text else ""
    hits = [t for t in added_tokens if t and after.startswith(t)]
    return [max(hits, key=len)] if hits else []


def _token_text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("content", ""))
    return value if isinstance(value, str) else ""


def _unique(items: list) -> list:
    return [x for i, x in enumerate(items) if x not in items[:i] and x != ""]


@lru_cache(maxsize=32)
def _compile(source: str):
    """Compile jinja the way transformers does; cached because every row renders several times."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """Accept `{% generation %}` blocks (used for HF assistant masks) and render their body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message: str):
        raise TemplateError(f"chat template refused the conversation: {message}")

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(f"chat template has a syntax error on line {err.lineno}: {err.message}") from None
