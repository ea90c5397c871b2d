"""Embedding routes: OpenAI's /v1/embeddings, Ollama's /api/embed and its older /api/embeddings.

Every served model embeds, base or adapter, by the pooling its backend states (`/api/show`).
The APIs differ only at the edges: OpenAI's and Ollama's /api/embed return unit vectors,
`dimensions` keeping the first D values and normalising again (Matryoshka-style shortening);
Ollama's older /api/embeddings returns the vector as the model makes it, which equals
sentence-transformers' `encode()`.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from tunelab.serve.embeddings_protocol import (MAX_INPUTS, EmbeddingRequest, OllamaEmbeddingsRequest,
                                               OllamaEmbedRequest)
from tunelab.serve.errors import APIError, bad_request
from tunelab.serve.models_manager import load_duration_ns, service_for
from tunelab.serve.service import Service, Target
from tunelab.serve.streaming import until_disconnected

router = APIRouter()


@router.post("/v1/embeddings")
async def openai_embeddings(req: EmbeddingRequest, request: Request) -> dict[str, Any]:
    """OpenAI embeddings: unit vectors as floats or base64 little-endian float32."""
    svc = await service_for(request, req.model)
    target = svc.resolve(req.model)
    prompts = _openai_prompts(svc, req.input)
    vectors = unit(await embed(request, svc, target, prompts, "input"), req.dimensions, "dimensions")
    data = [{"object": "embedding", "index": i, "embedding": _encoded(v, req.encoding_format)}
            for i, v in enumerate(vectors)]
    tokens = sum(len(p) for p in prompts)
    return {"object": "list", "data": data, "model": target.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


@router.post("/api/embed")
async def ollama_embed(req: OllamaEmbedRequest, request: Request) -> dict[str, Any]:
    """Ollama embed: unit vectors; inputs longer than the context are cut unless truncate is false."""
    start = time.perf_counter_ns()
    svc = await service_for(request, req.model, req.keep_alive)
    target = svc.resolve(req.model)
    texts = [req.input] if isinstance(req.input, str) and req.input else req.input or []
    prompts = [svc.backend.encode_text(t).ids for t in texts]
    if req.truncate:
        prompts = [p[:svc.context_length()] for p in prompts]
    vectors = await embed(request, svc, target, prompts, "input") if prompts else np.zeros((0, 0))
    elapsed = time.perf_counter_ns() - start
    return {"model": target.name, "embeddings": unit(vectors, req.dimensions, "dimensions").tolist(),
            "total_duration": elapsed, "load_duration": load_duration_ns(request),
            "prompt_eval_count": sum(map(len, prompts))}


@router.post("/api/embeddings")
async def ollama_embeddings(req: OllamaEmbeddingsRequest, request: Request) -> dict[str, Any]:
    """Ollama's older route: one prompt, the model's own vector (not normalised by the API)."""
    svc = await service_for(request, req.model, req.keep_alive)
    target = svc.resolve(req.model)
    if not req.prompt:  # a load request
        return {"embedding": []}
    vectors = await embed(request, svc, target, [svc.backend.encode_text(req.prompt).ids], "prompt")
    return {"embedding": vectors[0].tolist()}


async def embed(request: Request, svc: Service, target: Target, prompts: list[list[int]],
                param: str) -> np.ndarray:
    """(B, D) float32 embeddings of `prompts`, checked against the backend and the context window."""
    if not svc.backend.capabilities.embeddings:
        raise bad_request(f"the {svc.backend.name} backend does not serve embeddings", param="model")
    if len(prompts) > MAX_INPUTS:
        raise bad_request(f"{param} has {len(prompts)} items, above the limit of {MAX_INPUTS}", param=param)
    ctx = svc.context_length()
    for i, ids in enumerate(prompts):
        where = f"{param}.{i}" if len(prompts) > 1 else param
        if not ids:
            raise bad_request(f"{where} is empty", param=where)
        if len(ids) > ctx:
            raise APIError(400, f"{where} has {len(ids)} tokens, more than this model's maximum context "
                           f"length of {ctx}", param=where, code="context_length_exceeded")
    ticket = svc.admit(1)
    return await until_disconnected(request, svc.backend.embed(prompts, target.adapter), ticket)


def unit(vectors: np.ndarray, dimensions: int | None, param: str) -> np.ndarray:
    """Keep the first `dimensions` values (all when None), then scale each row to unit length."""
    if dimensions is not None and vectors.size:
        if dimensions > vectors.shape[1]:
            raise bad_request(f"{param} is {dimensions}, above this model's embedding length of "
                              f"{vectors.shape[1]}", param=param)
        vectors = vectors[:, :dimensions]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True) if vectors.size else 1.0
    return vectors / np.maximum(norms, 1e-12)


def _openai_prompts(svc: Service, given: Any) -> list[list[int]]:
    """OpenAI's input forms -> token-id prompts: a text, texts, one id list, or id lists."""
    if isinstance(given, str):
        given = [given]
    if not given:
        raise bad_request("input is empty", param="input")
    if isinstance(given[0], int):
        return [list(given)]
    return [svc.backend.encode_text(x).ids if isinstance(x, str) else list(x) for x in given]


def _encoded(vector: np.ndarray, encoding: str) -> list[float] | str:
    """A vector as JSON floats, or as base64 of little-endian float32 (what the openai client asks for)."""
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()
