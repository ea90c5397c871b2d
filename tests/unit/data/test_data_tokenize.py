"""Loss masks, cutoff handling, and the train/serve prompt equality."""

from __future__ import annotations

import pytest

from tunelab.data.config import DataConfig
from tunelab.data.errors import DataError
from tunelab.data.rows import Row
from tunelab.data.templates import ChatTemplate, encode_prompt
from tunelab.data.tokenize import IGNORE, build_examples, tokenize_row

TEMPLATES = ["tokenizer", "llama3", "chatml", "gemma", "mistral", "default"]


def _template(name, tokenizer, tiny_tokenizer_dir) -> ChatTemplate:
    if name == "tokenizer":
        return ChatTemplate.for_model(tiny_tokenizer_dir)
    return ChatTemplate.builtin(name, bos_token="<bos>" if name == "gemma" else "", eos_token=tokenizer.eos_token)


def _row(messages) -> Row:
    return Row(messages, None, "mem", 1, "messages")


def _trained_spans(labels) -> list[tuple[int, int]]:
    spans, start = [], None
    for i, x in enumerate(labels + [IGNORE]):
        if x != IGNORE and start is None:
            start = i
        elif x == IGNORE and start is not None:
            spans.append((start, i))
            start = None
    return spans


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize("turns", [3, 5])
def test_training_prompt_equals_serving_prompt(name, turns, tokenizer, tiny_tokenizer_dir, conversation):
    """The tokens before the final reply at training time are exactly what serving sends."""
    template = _template(name, tokenizer, tiny_tokenizer_dir)
    messages = conversation[:turns]
    example = tokenize_row(_row(messages), template, tokenizer, DataConfig())
    last_start = _trained_spans(example.labels)[-1][0]
    served = encode_prompt(template, tokenizer, messages[:-1])
    assert example.input_ids[:last_start] == served
    assert len(_trained_spans(example.labels)) == turns // 2


@pytest.mark.parametrize("name", TEMPLATES)
def test_only_replies_and_their_end_of_turn_carry_loss(name, tokenizer, tiny_tokenizer_dir, conversation):
    template = _template(name, tokenizer, tiny_tokenizer_dir)
    example = tokenize_row(_row(conversation), template, tokenizer, DataConfig())
    stops = set(template.stop_token_ids(tokenizer))
    replies = [m["content"] for m in conversation if m["role"] == "assistant"]
    for (start, end), reply in zip(_trained_spans(example.labels), replies, strict=True):
        assert example.labels[start:end] == example.input_ids[start:end]
        text = tokenizer.decode(example.input_ids[start:end])
        assert text.strip().startswith(reply.strip())
        assert stops & set(example.input_ids[start:end]), "the reply's end-of-turn token must carry loss"
    trained = {i for s, e in _trained_spans(example.labels) for i in range(s, e)}
    assert not any("Who are you" in tokenizer.decode([example.input_ids[i]]) for i in trained)


def test_train_on_all_and_last(tokenizer, tiny_tokenizer_dir, conversation):
    template = _template("chatml", tokenizer, tiny_tokenizer_dir)
    full = tokenize_row(_row(conversation), template, tokenizer, DataConfig(train_on="all"))
    assert full.labels == full.input_ids
    last = tokenize_row(_row(conversation), template, tokenizer, DataConfig(train_on="last"))
    spans = _trained_spans(last.labels)
    assert len(spans) == 1 and tokenizer.decode(last.input_ids[spans[0][0]:spans[0][1]]) == "我是 tunelab 助手。<|im_end|>\n"


def test_cutoff_truncates_at_turn_boundary_or_drops(tokenizer, tiny_tokenizer_dir, conversation):
    template = _template("chatml", tokenizer, tiny_tokenizer_dir)
    full = tokenize_row(_row(conversation), template, tokenizer, DataConfig())
    first_end = _trained_spans(full.labels)[0][1]
    cfg = DataConfig(cutoff_len=len(full.input_ids) - 1)
    cut, stats = build_examples([_row(conversation)], template, tokenizer, cfg)
    assert cut[0].input_ids == full.input_ids[:first_end]
    assert (stats.kept, stats.truncated, stats.dropped_over_cutoff) == (1, 1, 0)
    short = _row(conversation[:3])
    rows = [short, _row(conversation)]
    kept, stats = build_examples(rows, template, tokenizer, DataConfig(cutoff_len=cfg.cutoff_len, overflow="drop"))
    assert len(kept) == 1 and (stats.kept, stats.dropped_over_cutoff) == (1, 1)
    too_short = DataConfig(cutoff_len=first_end - 1)
    with pytest.raises(DataError, match="no trainable tokens in 1 rows: 1 over cutoff_len"):
        build_examples([_row(conversation)], template, tokenizer, too_short)


def test_text_rows_train_every_token_and_end_with_eos(tokenizer, tiny_tokenizer_dir):
    template = _template("chatml", tokenizer, tiny_tokenizer_dir)
    row = Row(None, "The quick brown fox jumps over the lazy dog. " * 3, "mem", 1, "text")
    example = tokenize_row(row, template, tokenizer, DataConfig())
    assert example.input_ids[-1] == tokenizer.eos_token_id
    assert example.labels == example.input_ids
    examples, stats = build_examples([row], template, tokenizer, DataConfig(cutoff_len=8))
    assert len(examples[0]) == 8 and stats.truncated == 1
    assert stats.loss_share == 1.0


def test_default_system_prompt_from_config(tokenizer, tiny_tokenizer_dir, conversation):
    template = _template("chatml", tokenizer, tiny_tokenizer_dir)
    example = tokenize_row(_row(conversation[1:3]), template, tokenizer, DataConfig(system="Be kind."))
    served = encode_prompt(template.with_system("Be kind."), tokenizer, conversation[1:2])
    assert example.input_ids[: len(served)] == served


def test_template_that_rewrites_history_is_counted_not_silently_trained(tokenizer, conversation):
    """Like Qwen3 dropping old reasoning: earlier replies render differently once a later turn follows."""
    source = ("{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}{{ '<|im_start|>assistant\\n…<|im_end|>\\n' }}"
              "{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    template = ChatTemplate("rewriting", source, ["<|im_end|>"], eos_token="<|im_end|>")
    examples, stats = build_examples([_row(conversation)], template, tokenizer, DataConfig())
    assert stats.untrained_turns == 1 and len(_trained_spans(examples[0].labels)) == 1
    served = encode_prompt(template, tokenizer, conversation[:-1])
    assert examples[0].input_ids[: len(served)] == served


def test_zero_trainable_tokens_is_an_error(tokenizer):
    silent = ChatTemplate("silent", "{% for m in messages %}{% if m['role'] != 'assistant' %}{{ m['content'] }}{% endif %}{% endfor %}")
    rows = [_row([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])]
    with pytest.raises(DataError, match="no trainable tokens"):
        build_examples(rows, silent, tokenizer, DataConfig())
