"""Peak resident memory of a process, or of a process and all its descendants (a local Ray cluster started
by the driver: GCS, raylet, workers and actors), sampled by a background thread."""

from __future__ import annotations

import contextlib
import threading

import psutil

MB = 1 << 20


def _rss(process: psutil.Process, tree: bool) -> int:
    processes = [process, *process.children(recursive=True)] if tree else [process]
    total = 0
    for p in processes:
        with contextlib.suppress(psutil.Error):  # a worker that exited between listing and reading
            total += p.memory_info().rss
    return total


class PeakMemory:
    """`with PeakMemory(tree=True) as peak: ...` then `peak.increase_mb`: the highest summed RSS seen while the
    block ran, minus the sum just before it. RSS counts shared pages (Ray's object store, shared libraries) in
    every process that maps them."""

    def __init__(self, tree: bool, interval_s: float = 0.1) -> None:
        self.tree = tree
        self.interval_s = interval_s
        self.process = psutil.Process()
        self.baseline = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, _rss(self.process, self.tree))

    def __enter__(self) -> PeakMemory:
        self.baseline = self.peak = _rss(self.process, self.tree)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss(self.process, self.tree))

    @property
    def increase_mb(self) -> float:
        return (self.peak - self.baseline) / MB

    @property
    def peak_mb(self) -> float:
        return self.peak / MB
