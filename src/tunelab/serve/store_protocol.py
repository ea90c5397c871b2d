"""Request schemas of Ollama's store routes: /api/pull and /api/create."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tunelab.serve.protocol import Text
from tunelab.serve.strict import RequestModel


class OllamaPullRequest(RequestModel):
    """POST /api/pull: `model` is what `tunelab pull` takes (hub id, modelscope:ORG/NAME, dir, .gguf)."""

    model: Text | None = None
    name: Text | None = None  # older clients
    stream: bool = True


class OllamaCreateRequest(RequestModel):
    """POST /api/create: a Modelfile's text, or its parts as fields (the ollama client's way)."""

    model: Text | None = None
    name: Text | None = None  # older clients
    modelfile: Text | None = None
    from_: Text | None = Field(None, alias="from")
    files: dict[str, Text] | None = None  # file name -> digest of an uploaded blob: one GGUF or a model dir
    adapters: dict[str, Text] | None = None  # file name -> blob digest (a PEFT adapter's files), or
    #                                          name -> one PEFT adapter dir or run on the server's disk
    template: Text | None = None
    system: Text | None = None
    parameters: dict[str, Any] | None = None
    stream: bool = True
