"""Fault injection for the crash tests: `VAE_FAULT_AT=<point>[:<n>]` kills the job's driver with SIGKILL (no
clean-up, as a node failure would) the n-th time (default the first) the scoring job reaches `point`:

- `write`: a write task has written its data files (the kill lands while other tasks still write);
- `commit`: every file is written and the run is logged, the catalog commit not yet made;
- `committed`: right after the catalog commit, before the job reports.

The plan is read on the driver and travels with the sink to the write tasks, so it also works on a cluster whose
workers do not share the driver's environment. Unset, every call is a no-op.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

FAULT_ENV = "VAE_FAULT_AT"
POINTS = ("write", "commit", "committed")


@dataclass(frozen=True)
class FaultPlan:
    """Kill process `pid` the `nth` time `point` is reached; `point` None: never."""

    point: str | None = None
    nth: int = 1
    pid: int = 0

    @classmethod
    def from_env(cls) -> FaultPlan:
        value = os.environ.get(FAULT_ENV, "")
        if not value:
            return cls()
        point, _, nth = value.partition(":")
        if point not in POINTS or (nth and not nth.isdigit()):
            raise ValueError(f"{FAULT_ENV}={value!r}: expected one of {', '.join(POINTS)}, optionally :N")
        return cls(point, int(nth or 1), os.getpid())

    def reached(self, point: str, count: int = 1) -> None:
        """Kill the driver when this is the planned point and its `count`-th arrival (write tasks pass their
        index + 1, so each task is one arrival)."""
        if self.point == point and count == self.nth:
            os.kill(self.pid, signal.SIGKILL)
