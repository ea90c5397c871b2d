"""Find a model's config.json for planning without loading (or downloading) its weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunelab.errors import ConfigError, HubUnreachable, ModelNotFound
from tunelab.plan.shape import ARCHITECTURES, ModelShape, shape_from_config

DEFAULT_ARCH = "gemma3-270m"  # the embedded default model's shape, when it is not imported yet


def model_shape(spec: str | None) -> tuple[ModelShape, str]:
    """(shape, where it came from) for a store name, local HF dir, bare architecture or hub id.

    A hub id fetches config.json only; `None` is the embedded default model.
    """
    conf, where = _find_config(spec)
    return shape_from_config(conf, where), where


def _find_config(spec: str | None) -> tuple[dict[str, Any], str]:
    from tunelab.store.index import Store
    from tunelab.store.resolve import find_local

    text = str(spec or "")
    store = Store()
    try:
        _, path = find_local(text or DEFAULT_ARCH, store)
        return _read(path / "config.json"), str(path)
    except ModelNotFound:
        pass
    name = (text or DEFAULT_ARCH).lower()
    if name in ARCHITECTURES:
        return ARCHITECTURES[name], f"built-in shape '{name}'"
    return _hub_config(text), f"hub config of {text}"


def _read(path: Path) -> dict[str, Any]:
    from tunelab.atomic import read_json_object

    return read_json_object(path, ConfigError)


def _hub_config(text: str) -> dict[str, Any]:
    from tunelab.store.pull import HUB_ID

    repo = text.removeprefix("hf:")
    if not HUB_ID.match(repo):
        known = ", ".join(sorted(ARCHITECTURES))
        raise ModelNotFound(f"no model '{text}' in the store or on disk, and not a hub id; "
                            f"built-in architectures: {known}")
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(repo, "config.json")).read_text(encoding="utf-8"))
    except Exception as err:  # offline, unknown repo, gated repo: all mean "no config here"
        raise HubUnreachable(f"{repo}: could not fetch config.json ({type(err).__name__})") from None
