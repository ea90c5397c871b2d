"""The memory budget of the device a plan targets: `cuda:24GiB`, `cpu:16GiB`, or detected."""

from __future__ import annotations

import dataclasses
import re

from tunelab.errors import ConfigError

GiB = 2**30
_SPEC = re.compile(r"^(cpu|cuda|mps)(?::(\d+(?:\.\d+)?)\s*(GiB|GB|MiB|MB|G|M)?)?$", re.IGNORECASE)
_UNITS = {"gib": GiB, "g": GiB, "gb": 10**9, "mib": 2**20, "m": 2**20, "mb": 10**6}


@dataclasses.dataclass(frozen=True)
class Device:
    """A device kind and the bytes a plan may use on it."""

    kind: str  # "cpu" or "cuda"
    budget: int  # bytes
    note: str  # where the budget came from

    def __str__(self) -> str:
        return f"{self.kind} {self.budget / GiB:.1f} GiB ({self.note})"


def parse_device(text: str | None) -> Device:
    """`cuda:24GiB`, `cpu:16GiB`, `cuda` (its free memory), or None/`auto` (detected)."""
    if text in (None, "", "auto"):
        return detect_device()
    match = _SPEC.match(text.strip())
    if not match:
        raise ConfigError(f"--device: expected KIND[:SIZE] like cuda:24GiB or cpu:16GiB, got '{text}'")
    kind, size, unit = match.group(1).lower(), match.group(2), (match.group(3) or "GiB").lower()
    kind = "cuda" if kind == "mps" else kind  # unified memory: plan it like a GPU of that size
    if size is None:
        return detect_device(kind)
    return Device(kind, int(float(size) * _UNITS[unit]), "given")


def detect_device(kind: str | None = None) -> Device:
    """The device training would use (CUDA when present) and its free memory now."""
    if kind in (None, "cuda"):
        import torch

        if torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info()
            return Device("cuda", int(free), f"free on {torch.cuda.get_device_name()}")
        if kind == "cuda":
            raise ConfigError("--device cuda: no CUDA device here; give its size, e.g. cuda:24GiB")
    return Device("cpu", available_ram(), "available RAM")


def available_ram() -> int:
    """MemAvailable from /proc/meminfo (Linux), else total physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
