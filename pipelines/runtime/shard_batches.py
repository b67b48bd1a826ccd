"""A Ray Train worker's rows of one split: streamed from its Ray Data shard once, then, when they fit a memory
budget, kept as tensors on the worker's device, so later epochs cost an index into a tensor instead of a Ray
Data pass (each pass pays a streaming execution's start-up, the bulk of an epoch on a small table)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

# A streamed pass shuffles in a local buffer of this many rows (tens of thousands: rows from many blocks mix in
# every batch) while Ray Data prefetches the next blocks; the files themselves come in another order every epoch
# (`parquet_input.read_rows`).
SHUFFLE_BUFFER = 32_768
PREFETCH_BATCHES = 4

Batch = dict[str, torch.Tensor]


class ShardBatches:
    """The batches of one worker's shard (`ray.train.get_dataset_shard(...)`), the columns as the shard gives them
    ("x" (B, D), and "c" (B, C) and "label" (B,) where the dataset has them).

    The first whole pass streams from Ray Data (shuffled in a local buffer when a seed is given) and keeps what it
    read while that stays within `budget_bytes`; every later pass draws from the kept rows (a seeded permutation,
    or in order). A shard over the budget (or `budget_bytes` 0) streams every pass. The row count of each pass is
    the shard's, so DDP ranks with equal shards take equal numbers of steps either way.
    """

    def __init__(self, shard, budget_bytes: int) -> None:
        self.shard = shard
        self.budget_bytes = budget_bytes
        self.kept: Batch | None = None
        self.streams = budget_bytes <= 0  # for good: the shard was found too big (or keeping it is off)

    @property
    def in_memory(self) -> bool:
        return self.kept is not None

    def batches(self, batch_size: int, seed: int | None = None) -> Iterator[Batch]:
        """One pass over the shard in batches of `batch_size` rows: shuffled with `seed`, else in order."""
        if self.kept is not None:
            yield from self._kept_batches(batch_size, seed)
            return
        shuffle = {} if seed is None else {"local_shuffle_buffer_size": SHUFFLE_BUFFER, "local_shuffle_seed": seed}
        read: list[Batch] = []
        size = 0
        passes = self.shard.iter_torch_batches(batch_size=batch_size, prefetch_batches=PREFETCH_BATCHES, **shuffle)
        for batch in passes:
            if not self.streams:
                size += sum(t.nelement() * t.element_size() for t in batch.values())
                if size > self.budget_bytes:
                    self.streams, read = True, []
                else:
                    read.append(batch)
            yield batch
        if not self.streams and read:  # a whole pass (a pass abandoned half way never gets here)
            self.kept = {name: torch.cat([b[name] for b in read]) for name in read[0]}

    def _kept_batches(self, batch_size: int, seed: int | None) -> Iterator[Batch]:
        rows = len(self.kept["x"])
        order = (
            torch.arange(rows) if seed is None else torch.randperm(rows, generator=torch.Generator().manual_seed(seed))
        )
        order = order.to(self.kept["x"].device)
        for start in range(0, rows, batch_size):
            index = order[start : start + batch_size]
            yield {name: t[index] for name, t in self.kept.items()}
