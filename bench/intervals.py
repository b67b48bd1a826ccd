"""How sure a difference of mean AUROC is: a bootstrap interval over the seeds of each data set.

The harness's figure is a mean over sets of per-set means over seeds. Two methods scored on the same splits give
one difference per (set, seed); what varies from one run of the harness to the next is the seeds (the training
draws and the split), so each bootstrap draw resamples the seeds of every set with replacement, independently
per set, and takes the same mean over sets. The sets themselves are fixed: the interval says how far the
figure could move with other seeds, not how it would carry to other data sets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

LEVEL = 0.95
DRAWS = 5000


def paired_differences(
    rows: Sequence[Mapping], first: Callable[[Mapping], bool], second: Callable[[Mapping], bool], value: str = "auroc"
) -> dict[str, list[float]]:
    """Per set, one difference per seed: `value` of the split's first row that `first` picks minus that of the
    first row `second` picks, from benchmark rows with "dataset" and "seed"; splits where either picks no row are
    left out. The input of `seed_interval`."""
    picked: dict[tuple[str, int], list[float | None]] = {}
    for row in rows:
        sides = picked.setdefault((row["dataset"], row["seed"]), [None, None])
        for side, pick in enumerate((first, second)):
            if sides[side] is None and pick(row):
                sides[side] = row[value]
    differences: dict[str, list[float]] = {}
    for (name, _), (a, b) in picked.items():
        if a is not None and b is not None:
            differences.setdefault(name, []).append(a - b)
    return differences


def seed_interval(
    differences: Mapping[str, Sequence[float]], level: float = LEVEL, draws: int = DRAWS, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the mean over sets of each set's mean difference over its seeds (`differences`: set ->
    (K,) the per-seed differences of two methods on the same splits), and the central `level` bootstrap interval
    of that mean with each set's seeds resampled. Raises ValueError without a set or with a set of no seeds."""
    if not differences or any(len(v) == 0 for v in differences.values()):
        raise ValueError("seed_interval: need at least one set, each with at least one seed")
    rng = np.random.default_rng(seed)
    per_set = []
    for values in differences.values():
        values = np.asarray(values, dtype=np.float64)
        per_set.append(values[rng.integers(0, len(values), (draws, len(values)))].mean(axis=1))
    means = np.mean(per_set, axis=0)  # (draws,)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    mean = float(np.mean([np.mean(v) for v in differences.values()]))
    return mean, float(low), float(high)


def describe(differences: Mapping[str, Sequence[float]]) -> str:
    """ "+0.30 [-0.12, +0.71]": the mean and the 95 % interval of `seed_interval(differences)`."""
    mean, low, high = seed_interval(differences)
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"
