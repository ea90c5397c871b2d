"""The model manager of `tunelab serve --models`: loads models on demand, unloads them when idle.

Each loaded base model is one `Service` (one backend, one engine thread) with the adapters asked
for so far, so adapters of one base share it in memory. A request names a model; `acquire`
loads its base (and adapter) on first use -- other requests for it wait -- and returns the
Service that serves it. A model stays loaded `keep_alive` after its last request (per request,
as Ollama reads it, or the server default); a reaper unloads expired idle models, and a load
that needs room (`max_loaded_models`, `max_loaded_bytes`) unloads the least recently used idle
model first. A failed load fails its request with the reason; the next request tries again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import time
from pathlib import Path
from typing import Any

from fastapi import Request

from tunelab.errors import ModelNotFound, RewardModelError
from tunelab.rundir import Run
from tunelab.serve import library
from tunelab.serve.backends.base import Backend
from tunelab.serve.config import ServeConfig
from tunelab.serve.errors import APIError
from tunelab.serve.keep_alive import FOREVER, parse_keep_alive
from tunelab.serve.library import Servable
from tunelab.serve.service import Service

log = logging.getLogger("tunelab.serve.models")
REAP_EVERY_S = 0.25


@dataclasses.dataclass
class Loaded:
    """One base model in memory, with its keep_alive clock."""

    service: Service
    base: Servable
    keep_alive: float | None  # seconds after the last request; None = forever
    expires: float | None = None  # time.monotonic() deadline; None = never
    used: float = 0.0  # last use, for least-recently-used eviction

    def touch(self, keep_alive: float | None) -> None:
        """A request uses the model now and sets how long it stays after."""
        self.keep_alive, self.used = keep_alive, time.monotonic()
        self.expires = None if keep_alive is FOREVER else self.used + keep_alive

    def busy(self) -> bool:
        """Requests are running or queued on it."""
        return self.service.pending > 0 or bool(self.service.active)

    def idle(self) -> bool:
        """Nothing runs or waits on it. A route admits its request before it first awaits after
        `service_for`, so a model just handed out is never seen idle by the reaper or an eviction."""
        return not self.busy()

    def expires_wall(self) -> float | None:
        """The expiry as a wall-clock time (for /api/ps), None = never."""
        return None if self.expires is None else time.time() + (self.expires - time.monotonic())


class ModelManager:
    """The registry of loaded models: acquire, unload, reap, make room."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.default_keep_alive = parse_keep_alive(config.keep_alive, "keep_alive")
        self.loaded: dict[str, Loaded] = {}  # Servable.key (base dir) -> Loaded
        self.aliases: dict[str, str] = {}  # /api/copy: other name -> servable name
        self.metrics: Any = None  # the app's ServerMetrics, shared by every loaded Service
        self._lock = asyncio.Lock()  # loads, unloads and evictions happen one at a time
        self._loads: dict[str, asyncio.Future] = {}  # base key -> its load in progress

    # ---- names --------------------------------------------------------------------------------

    def catalog(self) -> dict[str, Servable]:
        """Everything servable now (store models and finished runs)."""
        return library.catalog(self.config.models, self.config.runs_dir)

    def find(self, name: str) -> Servable:
        """The servable `name` means (':latest', other names from copy, Ollama NAME:TAG), or a 404."""
        bare = _bare(name)
        bare = self.aliases.get(bare, bare)
        items = self.catalog()
        if bare in items:
            return items[bare]
        by_path = _ollama_style(name, items)
        if by_path is not None:
            return by_path
        try:
            library.require_generative(bare, self.config.runs_dir)
        except RewardModelError as err:
            raise APIError(400, str(err), param="model", code="reward_model") from None
        names = sorted([*items, *self.aliases])
        raise APIError(404, f"model '{name}' not found{library.did_you_mean(bare, names)} Servable models: "
                       f"{len(names)} (GET /api/tags or /v1/models lists them)", param="model",
                       code="model_not_found")

    def openai_list(self) -> list[dict[str, Any]]:
        """/v1/models under --models: every servable model, then other names."""
        items = self.catalog()
        out = {name: library.openai_model(item) for name, item in items.items()}
        return [*out.values(), *({**out[t], "id": n} for n, t in self.aliases.items() if t in out)]

    # ---- acquire and release ------------------------------------------------------------------

    async def acquire(self, name: str, keep_alive: float | str | None = None) -> Service:
        """The Service serving `name`, loading its base and adapter first when needed."""
        seconds = self.default_keep_alive if keep_alive is None else parse_keep_alive(keep_alive, "keep_alive")
        loaded, served = self._held(name)  # the common case: no store or runs scan per request
        if loaded is None:
            item = await asyncio.to_thread(self.find, name)  # file reads (and a first import) stay off the loop
            loaded, served = self.loaded.get(item.key), item.name
            if loaded is None or not _attached(loaded, item):
                async with self._lock:  # a second request for a loading model waits here, then finds it
                    loaded = self.loaded.get(item.key) or await self._loading(item)
                    await _attach(loaded, item)
        if _bare(name) != served:  # so the Service resolves the name the request used
            loaded.service.aliases[_bare(name)] = served
        loaded.touch(seconds)
        return loaded.service

    def is_loaded(self, name: str) -> bool:
        """`name` is served by a model in memory now (its adapter attached, for an adapter)."""
        return self._held(name)[0] is not None

    def _held(self, name: str) -> tuple[Loaded | None, str]:
        """The loaded model already serving `name` (base, adapter or other name) and its served name."""
        bare = self.aliases.get(_bare(name), _bare(name))
        for loaded in self.loaded.values():
            backend, aliases = loaded.service.backend, loaded.service.aliases
            if bare == backend.model_id or bare in backend.adapters() or bare in aliases:
                return loaded, aliases.get(bare, bare)
        return None, bare

    async def unload_name(self, name: str) -> str:
        """Unload `name` (a base with its adapters once idle, or one adapter); its servable name."""
        item = await asyncio.to_thread(self.find, name)
        async with self._lock:
            loaded = self.loaded.get(item.key)
            if loaded is not None and item.adapter is None and loaded.busy():
                loaded.touch(0.0)  # as Ollama: other clients' requests finish, then the reaper unloads it
            elif loaded is not None and item.adapter is None:
                await self._unload(item.key)
            elif loaded is not None and item.name in loaded.service.backend.adapters():
                await asyncio.to_thread(loaded.service.backend.remove_adapter, item.name)
        return item.name

    def copy(self, source: str, destination: str) -> None:
        """/api/copy: `destination` becomes another name of `source` (nothing is copied or loaded)."""
        item = self.find(source)
        name = _bare(destination)
        if name in self.catalog():
            raise APIError(409, f"'{name}' is already a servable model; choose another destination",
                           param="destination", code="already_exists")
        self.aliases[name] = item.name

    async def delete(self, name: str) -> None:
        """/api/delete: forget another name, or unload a store model and remove it from the store."""
        from tunelab.store.remove import remove_model

        bare = _bare(name)
        if bare in self.aliases:
            del self.aliases[bare]
            for svc in self.services():  # a loaded model forgets the name too
                svc.aliases.pop(bare, None)
            return
        item = await asyncio.to_thread(self.find, name)
        made = Run(item.adapter.parent) if item.adapter is not None else None
        if made is not None and made.status().get("created_by") == "create":  # /api/create made it
            await self.unload_name(item.name)
            made.discard(created=True)
        elif item.adapter is not None or item.base_path != self._store_path(item.name):
            raise APIError(400, f"'{item.name}' is a training run ({item.adapter or item.base_path}); "
                           "tunelab never deletes runs: remove the run's folder yourself", param="model")
        else:
            await self.unload_name(item.name)
            await asyncio.to_thread(remove_model, item.name)
        self.aliases = {k: v for k, v in self.aliases.items() if v != item.name}

    @staticmethod
    def _store_path(name: str) -> Path | None:
        from tunelab.store.index import Store

        entry = Store().get(name)
        return Path(entry.path) if entry else None

    async def reap_forever(self) -> None:
        """Unload idle models whose keep_alive ran out, until cancelled."""
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            await self.reap()

    async def reap(self) -> None:
        """One pass: a busy model's clock restarts; an idle expired one is unloaded."""
        now = time.monotonic()
        for key, loaded in list(self.loaded.items()):
            if not loaded.idle():
                loaded.touch(loaded.keep_alive)  # idle time counts from the end of the last request
                continue
            if loaded.expires is not None and now >= loaded.expires:
                async with self._lock:
                    if key in self.loaded and self.loaded[key].idle():
                        await self._unload(key)

    # ---- loading ------------------------------------------------------------------------------

    async def _loading(self, item: Servable) -> Loaded:
        """Load `item`'s base as a task of its own: a request that leaves (cancelled) does not stop a
        load half way; the model is registered when it is done, and the next request finds it."""
        task = self._loads.get(item.key)
        if task is None:
            task = self._loads[item.key] = asyncio.ensure_future(self._load(item))
            task.add_done_callback(lambda t: self._done_loading(item.key, t))
        return await asyncio.shield(task)

    def _done_loading(self, key: str, task: asyncio.Future) -> None:
        self._loads.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: a failure nobody waited for is not logged as unhandled

    async def _load(self, item: Servable) -> Loaded:
        base = self.catalog().get(item.base_name, item)
        await self._make_room(base)
        cfg = dataclasses.replace(self.config, model=str(base.base_path), served_name=item.base_name,
                                  adapters={}, models=[], watch=None)
        from tunelab.serve.backends import make_backend

        backend = make_backend(cfg)
        started = time.perf_counter()
        try:
            await asyncio.to_thread(backend.load)
        except Exception as err:  # noqa: BLE001 - that request fails; the server and others go on
            await asyncio.to_thread(_close_quietly, backend)
            raise APIError(500, f"model '{item.base_name}' failed to load from {base.base_path}: "
                           f"{type(err).__name__}: {err}", type="server_error", param="model",
                           code="model_load_failed") from None
        service = Service(backend, cfg)
        service.metrics, service.ready = self.metrics or service.metrics, True
        loaded = Loaded(service, base, self.default_keep_alive)
        loaded.touch(self.default_keep_alive)
        self.loaded[item.key] = loaded
        log.info("loaded %s in %.1fs (%d loaded)", item.base_name, time.perf_counter() - started,
                 len(self.loaded))
        return loaded

    async def _make_room(self, base: Servable) -> None:
        """Unload least recently used idle models until `base` fits both budgets."""
        cfg = self.config
        if cfg.max_loaded_bytes and base.size > cfg.max_loaded_bytes:
            raise APIError(507, f"model '{base.name}' has {base.size} bytes of weights, more than "
                           f"max_loaded_bytes ({cfg.max_loaded_bytes})", type="server_error",
                           param="model", code="model_too_large")
        while self._over_budget(base.size):
            idle = [(lo.used, key) for key, lo in self.loaded.items() if lo.idle()]
            if not idle:
                raise APIError(503, f"no room to load '{base.name}': the {len(self.loaded)} loaded models are "
                               f"busy (max_loaded_models {cfg.max_loaded_models}); retry shortly",
                               type="service_unavailable", code="models_busy", headers={"Retry-After": "2"})
            await self._unload(min(idle)[1])

    def _over_budget(self, extra: int) -> bool:
        cfg = self.config
        if len(self.loaded) + 1 > cfg.max_loaded_models:
            return True
        held = sum(lo.base.size for lo in self.loaded.values())
        return bool(cfg.max_loaded_bytes) and held + extra > cfg.max_loaded_bytes

    async def _unload(self, key: str) -> None:
        loaded = self.loaded.pop(key)
        loaded.service.end_all()  # an eviction never leaves a stream hanging
        await asyncio.to_thread(loaded.service.backend.close)
        del loaded
        await asyncio.to_thread(_free_memory)
        log.info("unloaded a model (%d loaded)", len(self.loaded))

    def close_all(self) -> None:
        """Shutdown: close every loaded backend (blocking)."""
        for key in list(self.loaded):
            _close_quietly(self.loaded.pop(key).service.backend)

    def services(self) -> list[Service]:
        """The loaded models' Services."""
        return [lo.service for lo in self.loaded.values()]


def _attached(loaded: Loaded, item: Servable) -> bool:
    return item.adapter is None or item.name in loaded.service.backend.adapters()


async def _attach(loaded: Loaded, item: Servable) -> None:
    """Load `item`'s adapter onto its loaded base (a failure fails this request only)."""
    if _attached(loaded, item):
        return
    try:
        await asyncio.to_thread(loaded.service.backend.add_adapter, item.name, str(item.adapter))
    except Exception as err:  # noqa: BLE001
        raise APIError(500, f"adapter '{item.name}' failed to load from {item.adapter}: "
                       f"{type(err).__name__}: {err}", type="server_error", param="model",
                       code="model_load_failed") from None


def _ollama_style(name: str, items: dict[str, Servable]) -> Servable | None:
    """Ollama's NAME:TAG (gemma3:270m) read by the store's own rule, when it names a store model."""
    if ":" not in name or name.endswith(":latest"):
        return None
    from tunelab.store.index import Store
    from tunelab.store.resolve import ollama_name

    try:
        path = ollama_name(name, Store()).resolve()
    except ModelNotFound:
        return None
    return next((i for i in items.values() if i.adapter is None and i.base_path.resolve() == path), None)


def _bare(name: str) -> str:
    return name[: -len(":latest")] if name.endswith(":latest") else name


def _close_quietly(backend: Backend) -> None:
    try:
        backend.close()
    except Exception as err:  # noqa: BLE001 - closing a half-loaded backend must not mask its load error
        log.warning("closing %s: %s", backend.name, err)


def _free_memory() -> None:
    """Give an unloaded model's memory back (the engine's tensors, the CUDA cache)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


async def service_for(request: Request, model: str, keep_alive: float | str | None = None) -> Service:
    """The Service that serves `model`: the app's one model, or under --models that model's own,
    loaded on demand. `keep_alive` is checked either way (one model always stays loaded)."""
    svc: Service = request.app.state.service
    manager = getattr(svc, "models", None)
    if manager is None:
        if keep_alive is not None:
            parse_keep_alive(keep_alive, "keep_alive")
        return svc
    start = time.perf_counter_ns()
    served = await manager.acquire(model, keep_alive)
    request.state.load_duration_ns = time.perf_counter_ns() - start  # Ollama's load_duration
    return served


def load_duration_ns(request: Request) -> int:
    """How long `service_for` waited for this request's model to load (0 when it was loaded)."""
    return getattr(request.state, "load_duration_ns", 0)

