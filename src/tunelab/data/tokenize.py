"""Rows -> token ids with loss masks, using the same rendering the server uses.

Public API:
- `Example(input_ids, labels)`: labels equal input_ids where a token carries loss and
  -100 elsewhere (not shifted; the model shifts).
- `tokenize_row(row, template, tokenizer, cfg) -> Example | None`: None when the row
  is dropped (over the cutoff, no loss, or a template whose rendering is not
  prefix-stable); `build_examples` counts each reason.
- `build_examples(rows, template, tokenizer, cfg) -> (examples, TokenStats)`; raises
  DataError when nothing is trainable, so this fails before any model loads.
- `tokenize_preference(row, ...) -> (PreferenceExample | None, status)` and
  `tokenize_preference_rows(rows, ..., unpair=False)`: a pair (or KTO row) as shared prompt ids
  + completion ids, each side rendered like an SFT row with loss on its last reply only.

How masks are made: for each assistant turn i, the prompt is
`encode_prompt(template, tokenizer, messages[:i])` (exactly what serving sends) and the
turn's end is the token count of `render(messages[:i+1])`. Both must be prefixes of the
full conversation's tokens; the tokens between them (the reply and its end-of-turn
marker) carry loss. No marker strings are searched for. `cfg.system` is added to rows
without a system turn; build the template with `ChatTemplate.for_model(..., system=cfg.system)`
so the saved template serves with the same default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunelab.data.config import DataConfig
from tunelab.data.errors import DataError
from tunelab.data.rows import Row
from tunelab.data.templates import ChatTemplate, encode_prompt, encode_text
from tunelab.vision.tokens import expand_markers, grid_for, image_token_id

IGNORE = -100


@dataclass
class Example:
    """One training sequence; labels are -100 where no loss is taken."""

    input_ids: list[int]
    labels: list[int]
    images: list[str] | None = None  # a VLM row's images, one per run of image tokens (vision/tokens.py)
    vision_dir: str | None = None  # the model folder whose image processor turns them into pixels

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class PreferenceExample:
    """A prompt and its completions: [chosen, rejected] for a pair, [reply] with `label` for KTO.

    Only completion tokens carry loss; `ref_logps` holds the reference model's log-prob
    sum per completion when it is precomputed (full fine-tuning).
    """

    prompt_ids: list[int]
    completions: list[list[int]]
    label: bool | None = None
    ref_logps: list[float] | None = None
    loss_units = 1  # the trainer normalises the loss per example, not per token

    def __len__(self) -> int:
        """Tokens computed: the prompt once per completion."""
        return sum(len(self.prompt_ids) + len(c) for c in self.completions)


@dataclass
class TokenStats:
    """What happened to each row on the way to examples; every row lands in one count."""

    kept: int = 0
    truncated: int = 0  # kept, but cut at a turn boundary (or, for text, at the cutoff)
    dropped_over_cutoff: int = 0
    zero_loss: int = 0
    unstable: int = 0  # dropped: the template renders the final reply differently as a prefix
    untrained_turns: int = 0  # earlier replies left without loss for the same reason
    total_tokens: int = 0
    loss_tokens: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_over_cutoff + self.zero_loss + self.unstable

    @property
    def loss_share(self) -> float:
        return self.loss_tokens / self.total_tokens if self.total_tokens else 0.0


@dataclass
class Rendered:
    """A row's full token ids and labels before the cutoff, with the token index after each reply."""

    input_ids: list[int]
    labels: list[int]
    turn_ends: list[int] = field(default_factory=list)
    untrained_turns: int = 0
    stable: bool = True
    is_text: bool = False
    images: list[str] | None = None
    vision_dir: str | None = None


def tokenize_row(row: Row, template: ChatTemplate, tokenizer: Any, cfg: DataConfig) -> Example | None:
    """The training example for one row, or None when it is dropped (see `build_examples`)."""
    return fit_cutoff(render_row(row, template, tokenizer, cfg), cfg)[0]


def build_examples(
    rows: list[Row], template: ChatTemplate, tokenizer: Any, cfg: DataConfig
) -> tuple[list[Example], TokenStats]:
    """Tokenize every row, counting each kept, truncated or dropped; error if nothing is trainable."""
    examples, stats, _ = tokenize_rows(rows, template, tokenizer, cfg)
    if stats.loss_tokens == 0:
        raise DataError("no trainable tokens", _nothing_trainable(len(rows), stats, cfg))
    return examples, stats


def tokenize_rows(
    rows: list[Row], template: ChatTemplate, tokenizer: Any, cfg: DataConfig
) -> tuple[list[Example], TokenStats, list[int]]:
    """Like `build_examples` without the error, plus each row's token count before the cutoff."""
    examples, stats, lengths = [], TokenStats(), []
    for row in rows:
        rendered = render_row(row, template, tokenizer, cfg)
        example, status = fit_cutoff(rendered, cfg)
        stats.untrained_turns += rendered.untrained_turns
        lengths.append(len(rendered.input_ids))
        _count(stats, example, status)
        if example is not None:
            examples.append(example)
    return examples, stats, lengths


def _count(stats: TokenStats, example: Example | None, status: str) -> None:
    setattr(stats, status, getattr(stats, status) + 1)
    if example is not None:
        stats.kept += status == "truncated"  # 'truncated' rows are kept too
        stats.total_tokens += len(example.input_ids)
        stats.loss_tokens += sum(1 for x in example.labels if x != IGNORE)


def _nothing_trainable(n: int, stats: TokenStats, cfg: DataConfig) -> str:
    return (f"no trainable tokens in {n} rows: {stats.dropped_over_cutoff} over cutoff_len={cfg.cutoff_len} "
            f"(overflow={cfg.overflow}), {stats.zero_loss} with no loss tokens (train_on={cfg.train_on}), "
            f"{stats.unstable} the chat template cannot split into prompt and reply")


def render_row(row: Row, template: ChatTemplate, tokenizer: Any, cfg: DataConfig) -> Rendered:
    """Full ids and labels of a row (text or conversation), before the cutoff."""
    if row.text is not None:
        return _render_text(row.text, tokenizer)
    messages = list(row.messages or [])
    if cfg.system and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": cfg.system})
    if row.images and image_token_id(tokenizer) is not None:  # a text model keeps the <image> markers as text
        messages = expand_markers(messages, row.images, grid_for(tokenizer))
        rendered = _render_conversation(messages, template, tokenizer, cfg.train_on, row.tools)
        rendered.images, rendered.vision_dir = row.images, getattr(tokenizer, "name_or_path", None)
        return rendered
    return _render_conversation(messages, template, tokenizer, cfg.train_on, row.tools)


def _render_text(text: str, tokenizer: Any) -> Rendered:
    """Continued pre-training: every token trained, EOS appended so documents end."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids = bos + encode_text(tokenizer, text) + eos
    return Rendered(ids, [IGNORE] * len(bos) + ids[len(bos):], [len(ids)], is_text=True)


def _render_conversation(messages: list[dict], template: ChatTemplate, tokenizer: Any, train_on: str,
                         tools: list[dict] | None = None) -> Rendered:
    """Ids of the whole conversation with loss on assistant replies (tool calls included; tool
    results are not assistant turns, so they never carry loss)."""
    full = encode_text(tokenizer, template.render(messages, tools=tools))
    out = Rendered(full, [IGNORE] * len(full))
    last = len(messages) - 1
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        span = _reply_span(messages, i, full, template, tokenizer, tools)
        if span is None:
            out.stable = i != last and out.stable
            out.untrained_turns += i != last
            continue
        start, end = span
        out.turn_ends.append(end)
        if train_on == "assistant" or (train_on == "last" and i == last):
            out.labels[start:end] = full[start:end]
    if train_on == "all":
        out.labels = list(full)
    return out


def _reply_span(messages: list[dict], i: int, full: list[int], template: ChatTemplate, tokenizer: Any,
                tools: list[dict] | None = None):
    """(start, end) token indices of reply i in `full`, or None if the prefixes do not line up."""
    prompt = encode_prompt(template, tokenizer, messages[:i], tools=tools)
    done = full if i == len(messages) - 1 else encode_text(tokenizer, template.render(messages[: i + 1], tools=tools))
    if full[: len(done)] != done or done[: len(prompt)] != prompt or len(done) <= len(prompt):
        return None
    return len(prompt), len(done)


def tokenize_preference(row: Row, template: ChatTemplate, tokenizer: Any, cfg: DataConfig
                        ) -> tuple[PreferenceExample | None, str]:
    """A pair (or KTO row) as prompt ids + completion ids, through the same rendering as SFT.

    Each side is rendered as prompt + reply with loss on the last reply only; the prompt
    ids must be the same prefix of both. A pair over cutoff_len is dropped whole, never cut.
    Returns the example (or None) and a TokenStats field name.
    """
    messages = list(row.messages or [])
    if cfg.system and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": cfg.system})
    sides = [messages] + ([messages[:-1] + row.rejected] if row.rejected is not None else [])
    rendered = [_render_conversation(side, template, tokenizer, "last") for side in sides]
    starts = [next((i for i, t in enumerate(r.labels) if t != IGNORE), None) for r in rendered]
    if not all(r.stable for r in rendered) or None in starts or len(set(starts)) != 1:
        return None, "unstable"
    start = starts[0]
    prompt = rendered[0].input_ids[:start]
    if any(r.input_ids[:start] != prompt for r in rendered):
        return None, "unstable"
    if max(len(r.input_ids) for r in rendered) > cfg.cutoff_len:
        return None, "dropped_over_cutoff"
    return PreferenceExample(prompt, [r.input_ids[start:] for r in rendered], row.label), "kept"


def tokenize_preference_rows(rows: list[Row], template: ChatTemplate, tokenizer: Any, cfg: DataConfig,
                             unpair: bool = False) -> tuple[list[PreferenceExample], TokenStats, list[int]]:
    """Every pair/KTO row tokenized and counted; `unpair` turns each pair into two KTO
    examples (chosen desirable, rejected not). Also returns each row's longest side in tokens."""
    examples, stats, lengths = [], TokenStats(), []
    for row in rows:
        example, status = tokenize_preference(row, template, tokenizer, cfg)
        setattr(stats, status, getattr(stats, status) + 1)
        lengths.append(_longest_side(row, template, tokenizer) if example is None else
                       len(example.prompt_ids) + max(map(len, example.completions)))
        if example is None:
            continue
        stats.total_tokens += len(example)
        stats.loss_tokens += sum(map(len, example.completions))
        if unpair and len(example.completions) == 2:
            examples += [PreferenceExample(example.prompt_ids, [c], label) for c, label in
                         zip(example.completions, (True, False))]
        else:
            examples.append(example)
    return examples, stats, lengths


def _longest_side(row: Row, template: ChatTemplate, tokenizer: Any) -> int:
    sides = [row.messages or []] + ([(row.messages or [])[:-1] + row.rejected] if row.rejected else [])
    return max(len(encode_text(tokenizer, template.render(side))) for side in sides)


def fit_cutoff(rendered: Rendered, cfg: DataConfig) -> tuple[Example | None, str]:
    """Apply cutoff_len and overflow; returns the example (or None) and a TokenStats field name."""
    if not rendered.stable:
        return None, "unstable"
    ids, labels = rendered.input_ids, rendered.labels
    status = "kept"
    if len(ids) > cfg.cutoff_len:
        if cfg.overflow == "drop" or rendered.images:  # cutting could split an image's token run
            return None, "dropped_over_cutoff"
        end = _truncation_point(rendered, cfg.cutoff_len)
        if end is None:
            return None, "dropped_over_cutoff"
        ids, labels, status = ids[:end], labels[:end], "truncated"
    if all(x == IGNORE for x in labels):
        return None, "zero_loss"
    return Example(list(ids), list(labels), rendered.images, rendered.vision_dir), status


def _truncation_point(rendered: Rendered, cutoff: int) -> int | None:
    """The last turn end within the cutoff that keeps some loss; text rows cut at the cutoff."""
    if rendered.is_text:  # no turns in plain text, so cut at the cutoff itself
        return cutoff
    for end in reversed(rendered.turn_ends):
        if end <= cutoff and any(x != IGNORE for x in rendered.labels[:end]):
            return end
    return None
