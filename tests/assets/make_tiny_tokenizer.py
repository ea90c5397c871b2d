"""Rebuild tests/assets/tiny_tokenizer: a byte-level BPE of 512 tokens with a ChatML template.

Run once; the output is committed so tests never train a tokenizer. Byte-level
means any text (Chinese, emoji) round-trips, which the UTF-8 streaming tests need.
"""

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

OUT = Path(__file__).parent / "tiny_tokenizer"
SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>", "<bos>", "<eos>",
    "<start_of_turn>", "<end_of_turn>", "<|begin_of_text|>", "<|start_header_id|>",
    "<|end_header_id|>", "<|eot_id|>", "<s>", "</s>", "[INST]", "[/INST]", "<think>", "</think>",
]
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CORPUS = [
    "Hello, who are you? I am the tunelab assistant, a helpful model.",
    "The quick brown fox jumps over the lazy dog. 1234567890",
    "你好，你是谁？我是 tunelab 助手。今天天气很好。",
    "Fine-tuning with LoRA adapts a model to your own data. 🙂🚀",
    "system user assistant question answer instruction input output",
] * 50


def main() -> None:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>", bos_token=None,
        unk_token=None, additional_special_tokens=SPECIALS,
    )
    fast.chat_template = CHATML
    OUT.mkdir(exist_ok=True)
    fast.save_pretrained(OUT)


if __name__ == "__main__":
    main()
