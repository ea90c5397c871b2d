"""`tunelab plan [MODEL] [key=value ... | --serve] [--device cuda:24GiB]`: will it fit?"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """MODEL, the train keys (as `tunelab train`), --serve, --device, --context."""
    from tunelab.config_flags import add_config_arguments
    from tunelab.train.config import TrainConfig

    parser.add_argument("--serve", action="store_true", help="plan serving: weights, KV cache per token, concurrency")
    parser.add_argument("--device", metavar="KIND[:SIZE]", help="cuda:24GiB, cpu:16GiB; default: detected")
    parser.add_argument("--context", type=int, metavar="N", help="--serve: tokens per sequence (default: model limit)")
    add_config_arguments(parser, TrainConfig, positional=True)
    parser.usage = "tunelab plan [MODEL] [key=value ...] [--serve] [--device KIND:SIZE]"


def run(args: argparse.Namespace) -> int:
    """Print the breakdown and the verdict; exit 0 when it fits, 2 when it does not."""
    from tunelab.config_flags import config_from_args
    from tunelab.plan import advise, estimate_serving, estimate_training, model_shape, parse_device
    from tunelab.plan.render import advice_lines, serve_table, train_table
    from tunelab.train.config import TrainConfig

    models = [item for item in args.overrides if "=" not in item]
    args.overrides = [item for item in args.overrides if "=" in item]
    cfg = config_from_args(TrainConfig, args, {"model": models[0]} if models else None)
    shape, where = model_shape(cfg.model)
    device = parse_device(args.device)
    print(f"model: {cfg.model or 'default (Gemma 3 270M)'} [{where}], {shape.total_params() / 1e6:.1f}M params")
    if args.serve:
        est = estimate_serving(shape, device, args.context)
        print(serve_table(est))
        return 0 if est.fits else 2
    est = estimate_training(shape, cfg, device)
    print(f"method: {cfg.method}, micro-batch {cfg.micro_batch_size} x cutoff {cfg.data.cutoff_len}")
    print(train_table(est))
    if not est.fits:
        print(advice_lines(advise(shape, cfg, device)))
    return 0 if est.fits else 2
