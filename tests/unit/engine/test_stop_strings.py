"""The one stop-string hold-back, shared by the engine's detokenizer and the llama.cpp backend."""

from tunelab.engine.detokenizer import StopStrings, partial_stop_len


def _run(pieces, stops):
    s, out = StopStrings(stops), ""
    for p in pieces:
        out += s.push(p)
        if s.hit is not None:
            return out, s.hit
    return out + s.flush(), None


def test_stop_string_split_across_pieces_is_cut():
    assert _run(["Hello ", "wor", "ld. END", "ignored"], ["END"]) == ("Hello world. ", "END")
    assert _run(["ab", "<|e", "nd|>x"], ["<|end|>"]) == ("ab", "<|end|>")


def test_text_without_stop_is_kept_whole():
    assert _run(["a<|e", "n", "d"], ["<|end|>"]) == ("a<|end", None)
    assert _run(["x", "y"], []) == ("xy", None)
    assert _run(["x", "", "y"], [""]) == ("xy", None)  # empty stop strings are ignored


def test_earliest_of_several_stops_wins():
    assert _run(["one two three"], ["three", "two"]) == ("one ", "two")


def test_only_a_possible_stop_start_is_held_back():
    s = StopStrings(["<|end|>"])
    assert s.push("hello <") == "hello "  # "<" could begin the stop string
    assert s.push("b>") == "<b>"  # it did not: released at once, not max(len)-1 chars later
    assert s.push("x") == "x" and s.flush() == ""


def test_nothing_comes_after_a_hit():
    s = StopStrings(["END"])
    assert s.push("aEN") == "a" and s.push("Db") == "" and s.hit == "END"
    assert s.push("more") == "" and s.flush() == ""


def test_partial_stop_len_is_the_longest_proper_prefix_at_the_end():
    assert partial_stop_len("ab</th", ["</think>"]) == 4
    assert partial_stop_len("ab</think>", ["</think>"]) == 0  # whole tag: found, not held
    assert partial_stop_len("xx<", ["<a", "x<b"]) == 2
