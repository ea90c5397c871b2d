"""BlockManager: allocation, ref counts, prefix caching, eviction. Plain Python, no torch."""

import subprocess
import sys

import pytest

from tunelab.engine.block_manager import BlockManager
from tunelab.engine.sequence import Sequence


def _admit(bm: BlockManager, seq: Sequence) -> list[int]:
    """What the scheduler does for a new sequence: reuse cached blocks, allocate the rest."""
    hits = bm.match_prefix(seq)
    bm.allocate(seq, seq.num_tokens - len(hits) * bm.block_size, hits)
    return hits


def _compute_all(bm: BlockManager, seq: Sequence) -> None:
    seq.num_computed_tokens = seq.num_tokens
    bm.commit(seq)


def test_scheduler_and_block_manager_do_not_import_torch():
    code = ("import sys; import tunelab.engine.scheduler, tunelab.engine.block_manager, "
            "tunelab.engine.sequence, tunelab.engine.config; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_allocate_rounds_up_to_blocks_and_free_returns_them():
    bm = BlockManager(num_blocks=10, block_size=4)
    seq = Sequence(list(range(1, 10)))  # 9 tokens -> 3 blocks
    _admit(bm, seq)
    assert len(seq.block_table) == 3 and len(set(seq.block_table)) == 3
    assert bm.num_free == 7 and bm.usage() == pytest.approx(0.3)
    bm.free(seq)
    assert seq.block_table == [] and bm.num_free == 10 and bm.usage() == 0.0


def test_extend_allocates_only_when_a_block_fills():
    bm = BlockManager(num_blocks=10, block_size=4)
    seq = Sequence([1, 2, 3, 4, 5, 6])
    _admit(bm, seq)
    _compute_all(bm, seq)
    seq.append_token(7)
    bm.allocate(seq, 1)  # position 6 still fits block 1
    assert len(seq.block_table) == 2
    seq.num_computed_tokens += 1
    seq.append_token(8)
    bm.allocate(seq, 1)  # position 7 is the last slot of block 1
    seq.num_computed_tokens += 1
    seq.append_token(9)
    bm.allocate(seq, 1)  # position 8 needs block 2
    assert len(seq.block_table) == 3


def test_allocate_refuses_what_does_not_fit_and_changes_nothing():
    bm = BlockManager(num_blocks=2, block_size=4)
    seq = Sequence(list(range(1, 12)))  # needs 3 blocks
    assert bm.fit(seq) == 8
    with pytest.raises(RuntimeError):
        bm.allocate(seq, 11)
    assert bm.num_free == 2 and seq.block_table == []


def test_shared_prefix_reuses_blocks_with_ref_counts():
    bm = BlockManager(num_blocks=16, block_size=4)
    a = Sequence(list(range(1, 11)) + [50, 51])  # blocks [1-4] [5-8] [9,10,50,51]
    _admit(bm, a)
    _compute_all(bm, a)
    b = Sequence(list(range(1, 11)) + [60, 61, 62])
    hits = _admit(bm, b)
    assert hits == a.block_table[:2]  # two full shared blocks; the third differs
    assert b.num_cached_tokens == b.num_computed_tokens == 8
    assert [bm.blocks[i].ref_count for i in hits] == [2, 2]
    assert b.block_table[2] != a.block_table[2]
    bm.free(a)
    assert [bm.blocks[i].ref_count for i in hits] == [1, 1]  # still held by b
    assert bm.num_free == 16 - 4


def test_prefix_is_not_shared_before_its_kv_is_computed():
    bm = BlockManager(num_blocks=16, block_size=4)
    a, b = Sequence(list(range(1, 10))), Sequence(list(range(1, 10)))
    _admit(bm, a)  # allocated but not computed yet
    assert _admit(bm, b) == []


def test_whole_prompt_cached_still_leaves_the_last_token_to_compute():
    bm = BlockManager(num_blocks=16, block_size=4)
    a = Sequence(list(range(1, 9)))  # exactly two full blocks
    _admit(bm, a)
    _compute_all(bm, a)
    b = Sequence(list(range(1, 9)))
    hits = _admit(bm, b)
    assert len(hits) == 1 and b.num_computed_tokens == 4


def test_freed_blocks_stay_cached_until_evicted():
    bm = BlockManager(num_blocks=4, block_size=4)
    a = Sequence(list(range(1, 10)))
    _admit(bm, a)
    _compute_all(bm, a)
    bm.free(a)
    assert bm.num_free == 4
    b = Sequence(list(range(1, 10)))
    assert len(_admit(bm, b)) == 2  # revived from the free list
    bm.free(b)
    c = Sequence(list(range(100, 116)))  # takes all 4 blocks: evicts the cached ones
    _admit(bm, c)
    bm.free(c)
    assert bm.match_prefix(Sequence(list(range(1, 10)))) == []


def test_different_adapters_do_not_share_prefix_blocks():
    bm = BlockManager(num_blocks=16, block_size=4)
    a = Sequence(list(range(1, 10)), adapter="sql")
    _admit(bm, a)
    _compute_all(bm, a)
    assert bm.match_prefix(Sequence(list(range(1, 10)), adapter="chat")) == []
    assert len(bm.match_prefix(Sequence(list(range(1, 10)), adapter="sql"))) == 2


def test_prefix_caching_can_be_disabled_and_reset():
    bm = BlockManager(num_blocks=16, block_size=4, enable_prefix_caching=False)
    a = Sequence(list(range(1, 10)))
    _admit(bm, a)
    _compute_all(bm, a)
    assert bm.match_prefix(Sequence(list(range(1, 10)))) == []
    bm = BlockManager(num_blocks=16, block_size=4)
    _admit(bm, a := Sequence(list(range(1, 10))))
    _compute_all(bm, a)
    bm.reset_prefix_cache()
    assert bm.match_prefix(Sequence(list(range(1, 10)))) == []
