"""lm-eval on tunelab's engine (eval/harness.py) vs lm-eval's own `hf` backend, same tasks, one process run.

    python bench/lmeval_speed.py                       # the default Gemma 3 270M, the local test tasks
    python bench/lmeval_speed.py --model NAME --repeat 4 --hf-batch 16
    python bench/lmeval_speed.py --tiny                # the tiny random llama of the tests

Each request type of the tasks (loglikelihood, loglikelihood_rolling, generate_until) is timed on
both backends with the same lm-eval Instances (the task's requests repeated --repeat times), after
both models are loaded and have run one request of each type untimed; the table prints seconds,
requests/s and hf/ours. With --repeat > 1 the repeats are identical requests, which both backends
run once for log-likelihoods and only ours runs once for greedy generation: --repeat 1 gives the
figures for distinct requests. Load average is printed
too: this machine is shared.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
TASKS = ROOT / "tests" / "assets" / "lmeval"


def main() -> None:
    args = _parse()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = _model(args)
    requests = _requests([str(TASKS / f"tiny_{t}.yaml") for t in args.tasks.split(",")], args.repeat)
    ours, hf = _backends(model, args)
    import torch

    print(f"model: {model}  dtype: {args.dtype}  hf batch_size: {args.hf_batch}  threads: {torch.get_num_threads()}"
          f"  load average: {_load()}")
    print(f"{'request type':<24}{'n':>6}{'ours s':>10}{'hf s':>10}{'ours req/s':>12}{'hf/ours':>9}")
    total = {"ours": 0.0, "hf": 0.0}
    for lm in (ours, hf):  # untimed: first-call costs (allocator, kernels) go to neither side's figures
        for kind, items in requests.items():
            getattr(lm, kind)([_warm_up(items[0])], disable_tqdm=True)
    for kind, items in requests.items():
        times = {name: _time(lm, kind, items) for name, lm in (("ours", ours), ("hf", hf))}
        for name in total:
            total[name] += times[name]
        print(f"{kind:<24}{len(items):>6}{times['ours']:>10.2f}{times['hf']:>10.2f}"
              f"{len(items) / times['ours']:>12.1f}{times['hf'] / times['ours']:>8.2f}x")
    print(f"{'all':<24}{sum(map(len, requests.values())):>6}{total['ours']:>10.2f}{total['hf']:>10.2f}"
          f"{'':>12}{total['hf'] / total['ours']:>8.2f}x   load average after: {_load()}")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="store name or path (default: the embedded Gemma 3 270M)")
    p.add_argument("--tiny", action="store_true", help="the tests' tiny random llama instead")
    p.add_argument("--tasks", default="mc_5shot,gen,ppl", help="local test tasks (tests/assets/lmeval/tiny_*.yaml; gen_3shot: a shared "
                                                            "few-shot preamble)")
    p.add_argument("--repeat", type=int, default=4, help="each task's requests this many times")
    p.add_argument("--dtype", default="float32", help="both backends' dtype")
    p.add_argument("--hf-batch", type=int, default=16, help="the hf backend's batch_size")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for both (one process: one "
                                                             "setting); default: torch's")
    return p.parse_args()


def _model(args: argparse.Namespace) -> str:
    if args.tiny:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_models import build_tiny_model

        return str(build_tiny_model("llama", Path(tempfile.mkdtemp()) / "llama"))
    from tunelab.store.resolve import resolve_model

    return str(resolve_model(args.model))


def _requests(specs: list[str], repeat: int) -> dict[str, list]:
    """request type -> the tasks' lm-eval Instances, repeated."""
    from lm_eval.tasks import get_task_dict

    from tunelab.eval.benchmarks import task_manager

    by_type: dict[str, list] = {}
    for task in get_task_dict(specs, task_manager(specs)).values():
        task.build_all_requests(limit=None, rank=0, world_size=1)
        for inst in task.instances:
            by_type.setdefault(inst.request_type, []).append(inst)
    return {kind: items * repeat for kind, items in by_type.items()}


def _backends(model: str, args: argparse.Namespace):
    from lm_eval.models.huggingface import HFLM

    from tunelab.eval.harness import TunelabLM

    return (TunelabLM(model, dtype=args.dtype),
            HFLM(pretrained=model, dtype=args.dtype, batch_size=args.hf_batch, device="cpu"))


def _warm_up(inst):
    """A copy of `inst` whose text starts differently, so no timed request finds it in our prefix cache."""
    import dataclasses

    return dataclasses.replace(inst, arguments=("Warm-up. " + inst.args[0], *inst.args[1:]))


def _time(lm, kind: str, items: list) -> float:
    start = time.perf_counter()
    getattr(lm, kind)(items, disable_tqdm=True)
    return time.perf_counter() - start


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
