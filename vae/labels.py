"""Category labels that do not depend on the dtype a column arrives in: 1, 1.0, numpy.int64(1) and b"1" are one
category (`canonical_label`), read as the kind of values the column held in training (`label_kind`); and how many
labels make a category rather than ids (`check_category_count`)."""

from __future__ import annotations

import numbers
import sys
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import numpy as np

LABEL_KINDS = ("bool", "number", "text")  # what a categorical column's training values were


CONTAINERS = (list, tuple, dict, set, np.ndarray)  # values that are no one number or label


def is_missing(value: Any) -> bool:
    """None, NaN, or a missing marker whose self-comparison is undefined (pandas.NA); a container is not."""
    if value is None:
        return True
    if isinstance(value, CONTAINERS):
        return False
    try:
        return bool(value != value)
    except TypeError:
        return True


def label_kind(value: Any) -> str | None:
    """The kind (one of LABEL_KINDS) of one raw categorical value, None when it is missing."""
    if is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (numbers.Real, Decimal)):
        return "number"
    return "text"


def column_label_kind(kinds: Iterable[str | None]) -> str:
    """A column's label kind from its values' `label_kind`s: the one kind they share, else "text"."""
    present = set(kinds) - {None}
    return present.pop() if len(present) == 1 else "text"


def parse_number(text: str) -> int | float | None:
    """The number a text spells ("3", "3.0", "1e5"), or None."""
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return None


def _number_label(value: numbers.Real | Decimal) -> str:
    """An integral number as its int's digits (1.0 -> "1", 1e20 -> "100000000000000000000"), else repr(float)."""
    try:
        if value == int(value):
            return str(int(value))
    except (OverflowError, ValueError):  # +-inf
        pass
    return repr(float(value))


def plain_values(values: Any) -> np.ndarray:
    """A 1-D array-like's values as an (N,) object array of Python objects; a float16 or float32 value becomes the
    float its shortest decimal spells (numpy.float32(0.1) -> 0.1, not the 0.10000000149011612 it widens to), so a
    category reads the same in any float width. A pandas Series goes through `vae.columns.pandas_values`: its
    nullable integers stay exact Python ints beside a missing value (numpy would make them floats, and two ids
    above 2**53 one label)."""
    pandas = sys.modules.get("pandas")  # loaded wherever a Series exists
    if pandas is not None and isinstance(values, pandas.Series):
        from .columns import pandas_values  # here: vae.columns imports this module

        values = pandas_values(values)
    array = np.asarray(values) if hasattr(values, "dtype") else np.asarray(values, dtype=object)  # a list: as is
    if array.dtype.kind == "f" and array.dtype.itemsize < 8:
        return np.array([float(str(v)) for v in array], dtype=object)
    return array.astype(object)


def canonical_label(value: Any, kind: str | None = None) -> str | None:
    """The category label of one raw value, the same whatever dtype the column arrives in; None when missing.

    Numbers: integral ones as the int's digits (1, 1.0, numpy.int64(1) -> "1"), others as repr(float); bools
    "True"/"False"; bytes decoded as UTF-8; anything else str(value). `kind`, the column's training
    `label_kind`, reads values of another kind as the training ones: 0/1 as bools in a "bool" column, bools as
    0/1 and numeric text ("2", "2.0") as numbers in a "number" column.
    """
    if is_missing(value):
        return None
    if isinstance(value, (np.float16, np.float32)):
        value = float(str(value))  # its shortest decimal, as `plain_values`
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="backslashreplace")
    if isinstance(value, str) and kind == "number":
        number = parse_number(value)
        if number is not None and is_missing(number):  # "nan" spells a missing number, as in a numeric column
            return None
        value = value if number is None else number
    if isinstance(value, bool):
        return str(int(value)) if kind == "number" else str(value)
    if isinstance(value, (numbers.Real, Decimal)):
        return str(bool(value)) if kind == "bool" and value in (0, 1) else _number_label(value)
    return str(value)


def canonical_labels(values: Any, kind: str | None = None) -> np.ndarray:
    """`canonical_label` of each value of a 1-D array-like: (N,) object array, None where missing."""
    return np.array([canonical_label(v, kind) for v in plain_values(values)], dtype=object)


def legacy_labels(labels: list[str]) -> tuple[str, list[str]]:
    """(kind, labels) of a column saved before label kinds were recorded, whose labels were str(value):
    numbers saved as floats ("1.0") take their canonical form ("1") unless that would merge two labels."""
    if labels and set(labels) <= {"True", "False"}:
        return "bool", labels
    canonical = [canonical_label(label, "number") for label in labels]
    numeric = all(parse_number(label) is not None for label in labels)
    if labels and numeric and len(set(canonical)) == len(canonical):
        return "number", canonical
    return "text", labels


# The most distinct values a categorical column may have: each is a one-hot slot, and a column of ids or free text
# (every row its own value) would be thousands of slots, none of which a new row can match.
MAX_CATEGORIES = 1000
# A categorical column is also refused as ids when more than this share of its training values are distinct and
# there are more than ID_MIN_VALUES of them: then over half of them occur once, so (Good-Turing) over half of new
# rows would carry a value training never saw, and score as anomalies for it.
ID_SHARE = 0.75
ID_MIN_VALUES = 20


def check_category_count(column: str, distinct: int, labelled: int | None = None) -> None:
    """Raise ValueError when a categorical column with `distinct` training values (of `labelled` rows that have
    one, when known) holds ids or free text rather than categories: over MAX_CATEGORIES values, or over
    ID_MIN_VALUES of which more than ID_SHARE of its rows' values are distinct."""
    fix = "leave it out of the features (exclude it, or make it a key)"
    if distinct > MAX_CATEGORIES:
        raise ValueError(f"categorical column {column!r} has {distinct:,} distinct values, more than "
                         f"{MAX_CATEGORIES:,}: ids or free text rather than categories; {fix}")  # fmt: skip
    if labelled is not None and distinct > ID_MIN_VALUES and distinct > ID_SHARE * labelled:
        raise ValueError(f"categorical column {column!r} has {distinct:,} distinct values in {labelled:,} rows: ids "
                         f"or free text, whose new values would all look anomalous; {fix}")  # fmt: skip
