"""The Train form as a `tunelab train` config: validation, the CLI line and the YAML.

The browser sends flat `key: value` strings named after TrainConfig fields
(`lr`, `lora.rank`, `data.cutoff_len`, ...). They are validated by building the
trainer's own typed config, so the UI accepts exactly what the CLI accepts and
its errors name the same keys.
"""

from __future__ import annotations

import dataclasses
import shlex
import typing
from pathlib import Path
from typing import Any

from tunelab.errors import ConfigError, TunelabError


class FormError(TunelabError):
    """A form value is wrong; `field` names the input the UI marks."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def clean_form(form: dict[str, Any]) -> dict[str, Any]:
    """Drop empty values and trim strings; the trainer's defaults fill the gaps."""
    out: dict[str, Any] = {}
    for key, value in form.items():
        if isinstance(value, str):
            value = value.strip()
        if value in ("", None, []):
            continue
        out[str(key)] = value
    return out


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    """{'lora.rank': 8} -> {'lora': {'rank': 8}}, the shape load_config and YAML use."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def choices() -> dict[str, list[str]]:
    """The Train form's fixed choices: chat templates are the built-ins ('' = the model's own)."""
    from tunelab.data.builtin_templates import BUILTINS

    return {"data.template": list(BUILTINS)}


def split_lists(flat: dict[str, Any]) -> dict[str, Any]:
    """Comma-separated text for a list-typed key (`lora.target_modules=q_proj,v_proj`) as a list,
    so the CLI line, the YAML and the trainer read it alike; TrainConfig's types say which keys."""
    from tunelab.config import split_list

    return {k: split_list(v, k) if isinstance(v, str) and _is_list(k) else v for k, v in flat.items()}


def _is_list(key: str) -> bool:
    from tunelab.train.config import TrainConfig

    cls: Any = TrainConfig
    *parents, leaf = key.split(".")
    for part in parents:
        cls = typing.get_type_hints(cls).get(part) if dataclasses.is_dataclass(cls) else None
    return dataclasses.is_dataclass(cls) and typing.get_origin(typing.get_type_hints(cls).get(leaf)) is list


def validate_train(flat: dict[str, Any]) -> Any:
    """Build the trainer's TrainConfig from the form, or raise FormError naming the field."""
    if not flat.get("datasets"):
        raise FormError("datasets", "dataset: upload a file or give a path")
    for path in flat["datasets"]:
        if not Path(path).exists():
            raise FormError("datasets", f"dataset not found: {path}")
    from tunelab.config import build
    from tunelab.train.config import TrainConfig

    try:
        return build(TrainConfig, nested(flat))
    except ConfigError as err:
        raise FormError(_field_of(str(err), flat), str(err)) from None


def _field_of(message: str, flat: dict[str, Any]) -> str:
    """The form key an error message is about: the longest key it mentions."""
    head = message.split(":", 1)[0].strip()
    if head in flat:
        return head
    mentioned = [k for k in flat if k in message or k.rsplit(".", 1)[-1] in message.split()]
    return max(mentioned, key=len) if mentioned else ""


def cli_line(flat: dict[str, Any]) -> str:
    """The `tunelab train key=value ...` command equivalent to the form."""
    return " ".join(["tunelab train", *(shlex.quote(a) for a in train_args(flat))])


def train_args(flat: dict[str, Any]) -> list[str]:
    """The form as `key=value` arguments for `tunelab train` (lists joined by commas)."""
    args = []
    for key, value in flat.items():
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        args.append(f"{key}={text}")
    return args


def yaml_text(flat: dict[str, Any]) -> str:
    """The form as a `tunelab train --config` YAML file, numbers typed as numbers."""
    import yaml

    return yaml.safe_dump(nested({k: _typed(v) for k, v in flat.items()}), sort_keys=False)


def _typed(value: Any) -> Any:
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, str):
        for cast in (int, float):
            try:
                return cast(value)
            except ValueError:
                pass
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
    return value
