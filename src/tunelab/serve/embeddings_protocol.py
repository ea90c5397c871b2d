"""Request schemas of the embedding routes: OpenAI's /v1/embeddings, Ollama's /api/embed and /api/embeddings.

Validated here, so a wrong type or range is a 400 naming the field before any work.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tunelab.serve.protocol import Text, TokenId
from tunelab.serve.strict import RequestModel

MAX_INPUTS = 2048  # OpenAI's own limit on inputs per request


class EmbeddingRequest(RequestModel):
    """POST /v1/embeddings: text, texts, token ids or lists of token ids."""

    model: Text
    input: Text | list[Text] | list[TokenId] | list[list[TokenId]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: Text | None = None


class OllamaEmbedRequest(RequestModel):
    """POST /api/embed; an empty input only loads the model, as in Ollama."""

    model: Text
    input: Text | list[Text] = ""
    truncate: bool = True  # cut each input to the context window instead of failing
    dimensions: int | None = Field(None, ge=1)
    options: dict[str, Any] | None = None  # sampling options mean nothing to an embedding
    keep_alive: float | str | None = None  # serve.keep_alive: how long the model stays loaded after


class OllamaEmbeddingsRequest(RequestModel):
    """POST /api/embeddings (Ollama's older route: one prompt, vector as the model makes it)."""

    model: Text
    prompt: Text = ""
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None
