"""Stop strings and UTF-8-safe decoding used by token-level backends."""

from tunelab.serve.backends.text import StopStrings, Utf8Stream


def _run(pieces, stops):
    s, out = StopStrings(stops), ""
    for p in pieces:
        text, hit = s.push(p)
        out += text
        if hit:
            return out, True
    return out + s.flush(), False


def test_stop_string_split_across_pieces_is_cut():
    assert _run(["Hello ", "wor", "ld. END", "ignored"], ["END"]) == ("Hello world. ", True)
    assert _run(["ab", "<|e", "nd|>x"], ["<|end|>"]) == ("ab", True)


def test_text_without_stop_is_kept_whole():
    assert _run(["a<|e", "n", "d"], ["<|end|>"]) == ("a<|end", False)
    assert _run(["x", "y"], []) == ("xy", False)


def test_earliest_of_several_stops_wins():
    assert _run(["one two three"], ["three", "two"]) == ("one ", True)


def test_utf8_multibyte_across_tokens():
    u, data = Utf8Stream(), "é😀".encode()
    out = "".join(u.push(data[i:i + 1]) for i in range(len(data))) + u.flush()
    assert out == "é😀"
