"""Plain-text tables of a plan, as `tunelab plan` prints them and `tunelab train` refuses with."""

from __future__ import annotations

from tunelab.plan.advice import Change
from tunelab.plan.device import GiB
from tunelab.plan.serve import ServeEstimate
from tunelab.plan.train import TrainEstimate


def gib(n: int) -> str:
    """Bytes as GiB (MiB below 1 GiB)."""
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / 2**20:.0f} MiB"


def train_table(est: TrainEstimate) -> str:
    """The breakdown, the peak and the verdict."""
    lines = [f"{'term':<24}{'memory':>12}  phase     note"]
    for t in est.terms:
        lines.append(f"{t.name:<24}{gib(t.bytes):>12}  {t.phase:<9} {t.note}")
    lines.append(f"{'peak':<24}{gib(est.total):>12}  (always + the larger of backward and step)")
    lines.append(verdict(est.total, est.device))
    return "\n".join(lines)


def verdict(need: int, device) -> str:
    """'fits' or 'does not fit', with the numbers."""
    word = "fits" if need <= device.budget else "does NOT fit"
    return f"{word}: {gib(need)} of {device}"


def advice_lines(changes: list[Change]) -> str:
    """The ways to fit, cheapest to speed first."""
    if not changes:
        return "no change of method, rank, micro-batch, cutoff, checkpointing or 4-bit makes it fit"
    lines = ["smallest changes that fit, cheapest to speed first:"]
    for c in changes:
        lines.append(f"  {c.overrides:<44} peak {gib(c.estimate.total):>10}, "
                     f"step time x{c.speed:.2f}: {c.cost}")
    return "\n".join(lines)


def serve_table(est: ServeEstimate) -> str:
    """Weights, KV per token and concurrency."""
    return "\n".join([
        f"{'weights':<24}{gib(est.weights):>12}",
        f"{'framework overhead':<24}{gib(est.overhead):>12}",
        f"{'KV cache per token':<24}{est.kv_per_token / 1024:>8.1f} KiB",
        f"{'KV cache':<24}{gib(est.kv_budget):>12}  = {est.kv_tokens} tokens",
        f"{'concurrency':<24}{est.concurrency:>12}  sequences of {est.context} tokens",
        verdict(est.weights + est.overhead + est.kv_budget, est.device) if est.fits
        else f"does NOT fit: weights {gib(est.weights)} + overhead leave no KV cache on {est.device}",
    ])
