"""Simple text scores for side-by-side generations: exact match, ROUGE-L and char F1.

ROUGE-L works on words for alphabetic text and on single characters for CJK text,
so a Chinese answer is not one giant "word".
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]|\w+", re.UNICODE)


def normalize(text: str) -> str:
    """NFKC, lower case, collapsed whitespace, no surrounding punctuation."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(text.split()).strip(" .,!?;:。，！？；：")


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalized strings are equal, else 0.0."""
    return float(normalize(prediction) == normalize(reference))


def tokens(text: str) -> list[str]:
    """Words for alphabetic scripts, single characters for CJK."""
    return _TOKEN.findall(normalize(text))


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1: longest common subsequence of tokens over both lengths."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def char_f1(prediction: str, reference: str) -> float:
    """F1 over the multiset of non-space characters (the usual metric for Chinese)."""
    pred = Counter(c for c in normalize(prediction) if not c.isspace())
    ref = Counter(c for c in normalize(reference) if not c.isspace())
    if not pred or not ref:
        return float(pred == ref)
    common = sum((pred & ref).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(pred.values()), common / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


def score_all(prediction: str, reference: str) -> dict[str, float]:
    """All three scores for one prediction."""
    return {"exact_match": exact_match(prediction, reference),
            "rouge_l": rouge_l(prediction, reference),
            "char_f1": char_f1(prediction, reference)}
