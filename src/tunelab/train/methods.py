"""Fine-tuning methods behind one switch: lora, dora, qlora, full, freeze.

LoRA and DoRA come from peft (DoRA = LoRA with `use_dora`, which splits each weight
into magnitude and direction). QLoRA is LoRA over a 4-bit NF4 base from bitsandbytes.
`full` trains every weight; `freeze` trains only the last N decoder layers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tunelab.errors import MissingExtra, TunelabError
from tunelab.train.config import TrainConfig

ADAPTER_METHODS = ("lora", "dora", "qlora")


class MethodUnavailable(TunelabError):
    """The chosen method cannot run on this machine."""


def check_method(cfg: TrainConfig) -> None:
    """Fail before any loading when the method cannot run here: QLoRA needs bitsandbytes, and off
    CUDA a bitsandbytes with a CPU NF4 backend (the 0.50.2 PyPI wheel has one)."""
    if cfg.method != "qlora":
        return
    try:
        import bitsandbytes
    except ImportError:
        raise MissingExtra("bitsandbytes", "qlora", "method=qlora") from None
    if not torch.cuda.is_available():
        _check_cpu_nf4(bitsandbytes.__version__)


def _check_cpu_nf4(version: str) -> None:
    """Round-trip one small tensor through NF4 on the CPU: the capability itself, not a version guess."""
    import bitsandbytes.functional as bnbf

    try:
        packed, state = bnbf.quantize_4bit(torch.ones(64, 64), quant_type="nf4")
        bnbf.dequantize_4bit(packed, state)
    except Exception as err:  # noqa: BLE001 - any failure means no usable CPU backend; its text is shown
        raise MethodUnavailable(
            f"method=qlora without a CUDA GPU needs bitsandbytes with a CPU NF4 backend; the installed "
            f"bitsandbytes {version} has none ({type(err).__name__}: {err}). "
            "Upgrade bitsandbytes or use method=lora on this machine."
        ) from None


def load_model(model_dir: Path, cfg: TrainConfig, dtype: torch.dtype) -> nn.Module:
    """The base causal LM from a local HF directory, quantised to NF4 for qlora
    (stage=rm: the same base with a new scalar `score` head, train/reward.py)."""
    from transformers import AutoModelForCausalLM

    kwargs: dict = {"dtype": dtype, "attn_implementation": "sdpa"}
    if cfg.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
        )
    from tunelab.vision.family import is_vision_model

    if cfg.stage == "rm":
        from tunelab.train.reward import load_reward_model

        model = load_reward_model(model_dir, **kwargs)
    elif is_vision_model(model_dir):
        from tunelab.vision.training import load_vision_model

        model = load_vision_model(model_dir, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    model.config.use_cache = False
    if cfg.method == "qlora":
        _keep_nf4_layout(model)
    return model


def _keep_nf4_layout(model: nn.Module) -> None:
    """Turn off bitsandbytes' CPU inference repack: on an AVX512-BF16 CPU its first eval-mode, no-grad
    forward (an eval split) rewrites each NF4 weight in place into a layout multiplied in bf16, which
    every later forward then takes, so training would move off the NF4 weights GRPO's engine samples
    from (rollout.load_nf4). The kept path dequantizes to the compute dtype, as training does."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def apply_method(model: nn.Module, cfg: TrainConfig, model_dir: Path) -> nn.Module:
    """Mark what trains: a PEFT adapter, every weight, or the last N layers."""
    if cfg.gradient_checkpointing:
        # non-reentrant checkpointing works with frozen inputs, so no input-grad hooks needed
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.method in ADAPTER_METHODS:
        return _add_adapter(model, cfg, model_dir)
    if cfg.method == "freeze":
        _train_last_layers(model, cfg.freeze_trainable_layers)
        if cfg.stage == "rm":
            from tunelab.train.reward import reward_head

            reward_head(model).requires_grad_(True)  # the new head always trains
    else:
        model.requires_grad_(True)
    if is_vlm(model):  # the tower and projector train only when asked
        from tunelab.vision.training import set_vision_trainable

        set_vision_trainable(model, cfg.freeze_vision_tower, cfg.train_projector)
    return model


def is_vlm(model: nn.Module) -> bool:
    """Whether a loaded model has a vision tower (its config carries a vision_config)."""
    return getattr(model.config, "vision_config", None) is not None


def _projector(model: nn.Module) -> str:
    """The VLM's projector module name (Qwen's `merger`, Gemma 3's `multi_modal_projector`)."""
    from tunelab.vision.training import model_format

    return model_format(model).projector


def _add_adapter(model: nn.Module, cfg: TrainConfig, model_dir: Path) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    from tunelab.compat import quiet_peft_warnings

    if cfg.method == "qlora":
        from peft import prepare_model_for_kbit_training

        with quiet_peft_warnings():
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    targets = cfg.lora.target_modules
    if targets != ["all-linear"]:
        check_targets(model, targets)
    vision = is_vlm(model)
    if vision and targets == ["all-linear"]:
        from tunelab.vision.training import lora_targets

        targets = lora_targets(model, cfg.freeze_vision_tower)  # the language model (and tower when asked)
    peft_cfg = LoraConfig(
        r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        modules_to_save=[_projector(model)] if vision and cfg.train_projector else None,
        use_dora=cfg.method == "dora", bias="none",
        # the input embedding's rows of these ids train (peft ties the output rows to them)
        trainable_token_indices=trainable_token_ids(cfg, model_dir) or None,
        # SEQ_CLS: peft trains and saves the reward model's new `score` head with the adapter
        task_type="SEQ_CLS" if cfg.stage == "rm" else "CAUSAL_LM",
        base_model_name_or_path=str(model_dir),
    )
    try:
        with quiet_peft_warnings():
            return get_peft_model(model, peft_cfg)
    except ValueError as err:
        raise TunelabError(f"lora.target_modules: {err}") from None


def trainable_token_ids(cfg: TrainConfig, model_dir: Path) -> list[int]:
    """lora.trainable_tokens as vocabulary ids, 'template' expanded to the chat template's control
    tokens; a token that is not exactly one vocabulary entry is an error naming it."""
    if not cfg.lora.trainable_tokens:
        return []
    from transformers import AutoTokenizer

    from tunelab.data.templates import resolve_template

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    names: list[str] = []
    for name in cfg.lora.trainable_tokens:
        if name == "template":
            template = resolve_template(model_dir, None, cfg.data.template, cfg.data.system)
            names += template.control_tokens(tokenizer) or _no_control_tokens(template.name)
        else:
            names.append(name)
    vocab = tokenizer.get_vocab()
    unknown = [n for n in names if n not in vocab]
    if unknown:
        raise TunelabError(f"lora.trainable_tokens: {', '.join(map(repr, unknown))} is not one token of this "
                           "model's vocabulary (give token strings as the tokenizer spells them, or 'template')")
    return sorted({vocab[n] for n in names})


def _no_control_tokens(template: str) -> list[str]:
    raise TunelabError(f"lora.trainable_tokens: 'template': chat template '{template}' uses no special tokens; "
                       "name the tokens instead")


def check_targets(model: nn.Module, targets: list[str]) -> None:
    """Every LoRA target must name a module (peft itself only fails when none matches)."""
    names = [name for name, _ in model.named_modules()]
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
    for target in targets:
        # peft's rule for a list of names: the full module name, or its last dotted parts
        if not any(n == target or n.endswith("." + target) for n in names):
            raise TunelabError(f"lora.target_modules: '{target}' matches no module of this model; "
                               f"its linear layers are: {', '.join(linear)} (or all-linear)")


def _train_last_layers(model: nn.Module, n: int) -> None:
    from tunelab.train.loss import causal_lm

    layers = causal_lm(model).get_decoder().layers
    if not 1 <= n <= len(layers):
        raise TunelabError(f"freeze_trainable_layers must be in 1..{len(layers)}, got {n}")
    model.requires_grad_(False)
    for layer in layers[-n:]:
        layer.requires_grad_(True)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights counted once."""
    params = list(model.parameters())  # parameters() yields a shared (tied) tensor once
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return trainable, total


def save_result(model: nn.Module, cfg: TrainConfig, run_dir: Path, tokenizer, template,
                state_dict: dict | None = None) -> Path:
    """Write the adapter (PEFT format) or the full model, with tokenizer and chat template
    (`state_dict`: whole weights gathered from a sharded run, in place of the model's own)."""
    from tunelab.atomic import atomic_dir

    name = "adapter" if cfg.method in ADAPTER_METHODS else "model"
    with atomic_dir(run_dir / name) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True, state_dict=state_dict)
        template.save_with_tokenizer(tokenizer, tmp)  # transformers' apply_chat_template renders it too
    return run_dir / name
