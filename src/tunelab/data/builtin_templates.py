"""Jinja sources of the built-in chat templates and the end-of-turn marker of each.

Each is written on one line per block because the render environment uses
trim_blocks/lstrip_blocks like transformers; newlines come from '\\n' literals.
Every assistant turn ends with its end-of-turn marker and no trailing text that
could tokenize differently when the next turn follows (masks rely on that).
"""

from __future__ import annotations

# System turns are folded into the first user turn where the format has no system role.
_SPLIT_SYSTEM = (
    "{% set ns = namespace(system='') %}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set ns.system = messages[0]['content'] + '\\n\\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set loop_messages = messages %}{% endif %}"
)

LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

_CHATML_TURNS = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
)
CHATML = _CHATML_TURNS + "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

# Qwen3's turns are ChatML's; like Qwen3's own template, `enable_thinking=False` opens the reply with an
# empty think block so the model answers at once (ChatML would drop the switch and let it think).
QWEN3 = _CHATML_TURNS + (
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{% endif %}"
)

GEMMA = (
    "{{ bos_token }}" + _SPLIT_SYSTEM + "{% for message in loop_messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + (ns.system if loop.first else '') + message['content'] + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

MISTRAL = (
    "{{ bos_token }}" + _SPLIT_SYSTEM + "{% for message in loop_messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + (ns.system if loop.first else '') + message['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)

# For base models without a chat format: plain-text headers, and EOS ends every reply,
# so the only stop token needed is one every tokenizer already has.
DEFAULT = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### User:\\n' + message['content'] + '\\n\\n' }}"
    "{% else %}{{ '### Assistant:\\n' + message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\\n' }}{% endif %}"
)

# name -> (jinja source, end-of-turn strings besides the tokenizer's EOS)
BUILTINS: dict[str, tuple[str, list[str]]] = {
    "llama3": (LLAMA3, ["<|eot_id|>"]),
    "chatml": (CHATML, ["<|im_end|>"]),
    "qwen3": (QWEN3, ["<|im_end|>"]),
    "gemma": (GEMMA, ["<end_of_turn>"]),
    "mistral": (MISTRAL, []),
    "default": (DEFAULT, []),
}

ALIASES = {"qwen": "chatml", "qwen2": "chatml", "llama": "llama3", "gemma3": "gemma", "base": "default"}

# a built-in that is a variant of another's format -> that built-in (tool format, Ollama's Go template)
FAMILY = {"qwen3": "chatml"}

# config.json model_type -> built-in used when the tokenizer has no template of its own.
BY_ARCHITECTURE = {
    "llama": "llama3", "qwen2": "chatml", "qwen3": "qwen3", "qwen2_moe": "chatml", "qwen3_moe": "qwen3",
    "gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "gemma3_text": "gemma",
    "mistral": "mistral", "mixtral": "mistral",
}
