"""`tunelab ps`: what a running `tunelab serve` (or Ollama) has loaded, from its /api/ps."""

from __future__ import annotations

import argparse
import os
from datetime import datetime, timezone


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("TUNELAB_URL", "http://127.0.0.1:8000"),
                        help="the server's base URL (default: $TUNELAB_URL or http://127.0.0.1:8000)")
    parser.add_argument("--api-key", default=None, help="bearer token, when the server wants one")


def run(args: argparse.Namespace) -> int:
    """Ask the server and print one line per loaded model."""
    import httpx

    from tunelab.errors import TunelabError
    from tunelab.store.describe import human_bytes

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    try:
        r = httpx.get(args.url.rstrip("/") + "/api/ps", headers=headers, timeout=10)
    except httpx.HTTPError as err:
        raise TunelabError(f"no server answers at {args.url} ({err}); start one with `tunelab serve`") from None
    if r.status_code != 200:
        raise TunelabError(f"{args.url}/api/ps answered {r.status_code}: {r.text[:200]}")
    rows = [(m["name"], human_bytes(int(m.get("size", 0))), m.get("details", {}).get("parent_model") or "-",
             until(m.get("expires_at", ""))) for m in r.json().get("models", [])]
    widths = [max(len(str(x)) for x in col) for col in zip(("NAME", "SIZE", "BASE", "UNTIL"), *rows)]
    for row in [("NAME", "SIZE", "BASE", "UNTIL"), *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
    return 0


def until(stamp: str) -> str:
    """'forever', or how long until an ISO expiry ('4 minutes from now')."""
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp or "-"
    if when.year >= 9999:
        return "forever"
    seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if seconds < 90:
        return f"{max(seconds, 0):.0f} seconds from now"
    return f"{seconds / 60:.0f} minutes from now" if seconds < 5400 else f"{seconds / 3600:.1f} hours from now"
