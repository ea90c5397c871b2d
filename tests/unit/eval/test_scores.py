"""Text scores on hand-checked cases."""

import pytest

from tunelab.eval.scores import char_f1, exact_match, rouge_l, tokens


def test_exact_match_ignores_case_space_and_end_punctuation():
    assert exact_match("  The Answer is 4. ", "the answer  is 4") == 1.0
    assert exact_match("4", "5") == 0.0


def test_rouge_l_uses_longest_common_subsequence():
    # LCS of "the cat sat on the mat" / "the cat on the mat" is 5 words: P=5/6, R=5/5.
    assert rouge_l("the cat sat on the mat", "the cat on the mat") == pytest.approx(2 * (5 / 6) / (5 / 6 + 1))
    assert rouge_l("a b", "c d") == 0.0


def test_chinese_is_scored_per_character():
    assert tokens("我很好 ok") == ["我", "很", "好", "ok"]
    # 2 of 3 characters shared: P = R = 2/3.
    assert char_f1("我很好", "我挺好") == pytest.approx(2 / 3)
    assert rouge_l("我很好", "我挺好") == pytest.approx(2 / 3)
