"""Where dequantize + GEMM overtakes torch's int8/int4 matrix-vector kernels (models/quant.CROSSOVER).

For the linears of one Gemma 3 270M decoder layer and its lm_head, times both paths of
`QuantWeight` at growing row counts and prints the first row count where the tiled path wins.

    OMP_NUM_THREADS=1 python bench/quant_crossover.py [--rows 1,4,8,16,32,64,128] [--skip-lm-head]
"""

from __future__ import annotations

import argparse
import time

import torch

from tunelab.models.quant import QuantSpec, QuantWeight

LAYER = {"qkv": (1536, 640), "o": (640, 1024), "gate_up": (4096, 640), "down": (640, 2048)}
LM_HEAD = {"lm_head": (262144, 640)}


def best_ms(fn, repeats: int = 5) -> float:
    """Fastest of `repeats` timed calls after one warm-up, in ms (the least disturbed by other load)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def measure(shapes: dict, scheme: str, rows: list[int], repeats: int) -> list[tuple[int, float, float]]:
    """(rows, kernel ms, tiled ms) summed over `shapes`, bf16 activations."""
    weights = [QuantWeight.from_dense(torch.randn(n, k, dtype=torch.bfloat16) * 0.02, QuantSpec.parse(scheme))
               for n, k in shapes.values()]
    out = []
    for m in rows:
        xs = [torch.randn(m, w.shape[1], dtype=torch.bfloat16) for w in weights]
        kernel = sum(best_ms(lambda: w.kernel(x), repeats) for w, x in zip(weights, xs))
        tiled = sum(best_ms(lambda: w._tiled_matmul(x), repeats) for w, x in zip(weights, xs))
        out.append((m, kernel, tiled))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1,4,8,12,16,24,32,48,64,128", help="row counts to time")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per point (the fastest is kept)")
    ap.add_argument("--skip-lm-head", action="store_true", help="time the decoder layer only")
    args = ap.parse_args()
    rows = [int(r) for r in args.rows.split(",")]
    groups = {"decoder layer": LAYER} if args.skip_lm_head else {"decoder layer": LAYER, "lm_head": LM_HEAD}
    print(f"threads {torch.get_num_threads()}")
    for scheme in ("int8", "int4"):
        for name, shapes in groups.items():
            points = measure(shapes, scheme, rows, args.repeats)
            print(f"\n{scheme} {name}: rows | kernel ms | dequant+GEMM ms | ratio")
            for m, k, t in points:
                print(f"  {m:4d} | {k:9.2f} | {t:9.2f} | {k / t:5.2f}x")
            wins = [m for m, k, t in points if t < k]
            print(f"  tiled path wins from {wins[0] if wins else 'never'} rows")


if __name__ == "__main__":
    main()
