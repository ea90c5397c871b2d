"""The <think> parser: whole texts and deltas split at every possible point."""

import pytest

from tunelab.serve.reasoning import ReasoningParser, split_reasoning


@pytest.mark.parametrize("text, opened, expected", [
    ("<think>plan</think>\n\nanswer", False, ("plan", "answer")),
    ("  <think>plan</think>answer", False, ("plan", "answer")),
    ("plan</think>\n\nanswer", True, ("plan", "answer")),
    ("just an answer", False, (None, "just an answer")),
    ("answer with <think> inside", False, (None, "answer with <think> inside")),
    ("<think>never closed", False, ("never closed", "")),
    ("", True, ("", "")),
])
def test_split_whole_text(text, opened, expected):
    assert split_reasoning(text, opened) == expected


def _stream(text: str, cuts: list[int], opened: bool = False) -> tuple[str, str]:
    parser, r, c = ReasoningParser(opened), "", ""
    bounds = [0, *cuts, len(text)]
    for a, b in zip(bounds, bounds[1:]):
        dr, dc = parser.feed(text[a:b])
        r, c = r + dr, c + dc
    dr, dc = parser.finish()
    return r + dr, c + dc


def test_every_two_way_split_gives_the_same_result():
    text = "<think>a<b</think>\n\nc</think>d"
    for cut in range(len(text) + 1):
        assert _stream(text, [cut]) == ("a<b", "c</think>d"), cut


def test_char_by_char_streaming_with_opened_prompt():
    text = "step 1\nstep 2</think>\nfinal"
    assert _stream(text, list(range(1, len(text))), opened=True) == ("step 1\nstep 2", "final")


def test_partial_open_tag_that_turns_out_to_be_content():
    assert _stream("<thinking is fun", [2, 5]) == ("", "<thinking is fun")


def test_reasoning_is_emitted_before_the_close_tag_arrives():
    parser = ReasoningParser()
    assert parser.feed("<think>abc") == ("abc", "")
    assert parser.feed("</th") == ("", "")
    assert parser.feed("ink>ok") == ("", "ok")
