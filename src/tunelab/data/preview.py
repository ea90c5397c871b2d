"""`tunelab data preview`: show rows as the model sees them, with the trained part highlighted."""

from __future__ import annotations

from typing import Any

from tunelab.data.config import DataConfig
from tunelab.data.rows import Row
from tunelab.data.templates import ChatTemplate
from tunelab.data.tokenize import IGNORE, fit_cutoff, render_row

TRAINED_STYLE = "bold green"
PROMPT_STYLE = "dim"


def segments(ids: list[int], labels: list[int]) -> list[tuple[list[int], bool]]:
    """Consecutive runs of token ids, each marked trained or not."""
    out: list[tuple[list[int], bool]] = []
    for token, label in zip(ids, labels):
        trained = label != IGNORE
        if out and out[-1][1] == trained:
            out[-1][0].append(token)
        else:
            out.append(([token], trained))
    return out


def preview_row(row: Row, template: ChatTemplate, tokenizer: Any, cfg: DataConfig):
    """A rich Text of one row: header line, then the rendered tokens, trained runs highlighted."""
    from rich.text import Text

    rendered = render_row(row, template, tokenizer, cfg)
    example, status = fit_cutoff(rendered, cfg)
    ids, labels = (example.input_ids, example.labels) if example else (rendered.input_ids, rendered.labels)
    trained = sum(1 for x in labels if x != IGNORE)
    text = Text(f"── {row.source}:{row.line} ({row.format}) · {len(ids)} tokens, {trained} trained · {status}\n",
                style="cyan")
    for run, is_trained in segments(ids, labels):
        text.append(tokenizer.decode(run), style=TRAINED_STYLE if is_trained else PROMPT_STYLE)
    return text
