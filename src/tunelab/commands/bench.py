"""`tunelab bench serve`: latency and throughput of a server, in the OpenAI, Responses, Anthropic,
Ollama or embeddings API."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `tunelab bench`."""
    sub = parser.add_subparsers(dest="bench_target", metavar="TARGET", required=True)
    what = "load-test a running server (tunelab, vLLM, llama-server, Ollama)"
    p = sub.add_parser("serve", help=what, description=what)
    p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", default=None, help="model name (default: the first in /v1/models)")
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight at once (default: 1)")
    p.add_argument("--requests", type=int, default=16, help="total requests (default: 16)")
    p.add_argument("--input-len", type=int, default=128, help="synthetic prompt length in tokens, about (default: 128)")
    p.add_argument("--output-len", type=int, default=64, help="max_tokens per request (default: 64)")
    p.add_argument("--dataset", default=None, help="JSONL of {'prompt': ...} or {'messages': [...]}")
    p.add_argument("--endpoint", choices=["completions", "chat"], default="completions",
                   help="raw text or chat: /v1/completions or /v1/chat/completions, Ollama's /api/generate "
                        "or /api/chat (default: completions)")
    apis = ["openai", "responses", "anthropic", "ollama", "embeddings"]
    p.add_argument("--api", choices=apis, default="openai",
                   help="wire format: OpenAI (completions/chat), /v1/responses, Anthropic /v1/messages, "
                        "Ollama /api/*, or /v1/embeddings (default: openai)")
    p.add_argument("--batch", type=int, default=1,
                   help="inputs per request with --api embeddings (default: 1)")
    p.add_argument("--api-key", default=None, help="bearer token, when the server wants one (default: none)")
    p.add_argument("--no-ignore-eos", action="store_true", help="let requests stop at EOS")
    p.add_argument("--cold-load", action="store_true",
                   help="first unload the model and time one request that must load it (servers that load "
                        "on demand: tunelab serve --models, Ollama)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the summary as JSON")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print the report; exit 1 if any request failed."""
    import asyncio
    import json
    from pathlib import Path

    from tunelab.atomic import write_text_atomic
    from tunelab.bench.serve import BenchConfig, format_report, run_benchmark

    if args.dataset and not Path(args.dataset).is_file():
        from tunelab.errors import ConfigError

        raise ConfigError(f"--dataset: file not found: {args.dataset}")
    cfg = BenchConfig(url=args.url, model=args.model, concurrency=args.concurrency,
                      requests=args.requests, input_len=args.input_len, output_len=args.output_len,
                      dataset=args.dataset, endpoint=args.endpoint, api=args.api, batch=args.batch,
                      api_key=args.api_key, cold_load=args.cold_load,
                      ignore_eos=not args.no_ignore_eos)
    summary = asyncio.run(run_benchmark(cfg))
    print(format_report(summary))
    if args.json:
        write_text_atomic(args.json, json.dumps(summary, indent=2))
    return 1 if summary["errors"] else 0
