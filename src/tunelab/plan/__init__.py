"""Will it fit? Memory plans for training and serving, from a model's config alone (no torch).

    shape    config.json / built-in architecture -> ModelShape (parameter counts)
    device   cuda:24GiB | cpu:16GiB | detected -> Device (budget)
    train    TrainConfig + shape + device -> TrainEstimate (terms, peak, fits)
    serve    shape + device -> ServeEstimate (weights, KV per token, concurrency)
    advice   a plan that does not fit -> the smallest changes that do, ranked by speed cost
    guard    what `tunelab train` runs before loading anything
"""

from tunelab.plan.advice import advise
from tunelab.plan.device import parse_device
from tunelab.plan.serve import estimate_serving
from tunelab.plan.source import model_shape
from tunelab.plan.train import estimate_training

__all__ = ["advise", "estimate_serving", "estimate_training", "model_shape", "parse_device"]
