"""Split a model's `<think>...</think>` section from its answer, incrementally.

Works on streamed text deltas: a tag may arrive split across deltas, so the parser
holds back any tail that could still become a tag. Templates such as Qwen3's open
`<think>` inside the prompt; pass `in_reasoning=True` then, and the output starts
inside the reasoning section.
"""

from __future__ import annotations

from tunelab.engine.detokenizer import partial_stop_len

OPEN, CLOSE = "<think>", "</think>"


class ReasoningParser:
    """Feed text deltas; get (reasoning, content) deltas back. `finish()` flushes the tail."""

    def __init__(self, in_reasoning: bool = False):
        self.state = "reasoning" if in_reasoning else "start"  # start | reasoning | content
        self.saw_reasoning = in_reasoning
        self._held = ""
        self._after_close = False  # drop the newlines templates put between </think> and the answer

    def feed(self, text: str) -> tuple[str, str]:
        """Return the (reasoning, content) text this delta makes final."""
        buf, self._held = self._held + text, ""
        reasoning, content = "", ""
        while buf:
            if self.state == "start":
                buf = self._from_start(buf)
                if self.state == "start":  # still ambiguous: wait for more text
                    self._held = buf
                    return reasoning, content
            elif self.state == "reasoning":
                done, buf = self._until(buf, CLOSE)
                reasoning += done
                if buf is None:
                    return reasoning, content
                self.state, self._after_close = "content", True
            else:
                content += self._content(buf)
                buf = ""
        return reasoning, content

    def step(self, text: str, last: bool) -> tuple[str, str]:
        """feed(text), plus finish() when `last` is the final delta of the sequence."""
        reasoning, content = self.feed(text)
        if last:
            r2, c2 = self.finish()
            reasoning, content = reasoning + r2, content + c2
        return reasoning, content

    def _content(self, text: str) -> str:
        if self._after_close:
            text = text.lstrip("\n")
            self._after_close = not text
        return text

    def finish(self) -> tuple[str, str]:
        """Flush held text at the end of generation."""
        held, self._held = self._held, ""
        if self.state == "reasoning":
            return held, ""
        return "", self._content(held)

    def _from_start(self, buf: str) -> str:
        stripped = buf.lstrip()
        if stripped.startswith(OPEN):
            self.state, self.saw_reasoning = "reasoning", True
            return stripped[len(OPEN):]
        if stripped and not OPEN.startswith(stripped):
            self.state = "content"
        return buf

    def _until(self, buf: str, tag: str) -> tuple[str, str | None]:
        """Text before `tag` and what follows it; None when the tag is not complete yet."""
        at = buf.find(tag)
        if at >= 0:
            return buf[:at], buf[at + len(tag):]
        keep = partial_stop_len(buf, [tag])
        self._held = buf[len(buf) - keep:] if keep else ""
        return buf[: len(buf) - keep], None


def opens_reasoning(prompt_text: str) -> bool:
    """True when the rendered prompt itself opens `<think>` (Qwen3-style templates)."""
    return prompt_text.rstrip().endswith(OPEN)


def split_reasoning(text: str, in_reasoning: bool = False) -> tuple[str | None, str]:
    """Whole-text version: (reasoning, or None when there was none; content)."""
    parser = ReasoningParser(in_reasoning)
    reasoning, content = parser.step(text, last=True)
    return (reasoning if parser.saw_reasoning else None), content
