"""Feature preprocessing fitted on training rows and applied identically at scoring time.

A table is any mapping from column name to a 1-D array-like (a dict of arrays, a pandas DataFrame).
The encoded matrix is (N, D) float32, laid out block by block as `layout_blocks()` describes:
standardized numeric columns (Gaussian), binary columns in {0, 1} (Bernoulli), then one one-hot
group per categorical column whose first slot is the unknown bucket (Categorical).
Missing values (None, NaN, +-inf) are imputed with training statistics, or rejected with `missing="error"`.
Numeric values more than `Z_BOUND` standard deviations off the training mean are out of the training range
(`out_of_range_mask`); they are encoded as +-`Z_BOUND`, so no float32 overflow reaches the network. The training
statistics themselves leave out values more than `Z_BOUND` robust standard deviations off the training median
(`vae.value_screen`): one fill value such as 9.97e36 among ordinary numbers would otherwise set the std alone, and
every value up to it would look normal.
+-inf and a binary value other than 0/1 are `impossible_mask` values: no model gives them a likelihood above zero,
so a detector scores them +inf (`vae.detector.Detector.score_rows`); the encoder sees the missing-value fill.
Categorical values are compared by their canonical label (`canonical_label`): 1, 1.0, numpy.int64(1) and
b"1" are one category, whichever dtype the column arrives in.
`inverse_transform` maps encoded rows (real or generated) back to raw columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .config import DataLayout, FeatureBlock
from .labels import (
    LABEL_KINDS,
    canonical_labels,
    check_category_count,
    column_label_kind,
    is_missing,
    label_kind,
    legacy_labels,
    plain_values,
)
from .value_screen import NO_BOUNDS, Z_BOUND, column_moments, screen_bounds, usable

MISSING_POLICIES = ("impute", "error")


def float_values(table: Mapping[str, Any], column: str) -> np.ndarray:
    """A numeric column as (N,) float64, None and pandas.NA as NaN; dates and times are refused, not read as
    their integer encoding."""
    values = np.asarray(table[column])
    if values.dtype.kind in "mM":
        raise ValueError(f"column {column!r} must be numeric, got dates or times like {values[:3].tolist()}")
    if values.dtype == object:
        values = np.array([np.nan if is_missing(v) else v for v in values], dtype=object)
    try:
        return values.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"column {column!r} must be numeric, got values like {values[:3].tolist()}") from err


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
        self.categories: dict[str, list[str]] = {}  # canonical labels, sorted
        self.label_kinds: dict[str, str] = {}  # per categorical column, its training values' label kind
        # per numeric column, the (low, high) its statistics counted (`screen_bounds`): which training rows are
        # usable; not saved, a loaded preprocessor scores with its mean and std
        self.bounds: dict[str, tuple[float, float]] = {}

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
        """Learn the statistics and category sets from training rows.

        Missing entries are ignored, and so are numbers that are not `usable` (+-inf, beyond MAX_MAGNITUDE) and
        numeric values outside their column's `screen_bounds`: the mean and std of the rest are finite, and no
        single value sets them.
        """
        self.check_columns(table)
        moments, bounds = {}, {}
        for column in self.binary:
            moments[column] = column_moments(self._binary_values(table, column))
        for column in self.numeric:
            values = float_values(table, column)
            bounds[column] = screen_bounds(values[usable(values)])
            moments[column] = column_moments(values, bounds[column])
        categories, kinds = {}, {}
        labelled = {}
        for column in self.categorical:
            values = plain_values(table[column])  # float32 0.1 as 0.1, exact ids beside a missing one
            kinds[column] = column_label_kind(label_kind(v) for v in values)
            labels = canonical_labels(values, kinds[column])
            categories[column] = set(labels.tolist()) - {None}
            labelled[column] = int(np.not_equal(labels, None).sum())
        return self.fit_statistics(moments, categories, kinds, bounds, labelled)

    def fit_statistics(
        self,
        moments: Mapping[str, tuple[int, float, float]],
        categories: Mapping[str, Iterable[Any]],
        kinds: Mapping[str, str] | None = None,
        bounds: Mapping[str, tuple[float, float]] | None = None,
        labelled: Mapping[str, int] | None = None,
    ) -> Preprocessor:
        """Set the fitted state from statistics computed elsewhere (e.g. by distributed aggregation).

        moments: per numeric or binary column, (count of usable values, mean, population std).
        categories: per categorical column, the values (or their `canonical_label`s) seen in training; ids or free
            text are refused (`check_category_count`, ValueError).
        kinds: per categorical column, the `column_label_kind` of its training values; "text" when not given.
        bounds: per numeric column, the `screen_bounds` the moments were counted within; none: no screen.
        labelled: per categorical column, the training rows that have a value; none: not known.
        """
        for column in [*self.numeric, *self.binary]:
            if moments[column][0] == 0:
                raise ValueError(f"column {column!r} has no finite value to fit on")
        for column in self.categorical:
            distinct = len(set(categories[column]) - {None})
            if not distinct:  # one slot, always certain: any value would score as normal
                raise ValueError(f"column {column!r} has no value to fit on")
            check_category_count(column, distinct, (labelled or {}).get(column))
        self.mean = np.array([moments[c][1] for c in self.numeric], dtype=np.float64)
        std = np.array([moments[c][2] for c in self.numeric], dtype=np.float64)
        # constant: no spread beyond the float64 rounding of its mean (relative, so a column of tiny values in
        # large units still varies); also catches a NaN std
        constant = ~(std > 1e-12 * np.abs(self.mean))
        self.std = np.where(constant, 1.0, std)
        self.rate = np.array([moments[c][1] for c in self.binary], dtype=np.float64)
        kinds = kinds or {}
        unknown = sorted(set(kinds.values()) - set(LABEL_KINDS))
        if unknown:
            raise ValueError(f"Preprocessor: unknown label kind(s) {unknown}; expected one of {list(LABEL_KINDS)}")
        self.label_kinds = {c: kinds.get(c, "text") for c in self.categorical}
        self.bounds = dict(bounds or {})
        self.categories = {
            c: sorted(set(canonical_labels(list(categories[c]), self.label_kinds[c]).tolist()) - {None})
            for c in self.categorical
        }
        return self

    def _binary_values(self, table: Mapping[str, Any], column: str) -> np.ndarray:
        values = float_values(table, column)
        finite = values[np.isfinite(values)]
        bad = finite[(finite != 0) & (finite != 1)]
        if bad.size:
            raise ValueError(f"binary column {column!r} has values other than 0/1, e.g. {bad[:3].tolist()}")
        return values

    def missing_mask(self, table: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """For each numeric or binary column with missing or non-finite entries, the (N,) mask of them."""
        masks = {}
        for column in [*self.numeric, *self.binary]:
            bad = ~np.isfinite(float_values(table, column))
            if bad.any():
                masks[column] = bad
        for column in self.categorical:
            missing = np.equal(self.labels(table, column), None)
            if missing.any():
                masks[column] = missing
        return masks

    def impossible_mask(self, table: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """For each numeric or binary column with values of zero likelihood, the (N,) mask of them: +-inf in
        either kind, and binary values other than 0/1."""
        masks = {}
        for column in [*self.numeric, *self.binary]:
            values = float_values(table, column)
            binary = column in self.binary
            impossible = (~np.isnan(values) & (values != 0) & (values != 1)) if binary else np.isinf(values)
            if impossible.any():
                masks[column] = impossible
        return masks

    def unusable_rows(self, table: Mapping[str, Any]) -> np.ndarray:
        """(N,) bool: the rows training leaves out: a numeric or binary value that is infinite or beyond
        MAX_MAGNITUDE (not `usable`), or a numeric one outside its `bounds` (neither is in the statistics), or
        out of the training range (`out_of_range_mask`). Missing values (None, NaN) are not: the missing policy
        handles them."""
        n = len(np.asarray(table[self.columns[0]]))
        bad = np.zeros(n, dtype=bool)
        for column in [*self.numeric, *self.binary]:
            values = float_values(table, column)
            bad |= ~np.isnan(values) & ~usable(values, self.bounds.get(column, NO_BOUNDS))
        for mask in self.out_of_range_mask(table).values():
            bad |= mask
        return bad

    def out_of_range_mask(self, table: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """For each numeric or binary column with values out of the training range, the (N,) mask of them:
        finite numbers more than Z_BOUND training stds off the training mean, binary values other than 0/1.
        Missing and non-finite values are not in it (see `missing_mask`)."""
        if not self.fitted:
            raise RuntimeError("Preprocessor.out_of_range_mask: call fit() first")
        masks = {}
        for column, z in zip(self.numeric, self._standardized(table).T, strict=True):
            far = np.abs(z) > Z_BOUND  # a missing value's z is NaN: never far
            if far.any():
                masks[column] = far
        for column in self.binary:
            values = float_values(table, column)
            other = np.isfinite(values) & (values != 0) & (values != 1)
            if other.any():
                masks[column] = other
        return masks

    def _standardized(self, table: Mapping[str, Any]) -> np.ndarray:
        """(N, numeric) float64 z-scores, unclipped: NaN where the raw value is missing or not finite, +-inf
        where a huge finite one overflowed."""
        n = len(np.asarray(table[self.columns[0]]))
        raw = np.column_stack([float_values(table, c) for c in self.numeric]) if self.numeric else np.zeros((n, 0))
        with np.errstate(over="ignore", invalid="ignore"):
            z = (raw - self.mean) / self.std
        return np.where(np.isfinite(raw), z, np.nan)

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
            z = self._standardized(table)
            parts.append(np.where(np.isnan(z), 0.0, np.clip(z, -Z_BOUND, Z_BOUND)))  # missing -> the training mean
        if self.binary:  # a value other than 0/1 gets the missing-value fill too (it is an `impossible_mask` one)
            raw = np.column_stack([float_values(table, c) for c in self.binary])
            parts.append(np.where((raw == 0) | (raw == 1), raw, self.rate))
        for column in self.categorical:
            parts.append(self._one_hot(table, column))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def labels(self, table: Mapping[str, Any], column: str) -> np.ndarray:
        """A categorical column's `canonical_labels` as in training: (N,) object array, None where missing."""
        return canonical_labels(table[column], self.label_kinds.get(column))

    def _one_hot(self, table: Mapping[str, Any], column: str) -> np.ndarray:
        lookup = {label: i + 1 for i, label in enumerate(self.categories[column])}
        index = np.array([lookup.get(label, 0) for label in self.labels(table, column)], dtype=np.int64)
        one_hot = np.zeros((len(index), len(lookup) + 1))  # not np.eye(K)[index]: K x K floats for any N
        one_hot[np.arange(len(index)), index] = 1.0  # missing and unseen categories share the unknown bucket, 0
        return one_hot

    def unknown_mask(self, table: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Per categorical column, the (N,) mask of present values not seen in training."""
        masks = {}
        for column in self.categorical:
            known = set(self.categories[column])
            masks[column] = np.array([v is not None and v not in known for v in self.labels(table, column)], bool)
        return masks

    def unknown_counts(self, table: Mapping[str, Any]) -> dict[str, int]:
        """Per categorical column, how many present values were not seen in training."""
        return {column: int(mask.sum()) for column, mask in self.unknown_mask(table).items()}

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
            "label_kinds": self.label_kinds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessor:
        """Rebuild a fitted preprocessor from `to_dict()` output.

        Output saved before label kinds were recorded keeps its categories in their saved order (the one-hot
        slots of the weights); their kinds are read from the labels, and float labels ("1.0") take their
        canonical form ("1"), so the model keeps recognising its categories.
        """
        pre = cls(data["numeric"], data["binary"], data["categorical"], data["missing"])
        pre.mean = np.asarray(data["mean"], dtype=np.float64)
        pre.std = np.asarray(data["std"], dtype=np.float64)
        pre.rate = np.asarray(data["rate"], dtype=np.float64)
        if "label_kinds" in data:
            pre.categories = {k: list(v) for k, v in data["categories"].items()}
            pre.label_kinds = dict(data["label_kinds"])
        else:
            legacy = {k: legacy_labels(list(v)) for k, v in data["categories"].items()}
            pre.categories = {k: labels for k, (_, labels) in legacy.items()}
            pre.label_kinds = {k: kind for k, (kind, _) in legacy.items()}
        return pre


def observed_features(layout: DataLayout, missing: np.ndarray) -> np.ndarray:
    """Which features of each row are observed, from which encoded columns are missing (N, D) bool (e.g.
    `Preprocessor.encoded_missing`): (N, F) bool. A categorical group is one feature, missing if any of its
    columns is."""
    missing = np.asarray(missing, dtype=bool)
    if missing.ndim != 2 or missing.shape[1] != layout.input_dim:
        raise ValueError(f"observed_features: expected a missing mask (N, {layout.input_dim}), got {missing.shape}")
    parts, start = [], 0
    for block in layout.blocks:
        part = missing[:, start : start + block.width]
        parts.append(part.any(1, keepdims=True) if block.grouped else part)
        start += block.width
    return ~np.concatenate(parts, axis=1)
