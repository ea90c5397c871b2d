"""How tunelab prints numbers a person reads: losses and durations, the same in every command."""

from __future__ import annotations

from typing import Any

LOSS_DIGITS = 4  # 0.1184: enough to compare runs, not 17 digits of float noise


def format_loss(value: Any) -> str:
    """0.11843517422676086 -> '0.1184'; None (or anything not a number) -> '-'."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return f"{value:.{LOSS_DIGITS}f}"


def format_duration(seconds: float) -> str:
    """4.2 -> '4.2s', 65 -> '1m05s', 3725 -> '1h02m05s'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}h{m % 60:02d}m{s:02d}s" if m >= 60 else f"{m}m{s:02d}s"
