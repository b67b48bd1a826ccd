"""Which raw numeric values training statistics count, and where a value stops looking like the training data.

A training column's mean and std leave out values that are no measurement: non-finite ones, magnitudes beyond
`MAX_MAGNITUDE` (sentinels, overflow artefacts), and values more than `Z_BOUND` robust stds off the column's median
(`screen_bounds`: one fill value such as 9.97e36 among ordinary numbers would otherwise set the std alone, and every
value up to it would look normal). The library (`vae.preprocessing.Preprocessor`) and the pipeline's distributed
statistics (`pipelines.runtime.parquet_input`) apply the same rules through `usable`.
"""

from __future__ import annotations

import numpy as np

# Raw numeric values beyond this magnitude are sentinels or overflow artefacts (1e308, DBL_MAX), not
# measurements: the statistics leave them out. It also keeps every sum in them finite, here and in a distributed
# aggregation (Welford's M2 <= N * (2e100)^2 stays below float64's 1.8e308 for any N under 1e107).
MAX_MAGNITUDE = 1e100

# A numeric value further than this many training standard deviations from the training mean is out of the
# training range. At most 1 / Z_BOUND^2 = 1e-8 of any distribution lies that far out (Chebyshev), so a value
# like the training data's never does; and +-Z_BOUND, the value it is encoded as, keeps the squared error of a
# Gaussian likelihood (~1e8 / variance) far inside float32, yet astronomically above any normal row's score.
Z_BOUND = 1e4

# A normal distribution's interquartile range in standard deviations: IQR / IQR_STDS is a robust std.
IQR_STDS = 1.349
# the median of |x - median| of a normal distribution in standard deviations
MAD_STDS = 0.6745

# Why `Preprocessor.unusable_rows` leaves a row out, in the words every caller prints.
UNUSABLE = (
    f"infinite, beyond {MAX_MAGNITUDE:g}, more than {Z_BOUND:g} robust stds off the training median or more than "
    f"{Z_BOUND:g} training stds off the mean"
)


NO_BOUNDS = (-np.inf, np.inf)


def usable(values: np.ndarray, bounds: tuple[float, float] = NO_BOUNDS) -> np.ndarray:
    """(N,) bool: which of the float values (N,) statistics are computed from: finite, |v| <= MAX_MAGNITUDE, and
    within `bounds` (a numeric column's `screen_bounds`)."""
    return (np.abs(values) <= MAX_MAGNITUDE) & (values >= bounds[0]) & (values <= bounds[1])  # NaN compares False


def screen_bounds(values: np.ndarray) -> tuple[float, float]:
    """(low, high): the values of a numeric column that its training statistics count, from (N,) usable floats
    (a sample of them will do: the bounds are that loose): within Z_BOUND robust stds of their median, a robust
    std being IQR / IQR_STDS, or, where the IQR is 0 (a column mostly of one value, such as zeros), the median
    |x - median| of the values that differ from the median / MAD_STDS: either way a few huge values do not move
    it. (-inf, inf) when there is no spread to measure (no value, or all equal)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return -np.inf, np.inf
    median = float(np.median(values))
    q1, q3 = np.quantile(values, [0.25, 0.75])
    scale = (q3 - q1) / IQR_STDS
    if not scale > 0:
        deviations = np.abs(values - median)
        deviations = deviations[deviations > 0]
        if deviations.size == 0:
            return -np.inf, np.inf
        scale = float(np.median(deviations)) / MAD_STDS
    return median - Z_BOUND * scale, median + Z_BOUND * scale


def column_moments(values: np.ndarray, bounds: tuple[float, float] = NO_BOUNDS) -> tuple[int, float, float]:
    """(count, mean, population std) of the usable values among (N,) floats that lie within `bounds`; bounded,
    so no sum overflows."""
    values = values[usable(values, bounds)]
    return values.size, values.mean() if values.size else 0.0, values.std() if values.size else 0.0
