"""Streaming detokenization: whole UTF-8 characters only, stop strings never leak."""

import pytest
from transformers import AutoTokenizer

from tunelab.engine.detokenizer import IncrementalDetokenizer

TEXT = "Hello 世界! 你好，朋友 🎉👍🏽 done. Ünïcödé ok"


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def _stream(tok, text: str, stop=(), prompt="<|im_start|>assistant\n"):
    ids = tok.encode(text, add_special_tokens=False)
    detok = IncrementalDetokenizer(tok, tok.encode(prompt, add_special_tokens=False), stop=list(stop))
    pieces = [detok.add(i) for i in ids]
    pieces.append(detok.flush())
    return pieces, detok


def test_the_fixture_text_really_splits_characters_across_tokens(tok):
    ids = tok.encode(TEXT, add_special_tokens=False)
    assert any("\ufffd" in tok.decode(ids[:k]) for k in range(1, len(ids)))


def test_streams_chinese_and_emoji_without_broken_characters(tok):
    pieces, detok = _stream(tok, TEXT)
    assert "".join(pieces) == TEXT == detok.text
    assert all("\ufffd" not in p for p in pieces)
    assert sum(1 for p in pieces if p) > 10  # it streams, not one blob at the end


def test_every_prefix_of_the_output_streams_cleanly(tok):
    ids = tok.encode(TEXT, add_special_tokens=False)
    for k in range(1, len(ids) + 1):
        detok = IncrementalDetokenizer(tok, [])
        streamed = "".join(detok.add(i) for i in ids[:k])
        assert "\ufffd" not in streamed
        final = streamed + detok.flush()
        assert final == tok.decode(ids[:k])


@pytest.mark.parametrize("stop", ["朋友", "👍🏽", "e. Ü", "!", "done"])
def test_stop_string_spanning_tokens_is_cut_and_never_emitted(tok, stop):
    pieces, detok = _stream(tok, TEXT, stop=[stop, "never-there"])
    expected = TEXT[:TEXT.index(stop)]
    assert "".join(pieces) == expected and detok.stopped and detok.stop_string == stop
    emitted = ""
    for p in pieces:  # never a character that is later taken back
        emitted += p
        assert expected.startswith(emitted)


def test_earliest_stop_string_wins(tok):
    pieces, detok = _stream(tok, TEXT, stop=["done", "世界"])
    assert "".join(pieces) == "Hello " and detok.stop_string == "世界"


def test_held_back_stop_prefix_is_released_when_it_does_not_complete(tok):
    pieces, detok = _stream(tok, "abc 你好", stop=["你好吗"])
    assert "".join(pieces) == "abc 你好" and not detok.stopped
    assert pieces[-1].endswith("你好")  # held until the end, then flushed


def test_special_tokens_produce_no_text(tok):
    detok = IncrementalDetokenizer(tok, [])
    end = tok.convert_tokens_to_ids("<|im_end|>")
    out = [detok.add(i) for i in tok.encode("hi", add_special_tokens=False)] + [detok.add(end), detok.flush()]
    assert "".join(out) == "hi"


def test_nothing_after_stop(tok):
    detok = IncrementalDetokenizer(tok, [], stop=["x"])
    ids = tok.encode("ax more", add_special_tokens=False)
    out = "".join(detok.add(i) for i in ids) + detok.flush()
    assert out == "a" and detok.add(ids[0]) == ""


def test_a_special_tool_call_marker_reaches_the_parser(tiny_tokenizer_dir):
    """Mistral's [TOOL_CALLS] is a special token: skip_special_tokens would drop it, and the
    mistral parser would see prose. The detokenizer keeps it; other specials still go."""
    from tunelab.tools import ToolCallParser, get_format

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tok.add_special_tokens({"additional_special_tokens": ["[TOOL_CALLS]"]})
    marker = tok.convert_tokens_to_ids("[TOOL_CALLS]")
    reply = '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]'
    ids = tok.encode(reply, add_special_tokens=False)
    assert marker in ids and "[TOOL_CALLS]" not in tok.decode(ids, skip_special_tokens=True)
    ids = ids[:3] + [tok.convert_tokens_to_ids("<pad>")] + ids[3:]  # another special: still dropped
    detok = IncrementalDetokenizer(tok, tok.encode("[INST] hi [/INST]", add_special_tokens=False))
    text = "".join(detok.add(i) for i in ids) + detok.flush()
    assert text == reply
    (call,) = ToolCallParser(get_format("mistral")).step(text, True).calls
    assert call.name == "get_weather" and call.arguments == '{"city": "Paris"}'


def test_without_a_special_marker_every_special_token_is_dropped(tok):
    ids = tok.encode("<|im_start|>hi<pad> there", add_special_tokens=False)
    detok = IncrementalDetokenizer(tok, [])
    assert "".join(detok.add(i) for i in ids) + detok.flush() == "hi there"
