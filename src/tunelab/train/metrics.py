"""Training metrics: peak memory, and the one writer of metrics rows (metrics.jsonl + trackers)."""

from __future__ import annotations

import contextlib
import resource
import sys
from typing import Iterator

import torch


def peak_mem_mb(device: torch.device) -> float:
    """Peak memory so far: allocated CUDA memory on GPU, process max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # macOS reports bytes, Linux KiB


class MetricsWriter:
    """The one writer of a run's metrics: metrics.jsonl, and the `report_to` trackers."""

    def __init__(self, run, config: dict, report_to: list[str]):
        from tunelab.train.trackers import Trackers

        self.run = run
        self.trackers = Trackers(report_to, run.path, config)

    @staticmethod
    def check(report_to: list[str]) -> None:
        """MissingExtra naming the first tracker whose library is not installed."""
        from tunelab.train.trackers import check_trackers

        check_trackers(report_to)

    def write(self, row: dict) -> None:
        """Append one row to metrics.jsonl and send it to every tracker."""
        self.run.append_metrics(row)
        self.trackers.log(row)

    def finish(self, result_path) -> None:
        """Tell the trackers where the adapter (or model) went, and close them."""
        self.trackers.finish(result_path)

    def fail(self, err: BaseException) -> None:
        """Close the trackers marked failed (killed on Ctrl-C); a no-op once they are closed."""
        self.trackers.fail(err)


@contextlib.contextmanager
def closed_on_failure(writer: MetricsWriter | None) -> Iterator[None]:
    """When the block raises, the run's trackers close marked failed (and the error goes on)."""
    try:
        yield
    except BaseException as err:
        if writer is not None:
            writer.fail(err)
        raise
