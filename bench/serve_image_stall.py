"""How long the server's event loop stalls while it prepares one large image: the worst /health latency
seen by a poller during a chat request with a big (but small-to-send) PNG, next to the poller's median.

    python bench/serve_image_stall.py               # a 6000x6000 gradient PNG (~120 kB), 2 rounds
    python bench/serve_image_stall.py --side 4000

The model is the tiny random Qwen2.5-VL of the tests (tests/tiny_vlm.py), so nearly all the work is the
image's decode and resize. A route that decodes on the event loop holds /health for the whole of it;
serve/images.py and the AsyncEngine do it on worker threads, so /health waits only for the GIL.
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))


def png_url(side: int) -> str:
    """A side x side RGB gradient as a PNG data URL (it compresses well, as photos of a wall do)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.linear_gradient("L").resize((side, side)).convert("RGB").save(buf, format="PNG")
    print(f"image {side}x{side}, {len(buf.getvalue()) / 1e3:.0f} kB PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def one_round(url: str, image_url: str) -> tuple[float, float, float]:
    """(request s, worst /health s, median /health s) while one image request runs."""
    import httpx

    stalls: list[float] = []
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=300) as client:
            while not done.is_set():
                start = time.perf_counter()
                client.get(url + "/health")
                stalls.append(time.perf_counter() - start)

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.2)
    body = {"model": "vl", "max_tokens": 1, "temperature": 0, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": "?"}]}]}
    start = time.perf_counter()
    response = httpx.post(url + "/v1/chat/completions", json=body, timeout=300)
    took = time.perf_counter() - start
    done.set()
    poller.join()
    response.raise_for_status()
    return took, max(stalls), sorted(stalls)[len(stalls) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from serve_util import start_server
    from tiny_vlm import build_tiny_vlm

    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(build_tiny_vlm(Path(tmp) / "vl"), served_name="vl", dtype="fp32",
                              max_body_bytes=4_000_000)
        try:
            image_url = png_url(args.side)
            for i in range(args.rounds):
                took, worst, median = one_round(server.url, image_url)
                print(f"round {i}: request {took * 1e3:.0f} ms, worst /health {worst * 1e3:.0f} ms, "
                      f"median /health {median * 1e3:.1f} ms")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
