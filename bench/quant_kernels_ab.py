"""Our int8/int4 matrix-vector kernels (models/quant_kernels.py) against torch's on the same weights.

For the linears of Gemma 3 270M (one decoder layer, and the lm_head), times torch's kernel and
ours interleaved in one process at a few row counts, bf16 activations, and prints the ratio.

    OMP_NUM_THREADS=1 python bench/quant_kernels_ab.py [--rows 1,4,8,16] [--skip-lm-head]
"""

from __future__ import annotations

import argparse
import subprocess
import time

import torch

from tunelab.models import quant_kernels
from tunelab.models.quant import QuantSpec, QuantWeight
from tunelab.models.quant_layout import int4_pack_block

SHAPES = {"q": (1024, 640), "kv": (256, 640), "o": (640, 1024), "gate_up": (4096, 640), "down": (640, 2048)}
LM_HEAD = {"lm_head": (262144, 640)}


def torchs(q: QuantWeight, x: torch.Tensor) -> torch.Tensor:
    """torch's kernel for `q`, whatever quant_kernels would pick."""
    if q.spec.scheme == "int8":
        return torch._weight_int8pack_mm(x, q.data, q.scales)
    return torch._weight_int4pack_mm_for_cpu(x, q.data, q.spec.group_size, q.scales)


def ours(q: QuantWeight, x: torch.Tensor, wide: bool) -> torch.Tensor:
    """Our kernel for `q` (built for this CPU), called directly; int8 in 256 or 512-bit vectors."""
    if q.spec.scheme == "int8":
        return quant_kernels.ops().int8_gemv(x, q.data, q.scales, wide)
    return quant_kernels.ops().int4_gemv(x, q.data, q.scales, q.spec.group_size, int4_pack_block())


def interleaved_ms(fns: list, repeats: int) -> list[float]:
    """Fastest of `repeats` calls of each of `fns`, taken in turn (load hits both sides alike), in ms."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return [b * 1e3 for b in best]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1,4,8,16", help="row counts to time")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per side and point (the fastest is kept)")
    ap.add_argument("--schemes", default="int8,int4-g32", help="quantize specs to time")
    ap.add_argument("--skip-lm-head", action="store_true", help="time the decoder layer only")
    args = ap.parse_args()
    if quant_kernels.ops() is None:
        raise SystemExit("our kernels are not built here (no compiler or not an x86 AVX2 CPU)")
    shapes = SHAPES if args.skip_lm_head else {**SHAPES, **LM_HEAD}
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"threads {torch.get_num_threads()}, capability {torch.backends.cpu.get_cpu_capability()}, "
          f"int4 block {int4_pack_block()}, flags {' '.join(quant_kernels.flags())}")
    wide = quant_kernels.wide()
    print(f"scheme | shape | rows | torch ms | ours ms | torch / ours{' | ours AVX2 ms (int8)' if wide else ''}")
    for scheme in args.schemes.split(","):
        for name, (n, k) in shapes.items():
            q = QuantWeight.from_dense(torch.randn(n, k, dtype=torch.bfloat16) * 0.02, QuantSpec.parse(scheme))
            for m in [int(r) for r in args.rows.split(",")]:
                x = torch.randn(m, k, dtype=torch.bfloat16)
                reps = max(3, args.repeats // (20 if n > 100000 else 1))
                fns = [lambda: torchs(q, x), lambda: ours(q, x, wide)]
                if wide and q.spec.scheme == "int8":
                    fns.append(lambda: ours(q, x, False))
                t, o, *narrow = interleaved_ms(fns, reps)
                extra = f" | {narrow[0]:8.3f}" if narrow else ""
                print(f"{scheme} | {name} {n}x{k} | {m:2d} | {t:8.3f} | {o:8.3f} | {t / o:5.2f}x{extra}", flush=True)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
