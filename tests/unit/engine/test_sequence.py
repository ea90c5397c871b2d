"""Sequence bookkeeping, EngineConfig validation, and text streaming through the scheduler."""

import pytest
from transformers import AutoTokenizer

from tunelab.engine.config import EngineConfig, SamplingParams
from tunelab.engine.detokenizer import IncrementalDetokenizer
from tunelab.engine.scheduler import Scheduler
from tunelab.engine.sequence import Sequence, SequenceStatus, TokenLogprob
from tunelab.errors import ConfigError


def test_tokens_grow_and_keep_prompt_and_output_apart():
    s = Sequence([5, 6, 7], SamplingParams(seed=10), sample_index=2)
    assert s.status is SequenceStatus.WAITING and s.num_uncomputed_tokens == 3
    s.num_computed_tokens = 3
    s.append_token(9, TokenLogprob(9, -0.5))
    assert s.token_ids == [5, 6, 7, 9] and s.output_ids == [9] and s.num_uncomputed_tokens == 1
    assert s.logprobs[0].logprob == -0.5 and s.seed == 12
    assert Sequence([1]).seed is None


def test_reset_for_recompute_keeps_tokens_and_drops_kv_state():
    s = Sequence([1, 2, 3])
    s.append_token(4)
    s.num_computed_tokens, s.num_cached_tokens, s.block_table = 3, 0, [0]
    s.reset_for_recompute()
    assert s.token_ids == [1, 2, 3, 4] and s.num_computed_tokens == 0 and s.block_table == []
    assert s.status is SequenceStatus.WAITING


def test_ids_are_unique_unless_given():
    assert Sequence([1]).seq_id != Sequence([1]).seq_id
    assert Sequence([1], seq_id="req-1").seq_id == "req-1"


@pytest.mark.parametrize("field,value", [("max_num_seqs", 0), ("block_size", -1), ("num_blocks", 0),
                                         ("gpu_memory_utilization", 1.5), ("max_model_len", 0)])
def test_engine_config_rejects_bad_values_by_name(field, value):
    with pytest.raises(ConfigError, match=field):
        EngineConfig(**{field: value})


def test_scheduler_needs_concrete_cache_geometry():
    with pytest.raises(ValueError, match="num_blocks"):
        Scheduler(EngineConfig(max_model_len=64))


def _generate(tok, text: str, params: SamplingParams, eos: int) -> Sequence:
    """Feed `text`'s tokens as if the model sampled them, through the real scheduler."""
    cfg = EngineConfig(max_model_len=256, num_blocks=32, block_size=4, eos_token_ids=[eos])
    sched = Scheduler(cfg)
    prompt = tok.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    seq = Sequence(prompt, params, detokenizer=IncrementalDetokenizer(tok, prompt, params.stop))
    sched.add(seq)
    deltas = []
    for token in tok.encode(text, add_special_tokens=False) + [eos]:
        sched.postprocess(sched.schedule(), [token])
        deltas.append(seq.take_delta())
        if seq.is_finished:
            break
    assert "".join(deltas) == seq.text
    return seq


def test_stop_string_finishes_the_sequence_with_stop(tiny_tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    seq = _generate(tok, "Sure: 你好 END of it", SamplingParams(stop=["END"]), tok.eos_token_id)
    assert seq.finish_reason == "stop" and seq.stop_reason == "END" and seq.text == "Sure: 你好 "
    assert seq.block_table == []


def test_eos_token_is_kept_in_ids_but_not_in_text(tiny_tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    seq = _generate(tok, "ok 🎉", SamplingParams(stop=["🎉!"]), tok.eos_token_id)
    assert seq.finish_reason == "stop" and seq.stop_reason == tok.eos_token_id
    assert seq.output_ids[-1] == tok.eos_token_id and seq.text == "ok 🎉"  # held stop prefix flushed


def test_max_tokens_flushes_held_text(tiny_tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    n = len(tok.encode("abc", add_special_tokens=False))
    seq = _generate(tok, "abc", SamplingParams(max_tokens=n, stop=["c and"]), tok.eos_token_id)
    assert seq.finish_reason == "length" and seq.text == "abc"
