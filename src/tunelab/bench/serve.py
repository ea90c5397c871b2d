"""`tunelab bench serve`: load-test a server over streaming HTTP, in the API of your choice.

Sends N requests with at most C in flight, streams each one, and times the first
token (TTFT), the gaps between tokens (ITL), time per output token (TPOT) and the
whole request (e2e). `--api` picks the wire format (`bench/apis.py`: OpenAI, Responses,
Anthropic, Ollama), so it works against tunelab, vLLM, llama-server or Ollama; `--api
embeddings` times /v1/embeddings requests of `--batch` inputs and reports embeddings/s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from tunelab.bench.apis import STREAMING
from tunelab.bench.apis import headers as api_headers
from tunelab.errors import ConfigError, TunelabError

WORDS = ("time person year way day thing man world life hand part child eye woman place work week "
         "case point number group problem fact water story river light music garden city paper").split()


@dataclasses.dataclass
class BenchConfig:
    """What to send and how hard."""

    url: str
    model: str | None = None
    concurrency: int = 1
    requests: int = 16
    input_len: int = 128
    output_len: int = 64
    dataset: str | None = None
    endpoint: str = "completions"  # or "chat" (openai and ollama)
    api: str = "openai"  # openai | responses | anthropic | ollama | embeddings
    batch: int = 1  # inputs per /v1/embeddings request (api embeddings)
    api_key: str | None = None
    ignore_eos: bool = True
    seed: int = 0
    timeout_s: float = 300.0
    cold_load: bool = False  # first unload the model (Ollama's keep_alive 0) and time one cold request


@dataclasses.dataclass
class RequestResult:
    """Timings of one request."""

    ok: bool
    ttft: float = 0.0
    e2e: float = 0.0
    itls: list[float] = dataclasses.field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    error: str = ""


def synthetic_prompts(n: int, input_len: int, seed: int) -> list[str]:
    """n prompts of about `input_len` tokens (one common English word is about one token)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(max(1, input_len))) for _ in range(n)]


def dataset_prompts(path: str, n: int) -> list[Any]:
    """Prompts from JSONL lines with `prompt` (text) or `messages` (chat); cycled to n."""
    rows = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{i}: invalid JSON: {err.msg}") from None
        if not isinstance(row, dict) or not ("prompt" in row or "messages" in row):
            raise ConfigError(f"{path}:{i}: expected an object with 'prompt' or 'messages'")
        rows.append(row.get("messages") or row["prompt"])
    if not rows:
        raise ConfigError(f"{path}: no prompts found")
    return [rows[i % len(rows)] for i in range(n)]


async def one_request(client, cfg: BenchConfig, model: str, prompt: Any) -> RequestResult:
    """Stream one request through `cfg.api`'s wire format and time it."""
    api = STREAMING[cfg.api]
    path, body = api.request(cfg, model, prompt)
    start = time.perf_counter()
    res, last, chunks, counts = RequestResult(ok=False), None, 0, {}
    try:
        async with client.stream("POST", cfg.url.rstrip("/") + path, json=body) as resp:
            if resp.status_code != 200:
                res.error = f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}"
                return res
            async for line in resp.aiter_lines():
                text, finished = api.read(line, counts)
                now = time.perf_counter()
                if text:
                    chunks += 1
                    if last is None:
                        res.ttft = now - start
                    else:
                        res.itls.append(now - last)
                    last = now
                if finished:
                    break
    except Exception as err:  # noqa: BLE001 - every failure is a counted error, not a crash
        res.error = f"{type(err).__name__}: {err}"
        return res
    res.e2e = time.perf_counter() - start
    res.prompt_tokens, res.output_tokens = counts.get("prompt", 0), counts.get("output", 0) or chunks
    res.ok = last is not None
    res.error = "" if res.ok else "no tokens received"
    return res


async def one_embedding(client, cfg: BenchConfig, model: str, prompt: Any) -> RequestResult:
    """One /v1/embeddings request of `cfg.batch` copies of the prompt; e2e is its latency."""
    body = {"model": model, "input": [prompt if isinstance(prompt, str) else json.dumps(prompt)] * cfg.batch,
            "encoding_format": "base64"}
    start = time.perf_counter()
    try:
        resp = await client.post(cfg.url.rstrip("/") + "/v1/embeddings", json=body)
    except Exception as err:  # noqa: BLE001 - a counted error
        return RequestResult(ok=False, error=f"{type(err).__name__}: {err}")
    if resp.status_code != 200:
        return RequestResult(ok=False, error=f"HTTP {resp.status_code}: {resp.text[:200]!r}")
    e2e = time.perf_counter() - start
    usage = resp.json().get("usage") or {}
    return RequestResult(ok=True, ttft=e2e, e2e=e2e, prompt_tokens=usage.get("prompt_tokens", 0))


async def _discover_model(client, cfg: BenchConfig) -> str:
    """The first served model's id. A server still loading its model answers 503: wait for it
    (up to timeout_s), so `tunelab serve & tunelab bench serve` just works."""
    import httpx

    url = cfg.url.rstrip("/") + "/v1/models"
    deadline = time.monotonic() + cfg.timeout_s
    while True:
        try:
            resp = await client.get(url)
        except httpx.TransportError as err:
            raise TunelabError(f"cannot reach the server at {cfg.url}: {err}") from err
        if resp.status_code != 503 or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    if resp.status_code != 200:
        raise TunelabError(f"{url} answered {resp.status_code}: {resp.text[:300]}")
    return resp.json()["data"][0]["id"]


async def run_benchmark(cfg: BenchConfig) -> dict[str, Any]:
    """Run the load and return the summary dict."""
    import httpx

    if cfg.concurrency < 1 or cfg.requests < 1:
        raise ConfigError("--concurrency and --requests must be >= 1")
    prompts = (dataset_prompts(cfg.dataset, cfg.requests) if cfg.dataset
               else synthetic_prompts(cfg.requests, cfg.input_len, cfg.seed))
    if cfg.api not in (*STREAMING, "embeddings") or cfg.batch < 1:
        raise ConfigError(f"--api must be one of {', '.join((*STREAMING, 'embeddings'))} and --batch >= 1")
    headers = api_headers(cfg.api, cfg.api_key)
    send = one_embedding if cfg.api == "embeddings" else one_request
    limits = httpx.Limits(max_connections=cfg.concurrency + 2)
    async with httpx.AsyncClient(timeout=cfg.timeout_s, headers=headers, limits=limits) as client:
        model = cfg.model or await _discover_model(client, cfg)
        cold = await cold_request(client, cfg, model, prompts[0], send) if cfg.cold_load else None
        gate = asyncio.Semaphore(cfg.concurrency)

        async def guarded(prompt: Any) -> RequestResult:
            async with gate:
                return await send(client, cfg, model, prompt)

        start = time.perf_counter()
        results = await asyncio.gather(*(guarded(p) for p in prompts))
        duration = time.perf_counter() - start
    summary = summarize(results, duration, cfg, model)
    if cold is not None:
        summary["cold_ttft_ms"] = cold.ttft * 1000 if cold.ok else None
        summary["error_samples"] += [f"cold request: {cold.error}"] if not cold.ok else []
    return summary


async def cold_request(client, cfg: BenchConfig, model: str, prompt: Any, send: Any) -> RequestResult:
    """Unload `model` (an empty /api/generate with keep_alive 0, as `ollama stop` does), then send one
    request: its TTFT includes loading the model (`tunelab serve --models`, Ollama)."""
    resp = await client.post(cfg.url.rstrip("/") + "/api/generate",
                             json={"model": model, "prompt": "", "keep_alive": 0, "stream": False})
    if resp.status_code != 200 or resp.json().get("done_reason") != "unload":
        raise TunelabError(f"--cold-load: the server did not unload '{model}' ({resp.status_code}: "
                           f"{resp.text[:200]}); serve with `tunelab serve --models ...`, which loads on demand")
    return await send(client, cfg, model, prompt)


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]
    return {"mean": statistics.fmean(values), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99)}


def summarize(results: list[RequestResult], duration: float, cfg: BenchConfig, model: str) -> dict:
    """Latency percentiles (ms) and throughput from per-request results."""
    ok = [r for r in results if r.ok]
    tpots = [(r.e2e - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    ms = lambda xs: {k: v * 1000 for k, v in _stats(xs).items()}
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens for r in ok)
    return {
        "url": cfg.url, "model": model, "concurrency": cfg.concurrency, "requests": len(results),
        "completed": len(ok), "errors": len(results) - len(ok),
        "error_samples": sorted({r.error for r in results if not r.ok})[:5],
        "duration_s": duration, "request_throughput": len(ok) / duration,
        "output_token_throughput": out_tokens / duration,
        "total_token_throughput": (in_tokens + out_tokens) / duration,
        "prompt_tokens": in_tokens, "output_tokens": out_tokens,
        "api": cfg.api, "batch": cfg.batch, "embeddings_per_s": len(ok) * cfg.batch / duration,
        "ttft_ms": ms([r.ttft for r in ok]), "tpot_ms": ms(tpots),
        "itl_ms": ms([g for r in ok for g in r.itls]), "e2e_ms": ms([r.e2e for r in ok]),
    }


def format_report(s: dict[str, Any]) -> str:
    """A plain-text table of the summary."""
    lines = [f"model {s['model']} at {s['url']}  api {s['api']}  concurrency {s['concurrency']}",
             f"requests {s['completed']}/{s['requests']} ok, {s['errors']} errors, "
             f"{s['duration_s']:.2f} s",
             _throughput(s),
             f"tokens: {s['prompt_tokens']} prompt, {s['output_tokens']} output",
             f"{'ms':<6}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}"]
    for key in ("ttft", "tpot", "itl", "e2e"):
        st = s[f"{key}_ms"]
        lines.append(f"{key.upper():<6}" + "".join(f"{st[q]:>10.1f}" for q in ("mean", "p50", "p90", "p99")))
    if s.get("cold_ttft_ms") is not None:
        lines.append(f"cold load: first token {s['cold_ttft_ms']:.0f} ms after an unload "
                     f"(warm TTFT p50 {s['ttft_ms']['p50']:.0f} ms)")
    lines += [f"error: {e}" for e in s["error_samples"]]
    return "\n".join(lines)


def _throughput(s: dict[str, Any]) -> str:
    if s["api"] == "embeddings":
        return (f"throughput: {s['request_throughput']:.2f} req/s, {s['embeddings_per_s']:.1f} embeddings/s "
                f"(batch {s['batch']}), {s['total_token_throughput']:.1f} tok/s")
    return (f"throughput: {s['request_throughput']:.2f} req/s, "
            f"{s['output_token_throughput']:.1f} output tok/s, {s['total_token_throughput']:.1f} total tok/s")
