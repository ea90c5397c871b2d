"""Ollama's model routes: /api/tags, /api/show, /api/ps, /api/copy, /api/delete.

A server of one base model plus its LoRA adapters maps these onto what it holds: everything
served is loaded (ps) and stays loaded (keep_alive is checked; nothing expires), `copy` gives a
served model another name, and `delete` unloads an adapter or forgets a name -- files on disk
are never removed (`tunelab rm` does that), and the base model cannot be deleted while it runs.
Under `--models` (the `ModelManager`) tags lists every servable model, ps what is loaded with
its expiry, and delete removes a store model as Ollama does (runs are never deleted).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request

from tunelab.serve import protocol as P
from tunelab.serve.errors import APIError, model_not_found
from tunelab.serve.library import ollama_tag
from tunelab.serve.models_manager import service_for
from tunelab.serve.openai_routes import remove_adapter, service_of
from tunelab.serve.service import Service, Target

router = APIRouter()
NEVER = "9999-12-31T23:59:59Z"  # expires_at of a model that stays loaded


@router.get("/api/tags")
async def tags(request: Request) -> dict[str, Any]:
    """Served models (base, adapters, other names) in Ollama's list format."""
    svc = service_of(request)
    svc.require_ready()
    manager = getattr(svc, "models", None)
    if manager is not None:
        items = manager.catalog()
        aliases = [{**ollama_tag(items[t]), "name": n, "model": n} for n, t in manager.aliases.items() if t in items]
        return {"models": [ollama_tag(item) for item in items.values()] + aliases}
    info = svc.backend.describe()  # the engine's walks the weights: once, not per adapter
    return {"models": [_tag(svc, name, info) for name in svc.names()]}


@router.get("/api/ps")
async def ps(request: Request) -> dict[str, Any]:
    """What is loaded, with size and expiry (one base without --models: every name, for good)."""
    svc = service_of(request)
    svc.require_ready()
    manager = getattr(svc, "models", None)
    if manager is None:
        return {"models": _loaded(svc, svc.names(), None)}
    return {"models": [m for lo in list(manager.loaded.values()) for m in
                       _loaded(lo.service, [lo.service.backend.model_id, *lo.service.backend.adapters()],
                               lo.expires_wall())]}


def _loaded(svc: Service, names: list[str], expires: float | None) -> list[dict[str, Any]]:
    """/api/ps entries of one loaded base model and its adapters."""
    info = svc.backend.describe()
    on_gpu = str(info.get("device", "")).startswith("cuda")
    stamp = NEVER if expires is None else datetime.fromtimestamp(expires, timezone.utc).isoformat()
    return [{**_tag(svc, name, info), "expires_at": stamp, "context_length": svc.context_length(),
             "size_vram": int(info.get("size", 0)) if on_gpu else 0} for name in names]


@router.post("/api/show")
async def show(req: P.OllamaShowRequest, request: Request) -> dict[str, Any]:
    """Model details: Modelfile, template, parameters, system prompt, model info, capabilities.
    Under --models a model not loaded is described from its files (`unloaded_facts`), as Ollama
    answers show without loading."""
    name = req.model or req.name or ""
    svc = service_of(request)
    manager = getattr(svc, "models", None)
    if manager is not None and svc.config.backend == "engine":
        if not manager.is_loaded(name):
            from tunelab.serve.show_facts import unloaded_facts

            item = await asyncio.to_thread(manager.find, name)
            return _show(await asyncio.to_thread(unloaded_facts, item, svc.config))
    svc = await service_for(request, name)
    return _show(_loaded_facts(svc, svc.resolve(name)))


def _loaded_facts(svc: Service, target: Target) -> dict[str, Any]:
    """What /api/show says of a loaded model, from its backend (`show_facts` gives the same keys
    from the files of one not loaded)."""
    info = svc.backend.describe()
    return {"info": info, "template": svc.backend.chat_template(target.adapter), "model_path": svc.backend.model_path,
            "adapter_path": svc.backend.adapters()[target.adapter] if target.adapter else None,
            "details": _details(svc, target.name, info), "context_length": svc.context_length(),
            "embeds": svc.backend.capabilities.embeddings, "created": svc.backend.created,
            "vision": svc.backend.takes_images()}


def _show(facts: dict[str, Any]) -> dict[str, Any]:
    info, template = facts["info"], facts["template"]
    source = getattr(template, "source", None) or info.get("template", "")
    return {"modelfile": _modelfile(facts, template, source), "parameters": _parameters(template),
            "template": source, "system": getattr(template, "system", None) or "",
            "details": facts["details"], "model_info": model_info(info, facts["context_length"]),
            "capabilities": capabilities(facts["embeds"], template, source, facts["vision"]),
            "modified_at": datetime.fromtimestamp(facts["created"], timezone.utc).isoformat()}


@router.post("/api/copy")
async def copy(req: P.OllamaCopyRequest, request: Request) -> dict[str, Any]:
    """Serve `source` under the name `destination` too (a name only: nothing is loaded twice)."""
    svc = service_of(request)
    if getattr(svc, "models", None) is not None:
        svc.models.copy(req.source, req.destination)
        return {}
    target = svc.resolve(req.source)
    name = _bare(req.destination)
    if name == svc.backend.model_id or name in svc.backend.adapters():
        raise APIError(409, f"'{name}' is already a served model; choose another destination",
                       param="destination", code="already_exists")
    svc.aliases[name] = target.name
    return {}


@router.delete("/api/delete")
async def delete(req: P.OllamaDeleteRequest, request: Request) -> dict[str, Any]:
    """Forget a name made by copy, or unload an adapter; files on disk stay."""
    svc = service_of(request)
    svc.require_ready()
    if getattr(svc, "models", None) is not None:
        await svc.models.delete(req.model or req.name or "")
        return {}
    name = _bare(req.model or req.name or "")
    if name in svc.aliases:
        del svc.aliases[name]
    elif name in svc.backend.adapters():
        await remove_adapter(svc, name)
        svc.aliases = {k: v for k, v in svc.aliases.items() if v != name}
    elif name in (svc.backend.model_id, svc.config.model):
        raise APIError(400, f"'{name}' is the model this server runs; it cannot be deleted while served "
                            "(stop the server, then `tunelab rm`)", param="model")
    else:
        raise model_not_found(name, svc.names())
    return {}


def capabilities(embeds: bool, template: Any, source: str, vision: bool = False) -> list[str]:
    """What the model can be asked for: completion, embedding, vision (images), tools, thinking."""
    caps = ["completion"]
    caps += ["embedding"] if embeds else []
    caps += ["vision"] if vision else []
    caps += ["tools"] if getattr(template, "tool_format", None) else []
    caps += ["thinking"] if "<think>" in source or "enable_thinking" in source else []
    return caps


def _modelfile(facts: dict[str, Any], template: Any, source: str) -> str:
    """A Modelfile that describes what is served (FROM, ADAPTER, TEMPLATE, SYSTEM, PARAMETER)."""
    lines = [f"FROM {facts['model_path']}"]
    if facts["adapter_path"]:
        lines.append(f"ADAPTER {facts['adapter_path']}")
    if source:
        lines.append(f'TEMPLATE """{source}"""')
    if getattr(template, "system", None):
        lines.append(f'SYSTEM """{template.system}"""')
    lines += [f"PARAMETER {line}" for line in _parameters(template).splitlines()]
    return "\n".join(lines) + "\n"


def _parameters(template: Any) -> str:
    """Ollama's parameter lines (stops, sampling defaults), by the Modelfile's own writer."""
    from tunelab.export.modelfile import parameter_lines

    return "\n".join(parameter_lines(template)) if template is not None else ""


def model_info(info: dict[str, Any], context_length: int) -> dict[str, Any]:
    """Architecture, context length and, when the backend embeds, the pooling rule and vector length."""
    family = info.get("family", "")
    out = {"general.architecture": family, "general.context_length": context_length}
    if family:
        out[f"{family}.context_length"] = context_length
    keys = {"pooling": "tunelab.pooling", "embedding_length": "tunelab.embedding_length"}
    return out | {ours: info[key] for key, ours in keys.items() if key in info}


def _tag(svc: Service, name: str, info: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "model": name, "modified_at": _stamp(svc), "size": int(info.get("size", 0)),
            "digest": f"{abs(hash(name)):016x}", "details": _details(svc, name, info)}


def _details(svc: Service, name: str, info: dict[str, Any]) -> dict[str, Any]:
    parent = "" if svc.aliases.get(name, name) == svc.backend.model_id else svc.backend.model_id
    return details(parent, info)


def details(parent: str, info: dict[str, Any]) -> dict[str, Any]:
    """Ollama's `details`: the base an adapter runs on, format, family, size, quantization."""
    family = str(info.get("family", ""))
    return {"parent_model": parent, "format": info.get("format", "safetensors"), "family": family,
            "families": [family] if family else None, "parameter_size": info.get("parameter_size", ""),
            "quantization_level": info.get("quantization", "")}


def _stamp(svc: Service) -> str:
    return datetime.fromtimestamp(svc.backend.created, timezone.utc).isoformat()


def _bare(name: str) -> str:
    return name[: -len(":latest")] if name.endswith(":latest") else name
