"""Feature preprocessing fitted on training rows and applied identically at scoring time.

A table is any mapping from column name to a 1-D array-like (a dict of arrays, a pandas DataFrame).
The encoded matrix is (N, D) float32, laid out block by block as `layout_blocks()` describes:
standardized numeric columns (Gaussian), binary columns in {0, 1} (Bernoulli), then one one-hot
group per categorical column whose first slot is the unknown bucket (Categorical).
Missing values (None, NaN, +-inf) are imputed with training statistics, or rejected with `missing="error"`.
`inverse_transform` maps encoded rows (real or generated) back to raw columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .config import FeatureBlock

MISSING_POLICIES = ("impute", "error")


def _as_float(table: Mapping[str, Any], column: str) -> np.ndarray:
    values = np.asarray(table[column])
    try:
        return values.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"column {column!r} must be numeric, got values like {values[:3].tolist()}") from err


def _is_missing(value: Any) -> bool:
    """None, NaN, or a missing marker whose self-comparison is undefined (pandas.NA)."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except TypeError:
        return True


def _as_labels(table: Mapping[str, Any], column: str) -> tuple[np.ndarray, np.ndarray]:
    """Category labels as strings, and the mask of missing entries."""
    values = np.asarray(table[column], dtype=object)
    missing = np.array([_is_missing(v) for v in values], dtype=bool)
    return np.array([str(v) for v in values], dtype=object), missing


class Preprocessor:
    """Standardizes numeric columns, checks binary ones and one-hot encodes categorical ones."""

    def __init__(
        self,
        numeric: Sequence[str] = (),
        binary: Sequence[str] = (),
        categorical: Sequence[str] = (),
        missing: str = "impute",
    ) -> None:
        columns = [*numeric, *binary, *categorical]
        if not columns:
            raise ValueError("Preprocessor: declare at least one numeric, binary or categorical column")
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise ValueError(f"Preprocessor: columns declared twice: {repeated}")
        if missing not in MISSING_POLICIES:
            raise ValueError(f"Preprocessor.missing: must be one of {list(MISSING_POLICIES)}, got {missing!r}")
        self.numeric = list(numeric)
        self.binary = list(binary)
        self.categorical = list(categorical)
        self.missing = missing
        self.mean: np.ndarray | None = None  # (numeric,)
        self.std: np.ndarray | None = None  # (numeric,), 1.0 for constant columns
        self.rate: np.ndarray | None = None  # (binary,) share of ones, imputes missing binary values
        self.categories: dict[str, list[str]] = {}

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.binary, *self.categorical]

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    def check_columns(self, table: Mapping[str, Any]) -> None:
        """Raise a ValueError naming every declared column the table lacks."""
        absent = [c for c in self.columns if c not in table]
        if absent:
            raise ValueError(f"missing column(s) {absent}; the table has {sorted(map(str, table.keys()))}")

    def fit(self, table: Mapping[str, Any]) -> Preprocessor:
        """Learn the statistics and category sets from training rows (missing entries ignored)."""
        self.check_columns(table)
        moments = {}
        for column in [*self.numeric, *self.binary]:
            values = self._binary_values(table, column) if column in self.binary else _as_float(table, column)
            values = values[np.isfinite(values)]
            moments[column] = (values.size, values.mean() if values.size else 0.0, values.std() if values.size else 0.0)
        categories = {}
        for column in self.categorical:
            labels, missing = _as_labels(table, column)
            categories[column] = set(labels[~missing].tolist())
        return self.fit_statistics(moments, categories)

    def fit_statistics(
        self, moments: Mapping[str, tuple[int, float, float]], categories: Mapping[str, Iterable[str]]
    ) -> Preprocessor:
        """Set the fitted state from statistics computed elsewhere (e.g. by distributed aggregation).

        moments: per numeric or binary column, (count of finite values, mean, population std).
        categories: per categorical column, the labels seen in training.
        """
        for column in [*self.numeric, *self.binary]:
            if moments[column][0] == 0:
                raise ValueError(f"column {column!r} has no finite value to fit on")
        self.mean = np.array([moments[c][1] for c in self.numeric], dtype=np.float64)
        std = np.array([moments[c][2] for c in self.numeric], dtype=np.float64)
        constant = ~(std > 1e-12 * np.maximum(1.0, np.abs(self.mean)))  # also catches a NaN std
        self.std = np.where(constant, 1.0, std)
        self.rate = np.array([moments[c][1] for c in self.binary], dtype=np.float64)
        self.categories = {c: sorted(str(label) for label in categories[c]) for c in self.categorical}
        return self

    def _binary_values(self, table: Mapping[str, Any], column: str) -> np.ndarray:
        values = _as_float(table, column)
        finite = values[np.isfinite(values)]
        bad = finite[(finite != 0) & (finite != 1)]
        if bad.size:
            raise ValueError(f"binary column {column!r} has values other than 0/1, e.g. {bad[:3].tolist()}")
        return values

    def missing_mask(self, table: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """For each numeric or binary column with missing or non-finite entries, the (N,) mask of them."""
        masks = {}
        for column in [*self.numeric, *self.binary]:
            bad = ~np.isfinite(_as_float(table, column))
            if bad.any():
                masks[column] = bad
        for column in self.categorical:
            _, missing = _as_labels(table, column)
            if missing.any():
                masks[column] = missing
        return masks

    def transform(self, table: Mapping[str, Any]) -> np.ndarray:
        """Encode rows with the fitted statistics: (N, D) float32."""
        if not self.fitted:
            raise RuntimeError("Preprocessor.transform: call fit() first")
        self.check_columns(table)
        if self.missing == "error":
            masks = self.missing_mask(table)
            if masks:
                counts = {c: int(m.sum()) for c, m in masks.items()}
                raise ValueError(f"missing or non-finite values (rows per column): {counts}")
        parts = []
        if self.numeric:
            raw = np.column_stack([_as_float(table, c) for c in self.numeric])
            z = (raw - self.mean) / self.std
            parts.append(np.where(np.isfinite(z), z, 0.0))  # missing -> the training mean
        if self.binary:
            raw = np.column_stack([self._binary_values(table, c) for c in self.binary])
            parts.append(np.where(np.isfinite(raw), raw, self.rate))
        for column in self.categorical:
            parts.append(self._one_hot(table, column))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def _one_hot(self, table: Mapping[str, Any], column: str) -> np.ndarray:
        labels, missing = _as_labels(table, column)
        lookup = {label: i + 1 for i, label in enumerate(self.categories[column])}
        index = np.array([lookup.get(label, 0) for label in labels])
        index[missing] = 0  # missing and unseen categories share the unknown bucket
        return np.eye(len(lookup) + 1)[index]

    def unknown_counts(self, table: Mapping[str, Any]) -> dict[str, int]:
        """Per categorical column, how many present values were not seen in training."""
        counts = {}
        for column in self.categorical:
            labels, missing = _as_labels(table, column)
            known = set(self.categories[column])
            counts[column] = int(
                sum(1 for label, m in zip(labels, missing, strict=True) if not m and label not in known)
            )
        return counts

    def _group_slices(self) -> dict[str, slice]:
        """Each categorical column's one-hot group in the encoded matrix."""
        start = len(self.numeric) + len(self.binary)
        groups = {}
        for column in self.categorical:
            width = len(self.categories[column]) + 1
            groups[column] = slice(start, start + width)
            start += width
        return groups

    def encoded_missing(self, table: Mapping[str, Any]) -> np.ndarray:
        """Which encoded columns stand for a missing (or non-finite) raw value: (N, D) bool, a categorical
        column's whole one-hot group at once."""
        groups = self._group_slices()
        n = len(np.asarray(table[self.columns[0]]))
        mask = np.zeros((n, self.input_dim), dtype=bool)
        for column, missing in self.missing_mask(table).items():
            if column in groups:
                mask[:, groups[column]] = missing[:, None]
            else:
                mask[:, [*self.numeric, *self.binary].index(column)] = missing
        return mask

    def unknown_slots(self) -> np.ndarray:
        """(D,) bool: the unknown buckets of the one-hot groups, a category that generation never emits."""
        slots = np.zeros(self.input_dim, dtype=bool)
        for group in self._group_slices().values():
            slots[group.start] = True
        return slots

    @property
    def input_dim(self) -> int:
        """Width D of the encoded matrix."""
        return len(self.numeric) + len(self.binary) + sum(len(v) + 1 for v in self.categories.values())

    def inverse_transform(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Raw columns from encoded rows x (N, D): the exact inverse of `transform` on complete rows.

        Numeric: un-standardized float64. Binary: int64 0/1, a value (e.g. a probability) >= 0.5 gives 1.
        Categorical: object array of the training labels (strings) by the group's largest entry, so
        probabilities work as well as one-hot rows; the unknown bucket gives None.
        """
        if not self.fitted:
            raise RuntimeError("Preprocessor.inverse_transform: call fit() first")
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"expected encoded rows (N, {self.input_dim}), got {x.shape}")
        columns: dict[str, np.ndarray] = {}
        for i, column in enumerate(self.numeric):
            columns[column] = x[:, i] * self.std[i] + self.mean[i]
        for i, column in enumerate(self.binary):
            columns[column] = (x[:, len(self.numeric) + i] >= 0.5).astype(np.int64)
        for column, group in self._group_slices().items():
            labels = np.array([None, *self.categories[column]], dtype=object)
            columns[column] = labels[x[:, group].argmax(axis=1)]
        return columns

    def layout_blocks(self) -> tuple[FeatureBlock, ...]:
        """The likelihood blocks of the encoded matrix, in column order."""
        if not self.fitted:
            raise RuntimeError("Preprocessor.layout_blocks: call fit() first")
        blocks = []
        if self.numeric:
            blocks.append(FeatureBlock("gaussian", len(self.numeric), tuple(self.numeric)))
        if self.binary:
            blocks.append(FeatureBlock("bernoulli", len(self.binary), tuple(self.binary)))
        for column in self.categorical:
            blocks.append(FeatureBlock("categorical", len(self.categories[column]) + 1, (column,)))
        return tuple(blocks)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: declared columns and fitted statistics."""
        if not self.fitted:
            raise RuntimeError("Preprocessor.to_dict: call fit() first")
        return {
            "numeric": self.numeric,
            "binary": self.binary,
            "categorical": self.categorical,
            "missing": self.missing,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "rate": self.rate.tolist(),
            "categories": self.categories,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessor:
        """Rebuild a fitted preprocessor from `to_dict()` output."""
        pre = cls(data["numeric"], data["binary"], data["categorical"], data["missing"])
        pre.mean = np.asarray(data["mean"], dtype=np.float64)
        pre.std = np.asarray(data["std"], dtype=np.float64)
        pre.rate = np.asarray(data["rate"], dtype=np.float64)
        pre.categories = {k: list(v) for k, v in data["categories"].items()}
        return pre
