"""`create`: a named model from a Modelfile recipe (FROM, ADAPTER, TEMPLATE, SYSTEM, PARAMETER).

Without an adapter the result is a store model: FROM pulled (a GGUF imported, a model dir or a
store model copied) under the new name, with its chat template saved beside the weights when
TEMPLATE, SYSTEM or PARAMETERs change it (the sampling PARAMETERs ride in it as `options`, the
model's defaults on every API). With an adapter (ADAPTER, or FROM a run that has one) it is
a finished run under $TUNELAB_HOME/runs/NAME holding a copy of the adapter, so it is served on
top of its base, which stays shared in memory with every other adapter of that base.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from tunelab.data.templates import ChatTemplate, TokenizerInfo, resolve_template
from tunelab.errors import InvalidRequest, ModelNotFound, TunelabError
from tunelab.export.modelfile import OLLAMA_TEMPLATES, Recipe, options_of
from tunelab.rundir import Run, find_run, load_finished
from tunelab.store.index import Store, tunelab_home
from tunelab.store.pull import NAME, pull
from tunelab.store.remove import remove_model

Say = Callable[[str], None]


def create_model(name: str, recipe: Recipe, store: Store | None = None, say: Say = lambda _: None) -> Path:
    """Build model `name` from `recipe`; the store model dir, or the run dir when it has an adapter."""
    store = store or Store()
    if not NAME.match(name) or ".." in name:
        raise InvalidRequest(f"model: '{name}' is not a valid model name (letters, digits, . _ - / :)",
                             param="model")
    if store.get(name) is not None or find_run(name) is not None:
        raise TunelabError(f"a model named '{name}' already exists; delete it first or choose another name")
    options = options_of(recipe)  # checked before anything is written
    source, base, adapter = _from(recipe.from_, store)
    if recipe.adapter:
        if adapter is not None:
            raise InvalidRequest(f"FROM {recipe.from_} is a run with an adapter already; ADAPTER adds a second "
                                 "one, which is not served (FROM its base model instead)", param="adapter")
        adapter = _adapter(recipe.adapter)
    if adapter is not None:
        base = base or Path(pull(source, store=store, say=say).path)
        return _adapter_model(name, base, adapter, _template(recipe, base, adapter, options), say)
    template = _template(recipe, base, None, options) if base is not None else None  # checked before any write
    path = Path(pull(source, name=name, store=store, say=say).path)
    if base is None:  # a GGUF: its tokenizer is known once imported
        try:
            template = _template(recipe, path, None, options)
        except TunelabError:
            remove_model(name, store)
            raise
    if template is not None:
        template.save(path)  # step 3 of resolve_template's order: the model dir's saved template
    return path


def _from(spec: str, store: Store) -> tuple[str, Path | None, Path | None]:
    """(what to pull, the base model dir when already local, a run's adapter) for FROM `spec`."""
    entry = store.get(spec)
    if entry is not None and entry.present:
        return entry.path, Path(entry.path), None
    run = find_run(spec)
    if run is not None:
        run = load_finished(spec)
        if run.model_dir is not None:
            return str(run.model_dir), run.model_dir, None
        return str(run.base_model), run.base_model, run.adapter_dir
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return str(path), path, None
    if path.suffix.lower() == ".gguf" and path.is_file():
        return str(path), None, None
    raise ModelNotFound(f"FROM {spec}: not a store model, a finished run, a model directory or a .gguf file "
                        "(see `tunelab list` and `tunelab runs`)")


def _adapter(spec: str) -> Path:
    """ADAPTER: a PEFT adapter directory, or a finished run's adapter."""
    path = Path(spec).expanduser()
    if (path / "adapter_config.json").is_file():
        return path
    run = find_run(spec)
    if run is not None and load_finished(spec).adapter_dir is not None:
        return run.adapter_dir
    raise ModelNotFound(f"ADAPTER {spec}: not a PEFT adapter directory (no adapter_config.json) or a "
                        "finished run with an adapter")


def _template(recipe: Recipe, base: Path, adapter: Path | None, options: dict) -> ChatTemplate | None:
    """The chat template TEMPLATE, SYSTEM and PARAMETERs make (stops, and `options`, the sampling
    defaults every API applies); None when they change nothing."""
    if recipe.template is None and recipe.system is None and not recipe.parameters:
        return None
    template = resolve_template(base, adapter)
    if recipe.template is not None:
        template = _from_text(recipe.template, TokenizerInfo.read(base))
    if recipe.system is not None:
        template = template.with_system(recipe.system)
    template.stop_strings = list(dict.fromkeys(template.stop_strings + recipe.parameters.get("stop", [])))
    template.options = {**template.options, **options}
    return template


def _from_text(text: str, info: TokenizerInfo) -> ChatTemplate:
    """TEMPLATE as jinja, or as one of the Ollama (Go) templates tunelab's built-ins export to."""
    for family, go in OLLAMA_TEMPLATES.items():
        if text.strip() == go.replace("\x00eos\x00", info.eos).strip():
            return ChatTemplate.builtin(family, info.bos, info.eos)
    if "{{ ." in text or "{{- range ." in text or "{{ range ." in text:
        raise InvalidRequest("TEMPLATE is a Go template tunelab cannot render; give a jinja chat template "
                             f"(as in tokenizer_config.json) or the Ollama template of a built-in "
                             f"({', '.join(OLLAMA_TEMPLATES)})", param="template")
    return ChatTemplate.from_source("modelfile", text, info)


def _adapter_model(name: str, base: Path, adapter: Path, template: ChatTemplate | None, say: Say) -> Path:
    """runs/NAME under $TUNELAB_HOME: a copy of the adapter and a finished status naming its base."""
    run = Run(tunelab_home() / "runs" / name)
    tmp = run.path.with_name(f".{name}.creating")
    shutil.rmtree(tmp, ignore_errors=True)
    say(f"copying adapter {adapter}")
    shutil.copytree(adapter, tmp / "adapter")
    if template is not None:
        template.save(tmp / "adapter")  # step 1 of resolve_template's order: the adapter's own template
    tmp.replace(run.path)  # whole or not at all: a finished status only follows a complete adapter
    run.update_status(state="finished", base_model=str(base.resolve()), method="lora", created_by="create")
    return run.path
