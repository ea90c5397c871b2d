"""The app-level Service and backend of `tunelab serve --models`: no model of their own.

Routes ask `models_manager.service_for` for the loaded model a request names; what is app-wide --
/health, /metrics, the shutdown deadline, closing -- goes through these, which reach every model
the `ModelManager` holds.
"""

from __future__ import annotations

from typing import Any

from tunelab.serve import library
from tunelab.serve.backends.base import Backend
from tunelab.serve.config import ServeConfig
from tunelab.serve.errors import APIError
from tunelab.serve.models_manager import ModelManager
from tunelab.serve.service import Service


class LibraryBackend(Backend):
    """The app-level stand-in under --models: no model of its own; stats and close reach the loaded ones."""

    name = "library"

    def __init__(self, config: ServeConfig):
        self.manager = ModelManager(config)

    def load(self) -> None:
        """Nothing loads at start: check that every model named in `models` exists."""
        library.check_wanted(self.manager.config.models, self.manager.config.runs_dir)

    def encode_chat(self, messages: list[dict], template_kwargs: dict[str, Any], adapter: str | None = None):
        raise NotImplementedError("name a model")

    def encode_text(self, text: str):
        raise NotImplementedError("name a model")

    def generate(self, request_id, prompt, params, adapter=None):
        raise NotImplementedError("name a model")

    def abort(self, request_id: str) -> None:
        """Requests run on the loaded models' Services, which abort their own."""

    def stats(self) -> dict[str, float]:
        """The loaded models' numeric stats added up (kv_usage: the fullest)."""
        total: dict[str, float] = {}
        for svc in self.manager.services():
            for key, value in svc.backend.stats().items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    total[key] = max(total.get(key, 0.0), value) if key == "kv_usage" else total.get(key, 0.0) + value
        return total

    def close(self) -> None:
        """Close every loaded model."""
        self.manager.close_all()


class LibraryService(Service):
    """The app's Service under --models: health, metrics and shutdown reach every loaded model."""

    def __init__(self, backend: LibraryBackend, config: ServeConfig):
        super().__init__(backend, config)
        self.models = backend.manager
        self.models.metrics = self.metrics

    def resolve(self, name: str):
        """Routes ask `service_for` instead; a route that does not is a bug, said plainly."""
        raise APIError(400, f"this route serves one model; with --models name it via `model` ({name!r})",
                       param="model")

    def names(self) -> list[str]:
        """Every servable name."""
        return sorted([*self.models.catalog(), *self.models.aliases])

    def abort_all(self) -> None:
        """Cancel every in-flight sequence of every loaded model."""
        for svc in self.models.services():
            svc.abort_all()

    def end_all(self) -> None:
        """The shutdown deadline, for every loaded model."""
        self.stopping = True
        for svc in self.models.services():
            svc.end_all()
