"""A worker's shard kept in memory after its first pass when it fits the budget, streamed every pass when not."""

from __future__ import annotations

import torch

from pipelines.runtime.shard_batches import ShardBatches

ROWS, WIDTH = 50, 3


class Shard:
    """What ShardBatches reads of a Ray Data shard: torch batches, counting the passes it streams."""

    def __init__(self) -> None:
        self.x = torch.arange(ROWS * WIDTH, dtype=torch.float32).reshape(ROWS, WIDTH)
        self.label = torch.arange(ROWS) % 2
        self.passes = 0

    def iter_torch_batches(
        self, batch_size, prefetch_batches=1, local_shuffle_buffer_size=None, local_shuffle_seed=None
    ):
        self.passes += 1
        for start in range(0, ROWS, batch_size):
            yield {"x": self.x[start : start + batch_size], "label": self.label[start : start + batch_size]}


def _rows(batches) -> list[list[float]]:
    return [row.tolist() for batch in batches for row in batch["x"]]


def test_after_one_streamed_pass_the_rows_come_from_memory_permuted_by_the_seed():
    shard = Shard()
    rows = ShardBatches(shard, budget_bytes=1 << 20)
    first = _rows(rows.batches(16, seed=0))
    assert rows.in_memory and shard.passes == 1 and first == shard.x.tolist()
    sizes = [len(b["x"]) for b in rows.batches(16, seed=1)]
    assert sizes == [16, 16, 16, 2] and shard.passes == 1  # the shard's rows, the same batch count per pass
    one, again, other = (_rows(rows.batches(16, seed=s)) for s in (1, 1, 2))
    assert one == again != other and sorted(one) == sorted(other) == shard.x.tolist()
    assert _rows(rows.batches(16)) == shard.x.tolist()  # no seed: in order
    batch = next(rows.batches(64, seed=3))
    assert (batch["label"] == batch["x"][:, 0].long() // WIDTH % 2).all()  # columns stay aligned row by row


def test_a_shard_over_the_budget_or_a_zero_budget_streams_every_pass():
    for budget in (ROWS * WIDTH * 4 // 2, 0):  # half the x column alone
        shard = Shard()
        rows = ShardBatches(shard, budget_bytes=budget)
        for seed in (0, 1, None):
            assert _rows(rows.batches(16, seed=seed)) == shard.x.tolist()
        assert not rows.in_memory and shard.passes == 3


def test_a_pass_left_half_way_keeps_nothing():
    shard = Shard()
    rows = ShardBatches(shard, budget_bytes=1 << 20)
    next(rows.batches(16))
    assert not rows.in_memory
    _rows(rows.batches(16))
    assert rows.in_memory and shard.passes == 2
