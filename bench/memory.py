"""Peak resident memory of a process, or of a process and all its descendants (a local Ray cluster started
by the driver: GCS, raylet, workers and actors), sampled by a background thread."""

from __future__ import annotations

import contextlib
from pathlib import Path

import psutil

from .sampling import Sampler

MB = 1 << 20


def _shared_memory(pid: int) -> int:
    """Bytes of shared memory (`RssShmem`: Ray's object store mapped by this process) resident in process `pid`;
    0 where /proc does not say."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssShmem:"):
                return int(line.split()[1]) * 1024
    return 0


def _resident(process: psutil.Process, tree: bool) -> int:
    """Resident bytes of `process` (and its descendants with `tree`): each one's own pages, plus the shared memory
    once (the largest any of them maps: the raylet holds every page of the object store in use), since every
    process that reads an object maps the same pages."""
    processes = [process, *process.children(recursive=True)] if tree else [process]
    own, shared = 0, 0
    for p in processes:
        with contextlib.suppress(psutil.Error):  # a worker that exited between listing and reading
            rss, shm = p.memory_info().rss, _shared_memory(p.pid)
            own, shared = own + rss - shm, max(shared, shm)
    return own + shared


class PeakMemory(Sampler):
    """`with PeakMemory(tree=True) as peak: ...` then `peak.increase_mb`: the highest resident memory seen while
    the block ran (`_resident`: the object store's shared pages counted once, not once per process that reads
    them), minus the value just before it. Shared libraries still count in every process."""

    def __init__(self, tree: bool, interval_s: float = 0.1) -> None:
        super().__init__(interval_s)
        self.tree = tree
        self.process = psutil.Process()
        self.baseline: int | None = None
        self.peak = 0

    def sample(self) -> None:
        resident = _resident(self.process, self.tree)
        self.baseline = resident if self.baseline is None else self.baseline
        self.peak = max(self.peak, resident)

    @property
    def increase_mb(self) -> float:
        return (self.peak - self.baseline) / MB

    @property
    def peak_mb(self) -> float:
        return self.peak / MB
