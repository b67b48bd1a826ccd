"""A Ray Data aggregation that keeps a uniform random sample of a column's values, merged exactly across blocks
(for statistics that need order, such as the quartiles `vae.value_screen.screen_bounds` reads)."""

from __future__ import annotations

import numpy as np
from ray.data.aggregate import AggregateFnV2
from ray.data.block import Block, BlockAccessor

HYPERGEOMETRIC_LIMIT = 10**9  # numpy's hypergeometric draw takes fewer than this many of each kind


def merge_samples(first: list[float], second: list[float], size: int) -> list[float]:
    """Two accumulators [count, *sample] (each sample uniform from its count of values, of min(size, count) of
    them) as one: a uniform sample of at most `size` of the union, drawn with a seed of the total count."""
    counts = int(first[0]), int(second[0])
    if len(first) + len(second) - 2 <= size:  # both samples are complete: so is their union
        return [float(sum(counts)), *first[1:], *second[1:]]
    rng = np.random.default_rng(sum(counts))
    if max(counts) < HYPERGEOMETRIC_LIMIT:  # how many of `size` draws fall in the first part
        taken = int(rng.hypergeometric(counts[0], counts[1], size))
    else:  # the binomial it tends to, kept within what each sample holds
        taken = int(np.clip(rng.binomial(size, counts[0] / sum(counts)), size - (len(second) - 1), len(first) - 1))
    parts = [rng.choice(first[1:], taken, replace=False), rng.choice(second[1:], size - taken, replace=False)]
    return [float(sum(counts)), *np.concatenate(parts).tolist()]


class ValueSample(AggregateFnV2):
    """A uniform random sample of at most `size` of the non-null, non-NaN values of the float column `on`: the
    result is a list of k <= size floats, every value when the column holds no more than `size`. The accumulator
    is one list of floats, [count, *sample], as Ray Data's own Mean keeps [sum, count]: an empty block's is [0.0]."""

    def __init__(self, on: str, size: int) -> None:
        self._size = size
        super().__init__(f"sample({on})", zero_factory=lambda: [0.0], on=on, ignore_nulls=False)

    def aggregate_block(self, block: Block) -> list[float]:
        values = np.asarray(BlockAccessor.for_block(block).to_numpy(self._target_col_name), dtype=np.float64)
        values = values[~np.isnan(values)]
        count = values.size
        if count > self._size:
            values = np.random.default_rng(count).choice(values, self._size, replace=False)
        return [float(count), *values.tolist()]

    def combine(self, current_accumulator: list[float], new: list[float]) -> list[float]:
        return merge_samples(list(current_accumulator), list(new), self._size)

    def finalize(self, accumulator: list[float]) -> list[float]:
        return list(accumulator[1:])
