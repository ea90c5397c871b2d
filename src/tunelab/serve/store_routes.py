"""Ollama's store routes: /api/pull, /api/create (streaming progress lines as Ollama does) and
/api/blobs, where the ollama client uploads the files a create names by digest (`store.blobs`).

Both run the store's own code (`store.pull`, `store.create`) on a thread; each line it says is
one NDJSON `{"status": ...}` line, then `{"status": "success"}` (or `{"error": ...}` once the
stream has started). With `stream: false` the answer is the last line alone. What they add is
servable at once under `--models` (the catalog is read per request).
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from typing import Any, AsyncIterator, Callable, Iterator

from fastapi import APIRouter, Request, Response
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


@router.head("/api/blobs/{digest}")
async def head_blob(digest: str):
    """200 when blob `digest` is uploaded, 404 when not (the client uploads it then)."""
    from tunelab.store.blobs import has_blob

    if not _checked(has_blob, digest):
        raise APIError(404, f"blob {digest} not found", param="digest")
    return Response(status_code=200)


@router.post("/api/blobs/{digest}")
async def post_blob(digest: str, request: Request):
    """Store the body as blob `digest`, streamed to disk and kept only when it hashes to it: 201."""
    from tunelab.store.blobs import blob_path, write_blob

    _checked(blob_path, digest)  # a malformed digest is a 400 before any byte is read
    loop, body = asyncio.get_running_loop(), request.stream()
    made = await asyncio.to_thread(_checked, write_blob, digest, _pulled(body, loop))
    return Response(status_code=201 if made else 200)


@router.post("/api/create")
async def create(req: OllamaCreateRequest):
    """Create a model from a Modelfile (or its parts): FROM, ADAPTER, TEMPLATE, SYSTEM, PARAMETER;
    or from uploaded blobs: `files` (one GGUF, or a model dir's files) and `adapters` (a PEFT adapter)."""
    name = req.model or req.name
    if not name:
        raise bad_request("model is required: the name of the model to create", param="model")
    recipe = recipe_of(req)
    uploads = {key: files for key, files in (("files", req.files), ("adapters", req.adapters))
               if files and _uploaded(files, key)}
    return await _progress(lambda say: _create(name, recipe, uploads, say), req.stream)


def recipe_of(req: OllamaCreateRequest) -> Recipe:
    """The request's Modelfile, its fields (which the ollama client sends) taking precedence."""
    recipe = parse_modelfile(req.modelfile) if req.modelfile else Recipe()
    if req.files and (req.from_ or recipe.from_):
        raise bad_request("give the model as from (or FROM) or as uploaded files, not both", param="files")
    if req.files and (req.adapters or recipe.adapter):
        raise bad_request("files with adapters: an adapter is served on a store model; create the base "
                          "from files first, then create FROM it with adapters", param="adapters")
    recipe.from_ = req.from_ or recipe.from_ or ("(files)" if req.files else None)
    if not recipe.from_:
        raise bad_request("from, files (or a Modelfile's FROM line) is required", param="from")
    if req.adapters:
        if len(req.adapters) > 1 and not _uploaded(req.adapters, "adapters"):
            raise bad_request(f"adapters holds {len(req.adapters)}; a created model serves one", param="adapters")
        recipe.adapter = next(iter(req.adapters.values()))
    recipe.template = req.template if req.template is not None else recipe.template
    recipe.system = req.system if req.system is not None else recipe.system
    for key, value in (req.parameters or {}).items():
        recipe.parameters[key] = [str(v) for v in (value if isinstance(value, list) else [value])]
    return recipe


def _uploaded(files: dict[str, str], param: str) -> bool:
    """True when `files` name uploaded blobs (checked: there, and of a kind `create` takes);
    False for the older form, one adapter on the server's disk."""
    from tunelab.store.blobs import check_uploaded, upload_kind

    if not any(v.startswith("sha256") for v in files.values()):
        if param == "files":
            raise bad_request(f"files: each value is the digest of an uploaded blob (sha256:...), got "
                              f"{list(files.values())}", param="files")
        return False
    _checked(check_uploaded, files, param)
    _checked(upload_kind, files, param)
    return True


def _create(name: str, recipe: Recipe, uploads: dict[str, dict[str, str]], say: Callable[[str], None]):
    """`create_model`, with FROM and ADAPTER laid out from uploaded blobs for the time it reads them."""
    from tunelab.store.blobs import staged, upload_kind
    from tunelab.store.create import create_model

    with ExitStack() as stack:
        if "files" in uploads:
            folder = stack.enter_context(staged(uploads["files"], "files"))
            gguf = upload_kind(uploads["files"], "files") == "gguf"
            recipe.from_ = str(folder / next(iter(uploads["files"]))) if gguf else str(folder)
        if "adapters" in uploads:
            recipe.adapter = str(stack.enter_context(staged(uploads["adapters"], "adapters")))
        return create_model(name, recipe, say=say)


def _checked(fn: Callable, *args):
    """`fn(*args)`, its InvalidRequest a 400 naming the parameter."""
    try:
        return fn(*args)
    except InvalidRequest as err:
        raise bad_request(str(err), param=err.param) from None


def _pulled(body: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> Iterator[bytes]:
    """The request body's chunks, read on the event loop, for a writer on a worker thread."""
    while True:
        try:
            yield asyncio.run_coroutine_threadsafe(body.__anext__(), loop).result()
        except StopAsyncIteration:
            return


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
