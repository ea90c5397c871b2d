"""lm-eval on tunelab's engine (eval/harness.py) vs lm-eval's own `hf` backend, same tasks, one process run.

    python bench/lmeval_speed.py                       # the default Gemma 3 270M, the local test tasks
    python bench/lmeval_speed.py --repeat 4            # each request 4 times too (a task's `repeats:`)
    python bench/lmeval_speed.py --model NAME --hf-batch 16
    python bench/lmeval_speed.py --tiny                # the tiny random llama of the tests
    python bench/lmeval_speed.py --greedy-head fp16    # A/B the greedy head's copy (auto: this CPU's pick)

Each request type of the tasks (loglikelihood, loglikelihood_rolling, generate_until) is timed on
both backends with the same lm-eval Instances, after both models are loaded and have run one
request of each type untimed; the table prints wall and CPU seconds (this process's, which a
loaded machine inflates less), requests/s and hf/ours. The headline is distinct requests (each
once). --repeat N adds a second table with each request N times: identical requests, which both
backends run once for log-likelihoods and only ours runs once for greedy generation, so that
table flatters ours. Load average is printed too: this machine is shared.
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
    requests = _requests([str(TASKS / f"tiny_{t}.yaml") for t in args.tasks.split(",")])
    ours, hf = _backends(model, args)
    import torch

    head = ours.llm.engine.runner.greedy_head
    print(f"model: {model}  dtype: {args.dtype}  hf batch_size: {args.hf_batch}  threads: {torch.get_num_threads()}"
          f"  greedy head: {type(head.low).__name__.strip('_').lower() if head else 'off'}  load average: {_load()}")
    for lm in (ours, hf):  # untimed: first-call costs (allocator, kernels) go to neither side's figures
        for kind, items in requests.items():
            getattr(lm, kind)([_warm_up(items[0])], disable_tqdm=True)
    print("distinct requests (the headline):")
    _table(ours, hf, requests)
    if args.repeat > 1:
        print(f"each request {args.repeat} times (identical requests: ours runs them once):")
        _table(ours, hf, {kind: items * args.repeat for kind, items in requests.items()})
    print(f"load average after: {_load()}")


def _table(ours, hf, requests: dict[str, list]) -> None:
    """Time every request type on both backends; one row each, then all."""
    print(f"{'request type':<24}{'n':>6}{'ours s':>9}{'hf s':>9}{'hf/ours':>9}{'ours cpu':>10}{'hf cpu':>8}"
          f"{'hf/ours':>9}{'ours req/s':>12}")
    total = {"ours": (0.0, 0.0), "hf": (0.0, 0.0)}
    for kind, items in requests.items():
        times = {name: _time(lm, kind, items) for name, lm in (("ours", ours), ("hf", hf))}
        total = {name: tuple(map(sum, zip(total[name], times[name]))) for name in total}
        _row(kind, len(items), times)
    _row("all", sum(map(len, requests.values())), total)


def _row(name: str, n: int, times: dict[str, tuple[float, float]]) -> None:
    (wall, cpu), (hf_wall, hf_cpu) = times["ours"], times["hf"]
    print(f"{name:<24}{n:>6}{wall:>9.2f}{hf_wall:>9.2f}{hf_wall / wall:>8.2f}x{cpu:>10.2f}{hf_cpu:>8.2f}"
          f"{hf_cpu / cpu:>8.2f}x{n / wall:>12.1f}")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="store name or path (default: the embedded Gemma 3 270M)")
    p.add_argument("--tiny", action="store_true", help="the tests' tiny random llama instead")
    p.add_argument("--tasks", default="mc_5shot,gen,ppl", help="local test tasks (tests/assets/lmeval/tiny_*.yaml; gen_3shot: a shared "
                                                            "few-shot preamble)")
    p.add_argument("--repeat", type=int, default=1, help="also time each task's requests this many times "
                                                          "(identical requests; default 1: distinct only)")
    p.add_argument("--dtype", default="float32", help="both backends' dtype")
    p.add_argument("--hf-batch", type=int, default=16, help="the hf backend's batch_size")
    p.add_argument("--greedy-head", choices=("auto", "bf16", "fp16", "off"), default="auto",
                   help="the lm_head copy our greedy steps rank with (engine/greedy_head.py); auto: the one "
                        "this CPU runs fastest (bf16 with native bf16, else fp16)")
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


def _requests(specs: list[str]) -> dict[str, list]:
    """request type -> the tasks' lm-eval Instances."""
    from lm_eval.tasks import get_task_dict

    from tunelab.eval.benchmarks import task_manager

    by_type: dict[str, list] = {}
    for task in get_task_dict(specs, task_manager(specs)).values():
        task.build_all_requests(limit=None, rank=0, world_size=1)
        for inst in task.instances:
            by_type.setdefault(inst.request_type, []).append(inst)
    return by_type


def _backends(model: str, args: argparse.Namespace):
    from lm_eval.models.huggingface import HFLM

    from tunelab.eval.harness import TunelabLM

    ours = TunelabLM(model, dtype=args.dtype)
    if args.greedy_head != "auto":
        from tunelab.engine.greedy_head import GreedyHead
        from tunelab.engine.head_scan import dense_head

        runner = ours.llm.engine.runner
        runner.greedy_head = None if args.greedy_head == "off" else GreedyHead(dense_head(runner.model),
                                                                               args.greedy_head)
    return ours, HFLM(pretrained=model, dtype=args.dtype, batch_size=args.hf_batch, device="cpu")


def _warm_up(inst):
    """A copy of `inst` whose text starts differently, so no timed request finds it in our prefix cache."""
    import dataclasses

    return dataclasses.replace(inst, arguments=("Warm-up. " + inst.args[0], *inst.args[1:]))


def _time(lm, kind: str, items: list) -> tuple[float, float]:
    """(wall, CPU) seconds of one call, ours with an empty prefix cache (earlier tables ran the same
    requests; within a call its requests may share it)."""
    if hasattr(lm, "llm"):
        lm.llm.engine.scheduler.block_manager.reset_prefix_cache()
    start, cpu = time.perf_counter(), time.process_time()
    getattr(lm, kind)(items, disable_tqdm=True)
    return time.perf_counter() - start, time.process_time() - cpu


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
