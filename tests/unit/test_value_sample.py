"""`ValueSample`, the Ray Data aggregation behind the pipeline's robust screen: every value while they fit, a
uniform sample of the union when they do not; folded here as Ray Data folds it (a partial per block, then pairwise
merges from the empty accumulator); the real Ray path is in tests/integration/test_training_statistics.py."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.runtime.value_sample import ValueSample, merge_samples


def _accumulate(blocks: list[pd.DataFrame], size: int) -> list[float]:
    agg = ValueSample(on="v", size=size)
    accumulator = [0.0]
    for block in blocks:
        accumulator = agg.combine(accumulator, agg.aggregate_block(block))
    return agg.finalize(accumulator)


def test_every_value_is_kept_while_they_fit_and_nan_and_empty_blocks_add_nothing():
    blocks = [pd.DataFrame({"v": [1.0, np.nan, 2.0]}), pd.DataFrame({"v": np.array([], dtype=float)}),
              pd.DataFrame({"v": [3.0]})]  # fmt: skip
    assert sorted(_accumulate(blocks, size=10)) == [1.0, 2.0, 3.0]


def test_a_merged_sample_draws_from_each_part_in_proportion_to_its_count():
    big, small = np.zeros(90_000), np.ones(10_000)  # 90 % zeros: a uniform sample of the union holds ~10 % ones
    blocks = [pd.DataFrame({"v": part}) for part in (*np.array_split(big, 9), small)]
    sample = np.asarray(_accumulate(blocks, size=2_000))
    assert len(sample) == 2_000 and 0.08 < sample.mean() < 0.12
    merged = merge_samples([3.0, 1.0, 2.0, 3.0], [1.0, 4.0], size=3)  # 4 distinct values into a sample of 3
    assert merged[0] == 4.0 and len(set(merged[1:])) == 3  # without replacement


def test_counts_beyond_numpys_hypergeometric_limit_still_merge():
    merged = merge_samples([2e9, *range(5)], [3e9, *range(5, 10)], size=5)
    assert merged[0] == 5e9 and len(set(merged[1:])) == 5
