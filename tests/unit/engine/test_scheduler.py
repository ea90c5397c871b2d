"""Scheduler: admission, token budget, chunked prefill, preemption, prefix reuse, limits."""

import pytest

from tunelab.engine.config import EngineConfig, SamplingParams
from tunelab.engine.scheduler import Scheduler
from tunelab.engine.sequence import Sequence, SequenceStatus
from tunelab.errors import InvalidRequest

EOS = 0


def _cfg(**kw) -> EngineConfig:
    base = dict(max_num_seqs=8, max_num_batched_tokens=64, max_model_len=128, block_size=4,
                num_blocks=64, eos_token_ids=[EOS])
    return EngineConfig(**{**base, **kw})


def _seq(n: int, start: int = 1, max_tokens: int = 4, **kw) -> Sequence:
    return Sequence(list(range(start, start + n)), SamplingParams(max_tokens=max_tokens, **kw))


def _next_token(seq: Sequence) -> int:
    """A stand-in model: the next token is a pure function of all tokens so far."""
    return 100 + sum((i + 1) * t for i, t in enumerate(seq.token_ids)) % 50


def _step(sched: Scheduler, check_kv: bool = True):
    batch = sched.schedule()
    for item in batch.items:  # every scheduled token must have a slot
        assert len(item.seq.block_table) * sched.cfg.block_size >= item.start_pos + item.num_tokens
        assert item.start_pos == item.seq.num_computed_tokens
    tokens = [_next_token(s) for s in batch.sample_seqs]
    return batch, sched.postprocess(batch, tokens)


def _run(sched: Scheduler, max_steps: int = 500) -> list[Sequence]:
    done = []
    for _ in range(max_steps):
        if not sched.has_unfinished():
            return done
        done += _step(sched)[1]
    raise AssertionError("scheduler did not finish")


def test_new_requests_join_the_running_batch_each_step():
    sched = Scheduler(_cfg())
    a = _seq(5, max_tokens=10)
    sched.add(a)
    batch, _ = _step(sched)
    assert [(it.seq, it.start_pos, it.num_tokens) for it in batch.items] == [(a, 0, 5)]
    b = _seq(3, start=40)
    sched.add(b)
    batch, _ = _step(sched)
    assert [(it.seq, it.start_pos, it.num_tokens) for it in batch.items] == [(a, 5, 1), (b, 0, 3)]
    assert all(it.needs_logits for it in batch.items) and batch.items[0].is_decode


def test_token_budget_chunks_a_long_prefill_and_decodes_go_on():
    sched = Scheduler(_cfg(max_num_batched_tokens=8))
    a = _seq(3, max_tokens=20)
    sched.add(a)
    _step(sched)
    long = _seq(20, start=30)
    sched.add(long)
    chunks = []
    for _ in range(3):
        batch, _ = _step(sched)
        assert batch.num_tokens <= 8
        assert batch.items[0].seq is a and batch.items[0].num_tokens == 1  # decode never stalls
        chunks.append((batch.items[1].start_pos, batch.items[1].num_tokens, batch.items[1].needs_logits))
    assert chunks == [(0, 7, False), (7, 7, False), (14, 6, True)]
    assert len(long.output_ids) == 1


def test_max_num_seqs_limits_the_running_batch():
    sched = Scheduler(_cfg(max_num_seqs=2))
    seqs = [_seq(3, start=10 * i + 1) for i in range(4)]
    for s in seqs:
        sched.add(s)
    _step(sched)
    assert sched.stats()["running"] == 2 and sched.stats()["waiting"] == 2
    assert [s.status for s in seqs] == [SequenceStatus.RUNNING] * 2 + [SequenceStatus.WAITING] * 2
    assert len(_run(sched)) == 4
    assert all(s.is_finished for s in seqs)


def test_prompt_longer_than_max_model_len_is_rejected_before_any_work():
    sched = Scheduler(_cfg(max_model_len=16))
    with pytest.raises(InvalidRequest, match="17 tokens.*16") as err:
        sched.add(_seq(17))
    assert err.value.param == "prompt"
    assert not sched.has_unfinished()
    with pytest.raises(InvalidRequest, match="empty"):
        sched.add(Sequence([]))


def test_output_stops_at_max_model_len():
    sched = Scheduler(_cfg(max_model_len=12))
    s = _seq(10, max_tokens=100)
    sched.add(s)
    _run(sched)
    assert s.finish_reason == "length" and s.num_tokens == 12


def test_finish_on_max_tokens_eos_and_stop_token_ids():
    sched = Scheduler(_cfg())
    by_len = _seq(3, max_tokens=2)
    sched.add(by_len)
    _run(sched)
    assert by_len.finish_reason == "length" and len(by_len.output_ids) == 2
    s = _seq(3, max_tokens=50, stop_token_ids=[77])
    sched.add(s)
    batch = sched.schedule()
    sched.postprocess(batch, [5])
    finished = sched.postprocess(sched.schedule(), [77])
    assert finished == [s] and s.finish_reason == "stop" and s.output_ids == [5, 77]
    assert s.stop_reason == 77 and sched.block_manager.num_free == 64


def test_eos_stops_unless_ignored():
    sched = Scheduler(_cfg())
    a, b = _seq(3, max_tokens=3), _seq(3, start=20, max_tokens=3, ignore_eos=True)
    sched.add(a)
    sched.add(b)
    for _ in range(3):
        sched.postprocess(sched.schedule(), [EOS] * len(sched.running))
    assert a.finish_reason == "stop" and a.output_ids == [EOS]
    assert b.finish_reason == "length" and b.output_ids == [EOS] * 3


def test_abort_frees_blocks_at_once():
    sched = Scheduler(_cfg())
    a, b, c = _seq(9, max_tokens=50), _seq(9, start=50, max_tokens=50), _seq(9, start=80)
    for s in (a, b):
        sched.add(s)
    _step(sched)
    sched.add(c)
    used = 64 - sched.block_manager.num_free
    assert sched.abort(a.seq_id) is a
    assert a.finish_reason == "abort" and a.block_table == []
    assert 64 - sched.block_manager.num_free == used - 3
    assert sched.abort(c.seq_id) is c  # waiting requests can be cancelled too
    assert sched.abort("nope") is None
    batch = sched.schedule()
    assert [it.seq for it in batch.items] == [b]


def test_abort_while_the_step_runs_discards_its_token():
    sched = Scheduler(_cfg())
    a, b = _seq(5, max_tokens=50), _seq(5, start=30, max_tokens=50)
    sched.add(a)
    sched.add(b)
    batch = sched.schedule()
    sched.abort(a.seq_id)
    assert sched.postprocess(batch, [7, 8]) == []
    assert a.output_ids == [] and b.output_ids == [8]


def test_preemption_frees_the_newest_and_recomputes_it_later():
    # 6 blocks of 4 slots; three 8-token prompts fill 2 blocks each, then decodes need more
    sched = Scheduler(_cfg(num_blocks=6, enable_prefix_caching=False))
    seqs = [_seq(8, start=10 * i + 1, max_tokens=6) for i in range(3)]
    for s in seqs:
        sched.add(s)
    _step(sched)
    assert sched.block_manager.num_free == 0
    batch, _ = _step(sched)  # every decode needs a new block: the newest seq must give way
    assert sched.stats()["preemptions"] >= 1
    assert seqs[2].status is SequenceStatus.WAITING and seqs[2].num_computed_tokens == 0
    assert sched.waiting[0] is seqs[2]
    assert len(seqs[2].output_ids) == 1  # its sampled token survives the preemption
    _run(sched)
    assert all(s.finish_reason == "length" and len(s.output_ids) == 6 for s in seqs)
    assert sched.block_manager.num_free == 6


def test_batched_with_preemption_equals_one_at_a_time():
    prompts = [list(range(s, s + n)) for s, n in [(1, 9), (20, 5), (40, 13), (70, 3), (90, 11)]]

    def outputs(cfg, together: bool):
        result = []
        sched = Scheduler(cfg)
        seqs = [Sequence(p, SamplingParams(max_tokens=12)) for p in prompts]
        for s in seqs:
            sched.add(s)
            if not together:
                _run(sched)
        _run(sched)
        return [s.output_ids for s in seqs], sched.stats()["preemptions"]

    alone, _ = outputs(_cfg(), together=False)
    tight, preemptions = outputs(_cfg(num_blocks=12, max_num_batched_tokens=10), together=True)
    assert preemptions > 0
    assert tight == alone


def test_request_that_cannot_get_memory_fails_alone():
    sched = Scheduler(_cfg(num_blocks=3, max_model_len=64))
    big = _seq(11, max_tokens=40)  # fits 3 blocks at first, outgrows the whole cache
    sched.add(big)
    finished = _run(sched)
    assert finished == [big] and big.finish_reason == "abort" and "KV cache" in big.error
    small = _seq(3, max_tokens=2)
    sched.add(small)
    _run(sched)
    assert small.finish_reason == "length"


def test_prompt_larger_than_the_whole_cache_is_rejected():
    sched = Scheduler(_cfg(num_blocks=2))
    with pytest.raises(InvalidRequest, match="KV cache"):
        sched.add(_seq(9))


def test_shared_prompt_prefix_is_computed_once():
    sched = Scheduler(_cfg())
    system = list(range(1, 17))  # four full blocks
    first = Sequence(system + [90, 91], SamplingParams(max_tokens=3))
    sched.add(first)
    _step(sched)
    second = Sequence(system + [95], SamplingParams(max_tokens=3))
    sched.add(second)
    batch, _ = _step(sched)
    item = [it for it in batch.items if it.seq is second][0]
    assert second.num_cached_tokens == 16 and (item.start_pos, item.num_tokens) == (16, 1)
    assert second.block_table[:4] == first.block_table[:4]
    _run(sched)
    assert sched.block_manager.num_free == 64


def test_postprocess_checks_the_number_of_tokens():
    sched = Scheduler(_cfg())
    sched.add(_seq(3))
    batch = sched.schedule()
    with pytest.raises(ValueError, match="expected 1"):
        sched.postprocess(batch, [1, 2])
