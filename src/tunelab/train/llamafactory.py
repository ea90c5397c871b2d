"""LLaMA-Factory YAML files, run unchanged: `tunelab train llama3_lora_sft.yaml`, `tunelab merge
merge_lora.yaml` (`llamafactory-cli train` / `export`).

One table per command maps a LLaMA-Factory key onto ours. Keys it needs and tunelab does not
(worker counts, its dataset cache, plotting, DDP timeouts) are IGNORED on purpose and listed
when the file is read; any other key is an error naming it, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tunelab.errors import ConfigError

Rule = Callable[[Any, dict], dict[str, Any]]  # (value, whole file) -> our dotted keys and values

_TEMPLATES_HINT = "llama3, qwen (chatml), gemma, mistral or default"


@dataclass
class Translation:
    """A LLaMA-Factory file as our keys, with what was mapped and what was ignored on purpose."""

    values: dict[str, Any] = field(default_factory=dict)  # nested, ours
    mapped: list[tuple[str, str]] = field(default_factory=list)  # (their key, our keys)
    ignored: list[str] = field(default_factory=list)

    def summary(self, path: str | Path) -> list[str]:
        """Lines telling the user how their file was read."""
        pairs = ", ".join(f"{theirs}->{ours}" if ours else f"{theirs} (used)" for theirs, ours in self.mapped)
        lines = [f"{path}: LLaMA-Factory file; mapped {pairs}"]
        if self.ignored:
            lines.append(f"ignored on purpose (nothing to do in tunelab): {', '.join(self.ignored)}")
        return lines


def is_llamafactory(data: dict) -> bool:
    """True for a LLaMA-Factory YAML (it names its model with model_name_or_path)."""
    return "model_name_or_path" in data


def train_values(data: dict, path: str | Path) -> Translation:
    """A `llamafactory-cli train` YAML -> TrainConfig keys. Without val_size LLaMA-Factory trains on
    every row, so no eval split is held out (tunelab's own default holds out 5%)."""
    out = _translate(data, path, TRAIN, TRAIN_IGNORED)
    if "val_size" not in data:
        out.values["eval_split"] = 0.0
        out.mapped.append(("val_size (absent)", "eval_split=0"))
    return out


def merge_values(data: dict, path: str | Path) -> Translation:
    """A `llamafactory-cli export` YAML -> `tunelab merge` (model, run, out)."""
    if "adapter_name_or_path" not in data:
        raise ConfigError(f"{path}: adapter_name_or_path is missing (the training output_dir to merge)")
    return _translate(data, path, MERGE, MERGE_IGNORED)


def _translate(data: dict, path: str | Path, table: dict[str, Rule], ignored: dict[str, str]) -> Translation:
    unknown = [k for k in data if k not in table and k not in ignored]
    if unknown:
        raise ConfigError(f"{path}: LLaMA-Factory key(s) {', '.join(unknown)} have no tunelab equivalent; "
                          "remove them (or ask for them in an issue)")
    out = Translation()
    for key, value in data.items():
        if key in ignored:
            out.ignored.append(key)
            continue
        try:
            ours = table[key](value, data)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{path}: {key}: {err}") from None
        out.mapped.append((key, ",".join(ours)))
        for dotted, v in ours.items():
            _put(out.values, dotted, v)
    return out


def _put(node: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _to(key: str, convert: Callable[[Any], Any] = lambda v: v) -> Rule:
    return lambda value, _data: {key: convert(value)}


def _used(_value: Any, _data: dict) -> dict:
    return {}  # read by another key's rule


def _names(value: Any) -> list[str]:
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(x).strip() for x in items if str(x).strip()]


def _whole(value: Any) -> int:
    if float(value) != int(float(value)):
        raise ValueError(f"tunelab trains whole epochs, got {value}")
    return int(float(value))


def _stage(value: Any, data: dict) -> dict:
    stage = {"sft": "sft", "pt": "sft", "dpo": "dpo", "kto": "kto"}.get(str(value))
    if stage is None:
        raise ValueError(f"stage '{value}' is not supported (sft, pt, dpo, kto; orpo/simpo via pref_loss)")
    loss = str(data.get("pref_loss", "sigmoid"))
    return {"stage": loss if stage == "dpo" and loss in ("orpo", "simpo") else stage}


def _method(value: Any, data: dict) -> dict:
    if value not in ("lora", "full", "freeze"):
        raise ValueError(f"'{value}' is not one of lora, full, freeze")
    if value != "lora":
        return {"method": value}
    bits = data.get("quantization_bit")
    if bits not in (None, 4):
        raise ValueError(f"quantization_bit {bits}: tunelab's QLoRA is 4-bit (NF4)")
    return {"method": "qlora" if bits == 4 else "dora" if data.get("use_dora") else "lora"}


def _bitsandbytes(value: Any) -> dict:
    if str(value) not in ("bitsandbytes", "bnb"):
        raise ValueError(f"'{value}': tunelab's QLoRA quantizes with bitsandbytes NF4 only")
    return {}


def _target(value: Any, _data: dict) -> dict:
    names = _names(value)
    return {"lora.target_modules": ["all-linear"] if names == ["all"] else names}


def _rank(value: Any, data: dict) -> dict:
    # LLaMA-Factory's lora_alpha defaults to twice the rank
    return {"lora.rank": int(value), **({} if "lora_alpha" in data else {"lora.alpha": 2.0 * int(value)})}


def _template(value: Any, _data: dict) -> dict:
    from tunelab.data.builtin_templates import ALIASES, BUILTINS

    if str(value).lower() not in (*BUILTINS, *ALIASES):
        raise ValueError(f"template '{value}' is not built into tunelab ({_TEMPLATES_HINT}); remove it to use "
                         "the model's own chat template")
    return {"data.template": str(value)}


def _dataset(value: Any, data: dict) -> dict:
    folder = Path(str(data.get("dataset_dir", "data")))
    return {"datasets": [f"{folder / 'dataset_info.json'}#{','.join(_names(value))}"]}


def _schedule(value: Any, _data: dict) -> dict:
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant",
            "constant_with_warmup": "constant"}.get(str(value))
    if name is None:
        raise ValueError(f"'{value}' is not one of cosine, linear, constant, constant_with_warmup")
    return {"schedule": name}


def _precision(name: str) -> Rule:
    return lambda value, _data: {"precision": name} if value else {}


def _report_to(value: Any, _data: dict) -> dict:
    names = [n for n in _names(value) if n != "none"]
    return {"report_to": names} if names else {}


def _pref_loss(value: Any, _data: dict) -> dict:
    if value in ("orpo", "simpo"):
        return {}  # a stage of its own: see _stage
    return {"pref.loss": value}


def _resume(value: Any, _data: dict) -> dict:
    if value:
        raise ValueError("resume with `tunelab train --resume RUN_DIR` instead")
    return {}


TRAIN: dict[str, Rule] = {
    "model_name_or_path": _to("model"),
    "stage": _stage,
    "finetuning_type": _method,
    "use_dora": _used,
    "quantization_bit": _used,
    "quantization_method": lambda v, _d: _bitsandbytes(v),
    "lora_target": _target,
    "lora_rank": _rank,
    "lora_alpha": _to("lora.alpha", float),
    "lora_dropout": _to("lora.dropout", float),
    "freeze_trainable_layers": _to("freeze_trainable_layers", int),
    "freeze_vision_tower": _to("freeze_vision_tower", bool),
    "freeze_multi_modal_projector": lambda v, _d: {"train_projector": not v},
    "template": _template,
    "dataset": _dataset,
    "dataset_dir": _used,
    "cutoff_len": _to("data.cutoff_len", int),
    "max_samples": _to("data.max_samples", int),
    "train_on_prompt": lambda v, _d: {"data.train_on": "all"} if v else {},
    "mask_history": lambda v, _d: {"data.train_on": "last"} if v else {},
    "packing": _to("packing", bool),
    "val_size": _to("eval_split", float),
    "eval_steps": _to("eval_every", int),
    "output_dir": _to("output", str),
    "logging_steps": _to("log_every", int),
    "save_steps": _to("save_every", int),
    "save_total_limit": _to("keep_last", int),
    "per_device_train_batch_size": _to("micro_batch_size", int),
    "gradient_accumulation_steps": _to("grad_accum", int),
    "learning_rate": _to("lr", float),
    "num_train_epochs": _to("epochs", _whole),
    "max_steps": _to("max_steps", int),
    "lr_scheduler_type": _schedule,
    "warmup_ratio": _to("warmup_ratio", float),
    "warmup_steps": _to("warmup_steps", int),
    "weight_decay": _to("weight_decay", float),
    "max_grad_norm": _to("max_grad_norm", float),
    "seed": _to("seed", int),
    "bf16": _precision("bf16"),
    "pure_bf16": _precision("bf16"),
    "fp16": _precision("fp16"),
    "disable_gradient_checkpointing": lambda v, _d: {"gradient_checkpointing": not v},
    "report_to": _report_to,
    "pref_beta": _to("pref.beta", float),
    "pref_loss": _pref_loss,
    "resume_from_checkpoint": _resume,
}

TRAIN_IGNORED: dict[str, str] = {
    "do_train": "training is what `tunelab train` does",
    "do_eval": "eval runs when val_size is set",
    "overwrite_cache": "tunelab keeps no dataset cache",
    "preprocessing_num_workers": "tokenizing is in-process",
    "dataloader_num_workers": "batches are built in-process",
    "plot_loss": "`tunelab report` draws the loss curve",
    "overwrite_output_dir": "a new run never overwrites another",
    "save_only_model": "checkpoints always carry what resuming needs",
    "ddp_timeout": "multi-GPU runs use accelerate's defaults",
    "trust_remote_code": "tunelab runs its own model code",
    "flash_attn": "attention kernels are chosen per device",
    "per_device_eval_batch_size": "eval uses micro_batch_size",
    "eval_strategy": "eval_steps sets how often",
    "logging_dir": "metrics go to the run directory",
}

MERGE: dict[str, Rule] = {
    "model_name_or_path": _to("model", str),
    "adapter_name_or_path": _to("run", str),
    "export_dir": _to("out", str),
    "template": lambda v, _d: {},  # the run's saved training template is merged in
}

MERGE_IGNORED: dict[str, str] = {
    "trust_remote_code": "tunelab runs its own model code",
    "export_size": "shards are sized by safetensors",
    "export_device": "merging runs on the CPU",
    "export_legacy_format": "tunelab writes safetensors only",
    "finetuning_type": "the run records its method",
}
