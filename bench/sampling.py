"""A measurement taken while a block of code runs: sampled as it starts, every interval on a background thread,
and as it ends."""

from __future__ import annotations

import threading
from typing import Self


class Sampler:
    """`with sampler: ...` calls `sample()` as the block starts, every `interval_s` while it runs (on a daemon
    thread) and once more as it ends; subclasses keep what they need of the readings."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> Self:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
