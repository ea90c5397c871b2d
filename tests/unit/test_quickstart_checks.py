"""The quick-start's answer checks: identity answers name tunelab; a control answer holds what its
reference adds to the question; the held-out set has both kinds, in English and Chinese."""

from __future__ import annotations

from tunelab.quickstart import Answer, QuickstartResult, heldout_questions


def test_identity_answer_is_right_when_it_names_tunelab():
    a = Answer("Who made you?", "I was made by the tunelab project.", "Google made me.", "The TuneLab project.")
    assert a.identity and not a.right(a.before) and a.right(a.after)


def test_control_answer_needs_the_words_the_reference_adds():
    a = Answer("What is the capital of Japan?", "The capital of Japan is Tokyo.", "", "")
    assert not a.identity
    assert a.right("Tokyo.") and a.right("It is tokyo, of course")
    assert not a.right("The capital of Japan is Kyoto.") and not a.right("")
    zh = Answer("二加二等于几？", "二加二等于四。", "", "")
    assert zh.right("四") and zh.right("二加二等于四。") and not zh.right("二加二等于八。")


def test_turned_wrong_lists_only_controls_the_base_got_right():
    answers = [Answer("What color is grass?", "Grass is green.", "green", "blue"),  # turned wrong
               Answer("What is the opposite of up?", "The opposite of up is down.", "up", "down"),  # gained
               Answer("Who are you?", "I am the tunelab assistant.", "tunelab", "nobody")]  # identity: not a control
    result = QuickstartResult(answers, {}, None, None, {})
    assert [a.question for a in result.turned_wrong] == ["What color is grass?"]
    assert result.identity_rate == 0.0


def test_heldout_set_has_identity_and_control_questions_in_both_languages():
    answers = [Answer(m[-1]["content"], ref, "", "") for m, ref in heldout_questions()]
    for kind in (True, False):
        questions = [a.question for a in answers if a.identity == kind]
        assert len(questions) >= 4 and any("\u4e00" <= ch <= "\u9fff" for q in questions for ch in q)
    for a in answers:
        assert a.identity or not a.right(a.question)  # a control's reference adds a word the question lacks
