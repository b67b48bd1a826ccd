"""A Ray Data aggregation that keeps a uniform random sample of a column's values, merged exactly across blocks
(for statistics that need order, such as the quartiles `vae.preprocessing.screen_bounds` reads)."""

from __future__ import annotations

import numpy as np
from ray.data.aggregate import AggregateFnV2
from ray.data.block import Block, BlockAccessor


def merge_samples(first: np.ndarray, second: np.ndarray, size: int) -> np.ndarray:
    """Two accumulators [count, *sample] (each sample uniform from its count of values, of min(size, count) of
    them) as one: a uniform sample of at most `size` of the union, drawn with a seed of the total count."""
    counts = int(first[0]), int(second[0])
    if len(first) + len(second) - 2 <= size:  # both samples are complete: so is their union
        return np.concatenate([[sum(counts)], first[1:], second[1:]])
    rng = np.random.default_rng(sum(counts))
    taken = rng.hypergeometric(counts[0], counts[1], size)  # how many of `size` draws fall in the first part
    parts = [rng.choice(first[1:], taken, replace=False), rng.choice(second[1:], size - taken, replace=False)]
    return np.concatenate([[sum(counts)], *parts])


class ValueSample(AggregateFnV2):
    """A uniform random sample of at most `size` of the non-null, non-NaN values of the float column `on`: the
    result is a (k,) array, k <= size, every value when the column holds no more than `size`. The accumulator
    is one float64 array, [count, *sample]."""

    def __init__(self, on: str, size: int) -> None:
        self._size = size
        super().__init__(f"sample({on})", zero_factory=lambda: np.zeros(1), on=on, ignore_nulls=True)

    def aggregate_block(self, block: Block) -> np.ndarray:
        values = np.asarray(BlockAccessor.for_block(block).to_numpy(self._target_col_name), dtype=np.float64)
        values = values[~np.isnan(values)]
        count = values.size
        if count > self._size:
            values = np.random.default_rng(count).choice(values, self._size, replace=False)
        return np.concatenate([[count], values])

    def combine(self, current_accumulator: np.ndarray, new: np.ndarray) -> np.ndarray:
        return merge_samples(np.asarray(current_accumulator), np.asarray(new), self._size)

    def finalize(self, accumulator: np.ndarray) -> np.ndarray:
        return np.asarray(accumulator)[1:]
