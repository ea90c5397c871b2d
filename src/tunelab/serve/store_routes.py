"""Ollama's store routes: /api/pull and /api/create, streaming progress lines as Ollama does.

Both run the store's own code (`store.pull`, `store.create`) on a thread; each line it says is
one NDJSON `{"status": ...}` line, then `{"status": "success"}` (or `{"error": ...}` once the
stream has started). With `stream: false` the answer is the last line alone. What they add is
servable at once under `--models` (the catalog is read per request).
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from tunelab.errors import InvalidRequest, ModelNotFound
from tunelab.export.modelfile import Recipe, parse_modelfile
from tunelab.serve.errors import APIError, bad_request
from tunelab.serve.store_protocol import OllamaCreateRequest, OllamaPullRequest
from tunelab.serve.streaming import error_payload, ndjson_line

router = APIRouter()
Job = Callable[[Callable[[str], None]], Any]


@router.post("/api/pull")
async def pull(req: OllamaPullRequest):
    """Add a model to the store from a hub id, modelscope:ORG/NAME, a model dir or a .gguf file."""
    source = req.model or req.name
    if not source:
        raise bad_request("model is required: what to pull (hub id, modelscope:ORG/NAME, dir, .gguf)",
                          param="model")
    return await _progress(lambda say: _pull(source, say), req.stream)


@router.post("/api/create")
async def create(req: OllamaCreateRequest):
    """Create a model from a Modelfile (or its parts): FROM, ADAPTER, TEMPLATE, SYSTEM, PARAMETER."""
    from tunelab.store.create import create_model

    name = req.model or req.name
    if not name:
        raise bad_request("model is required: the name of the model to create", param="model")
    recipe = recipe_of(req)
    return await _progress(lambda say: create_model(name, recipe, say=say), req.stream)


def recipe_of(req: OllamaCreateRequest) -> Recipe:
    """The request's Modelfile, its fields (which the ollama client sends) taking precedence."""
    recipe = parse_modelfile(req.modelfile) if req.modelfile else Recipe()
    recipe.from_ = req.from_ or recipe.from_
    if not recipe.from_:
        raise bad_request("from (or a Modelfile's FROM line) is required", param="from")
    if req.adapters:
        if len(req.adapters) > 1:
            raise bad_request(f"adapters holds {len(req.adapters)}; a created model serves one", param="adapters")
        recipe.adapter = next(iter(req.adapters.values()))
        if recipe.adapter.startswith("sha256:"):
            raise bad_request("uploaded blobs are not served; give the adapter as a PEFT directory or a run "
                              "on the server's disk", param="adapters")
    recipe.template = req.template if req.template is not None else recipe.template
    recipe.system = req.system if req.system is not None else recipe.system
    for key, value in (req.parameters or {}).items():
        recipe.parameters[key] = [str(v) for v in (value if isinstance(value, list) else [value])]
    return recipe


def _pull(source: str, say: Callable[[str], None]) -> None:
    """Pull `source`; a store name or Ollama NAME:TAG already there is done at once."""
    from tunelab.store.index import Store
    from tunelab.store.pull import pull as store_pull
    from tunelab.store.resolve import ollama_name

    store = Store()
    entry = store.get(source)
    if entry is not None and entry.present:
        say(f"{source} is already in the store")
    elif ":" in source and not source.startswith(("hf:", "modelscope:")) and not source.endswith(".gguf"):
        say(f"{source} is {ollama_name(source, store)}")
    else:
        store_pull(source, store=store, say=say)


async def _progress(job: Job, stream: bool):
    """Run `job(say)` on a thread; stream its lines as NDJSON, or answer once it is done."""
    if not stream:
        try:
            await asyncio.to_thread(job, lambda _: None)
        except (ModelNotFound, InvalidRequest) as err:
            raise _as_api(err) from None
        return {"status": "success"}
    return StreamingResponse(_lines(job), media_type="application/x-ndjson")


async def _lines(job: Job) -> AsyncIterator[str]:
    loop, queue = asyncio.get_running_loop(), asyncio.Queue()

    def say(line: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, {"status": line})

    task = asyncio.create_task(asyncio.to_thread(job, say))
    while not (task.done() and queue.empty()):
        getter = asyncio.ensure_future(queue.get())
        await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            yield ndjson_line(getter.result())
        else:
            getter.cancel()
    err = task.exception()
    yield ndjson_line({"error": error_payload(err)["error"]["message"]} if err else {"status": "success"})


def _as_api(err: Exception) -> APIError:
    if isinstance(err, ModelNotFound):
        return APIError(404, str(err), param="model", code="model_not_found")
    return bad_request(str(err), param=getattr(err, "param", None))
