"""Which held-out pairs `tunelab eval` scores for a KTO run: its replies regrouped by prompt."""

from __future__ import annotations

from tunelab.data.tokenize import PreferenceExample as Ex
from tunelab.eval.preference import regroup_kto


def test_kto_replies_pair_up_by_prompt_and_pairs_stay_as_they_are():
    held = [Ex([1, 2], [[3]], True), Ex([5], [[6]], True), Ex([7], [[8], [9]]), Ex([1, 2], [[4]], False),
            Ex([1, 2], [[10]], True), Ex([11], [[12]], False)]
    pairs = regroup_kto(held)
    # a desirable and an undesirable reply of one prompt make a pair; a reply without a partner is left out
    assert [(p.prompt_ids, p.completions) for p in pairs] == [([7], [[8], [9]]), ([1, 2], [[3], [4]])]
